"""The user's data as a fit receives them: a store opened into its arrays, or arrays and tables with the
missing-value policy applied, then the :class:`~dmlr.data.design.Design`.

``missing="raise" | "drop"``: in-memory inputs are checked here (the error names the column and the row); dask
inputs with ``"drop"`` keep only complete rows lazily (one pass counts each partition's rows); with ``"raise"`` the
fit's passes name the partition, row and column of a missing value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.blocks import kept_rows
from dmlr.data.design import Design, RowData, build_design, default_row_chunk
from dmlr.data.encoding import FeatureEncoding, drop_missing, is_categorical
from dmlr.data.store import StoreData, open_store
from dmlr.errors import InputError

__all__ = ["Inputs", "refuse_sparse", "series_values"]


@dataclass
class Inputs:
    """The user's data, with a store opened into its arrays.

    Attributes
    ----------
    X, y, weights, offset, groups : array-like or dask arrays
        As given (in-memory ones with missing rows dropped, DataFrames encoded).
    feature_names : sequence of str, optional
    store : StoreData, optional
        The store, when ``X`` was one.
    encoding : FeatureEncoding, optional
        How a DataFrame's ``category`` columns were encoded.
    n_missing : int
        Rows dropped for a missing value.
    """

    X: Any
    y: Any
    weights: Any
    offset: Any
    feature_names: Sequence[str] | None
    store: StoreData | None = None
    encoding: FeatureEncoding | None = None
    n_missing: int = 0
    groups: Any = None

    @classmethod
    def resolve(
        cls,
        X: Any,
        y: Any = None,
        weights: Any = None,
        offset: Any = None,
        feature_names: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        missing: str = "raise",
        groups: Any = None,
        cov_type: str | None = None,
        count: Any = None,
    ) -> Inputs:
        """Open a store, or apply the missing-value policy to arrays and tables (``count`` counts the rows of a
        lazily filtered dask input: :class:`~dmlr.passes.engine.PassEngine` passes)."""
        if not isinstance(X, (str, os.PathLike, StoreData)):
            refuse_sparse(X)
            if y is None:
                raise InputError("y is required unless X is a store")
            return _in_memory(X, y, weights, offset, feature_names, missing, groups, count)
        store = open_store(X if isinstance(X, StoreData) else str(X), storage_options=storage_options)
        if y is not None:
            raise InputError("y must not be given when X is a store: the store holds the labels")
        if feature_names is not None:
            raise InputError("feature_names must not be given when X is a store: the store names its columns")
        weights = store.weights if weights is None else weights
        offset = store.offset if offset is None else offset
        if groups is None and cov_type == "cluster":
            if store.groups is None:
                raise InputError(
                    f"{store.url} has no cluster ids: stage it with --groups COL (groups='COL'), or pass groups="
                )
            groups = store.groups
        return cls(store.X, store.y, weights, offset, store.feature_names, store, groups=groups)

    @property
    def lazy(self) -> set[str]:
        """The design fields given as dask arrays (not shipped to the workers by the fit)."""
        given = {"x": self.X, "weights": self.weights, "offset": self.offset, "groups": self.groups}
        lazy = {name for name, value in given.items() if isinstance(value, da.Array)}
        if isinstance(self.y, da.Array):
            lazy |= {"labels", "codes"}
        return lazy

    def design(self, base: Any, fit_intercept: bool, threads: int | None) -> Design:
        """The design (no partition of a dask input is read); in-memory input split for ``threads`` workers."""
        row_chunk = None
        if threads is not None and not isinstance(self.X, da.Array):
            shape = np.shape(self.X)
            if len(shape) == 2:
                row_chunk = default_row_chunk(shape[0], shape[1], threads)
        store = self.store
        return build_design(
            self.X, self.y, base=base, weights=self.weights, offset=self.offset, groups=self.groups,
            fit_intercept=fit_intercept, feature_names=self.feature_names, row_chunk=row_chunk,
            classes=None if store is None else store.classes, positions=store is not None,
        )  # fmt: skip

    def rows_from(self, start: int) -> Inputs:
        """The rows ``[start, n)`` of a store's inputs (the rows appended since a version of ``start`` rows)."""

        def tail(a: Any) -> Any:
            return None if a is None else a[start:]

        return dataclasses.replace(
            self, X=self.X[start:], y=self.y[start:], weights=tail(self.weights), offset=tail(self.offset),
            groups=None,
        )  # fmt: skip

    def info(self) -> dict[str, Any] | None:
        """What the results record about a store or a DataFrame's encoding (``None`` for arrays)."""
        if self.store is None:
            return None if self.encoding is None else {"encoding": self.encoding.to_json()}
        meta = self.store.metadata
        return {
            "store": self.store.url,
            "store_checksum": self.store.checksum,
            "store_version": meta.version,
            "store_rows": meta.n_rows,
            "target": meta["target"],
            "encoding": meta["encoding"],
        }


