"""Zarr v3 stores: staging CSV/Parquet tables into them, and opening them as aligned row-chunked dask arrays.

Layout of a store (a Zarr group)::

    X        float64 (n, p)   chunked by rows only
    y        int32   (n,)     class positions in the sorted labels (``metadata["classes"]``)
    weights  float64 (n,)     optional frequency weights
    offset   float64 (n, m)   optional offsets
    attributes["dmlr"]        metadata: feature names, classes, class counts, encoding, source, checksum,
                              schema and dmlr versions, and ``complete: true`` written last

Integrity: every chunk ends with a crc32c checksum (the Zarr ``crc32c`` codec) that is verified on every read; a
failing chunk raises :class:`~dmlr.errors.StoreError` naming the array, the chunk and its rows. A local store is
written under a temporary sibling name and renamed into place when complete; on any store the completion flag is
the last thing written, so a staging run killed midway never leaves something that opens as complete.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import zarr
from dask.base import compute
from dask.delayed import delayed
from numpy.typing import NDArray
from zarr.codecs import BloscCodec, Crc32cCodec

from dmlr.data.blocks import check_weights
from dmlr.data.chunks import CheckedChunks
from dmlr.data.encoding import FeatureEncoding
from dmlr.data.labels import check_label_values
from dmlr.errors import InputError, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "StoreData",
    "expand_sources",
    "from_partitions",
    "is_local",
    "open_store",
    "read_table",
    "stage",
    "stage_arrays",
    "store_checksum",
]

SCHEMA_VERSION = 1
TARGET_CHUNK_BYTES = 32 * 2**20
"""Default size of one chunk of X as float64 (bytes): tens of MB, a good unit of work and of I/O (a float32 store's
chunks hold as many rows, half the bytes)."""


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def expand_sources(source: str | Sequence[str]) -> list[str]:
    """Files or globs (local) and URLs as a list of paths; a local pattern matching nothing is an InputError."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in map(str, items):
        if _is_local(item):
            found = sorted(glob.glob(_local_path(item)))
            if not found:
                raise InputError(f"no file matches {item!r}")
            paths += found
        else:
            paths.append(item)
    return paths


def read_table(paths: list[str], storage_options: dict[str, Any] | None) -> tuple[dd.DataFrame, str]:
    """The files as one dask DataFrame (CSV or Parquet, told by the first name) and the format's name.

    Raises
    ------
    InputError
        A Zarr store given as a source, an unknown format, an empty or unreadable file (named).
    """
    for path in paths:
        if _is_local(path) and os.path.exists(os.path.join(_local_path(path), "zarr.json")):
            raise InputError(
                f"{path} is a Zarr store, not a CSV/Parquet source (were the paths swapped? the store comes last: "
                "dmlr stage SOURCE... STORE)"
            )
    first = paths[0].lower()
    if _is_local(first):
        empty = [p for p in paths if os.path.isfile(_local_path(p)) and os.path.getsize(_local_path(p)) == 0]
        if empty:
            raise InputError(f"{empty[0]} is empty (0 bytes): no header, no rows")
    try:
        if first.endswith((".parquet", ".pq")) or (_is_local(first) and os.path.isdir(first)):
            return dd.read_parquet(paths, storage_options=storage_options), "parquet"
        if first.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            return dd.read_csv(paths, storage_options=storage_options, blocksize="64MB"), "csv"
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).splitlines()[-1]
        raise InputError(f"cannot read {paths[0]}{' and others' if len(paths) > 1 else ''}: {reason}") from None
    raise InputError(f"cannot tell the format of {paths[0]!r}: use .csv or .parquet files")


def is_local(url: str) -> bool:
    """Whether ``url`` is a path on this file system (not an fsspec URL of another protocol)."""
    return _is_local(url)


def _positions(values: NDArray[Any], classes: NDArray[Any], where: str) -> NDArray[np.int32]:
    check_label_values(values, where)
    index = pd.Index(classes)
    pos = index.get_indexer(values)
    if (pos < 0).any():
        raise InputError(f"{where} has label {values[int(np.argmax(pos < 0))]!r} that is not a class")
    return pos.astype(np.int32)


def _target_part(frame: pd.DataFrame, target: str, classes: NDArray[Any], where: str) -> NDArray[np.int32]:
    return _positions(frame[target].to_numpy(), classes, f"target column {target!r} in {where}")


