"""Appending rows to a store, atomically: an append killed at any point leaves the store at its previous version.

Zarr's ``Array.append`` rewrites the last partial chunk in place, so an append interrupted there would damage rows
that were already staged. dmlr's append keeps an undo journal under the store (``_append/``)::

    1. copy each array's ``zarr.json`` and its last partial chunk file to ``_append/undo/`` (bytes as they are),
       then write ``_append/journal.json`` (the previous row count and the new version's id): from here the
       journal can restore the previous version byte for byte;
    2. resize the arrays and write the new rows (chunks aligned with the store's, one writer per chunk);
    3. write the store's metadata (the group's ``zarr.json``, one atomic write: a rename on local disk, one PUT on
       an object store) with the new version appended to its list: the commit point;
    4. remove the journal (``journal.json`` first).

:func:`recover` undoes an unfinished append: without ``journal.json`` nothing was changed yet (or the append had
committed), so the journal is removed; with it and an uncommitted version the undo copies are written back and
chunks beyond the previous rows deleted, so the store's checksum equals its previous one again. It runs at the start
of every append, and when a store is opened and its journal was left by a process of this host that no longer
runs. A store opened while an append runs reads its committed rows only.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

import dask.array as da
import fsspec
import zarr

from dmlr.data.sources import is_local
from dmlr.errors import StoreError

if TYPE_CHECKING:
    import dask.dataframe as dd

    from dmlr.data.staging import Staging
    from dmlr.data.store import StoreData

__all__ = [
    "JOURNAL",
    "append_rows",
    "append_store",
    "append_table",
    "commit_metadata",
    "drop_unseen",
    "journal_state",
    "recover",
]

JOURNAL = "_append"
"""The store's subdirectory holding an append's undo journal while it runs."""

_ARRAYS = ("X", "y", "weights", "offset", "groups")


def _fs(url: str, storage_options: dict[str, Any] | None, everything: bool = True) -> tuple[Any, str]:
    """The store's filesystem, its listings cache dropped: another process (an append, a killed one) may have
    added or removed files since this one listed them. ``everything=False`` drops only the journal's entry and its
    parents' (enough to see whether a journal exists; what :func:`journal_state` needs on every store opened)."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    # a path's own entry does not cover the listings below it: a rollback and a checksum drop them all
    fs.invalidate_cache() if everything else fs.invalidate_cache(f"{root}/{JOURNAL}")
    return fs, root