def refuse_sparse(X: Any, what: str = "X") -> None:
    """A scipy.sparse ``X`` is refused with what to pass instead (dmlr's kernels take dense row blocks).

    Raises
    ------
    InputError
    """
    import scipy.sparse

    if scipy.sparse.issparse(X):
        matrix: Any = X
        rows, cols = matrix.shape
        raise InputError(
            f"{what} is a scipy.sparse matrix ({rows:,} x {cols:,}, {matrix.nnz:,} stored values); dmlr fits dense row "
            f"blocks: pass {what}.toarray() ({8 * rows * cols / 2**30:.2f} GiB as float64) when that fits in memory, "
            "or a dask array of dense blocks (dask.array.from_array(X, chunks=(rows, -1)).map_blocks(lambda b: "
            "b.toarray())), or stage the data"
        )


def _in_memory(
    X: Any, y: Any, weights: Any, offset: Any, feature_names: Sequence[str] | None, missing: str, groups: Any,
    count: Any,
) -> Inputs:  # fmt: skip
    """Arrays and DataFrames: the missing-value policy applied to all inputs, a DataFrame encoded by name."""
    if isinstance(X, dd.DataFrame):
        return _dask_frame(X, y, weights, offset, groups, feature_names, missing)
    arrays = [X, y, weights, offset, groups]
    if any(isinstance(a, da.Array) for a in arrays):
        if groups is not None and missing == "drop":
            raise InputError("missing='drop' with dask inputs and groups: drop the rows before fitting")
        lazy = _lazy_missing(X, y, weights, offset, feature_names, missing, count)
        return dataclasses.replace(lazy, groups=groups)
    bad = np.zeros(len(X) if hasattr(X, "__len__") else 0, dtype=bool)
    names = ("X", "y", "weights", "offset", "groups")
    for name, values in zip(names, arrays, strict=True):
        if values is None or len(values) != len(bad):
            continue  # lengths are checked (with a message) when the design is built
        rows = _missing_mask(values)
        if rows.any() and missing == "raise":
            _raise_missing(name, values, rows)
        bad |= rows
    if bad.any():
        keep = ~bad
        X, y, weights, offset, groups = (None if a is None else _take(a, keep) for a in arrays)
    encoding = None
    if isinstance(X, pd.DataFrame):
        encoding = FeatureEncoding.from_frame(X)
        if encoding.levels and feature_names is not None:
            raise InputError("feature_names cannot be given with category columns: their encoded names are made")
        frame = X
        X = encoding.transform(frame, "X")
        feature_names = feature_names or encoding.feature_names
    return Inputs(X, y, weights, offset, feature_names, encoding=encoding, n_missing=int(bad.sum()), groups=groups)


def _dask_frame(
    X: dd.DataFrame, y: Any, weights: Any, offset: Any, groups: Any, feature_names: Sequence[str] | None, missing: str
) -> Inputs:
    """A dask DataFrame's columns (numeric, boolean or ``category``: one-hot against the first category, as for
    pandas) and its label, weights and groups Series, read partition by partition from one frame, so that every
    array has the frame's partitions whatever dask's optimizer fuses (Parquet-backed frames included)."""
    from dask.base import compute
    from dask.dataframe.utils import has_known_categories

    from dmlr.data.sources import from_partitions

    if offset is not None:
        raise InputError("offset cannot be given with a dask DataFrame X: pass dask arrays (X.to_dask_array())")
    series = {"__y": y, "__weights": weights, "__groups": groups}
    for key, value in series.items():
        if value is not None and not isinstance(value, dd.Series):
            name = key.strip("_")
            raise InputError(f"with a dask DataFrame X, {name} must be a dask Series (a column of the same frame)")
    if feature_names is not None:
        raise InputError("feature_names cannot be given with a DataFrame X: its column names are used")
    columns = [str(c) for c in X.columns]
    texts = [c for c in columns if is_categorical(X[c].dtype) and not isinstance(X[c].dtype, pd.CategoricalDtype)]
    if texts:
        raise InputError(
            f"X columns {texts} hold text: make them categorical (ddf.astype({{{texts[0]!r}: 'category'}})) to "
            "one-hot encode them, or leave them out"
        )
    frame = X.assign(**{k: v for k, v in series.items() if v is not None})
    raw = frame.map_partitions(len).sum()
    if missing == "drop":
        frame = frame.dropna()
    cats = [c for c in columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    uniques = [frame[c].dropna().unique(split_out=1) for c in cats]  # levels are few: no shuffle
    lengths, total, *found = compute(frame.map_partitions(len), raw, *uniques)
    lengths = [int(k) for k in lengths]
    levels = {}
    for c, values in zip(cats, found, strict=True):
        known = has_known_categories(frame[c])  # else categories learnt here, sorted
        levels[c] = list(frame[c].dtype.categories) if known else sorted(pd.Series(values).tolist())
    encoding = FeatureEncoding(tuple(columns), levels)
    parts = frame.to_delayed()  # once: every array below reads these partitions
    x = from_partitions(frame, lengths, encoding.transform, (encoding.n_features,), np.float64, parts=parts)

    def column(key: str) -> Any:
        if key not in frame.columns:
            return None
        dtype = frame[key].dtype
        kind = dtype if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype) else object
        return from_partitions(frame, lengths, series_values, (), kind, key, parts=parts)

    return Inputs(
        x, column("__y"), column("__weights"), None, encoding.feature_names,
        encoding=encoding if levels else None, n_missing=int(total) - sum(lengths), groups=column("__groups"),
    )  # fmt: skip