def _numeric_part(frame: pd.DataFrame, columns: list[str], where: str) -> NDArray[np.float64]:
    return FeatureEncoding(tuple(columns)).transform(frame, where)


def _weights_part(frame: pd.DataFrame, column: str, where: str) -> NDArray[np.float64]:
    w = _numeric_part(frame, [column], where)[:, 0]
    check_weights(w, f"weights column {column!r} in {where}")
    return w


def from_partitions(
    table: dd.DataFrame,
    lengths: Sequence[int],
    func: Any,
    trailing: tuple[int, ...],
    dtype: Any,
    *args: Any,
    source: str = "source",
) -> da.Array:
    """Apply ``func(frame, *args, where)`` to every partition of ``table`` and stack the NumPy results by rows.

    Parameters
    ----------
    table : dask.dataframe.DataFrame
    lengths : sequence of int
        Rows of each partition (known, so the array has known chunks).
    func : callable
        Gets the partition's pandas DataFrame, ``args`` and a ``where`` string naming the partition for errors;
        returns an array of shape ``(rows, *trailing)``.
    trailing : tuple of int
        Shape of each row of the result.
    dtype : numpy dtype
    source : str
        How ``where`` names the table.
    """
    return da.concatenate(
        [
            da.from_delayed(
                delayed(func)(part, *args, f"{source} partition {i}"), shape=(int(k), *trailing), dtype=dtype
            )
            for i, (part, k) in enumerate(zip(table.to_delayed(), lengths, strict=True))
        ]
    )


COMPRESSION_MIN_SAVING = 0.10
"""Arrays are stored uncompressed unless Blosc-LZ4 with byte shuffle saves at least this fraction of a sample's
bytes (random float64 features save ~0%: compressing them only slows every read; class codes save ~70%)."""

CODEC_SAMPLE_BYTES = 8 * 2**20
"""Bytes of an array's first chunk that staging compresses to choose its codec."""


def choose_codec(sample: NDArray[Any]) -> tuple[str, float]:
    """The codec an array is stored with, by measurement on ``sample`` (its first rows).

    Returns
    -------
    name : {"none", "blosc-lz4-shuffle"}
    saving : float
        The fraction of the sample's bytes Blosc-LZ4 with byte shuffle saves.
    """
    from numcodecs import Blosc  # type: ignore[import-untyped]

    raw = np.ascontiguousarray(sample).tobytes()[:CODEC_SAMPLE_BYTES]
    if not raw:
        return "none", 0.0
    packed = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE, typesize=sample.dtype.itemsize).encode(raw)
    saving = 1.0 - len(packed) / len(raw)
    return ("blosc-lz4-shuffle" if saving >= COMPRESSION_MIN_SAVING else "none"), saving


def _create(group: zarr.Group, name: str, shape: tuple[int, ...], chunk_rows: int, dtype: Any, codec: str) -> Any:
    chunks = (min(chunk_rows, max(shape[0], 1)), *shape[1:])
    compressors: list[Any] = [Crc32cCodec()]
    if codec == "blosc-lz4-shuffle":
        compressors.insert(0, BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=compressors, fill_value=0)