def journal_state(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The journal of an append that has not finished (``{}`` when it holds no ``journal.json`` yet), or None."""
    fs, root = _fs(url, storage_options, everything=False)
    if not fs.exists(f"{root}/{JOURNAL}"):
        return None
    try:
        doc: dict[str, Any] = json.loads(fs.cat_file(f"{root}/{JOURNAL}/journal.json"))
    except FileNotFoundError:
        return {}
    return doc


def abandoned(journal: dict[str, Any]) -> bool:
    """Whether an unfinished append's process is known to be gone (it ran on this host and its pid is not alive)."""
    if not journal:
        return True
    if journal.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(journal["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


def _array_files(fs: Any, root: str, name: str, first_chunk: int) -> list[str]:
    """Chunk files of array ``name`` whose row-chunk index is ``first_chunk`` or later."""
    base = f"{root}/{name}/c"
    if not fs.exists(base):
        return []
    out = []
    for path in fs.find(base):
        index = path[len(base) :].lstrip("/").split("/")[0].split(".")[0]
        if index.isdigit() and int(index) >= first_chunk:
            out.append(path)
    return out


def _temporary_files(fs: Any, root: str, name: str) -> list[str]:
    """Files zarr was writing when a process died: it writes ``<key>.<uuid>.partial`` and renames it."""
    return [p for p in fs.find(f"{root}/{name}") if p.endswith(".partial")]


def append_rows(
    url: str,
    arrays: dict[str, da.Array],
    new_version: str,
    storage_options: dict[str, Any] | None,
    run: Any,
) -> int:
    """Steps 1 and 2: journal the previous version, then resize the arrays and write the new rows.

    Parameters
    ----------
    url : str
        The store.
    arrays : dict of str to dask.array.Array
        The new rows of every array the store has (same names, trailing shapes and dtypes).
    new_version : str
        The id of the version the append makes (recorded in the journal).
    storage_options : dict, optional
    run : callable
        Runs a thunk (with progress reporting).

    Returns
    -------
    int
        The rows the store had before.
    """
    fs, root = _fs(url, storage_options)
    group = zarr.open_group(url, mode="r+", storage_options=storage_options)
    stored: dict[str, Any] = {name: group[name] for name in _ARRAYS if name in group}
    if set(stored) != set(arrays):
        raise StoreError(f"{url} has the arrays {sorted(stored)}; the new rows have {sorted(arrays)}")
    old_n = {int(z.shape[0]) for z in stored.values()}
    if len(old_n) != 1:
        raise StoreError(f"{url}: its arrays have different row counts {sorted(old_n)}")
    n = old_n.pop()
    undo: list[str] = []
    for name, z in stored.items():
        rows = int(z.chunks[0])
        keep = [f"{root}/{name}/zarr.json"]
        if n % rows:
            keep += _array_files(fs, root, name, n // rows)
        for path in keep:
            rel = path[len(root) + 1 :]
            _put(fs, f"{root}/{JOURNAL}/undo/{rel}", fs.cat_file(path))
            undo.append(rel)
    journal = {"old_rows": n, "new_version": new_version, "undo": undo, "host": socket.gethostname()}
    journal["pid"] = os.getpid()
    _put(fs, f"{root}/{JOURNAL}/journal.json", json.dumps(journal).encode())  # the journal is complete

    sources, targets, regions = [], [], []
    for name, z in stored.items():
        new = arrays[name]
        if tuple(new.shape[1:]) != tuple(z.shape[1:]):
            raise StoreError(f"the new rows of {name} have shape {new.shape}, the store's {z.shape}")
        m, rows = int(new.shape[0]), int(z.chunks[0])
        z.resize((n + m, *z.shape[1:]))
        first = min(m, (rows - n % rows) % rows or rows)  # the rest of the last partial chunk, then whole chunks
        sizes = [first] + [rows] * ((m - first) // rows) + ([(m - first) % rows] if (m - first) % rows else [])
        sources.append(new.astype(z.dtype).rechunk((tuple(s for s in sizes if s), *new.shape[1:])))
        targets.append(z)
        regions.append((slice(n, n + m), *(slice(None) for _ in z.shape[1:])))
    run(lambda: da.store(sources, targets, regions=regions, lock=False))
    return n


def commit_metadata(url: str, attrs: dict[str, Any], storage_options: dict[str, Any] | None) -> None:
    """Step 3 and 4: write the group's attribute ``dmlr`` in one atomic write, then remove the journal."""
    fs, root = _fs(url, storage_options)
    path = f"{root}/zarr.json"
    doc = json.loads(fs.cat_file(path))
    doc.setdefault("attributes", {})["dmlr"] = attrs
    data = json.dumps(doc, indent=2).encode()
    if is_local(url):
        from dmlr.data.writing import replace_file

        replace_file(path, data)
    else:
        fs.pipe_file(path, data)  # one PUT: an object appears whole or not at all
    _remove_journal(fs, root)


def _put(fs: Any, path: str, data: bytes) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def _remove_journal(fs: Any, root: str) -> None:
    if fs.exists(f"{root}/{JOURNAL}/journal.json"):
        fs.rm(f"{root}/{JOURNAL}/journal.json")
    if fs.exists(f"{root}/{JOURNAL}"):
        fs.rm(f"{root}/{JOURNAL}", recursive=True)


def recover(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Undo an unfinished append (see the module docstring).

    Returns
    -------
    str or None
        What was done (``"rolled back"``, ``"cleaned up"``), or None when there was no journal.
    """
    journal = journal_state(url, storage_options)
    if journal is None:
        return None
    fs, root = _fs(url, storage_options)
    if not journal:
        _remove_journal(fs, root)
        return "cleaned up"
    meta = json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {}).get("dmlr", {})
    committed = [v.get("id") for v in meta.get("versions") or []]
    if journal["new_version"] in committed:
        _remove_journal(fs, root)
        return "cleaned up"
    n = int(journal["old_rows"])
    for rel in journal["undo"]:
        if rel.endswith("/zarr.json"):
            name = rel.split("/")[0]
            grid = json.loads(fs.cat_file(f"{root}/{JOURNAL}/undo/{rel}"))["chunk_grid"]
            rows = int(grid["configuration"]["chunk_shape"][0])
            for path in _array_files(fs, root, name, -(-n // rows)) + _temporary_files(fs, root, name):
                if fs.exists(path):
                    fs.rm(path)
    for rel in journal["undo"]:
        _put(fs, f"{root}/{rel}", fs.cat_file(f"{root}/{JOURNAL}/undo/{rel}"))
    _remove_journal(fs, root)
    return "rolled back"


def _kind(dtype: Any) -> str:
    """A column type's family: ``"number"`` (integers, floats, booleans) or ``"text"`` (anything else)."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    return "number" if numeric and not isinstance(dtype, pd.CategoricalDtype) else "text"


def source_columns(table: Any) -> dict[str, str]:
    """What a store records of its source's columns: each column's type family (see ``_kind``)."""
    return {str(c): _kind(t) for c, t in table.dtypes.items()}


def check_columns(
    table: Any, store: Any, used: list[str], extra_columns: str, where: str
) -> None:  # fmt: skip
    """Refuse new files whose columns differ from the store's source: a missing column, an extra one (unless
    ``extra_columns="ignore"``), a column whose type family changed (number and text)."""
    from dmlr.errors import InputError

    recorded: dict[str, str] = dict(store.metadata.source.get("columns") or {})
    absent = [c for c in used if c not in table.columns]
    if absent:
        raise InputError(f"{where} lack the columns {absent} that {store.url} was staged with; the store is unchanged")
    extra = [str(c) for c in table.columns if recorded and str(c) not in recorded]
    if extra and extra_columns != "ignore":
        raise InputError(
            f"{where} have columns {extra} that the files staged into {store.url} did not have; pass "
            "extra_columns='ignore' (--extra-columns ignore) to leave them out. The store is unchanged"
        )
    for col in used:
        was, now = recorded.get(col), _kind(table[col].dtype)
        if was is not None and was != now:
            raise InputError(
                f"column {col!r} of {where} holds {now} ({table[col].dtype}) where the store's source held {was}; "
                "the store is unchanged"
            )


def append_store(
    store: Any,
    arrays: dict[str, da.Array],
    *,
    sources: list[str],
    class_counts: list[int],
    n_missing: int,
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> Any:
    """Append encoded rows to an opened store and commit them as its next version (the one writer of appends).

    Parameters
    ----------
    store : StoreData
        The store, opened (so at its committed version).
    arrays : dict of str to dask.array.Array
        The new rows of every array of the store, encoded as the store's.
    sources : list of str
        The files the rows came from (recorded in the version).
    class_counts : list of int
        New rows per class, in the store's class order.
    n_missing : int
        Source rows left out (missing values, unseen levels or classes dropped on request).
    storage_options : dict, optional
    progress : bool

    Returns
    -------
    StoreData
        The store at its new version.
    """
    from dmlr.data.store import open_store
    from dmlr.data.writing import new_version, now, run_with_progress, store_checksum

    url, meta = store.url, store.metadata
    m = int(next(iter(arrays.values())).shape[0])
    options = None if is_local(url) else storage_options
    recover(url, options)
    version = new_version(sources, meta.n_rows, meta.n_rows + m, "", now(), class_counts)
    try:
        append_rows(url, arrays, version["id"], options, lambda f: run_with_progress(f, progress))
        n_groups = meta.n_groups
        if "groups" in arrays:
            ids = da.from_zarr(url, component="groups", storage_options=options)
            n_groups = int(da.unique(ids).compute().size)
        version["checksum"] = store_checksum(url, options)
        earlier = meta.versions or [
            new_version(list(meta.source.get("paths", [])), 0, meta.n_rows, meta.checksum, meta.created,
                        meta.class_counts)
        ]  # fmt: skip
        source = {**meta.source, "paths": [*meta.source.get("paths", []), *sources], "sorted_by": None}
        done = meta.replace(
            n_rows=meta.n_rows + m,
            class_counts=[a + b for a, b in zip(meta.class_counts, class_counts, strict=True)],
            n_missing=meta.n_missing + n_missing,
            n_groups=n_groups,
            source=source,
            checksum=version["checksum"],
            versions=[*earlier, version],
        )
        commit_metadata(url, done.to_json(), options)
    except BaseException:
        recover(url, options)  # the store back at its previous version, byte for byte
        raise
    return open_store(url, storage_options=storage_options)


def append_table(
    sources: list[str],
    url: str,
    storage_options: dict[str, Any] | None,
    progress: bool,
    missing: str,
    unseen: str,
    extra_columns: str,
) -> StoreData:
    """``stage(..., append=True)``: the files encoded as the store's rows, checked, then appended (see
    :func:`dmlr.stage`)."""
    from dmlr.data.sources import read_table
    from dmlr.data.staging import Staging, _encoded_arrays, _scan
    from dmlr.data.store import open_store
    from dmlr.errors import InputError

    if unseen not in ("raise", "drop"):
        raise InputError(f"unseen must be 'raise' or 'drop', got {unseen!r}")
    if extra_columns not in ("raise", "ignore"):
        raise InputError(f"extra_columns must be 'raise' or 'ignore', got {extra_columns!r}")
    store = open_store(url, storage_options=storage_options)
    meta, encoding = store.metadata, store.encoding
    recorded = dict(meta.source.get("columns") or {})
    if meta.groups and recorded.get(meta.groups) != "number":
        raise InputError(
            f"{url} holds text cluster ids ({meta.groups!r}, stored as positions among the distinct ids) or was "
            "staged before appends existed; rows cannot be appended to it: stage all the files again"
        )
    table = read_table(sources, storage_options).frame
    request = Staging(
        sources, url, meta.target, list(encoding.columns), meta.weights, list(meta.offset or []), meta.chunk_rows,
        list(encoding.levels), False, storage_options, progress, store, {}, missing, meta.groups, False,
        meta.x_dtype,
    )  # fmt: skip
    check_columns(table, store, request.used, extra_columns, "the new files")
    table = table[request.used]
    raw_rows = table.map_partitions(len).sum()
    if missing == "drop":
        table = table.dropna(subset=request.used)
    scan = _scan(table, raw_rows, request)
    if unseen == "drop":
        table, scan = drop_unseen(table, raw_rows, scan, request)
    else:
        _unseen(scan, store, request.categorical, unseen)  # an error naming what the store lacks
    if int(sum(scan["lengths"])) == 0:
        raise InputError(f"the new files {sources} have no rows to append; the store is unchanged")
    classes = store.classes
    arrays, _ = _encoded_arrays(table, scan["lengths"], encoding, request, classes, scan["group_ids"])
    arrays["X"] = arrays["X"].astype(meta.x_dtype)
    counts = [int(scan["counts"].get(c, 0)) for c in classes.tolist()]
    n_missing = int(scan["raw_rows"]) - int(sum(scan["lengths"]))
    return append_store(
        store, arrays, sources=sources, class_counts=counts, n_missing=n_missing, storage_options=storage_options,
        progress=progress,
    )  # fmt: skip


def _unseen(
    scan: dict[str, Any], store: StoreData, categorical: list[str], unseen: str
) -> tuple[list[Any], dict[str, list[Any]]]:
    """The classes and categorical levels of the new rows (pass 1's ``scan``) that the store lacks; an error naming
    them unless ``unseen="drop"``."""
    import pandas as pd

    from dmlr.errors import InputError

    meta, levels = store.metadata, store.encoding.levels
    new_classes = sorted(set(scan["counts"].index.tolist()) - set(store.classes.tolist()), key=str)
    new_levels = {
        col: sorted(set(pd.Series(u).tolist()) - set(levels[col]), key=str)
        for col, u in zip(categorical, scan["uniques"], strict=True)
    }
    new_levels = {col: v for col, v in new_levels.items() if v}
    if (new_classes or new_levels) and unseen == "raise":
        what = ([f"the classes {new_classes} in {meta.target!r}"] if new_classes else []) + [
            f"the levels {v} of {col!r}" for col, v in new_levels.items()
        ]
        raise InputError(
            f"the new files have {'; '.join(what)}, which {store.url} does not have (a model of the store has no "
            "coefficients for them); pass unseen='drop' (--unseen drop) to leave those rows out. The store is "
            "unchanged"
        )
    return new_classes, new_levels


def drop_unseen(
    table: dd.DataFrame, raw_rows: Any, scan: dict[str, Any], request: Staging
) -> tuple[dd.DataFrame, dict[str, Any]]:
    """Rows with a class or level the reference store (``like``) lacks left out (counted with ``n_missing``)."""
    from dmlr.data.staging import _scan

    assert request.like is not None
    new_classes, new_levels = _unseen(scan, request.like, request.categorical, "drop")
    if not new_classes and not new_levels:
        return table, scan
    keep = ~table[request.target].isin(new_classes)
    for col, levels in new_levels.items():
        keep &= ~table[col].isin(levels)
    table = table[keep]
    return table, _scan(table, raw_rows, request)