def series_values(frame: pd.DataFrame, column: str, where: str) -> NDArray[Any]:
    """One partition's values of a label, weights or groups column (text and categories as objects)."""
    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        return np.asarray(values.astype(object).to_numpy())
    return values.to_numpy()


def _raise_missing(name: str, values: Any, rows: NDArray[np.bool_]) -> None:
    if isinstance(values, pd.DataFrame):
        drop_missing(values, list(values.columns), "raise", name)  # names the column
    row = int(np.argmax(rows))
    where = f"row {row}"
    if np.ndim(values) == 2:
        where += f", column {int(np.argmax(_missing_cells(values)[row]))}"
    raise InputError(
        f"{name} has a missing value at {where} ({int(rows.sum())} rows have one); "
        "pass missing='drop' to drop such rows"
    )


def _missing_cells(values: Any) -> NDArray[np.bool_]:
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return np.asarray(values.isna().to_numpy(), dtype=bool)
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        return np.asarray(np.isnan(arr), dtype=bool)
    if arr.dtype.kind == "O":
        return np.asarray(pd.isna(arr), dtype=bool)
    return np.zeros(arr.shape, dtype=bool)


def _missing_mask(values: Any) -> NDArray[np.bool_]:
    cells = _missing_cells(values)
    return np.asarray(cells.any(axis=1) if cells.ndim == 2 else cells, dtype=bool)


def _take(values: Any, keep: NDArray[np.bool_]) -> Any:
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return values.loc[keep]
    return np.asarray(values)[keep]


def _lazy_missing(
    X: Any, y: Any, weights: Any, offset: Any, feature_names: Sequence[str] | None, missing: str, count: Any
) -> Inputs:
    """Dask inputs: ``missing="drop"`` keeps the complete rows lazily (one pass of ``count`` learns each partition's
    new size); ``"raise"`` leaves the check to the passes, which name the partition, row and column."""
    if missing == "raise":
        return Inputs(X, y, weights, offset, feature_names)
    x = X if isinstance(X, da.Array) else da.from_array(np.asarray(X, dtype=np.float64))
    keep = ~da.isnan(x).any(axis=1)
    others: list[da.Array | None] = []
    for values in (y, weights, offset):
        if values is None:
            others.append(None)
            continue
        lazy = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
        lazy = lazy.rechunk((x.chunks[0], *lazy.chunks[1:]))
        if lazy.dtype.kind in "fc":
            nan = da.isnan(lazy)
            keep &= ~(nan.any(axis=1) if lazy.ndim == 2 else nan)
        others.append(lazy)
    rows = tuple(int(c) for c in count(RowData(x=keep[:, None].astype(np.float64))))

    def kept(values: da.Array) -> da.Array:
        mask = keep if values.ndim == 1 else keep[:, None]  # blockwise alignment with the rows
        return da.map_blocks(kept_rows, values, mask, chunks=(rows, *values.chunks[1:]), dtype=values.dtype)

    n_dropped = int(x.shape[0] - sum(rows))
    kept_others = [None if v is None else kept(v) for v in others]
    return Inputs(kept(x), kept_others[0], kept_others[1], kept_others[2], feature_names, n_missing=n_dropped)