def stage(
    source: str | Sequence[str],
    store: str,
    *,
    target: str,
    features: Sequence[str] | None = None,
    weights: str | None = None,
    offset: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    categorical: Sequence[str] | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    like: str | StoreData | None = None,
    reference: dict[str, Any] | None = None,
    missing: str = "raise",
    groups: str | None = None,
    sort_groups: bool = True,
    dtype: str = "float64",
    _recorded_source: dict[str, Any] | None = None,
) -> StoreData:
    """Stage CSV or Parquet files into a Zarr store, streaming: the table is never held in memory whole.

    Parameters
    ----------
    source : str or sequence of str
        Files or globs (all CSV or all Parquet), local or fsspec URLs.
    store : str
        Path or URL of the Zarr store to create.
    target : str
        Column holding the class labels.
    features : sequence of str, optional
        Feature columns, in design order; default every column except target, weights and offset.
    weights : str, optional
        Column of frequency weights.
    offset : sequence of str, optional
        ``K - 1`` columns of offsets (non-base classes in sorted label order).
    chunk_rows : int, optional
        Rows per chunk; default so that a chunk of X is about 32 MB.
    categorical : sequence of str, optional
        Columns to one-hot encode (drop-first, levels recorded).
    overwrite : bool
        Replace an existing complete store (only once the new one is complete).
    storage_options : dict, optional
        fsspec options for source and store (endpoint, credentials).
    progress : bool
        Show a progress bar on stderr.
    like : str or StoreData, optional
        A store to encode like (a held-out set for a fitted model): its classes and categorical levels are used
        instead of this source's, so the columns and label codes match; a label or level it lacks is an error.
    reference : dict of str to level, optional
        The reference (dropped) level of categorical columns; default each column's smallest level.
    missing : {"raise", "drop"}
        Rows with a missing value in a column the store takes (target, features, weights, offset): an error
        naming the column and the row, or left out (the count is ``metadata["n_missing"]``).
    groups : str, optional
        A column of cluster ids kept for cluster-robust standard errors (array ``groups``, int64: integer ids as
        they are, other ids as positions in their sorted distinct values). Staging a source sorted by it lets
        the cluster pass skip the exchange between partitions.
    sort_groups : bool
        With ``groups``: store the rows sorted by it (one shuffle of the used columns at staging, through a
        temporary Parquet copy next to the store), so every cluster-robust fit of the store needs one local pass
        and no exchange between workers. ``False`` keeps the source's order.
    dtype : {"float64", "float32"}
        Storage type of X. ``"float32"`` halves the bytes read per pass; the arithmetic stays float64, so a fit
        equals the float64 fit of the data rounded to single precision.

    Returns
    -------
    StoreData
        The new store, opened.

    Raises
    ------
    InputError
        Missing columns, missing labels or values, non-numeric undeclared columns, an existing store.
    """
    from dmlr.options import check_missing

    check_missing(missing)
    _check_dtype(dtype)
    url = str(store)
    if url.rstrip("/").lower().endswith((".csv", ".parquet", ".pq", ".csv.gz", ".tsv")):
        raise InputError(f"the store {url} has a table file's name (were the paths swapped? the store comes last)")
    paths = expand_sources(source)
    table, fmt = read_table(paths, storage_options)
    categorical = list(categorical or [])
    offset = list(offset or [])
    features = _feature_columns(table, target, features, weights, offset + ([groups] if groups else []), categorical)
    _check_target_free(url, overwrite, storage_options)
    levels_first = dict(reference or {})
    stray = sorted(set(levels_first) - set(categorical))
    if stray:
        raise InputError(f"reference levels are given for {stray}, which are not categorical columns {categorical}")
    used = list(
        dict.fromkeys([target, *features, *([weights] if weights else []), *offset, *([groups] if groups else [])])
    )
    if groups and sort_groups:
        return _stage_sorted(
            table, used, groups, {"format": fmt, "paths": paths, "sorted_by": groups}, store,
            dict(target=target, features=features, weights=weights, offset=offset or None, chunk_rows=chunk_rows,
                 categorical=categorical or None, overwrite=overwrite, storage_options=storage_options,
                 progress=progress, like=like, reference=reference, missing=missing, groups=groups, dtype=dtype),
        )  # fmt: skip
    raw = table
    if missing == "drop":
        table = table.dropna(subset=used)

    # Pass 1 over the source: partition lengths, labels and their counts, categorical levels, missing values.
    raw_rows, lengths, n_na, counts, *uniques = compute(
        raw.map_partitions(len).sum(),
        table.map_partitions(len),
        table[used].isna().sum(),
        table[target].value_counts(dropna=False),
        *[table[c].unique() for c in categorical],
        *([table[groups].unique()] if groups else []),  # the cluster ids: G values, in the same pass
    )
    group_ids = uniques.pop() if groups else None
    if int(n_na.sum()) > 0:
        _raise_first_missing(table, used, n_na, [int(n) for n in lengths])
    like_store = (
        like if isinstance(like, StoreData) or like is None else open_store(like, storage_options=storage_options)
    )
    classes = _classes(counts, target, like_store)
    encoding = _encoding(features, categorical, uniques, like_store, levels_first)
    m = classes.size - 1
    if offset and len(offset) != m:
        raise InputError(f"offset needs K - 1 = {m} columns (one per non-base class); got {len(offset)}")

    lengths = [int(n) for n in lengths]
    n, p = int(sum(lengths)), encoding.n_features
    if n == 0:
        raise InputError("the source has 0 rows")
    rows = chunk_rows or _default_chunk_rows(p)

    arrays, n_groups = _encoded_arrays(table, lengths, encoding, target, classes, weights, offset, groups, group_ids)
    arrays["X"] = arrays["X"].astype(dtype)
    metadata = {
        "n_rows": n,
        "feature_names": encoding.feature_names,
        "classes": classes.tolist(),
        "class_counts": [int(counts.get(c, 0)) for c in classes.tolist()],
        "target": target,
        "weights": weights,
        "offset": offset or None,
        "encoding": encoding.to_json(),
        "source": _recorded_source or {"format": fmt, "paths": paths, "sorted_by": None},
        "chunk_rows": rows,
        "n_missing": int(raw_rows) - n,
        "x_dtype": dtype,
        "groups": groups,
        "n_groups": n_groups,
    }
    return _write_store(url, arrays, metadata, storage_options, progress)


