"""Staging CSV or Parquet tables into a Zarr store, streaming: the table is never held in memory whole.

Two passes over the source: the first learns the partitions' lengths, the labels and their counts, the categorical
levels, the cluster ids and any missing value; the second encodes each partition (features, one-hot categoricals,
label positions, weights, offset, cluster ids) and writes the chunks (:func:`dmlr.data.writing.write_store`). With
``groups`` and ``sort_groups`` the used columns are first sorted by the groups column into a temporary Parquet copy,
which is then staged in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
from dask.base import compute
from numpy.typing import NDArray

from dmlr.data.appending import source_columns
from dmlr.data.encoding import FeatureEncoding
from dmlr.data.labels import check_class_count, check_label_values, label_positions
from dmlr.data.metadata import StoreMetadata
from dmlr.data.missing import missing_before_sorting, raise_first_missing
from dmlr.data.sources import expand_sources, from_partitions, is_local, read_table
from dmlr.data.store import StoreData, open_store
from dmlr.data.writing import check_target_free, temporary_name, write_store
from dmlr.errors import InputError, WideDesignWarning, warn
from dmlr.oracle.checks import check_weights

__all__ = ["TARGET_CHUNK_BYTES", "check_dtype", "default_chunk_rows", "stage"]

TARGET_CHUNK_BYTES = 32 * 2**20
"""Default size of one chunk of X as float64 (bytes): tens of MB, a good unit of work and of I/O (a float32 store's
chunks hold as many rows, half the bytes)."""


@dataclass(frozen=True)
class Staging:
    """Everything one staging run was asked (see :func:`stage`), validated."""

    sources: list[str]
    store: str
    target: str
    features: list[str] | None
    weights: str | None
    offset: list[str]
    chunk_rows: int | None
    categorical: list[str]
    overwrite: bool
    storage_options: dict[str, Any] | None
    progress: bool
    like: StoreData | None
    reference: dict[str, Any]
    missing: str
    groups: str | None
    sort_groups: bool
    dtype: str
    recorded_source: dict[str, Any] | None = None
    max_classes: int | None = None
    files: tuple[str, ...] = ()
    """The file of each partition of the table read (named in messages about a row)."""
    n_dropped: int = 0
    """Rows left out for a missing value before the table was sorted by its groups."""
    unseen: str = "raise"
    """With ``like`` (or an append): rows with a level or class the reference store lacks: an error or dropped."""

    @property
    def used(self) -> list[str]:
        """Every column the store takes, once each (the features once the table's are known)."""
        extra = [*([self.weights] if self.weights else []), *self.offset, *([self.groups] if self.groups else [])]
        return list(dict.fromkeys([self.target, *(self.features or []), *extra]))


def stage(
    source: str | Sequence[str],
    store: str,
    *,
    target: str | None = None,
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
    max_classes: int | None = None,
    append: bool = False,
    unseen: str = "raise",
    extra_columns: str = "raise",
) -> StoreData:
    """Stage CSV or Parquet files into a Zarr store, streaming: the table is never held in memory whole.

    Parameters
    ----------
    source : str or sequence of str
        Files or globs (all CSV or all Parquet), local or fsspec URLs.
    store : str
        Path or URL of the Zarr store to create.
    target : str
        Column holding the class labels (required, except with ``append``: the store's).
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
        naming the column and the row, or left out (the count is ``metadata.n_missing``).
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
    max_classes : int, optional
        Most classes the target may have (default 100; a float target with non-integral values, a continuous
        column, is always refused). The message names the count.
    append : bool
        Add the files' rows to the existing store ``store`` as its next version, encoded with its recorded encoding
        (its target, features, categorical levels, weights, offset and groups columns; the options that would
        change them are not taken). A new level, a new class, a missing or extra column or a column whose type
        changed between numbers and text stops the append, naming it, with the store unchanged; an append
        interrupted at any point leaves the store at its previous version (:mod:`dmlr.data.appending`). Rows keep
        the files' order (a store sorted by its groups is no longer sorted after an append).
    unseen : {"raise", "drop"}
        With ``append`` or ``like``: rows with a categorical level or a class the (reference) store does not have
        are an error (naming them), or left out (counted in ``metadata.n_missing``).
    extra_columns : {"raise", "ignore"}
        With ``append``: columns of the new files that the store's source did not have.

    Returns
    -------
    StoreData
        The new store (with ``append``, the store at its new version), opened.

    Raises
    ------
    InputError
        Missing columns, missing labels or values, non-numeric undeclared columns, an existing store.
    """
    from dmlr.options import check_missing

    check_missing(missing)
    check_dtype(dtype)
    url = str(store)
    if append:
        from dmlr.data.appending import append_table

        return append_table(expand_sources(source), url, storage_options, progress, missing, unseen, extra_columns)
    if target is None:
        raise InputError("stage needs target= (--target): the column holding the class labels")
    if url.rstrip("/").lower().endswith((".csv", ".parquet", ".pq", ".csv.gz", ".tsv")):
        raise InputError(f"the store {url} has a table file's name (were the paths swapped? the store comes last)")
    like_store = (
        like if isinstance(like, StoreData) or like is None else open_store(like, storage_options=storage_options)
    )
    request = Staging(
        expand_sources(source), url, target, None if features is None else list(features), weights, list(offset or []),
        chunk_rows, list(categorical or []), overwrite, storage_options, progress, like_store, dict(reference or {}),
        missing, groups, sort_groups, dtype, max_classes=max_classes, unseen=unseen,
    )  # fmt: skip
    return _stage(request)


def _stage(request: Staging) -> StoreData:
    table, fmt, files = read_table(request.sources, request.storage_options)
    request = dataclasses.replace(request, files=tuple(files))
    offsets_and_groups = request.offset + ([request.groups] if request.groups else [])
    features = _feature_columns(
        table, request.target, request.features, request.weights, offsets_and_groups, request.categorical
    )
    request = dataclasses.replace(request, features=features)
    check_target_free(request.store, request.overwrite, request.storage_options)
    stray = sorted(set(request.reference) - set(request.categorical))
    if stray:
        raise InputError(
            f"reference levels are given for {stray}, which are not categorical columns {request.categorical}"
        )
    if request.groups and request.sort_groups:
        recorded = {"format": fmt, "paths": request.sources, "sorted_by": request.groups}
        table, dropped = missing_before_sorting(table, request.used, request.missing, request.files)
        return _stage_sorted(
            table, dataclasses.replace(request, n_dropped=dropped), recorded | {"columns": source_columns(table)}
        )
    raw_rows = table.map_partitions(len).sum()
    if request.missing == "drop":
        table = table.dropna(subset=request.used)
    scan = _scan(table, raw_rows, request)
    if request.like is not None and request.unseen == "drop":
        from dmlr.data.appending import drop_unseen

        table, scan = drop_unseen(table, raw_rows, scan, request)
    classes = _classes(scan["counts"], request.target, request.like, request.max_classes)
    encoding = _encoding(features, request.categorical, scan["uniques"], request.like, request.reference)
    m = classes.size - 1
    if request.offset and len(request.offset) != m:
        raise InputError(f"offset needs K - 1 = {m} columns (one per non-base class); got {len(request.offset)}")
    lengths = scan["lengths"]
    n, p = int(sum(lengths)), encoding.n_features
    if n == 0:
        raise InputError("the source has 0 rows")
    _warn_wide_categoricals(encoding, n, request.dtype)
    arrays, n_groups = _encoded_arrays(table, lengths, encoding, request, classes, scan["group_ids"])
    arrays["X"] = arrays["X"].astype(request.dtype)
    metadata = StoreMetadata(
        n_rows=n, feature_names=encoding.feature_names, classes=classes.tolist(),
        class_counts=[int(scan["counts"].get(c, 0)) for c in classes.tolist()], target=request.target,
        weights=request.weights, offset=request.offset or None, encoding=encoding.to_json(),
        source=request.recorded_source or {"format": fmt, "paths": request.sources, "sorted_by": None}
        | {"columns": (request.recorded_source or {}).get("columns") or source_columns(table)},
        chunk_rows=request.chunk_rows or default_chunk_rows(p), n_missing=int(scan["raw_rows"]) - n + request.n_dropped,
        x_dtype=request.dtype, groups=request.groups, n_groups=n_groups,
    )  # fmt: skip
    write_store(request.store, arrays, metadata, request.storage_options, request.progress)
    return open_store(request.store, storage_options=request.storage_options)


def _scan(table: dd.DataFrame, raw_rows: Any, request: Staging) -> dict[str, Any]:
    """Pass 1 over the source: partition lengths, labels and their counts, categorical levels, cluster ids, and the
    missing values (named: an error unless dropped)."""
    used, groups = request.used, request.groups
    total, lengths, n_na, counts, *uniques = compute(
        raw_rows,
        table.map_partitions(len),
        table[used].isna().sum(),
        table[request.target].value_counts(dropna=False),
        *[table[c].unique(split_out=1) for c in request.categorical],  # levels are few: no shuffle
        *([table[groups].unique()] if groups else []),  # the cluster ids: G values, in the same pass
    )
    group_ids = uniques.pop() if groups else None
    lengths = [int(k) for k in lengths]
    if int(n_na.sum()) > 0:
        raise_first_missing(table, used, n_na, lengths, request.files)
    return {"raw_rows": total, "lengths": lengths, "counts": counts, "uniques": uniques, "group_ids": group_ids}


def _stage_sorted(table: dd.DataFrame, request: Staging, source: dict[str, Any]) -> StoreData:
    """Stage ``table`` sorted by its groups column: the used columns are sorted once (a dask shuffle) into a
    temporary Parquet copy next to the store, which is then staged in order and removed."""
    url = request.store.rstrip("/")
    assert request.groups is not None
    tmp = f"{temporary_name(url) if is_local(url) else url + '.sorting'}.parquet"
    so = request.storage_options
    try:
        table[request.used].sort_values(request.groups).to_parquet(tmp, write_index=False, storage_options=so)
        return _stage(dataclasses.replace(request, sources=[tmp], sort_groups=False, recorded_source=source))
    finally:
        fs, root = fsspec.core.url_to_fs(tmp, **(so or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)


def default_chunk_rows(p: int) -> int:
    """Rows per chunk of :data:`TARGET_CHUNK_BYTES` of X as float64, whatever its storage type: a float32 chunk is
    widened for the arithmetic, so its rows, not its stored bytes, set a worker's memory."""
    return max(1, TARGET_CHUNK_BYTES // (8 * max(p, 1)))


def check_dtype(dtype: str) -> None:
    """Refuse a storage type of X other than float64 and float32."""
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be 'float64' or 'float32' (the storage type of X), got {dtype!r}")


def integral(values: NDArray[Any]) -> NDArray[Any]:
    """Float values that are all whole numbers as int64 (CSV integer columns are read as floats, so that one with a
    missing value in a later file reads alike: labels, levels and cluster ids are integers again); others as they
    are."""
    if values.dtype.kind == "f" and values.size and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


def _target_part(frame: pd.DataFrame, target: str, classes: NDArray[Any], where: str) -> NDArray[np.int32]:
    return label_positions(frame[target].to_numpy(), classes, f"target column {target!r} in {where}")


def _numeric_part(frame: pd.DataFrame, columns: list[str], where: str) -> NDArray[np.float64]:
    return FeatureEncoding(tuple(columns)).transform(frame, where)


def _weights_part(frame: pd.DataFrame, column: str, where: str) -> NDArray[np.float64]:
    w = _numeric_part(frame, [column], where)[:, 0]
    check_weights(w, f"weights column {column!r} in {where}")
    return w


def _encoded_arrays(
    table: dd.DataFrame,
    lengths: list[int],
    encoding: FeatureEncoding,
    request: Staging,
    classes: NDArray[Any],
    group_ids: Any = None,
) -> tuple[dict[str, da.Array], int | None]:
    """Pass 2's arrays: the table encoded partition by partition (X, y, weights, offset, groups; they share the
    partitions' read tasks, so each source partition is read once), and the number of clusters."""
    target, weights, offset, groups = request.target, request.weights, request.offset, request.groups
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
        text = integral(distinct.to_numpy()).dtype.kind not in "iu"
        ids = np.asarray(sorted(distinct.tolist()), dtype=object) if text else None
        arrays["groups"] = from_partitions(table, lengths, _groups_part, (), np.int64, groups, ids)
        n_groups = len(distinct)
    return arrays, n_groups


def _groups_part(frame: pd.DataFrame, column: str, ids: NDArray[Any] | None, where: str) -> NDArray[np.int64]:
    values = frame[column]
    if values.isna().any():
        raise InputError(
            f"groups column {column!r} has a missing cluster id at row {int(np.argmax(values.isna()))} of {where}"
        )
    if ids is None:
        return values.to_numpy(dtype=np.int64)
    return np.searchsorted(ids, values.astype(object).to_numpy()).astype(np.int64)


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


WIDE_CATEGORICAL = 1000
"""Columns a categorical may expand to before staging warns (with the dense size they take)."""


def _warn_wide_categoricals(encoding: FeatureEncoding, n: int, dtype: str) -> None:
    """Warn for every categorical that expands to more than :data:`WIDE_CATEGORICAL` dense columns."""
    itemsize = np.dtype(dtype).itemsize
    for col, levels in encoding.levels.items():
        columns = len(levels) - 1
        if columns > WIDE_CATEGORICAL:
            warn(
                f"categorical column {col!r} has {len(levels):,} levels: it expands to {columns:,} dense columns, "
                f"{columns * n * itemsize / 2**30:.2f} GiB of X for {n:,} rows ({dtype}), and a fit's information "
                f"then has (K - 1) x {columns:,} rows and columns per class pair. Consider merging rare levels, or "
                f"a penalty (l2) and method='lbfgs'.",
                WideDesignWarning,
            )


def _classes(counts: pd.Series, target: str, reference: StoreData | None, max_classes: int | None) -> NDArray[Any]:
    """The sorted class labels from pass 1's counts (the reference store's when staging like it)."""
    labels = integral(np.asarray(counts.index.to_numpy()))
    if reference is None:
        check_class_count(labels, f"target column {target!r}", max_classes)
    check_label_values(labels, f"target column {target!r}")
    classes = np.asarray(sorted(labels.tolist()))
    if reference is not None:
        unknown = sorted(set(classes.tolist()) - set(reference.classes.tolist()))
        if unknown:
            raise InputError(
                f"target column {target!r} has labels {unknown} that {reference.url} does not have; pass "
                "unseen='drop' (a pipeline's data.unseen: drop) to leave those rows out"
            )
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
        levels[col] = sorted(integral(vals.to_numpy()).tolist())
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
            raise InputError(
                f"categorical column {col!r} has levels {unseen} that {reference.url} does not have; pass "
                "unseen='drop' (a pipeline's data.unseen: drop) to leave those rows out"
            )
    return reference.encoding