def _encoded_arrays(
    table: dd.DataFrame,
    lengths: list[int],
    encoding: FeatureEncoding,
    target: str,
    classes: NDArray[Any],
    weights: str | None,
    offset: list[str],
    groups: str | None,
    group_ids: Any = None,
) -> tuple[dict[str, da.Array], int | None]:
    """Pass 2's arrays: the table encoded partition by partition (X, y, weights, offset, groups; they share the
    partitions' read tasks, so each source partition is read once), and the number of clusters."""
    arrays: dict[str, da.Array] = {
        "X": from_partitions(table, lengths, encoding.transform, (encoding.n_features,), np.float64),
        "y": from_partitions(table, lengths, _target_part, (), np.int32, target, classes),
    }
    if weights:
        arrays["weights"] = from_partitions(table, lengths, _weights_part, (), np.float64, weights)
    if offset:
        arrays["offset"] = from_partitions(table, lengths, _numeric_part, (len(offset),), np.float64, offset)
    n_groups = None
    if groups:
        distinct = pd.Series(group_ids).dropna()  # found by pass 1
        text = not pd.api.types.is_integer_dtype(table[groups].dtype)
        ids = np.asarray(sorted(distinct.tolist()), dtype=object) if text else None
        arrays["groups"] = from_partitions(table, lengths, _groups_part, (), np.int64, groups, ids)
        n_groups = len(distinct)
    return arrays, n_groups


def _first_missing(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """The first row of one partition with a missing value and its first such column (no row: -1)."""
    bad = frame[used].isna()
    rows = bad.any(axis=1).to_numpy()
    if not rows.any():
        return pd.DataFrame({"row": [-1], "column": [""]})
    row = int(np.argmax(rows))
    return pd.DataFrame({"row": [row], "column": [str(bad.columns[int(np.argmax(bad.iloc[row].to_numpy()))])]})


def _stage_sorted(
    table: dd.DataFrame, used: list[str], groups: str, source: dict[str, Any], store: str, options: dict[str, Any]
) -> StoreData:
    """Stage ``table`` sorted by its groups column: the used columns are sorted once (a dask shuffle) into a
    temporary Parquet copy next to the store, which is then staged in order and removed."""
    url = str(store).rstrip("/")
    tmp = f"{_temporary_name(url) if _is_local(url) else url + '.sorting'}.parquet"
    so = options["storage_options"]
    try:
        table[used].sort_values(groups).to_parquet(tmp, write_index=False, storage_options=so)
        return stage(tmp, store, sort_groups=False, _recorded_source=source, **options)
    finally:
        fs, root = fsspec.core.url_to_fs(tmp, **(so or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)


def _default_chunk_rows(p: int) -> int:
    """Rows per chunk of :data:`TARGET_CHUNK_BYTES` of X as float64, whatever its storage type: a float32 chunk is
    widened for the arithmetic, so its rows, not its stored bytes, set a worker's memory."""
    return max(1, TARGET_CHUNK_BYTES // (8 * max(p, 1)))


def _check_dtype(dtype: str) -> None:
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be 'float64' or 'float32' (the storage type of X), got {dtype!r}")


def _groups_part(frame: pd.DataFrame, column: str, ids: NDArray[Any] | None, where: str) -> NDArray[np.int64]:
    values = frame[column]
    if values.isna().any():
        raise InputError(
            f"groups column {column!r} has a missing cluster id at row {int(np.argmax(values.isna()))} of {where}"
        )
    if ids is None:
        return values.to_numpy(dtype=np.int64)
    return np.searchsorted(ids, values.astype(object).to_numpy()).astype(np.int64)


def _raise_first_missing(table: dd.DataFrame, used: list[str], n_na: pd.Series, lengths: list[int]) -> None:
    """Name the first missing value of the source: its column and data row (a second pass, on the error path)."""
    meta = pd.DataFrame({"row": pd.Series(dtype=np.int64), "column": pd.Series(dtype=object)})
    firsts = table.map_partitions(_first_missing, used, meta=meta).compute()
    part = int(np.argmax(firsts["row"].to_numpy() >= 0))
    row = int(sum(lengths[:part]) + firsts["row"].iloc[part])
    columns = {str(c): int(v) for c, v in n_na.items() if v}
    raise InputError(
        f"column {firsts['column'].iloc[part]!r} has a missing value at row {row} (data row, header excluded); "
        f"missing values per column: {columns}. Fill them, or stage with --missing drop (missing='drop') to leave "
        "such rows out"
    )


def _feature_columns(
    table: dd.DataFrame,
    target: str,
    features: Sequence[str] | None,
    weights: str | None,
    offset: list[str],
    categorical: list[str],
) -> list[str]:
    """The feature columns in design order, after checking every named column exists and is usable."""
    special = [target] + ([weights] if weights else []) + offset
    missing = [c for c in special + categorical + list(features or []) if c not in table.columns]
    if missing:
        raise InputError(f"columns {missing} are not in the source (it has {list(table.columns)})")
    chosen = [c for c in table.columns if c not in special] if features is None else list(features)
    undeclared = [
        c
        for c in chosen
        if c not in categorical
        and not (pd.api.types.is_numeric_dtype(table[c].dtype) or pd.api.types.is_bool_dtype(table[c].dtype))
    ]
    if undeclared and int(table.partitions[0].map_partitions(len).compute().sum()) == 0:
        raise InputError("the source has 0 rows (a header only?): nothing to stage")
    if undeclared:
        raise InputError(
            f"feature columns {undeclared} are not numeric: declare them categorical (--categorical) "
            "or leave them out of the features"
        )
    stray = [c for c in categorical if c not in chosen]
    if stray:
        raise InputError(f"categorical columns {stray} are not among the features {chosen}")
    return chosen


def _classes(counts: pd.Series, target: str, reference: StoreData | None) -> NDArray[Any]:
    """The sorted class labels from pass 1's counts (the reference store's when staging like it)."""
    labels = np.asarray(counts.index.to_numpy())
    check_label_values(labels, f"target column {target!r}")
    classes = np.asarray(sorted(labels.tolist()))
    if reference is not None:
        unknown = sorted(set(classes.tolist()) - set(reference.classes.tolist()))
        if unknown:
            raise InputError(f"target column {target!r} has labels {unknown} that {reference.url} does not have")
        classes = reference.classes
    if classes.size < 2:
        raise InputError(f"target column {target!r} has a single class ({classes.tolist()!r})")
    return classes


def _encoding(
    features: list[str],
    categorical: list[str],
    uniques: list[Any],
    reference: StoreData | None,
    first: dict[str, Any],
) -> FeatureEncoding:
    """The columns' encoding from pass 1's categorical levels (the reference store's when staging like it);
    ``first`` names a column's reference level (default the smallest)."""
    levels: dict[str, list[Any]] = {}
    for col, values in zip(categorical, uniques, strict=True):
        vals = pd.Series(values)
        if vals.isna().any():
            raise InputError(f"categorical column {col!r} has missing values")
        levels[col] = sorted(vals.tolist())
        if col in first:
            match = [v for v in levels[col] if str(v) == str(first[col])]
            if not match:
                raise InputError(f"reference level {first[col]!r} of {col!r} is not one of its levels {levels[col]}")
            levels[col] = [match[0]] + [v for v in levels[col] if v != match[0]]
    encoding = FeatureEncoding(tuple(features), levels)
    if reference is None:
        return encoding
    if encoding.columns != reference.encoding.columns or set(levels) != set(reference.encoding.levels):
        raise InputError(
            f"features {list(encoding.columns)} (categorical {sorted(levels)}) differ from those of "
            f"{reference.url}: {list(reference.encoding.columns)} (categorical {sorted(reference.encoding.levels)})"
        )
    for col, lv in levels.items():
        unseen = sorted(set(lv) - set(reference.encoding.levels[col]))
        if unseen:
            raise InputError(f"categorical column {col!r} has levels {unseen} that {reference.url} does not have")
    return reference.encoding


def _write_store(
    url: str,
    arrays: dict[str, da.Array],
    metadata: dict[str, Any],
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> StoreData:
    """Write the arrays (regular row chunks of ``metadata["chunk_rows"]``), then the metadata and completion flag.

    A local store is written under a temporary sibling name and renamed into place once complete.
    """
    local = _is_local(url)
    write_url = _temporary_name(url) if local else url
    group = zarr.open_group(write_url, mode="w", storage_options=None if local else storage_options)
    rows = int(metadata["chunk_rows"])
    codecs: dict[str, dict[str, Any]] = {}
    try:
        # each array's first chunk chooses its codec; one compute, so the source's first partition is read once
        samples = compute(*(arr[: min(arr.shape[0], rows)] for arr in arrays.values()))
        targets: list[Any] = []
        sources = []
        for (name, arr), sample in zip(arrays.items(), samples, strict=True):
            codec, saving = choose_codec(np.asarray(sample))
            codecs[name] = {"codec": codec, "lz4_saving": round(saving, 4)}
            z = _create(group, name, arr.shape, rows, arr.dtype, codec)
            sources.append(arr.rechunk(z.chunks))
            targets.append(z)
        _run_with_progress(lambda: da.store(sources, targets, lock=False), progress)
    except BaseException:
        if local:
            _remove_tree(_local_path(write_url))
        raise
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "dmlr_version": _version(),
        **metadata,
        "codecs": codecs,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "checksum": store_checksum(write_url, None if local else storage_options),
        "complete": True,
    }
    group.attrs["dmlr"] = metadata  # the completion flag: written last
    if local:
        _move_into_place(_local_path(write_url), _local_path(url))
    return open_store(url, storage_options=storage_options)


def stage_arrays(
    X: Any,
    y: Any,
    store: str,
    *,
    feature_names: Sequence[str] | None = None,
    weights: Any = None,
    offset: Any = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    source: str = "arrays",
    progress: bool = False,
    groups: Any = None,
    dtype: str = "float64",
) -> StoreData:
    """Stage arrays (NumPy or dask, possibly larger than memory) into a Zarr store.

    Parameters
    ----------
    X : array-like or dask.array.Array, shape (n, p)
    y : array-like or dask.array.Array, shape (n,)
        Class labels (any sortable dtype); a dask ``y`` costs one extra pass to find the classes.
    store : str
        Path or URL of the store to create.
    feature_names : sequence of str, optional
    weights : array-like, shape (n,), optional
    offset : array-like, shape (n, K - 1), optional
    chunk_rows : int, optional
        Rows per chunk; default about 32 MB of X per chunk.
    overwrite : bool
    storage_options : dict, optional
    source : str
        Description recorded in the metadata.
    progress : bool
    groups : array-like of int, shape (n,), optional
        Integer cluster ids, stored as the ``groups`` array (for ``cov_type="cluster"``).
    dtype : {"float64", "float32"}
        Storage type of X (see :func:`stage`).

    Returns
    -------
    StoreData
    """
    from dmlr.data.design import as_feature_array

    url = str(store)
    _check_dtype(dtype)
    _check_target_free(url, overwrite, storage_options)
    x, names = as_feature_array(X)
    n, p = x.shape
    names = list(feature_names) if feature_names is not None else names or [f"x{j + 1}" for j in range(p)]
    if len(names) != p:
        raise InputError(f"feature_names has {len(names)} names but X has {p} columns")
    y_arr = y if isinstance(y, da.Array) else da.from_array(np.asarray(y), chunks=(x.chunks[0],))
    if y_arr.shape != (n,):
        raise InputError(f"y must have shape ({n},); got {y_arr.shape}")
    labels, counts = compute(*da.unique(y_arr, return_counts=True))
    check_label_values(np.asarray(labels))
    classes = np.asarray(labels)
    if classes.size < 2:
        raise InputError(f"y has a single class ({classes.tolist()!r})")
    arrays: dict[str, da.Array] = {
        "X": x.astype(dtype),
        "y": da.map_blocks(_positions, y_arr, classes, "y", dtype=np.int32),
    }
    if weights is not None:
        arrays["weights"] = da.asarray(weights).astype(np.float64)
    if offset is not None:
        arrays["offset"] = da.asarray(offset).astype(np.float64)
    if groups is not None:
        g = da.asarray(groups)
        if g.shape != (n,) or g.dtype.kind not in "iu":
            raise InputError(f"groups must be integer cluster ids of shape ({n},); got {g.dtype} {g.shape}")
        arrays["groups"] = g.astype(np.int64)
    metadata = {
        "n_rows": int(n),
        "feature_names": names,
        "classes": classes.tolist(),
        "class_counts": [int(c) for c in counts],
        "target": "y",
        "weights": "weights" if weights is not None else None,
        "offset": [f"offset{k + 1}" for k in range(classes.size - 1)] if offset is not None else None,
        "encoding": FeatureEncoding(tuple(names)).to_json(),
        "source": {"format": source, "paths": []},
        "chunk_rows": chunk_rows or _default_chunk_rows(p),
        "groups": "groups" if groups is not None else None,
        "x_dtype": dtype,
    }
    return _write_store(url, arrays, metadata, storage_options, progress)


def _version() -> str:
    from dmlr import __version__

    return __version__


def _temporary_name(url: str) -> str:
    path = _local_path(url).rstrip("/")
    return f"{path}.partial-{uuid.uuid4().hex[:8]}"


def _check_target_free(url: str, overwrite: bool, storage_options: dict[str, Any] | None) -> None:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(root) and not overwrite:
        raise InputError(f"{url} already exists; pass overwrite=True (--overwrite) to replace it")


def _remove_tree(path: str, settle: float = 0.2, attempts: int = 25) -> None:
    """Remove a partly written store; tasks still running when a write failed may recreate files for a moment."""
    import time

    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle)
        if not os.path.exists(path):
            return


def _move_into_place(tmp: str, final: str) -> None:
    old = None
    if os.path.exists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run_with_progress(func: Any, progress: bool) -> None:
    if not progress:
        func()
        return
    try:
        from distributed import default_client

        default_client()
        on_cluster = True
    except (ImportError, ValueError):
        on_cluster = False
    if on_cluster:
        func()  # distributed shows progress on its dashboard
        return
    import sys

    from dask.diagnostics.progress import ProgressBar

    with ProgressBar(out=sys.stderr):
        func()


def store_checksum(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """SHA-256 over every array's metadata and the crc32c of every chunk (the chunk files' last 4 bytes).

    Reads 4 bytes per chunk, so it is cheap on any store size. It identifies the content as written: any chunk
    rewritten with other data or any layout change alters it. Corruption of bytes inside a chunk (which leaves the
    stored crc32c alone) is caught instead by the crc32c check on every read.
    """
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    digest = hashlib.sha256()
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].lstrip("/")
        if rel == "zarr.json":
            continue  # the group's attributes hold the checksum itself
        digest.update(rel.encode())
        if rel.endswith("zarr.json"):
            digest.update(fs.cat_file(path))
        else:
            digest.update(fs.cat_file(path, start=-4))
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreData:
    """An opened store.

    Attributes
    ----------
    url : str
    X : dask.array.Array, shape (n, p)
    y : dask.array.Array, shape (n,)
        Positions of the labels in :attr:`classes`.
    weights : dask.array.Array, shape (n,), optional
    offset : dask.array.Array, shape (n, m), optional
    metadata : dict
        The ``dmlr`` attributes of the store.
    groups : dask.array.Array, shape (n,), optional
        Cluster ids (int64: the column's integers, or positions in its sorted distinct values) when staged with
        ``groups=``.
    """

    url: str
    X: da.Array
    y: da.Array
    weights: da.Array | None
    offset: da.Array | None
    metadata: dict[str, Any]
    groups: da.Array | None = None

    @property
    def classes(self) -> NDArray[Any]:
        """Class labels in code order (sorted), shape (K,)."""
        return np.asarray(self.metadata["classes"])

    @property
    def feature_names(self) -> list[str]:
        """Names of the ``p`` columns of X."""
        return list(self.metadata["feature_names"])

    @property
    def encoding(self) -> FeatureEncoding:
        """How source columns map to X (for encoding new data at prediction)."""
        return FeatureEncoding.from_json(self.metadata["encoding"])

    @property
    def checksum(self) -> str:
        """The checksum recorded at staging."""
        return str(self.metadata["checksum"])

    def describe(self) -> str:
        """Shape, classes and their counts, chunking (what ``dmlr info`` prints)."""
        meta = self.metadata
        lines = [
            f"store:      {self.url}",
            f"rows:       {meta['n_rows']:,}",
            f"features:   {len(self.feature_names)} ({', '.join(self.feature_names[:8])}"
            + (", ..." if len(self.feature_names) > 8 else "")
            + ")",
            f"chunks:     {len(self.X.chunks[0])} of up to {meta['chunk_rows']:,} rows "
            f"({meta['chunk_rows'] * max(len(self.feature_names), 1) * self.X.dtype.itemsize / 2**20:.1f} "
            "MiB of X each)",
            f"X size:     {self.X.nbytes / 2**30:.3f} GiB ({self.X.dtype}, in memory)",
            "codecs:     " + _describe_codecs(meta.get("codecs")),
            f"target:     {meta['target']}",
            "classes:    "
            + ", ".join(f"{c} ({k:,})" for c, k in zip(meta["classes"], meta["class_counts"], strict=True)),
            f"weights:    {meta['weights'] or '-'}",
            f"offset:     {', '.join(meta['offset']) if meta['offset'] else '-'}",
            f"source:     {meta['source']['format']}, {len(meta['source']['paths'])} file(s)",
            f"checksum:   {meta['checksum']}",
            f"staged:     {meta['created']} by dmlr {meta['dmlr_version']} (schema {meta['schema_version']})",
        ]
        return "\n".join(lines)


def _describe_codecs(codecs: dict[str, dict[str, Any]] | None) -> str:
    if not codecs:
        return "zstd level 1 (staged before codecs were chosen by measurement)"
    return ", ".join(f"{name} {c['codec']} (lz4 saves {100 * c['lz4_saving']:.0f}%)" for name, c in codecs.items())


def open_store(store: str | StoreData, *, storage_options: dict[str, Any] | None = None) -> StoreData:
    """Open a complete store as aligned row-chunked dask arrays (one chunk of the store = one partition).

    Parameters
    ----------
    store : str
        Path or fsspec URL.
    storage_options : dict, optional
        fsspec options (endpoint, credentials).

    Raises
    ------
    StoreError
        No store there, a store whose staging did not complete, or one of another schema version.
    """
    if isinstance(store, StoreData):
        return store
    url = str(store)
    options = None if _is_local(url) else storage_options
    try:
        group = zarr.open_group(url, mode="r", storage_options=options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as exc:
        hint = ""
        if _is_local(url):
            partial = glob.glob(_local_path(url).rstrip("/") + ".partial-*")
            if partial:
                hint = (
                    f"; {partial[0]} is left from a staging run that did not finish: stage again "
                    "(and remove the partial directory)"
                )
            elif os.path.isfile(_local_path(url)):
                hint = (
                    f": {url} is a file; fits and predictions of tables read a staged store: "
                    f"dmlr stage {url} STORE.zarr --target LABEL_COLUMN, then use STORE.zarr"
                )
            elif not os.path.exists(_local_path(url)):
                hint = f" ({url} does not exist)"
        raise StoreError(f"no dmlr store at {url}{hint}") from exc
    raw: Any = group.attrs.get("dmlr")
    meta: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    if not meta.get("complete"):
        raise StoreError(
            f"{url} is not a complete dmlr store (its staging did not finish, or it was not made by dmlr); "
            "stage it again"
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{url} has store schema {meta.get('schema_version')}, this dmlr reads {SCHEMA_VERSION}")
    token = str(meta["checksum"])[:16]

    def lazy(name: str) -> da.Array | None:
        if name not in group:
            return None
        z = group[name]
        assert isinstance(z, zarr.Array)
        return da.from_array(CheckedChunks(z, name, url), chunks=z.chunks, name=f"dmlr-store-{name}-{token}")

    x, y = lazy("X"), lazy("y")
    if x is None or y is None:
        raise StoreError(f"{url} lacks the X or y array")
    return StoreData(url, x, y, lazy("weights"), lazy("offset"), meta, lazy("groups"))
