"""Turning user inputs into aligned, row-chunked dask arrays: the :class:`Design` every fit consumes.

Accepted inputs are NumPy arrays, pandas objects and dask arrays. ``X`` is chunked by rows only; ``y`` (as class
codes), ``weights`` and ``offset`` are rechunked to exactly ``X``'s row chunks so partition ``i`` of each array holds
the same rows. In-memory inputs are wrapped without copying.
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from dask.array.core import normalize_chunks
from numpy.typing import NDArray

from dmlr.data.labels import EncodeLabels, LabelCoding, check_label_values
from dmlr.data.rows import FIELDS
from dmlr.errors import InputError
from dmlr.oracle.checks import check_groups, check_weights

__all__ = ["Design", "RowData", "as_feature_array", "build_design", "default_row_chunk", "rows_of"]

TARGET_PARTITION_BYTES = 64 * 2**20
"""Default upper bound of one in-memory partition of ``X``."""


@dataclass(frozen=True)
class RowData:
    """Named row-aligned dask arrays: partition ``i`` of every array holds the same rows.

    The driver-side form of :class:`~dmlr.data.rows.Rows` (one partition's blocks, by the same names), and what
    the pass engine (:class:`dmlr.passes.engine.PassEngine`) runs over.

    Attributes
    ----------
    x : dask.array.Array, shape (n, p), optional
        Features, chunked by rows only.
    labels : dask.array.Array, shape (n,), optional
        Class labels as given, or positions in the sorted classes (a store's ``y``).
    codes : dask.array.Array of int32, shape (n,), optional
        Class codes (0 = base).
    weights : dask.array.Array, shape (n,), optional
    offset : dask.array.Array, shape (n, m), optional
    groups : dask.array.Array, shape (n,), optional
        Cluster ids of cluster-robust covariances.
    """

    x: da.Array | None = None
    labels: da.Array | None = None
    codes: da.Array | None = None
    weights: da.Array | None = None
    offset: da.Array | None = None
    groups: da.Array | None = None

    def arrays(self) -> dict[str, da.Array]:
        """The arrays present, by name, in :data:`~dmlr.data.rows.FIELDS` order."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    def replace(self, **arrays: da.Array | None) -> RowData:
        """A copy with some arrays replaced (e.g. by persisted or shipped ones)."""
        return dataclasses.replace(self, **arrays)

    @property
    def row_chunks(self) -> tuple[float, ...]:
        """Rows of each partition (NaN where unknown)."""
        return tuple(next(iter(self.arrays().values())).chunks[0])

    @property
    def n_partitions(self) -> int:
        """Number of row partitions."""
        return len(self.row_chunks)

    @property
    def n_rows(self) -> int:
        """Number of rows ``n`` (-1 when some partition's size is unknown)."""
        chunks = self.row_chunks
        return -1 if any(math.isnan(c) for c in chunks) else int(sum(chunks))

    @property
    def n_features(self) -> int:
        """Feature columns ``p`` of ``x`` (0 without ``x``)."""
        return 0 if self.x is None else int(self.x.shape[1])

    def row_bytes(self, fields: Sequence[str]) -> int:
        """Bytes per row of the arrays a pass reading ``fields`` produces (``codes`` from ``labels`` when only those
        are stored), as the kernels receive them (features as float64)."""
        wanted = {"labels" if f == "codes" and self.codes is None else f for f in fields}
        total = 0
        for name, array in self.arrays().items():
            if name in wanted:
                width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
                total += width * (8 if name == "x" else max(array.dtype.itemsize, 4))
        return total

    @property
    def nbytes(self) -> int:
        """Bytes of every array."""
        return int(sum(a.nbytes for a in self.arrays().values() if not math.isnan(a.nbytes)))


@dataclass(frozen=True)
class Design:
    """Aligned row-partitioned model data.

    Attributes
    ----------
    rows : RowData
        ``x`` (float64, no intercept column), the classes as ``codes`` or as ``labels`` (coded when rows are produced,
        :class:`~dmlr.data.labels.EncodeLabels`), and optionally ``weights``, ``offset`` and ``groups``.
    coding : LabelCoding, optional
        Class labels and the base; ``None`` until the fit's first pass has seen the labels of a dask ``y``.
    model_names : tuple of str, length d
        Model column names; ``"const"`` first when ``intercept``. (The ``p`` data columns of ``x`` are
        ``model_names[intercept:]``; stores and ``dmlr.fit`` call those ``feature_names``.)
    intercept : bool
        Whether the model adds an intercept (model column 0, not stored in ``x``).
    base : object, optional
        The reference label asked for (checked when the coding is made).
    positions : bool
        ``rows.labels`` are positions in the sorted classes (a store), not the labels themselves.
    """

    rows: RowData
    coding: LabelCoding | None
    model_names: tuple[str, ...]
    intercept: bool
    base: Any = None
    positions: bool = False

    @property
    def x(self) -> da.Array:
        """The features, shape (n, p)."""
        assert self.rows.x is not None
        return self.rows.x

    @property
    def weights(self) -> da.Array | None:
        """The weights, shape (n,), if any."""
        return self.rows.weights

    @property
    def offset(self) -> da.Array | None:
        """The offsets, shape (n, m), if any."""
        return self.rows.offset

    @property
    def groups(self) -> da.Array | None:
        """The cluster ids, shape (n,), if any."""
        return self.rows.groups

    @property
    def n_rows(self) -> int:
        """Number of rows ``n``."""
        return int(self.x.shape[0])

    @property
    def n_columns(self) -> int:
        """Model columns ``d`` (intercept included)."""
        return len(self.model_names)

    @property
    def n_features(self) -> int:
        """Data columns ``p`` of ``x``."""
        return int(self.x.shape[1])

    @property
    def n_nonbase(self) -> int:
        """Number of coefficient columns ``m = K - 1``."""
        assert self.coding is not None, "the classes are learnt by the first pass"
        return self.coding.n_classes - 1

    @property
    def n_partitions(self) -> int:
        """Number of row partitions."""
        return len(self.x.chunks[0])

    @property
    def transform(self) -> EncodeLabels | None:
        """How produced rows get their class codes (``None``: stored as codes, or the coding is not known yet)."""
        if self.rows.labels is None or self.coding is None:
            return None
        return EncodeLabels(self.coding, self.positions)

    def with_coding(self, coding: LabelCoding) -> Design:
        """The design once its classes are known."""
        return dataclasses.replace(self, coding=coding)

    def with_rows(self, rows: RowData) -> Design:
        """A copy whose arrays are replaced (e.g. by shipped ones)."""
        return dataclasses.replace(self, rows=rows)

    def without_columns(self, model_columns: Sequence[int]) -> Design:
        """A copy without the given model columns (indices into :attr:`model_names`; the intercept stays)."""
        drop = set(model_columns)
        if self.intercept and 0 in drop:
            raise ValueError("the intercept cannot be dropped")
        keep_model = [j for j in range(self.n_columns) if j not in drop]
        keep_data = [j - self.intercept for j in keep_model if j >= self.intercept]
        names = tuple(self.model_names[j] for j in keep_model)
        return dataclasses.replace(self, rows=self.rows.replace(x=self.x[:, keep_data]), model_names=names)

    def data_columns(self, model_columns: Sequence[int]) -> tuple[int, ...]:
        """The columns of ``x`` behind the given model columns (the intercept has none)."""
        return tuple(j - int(self.intercept) for j in model_columns if j >= int(self.intercept))


def default_row_chunk(n: int, p: int, n_parallel: int | None = None) -> int:
    """Rows per partition for in-memory input.

    At least one partition per parallel worker thread, and none larger than ``TARGET_PARTITION_BYTES``.

    Parameters
    ----------
    n, p : int
        Rows and feature columns.
    n_parallel : int, optional
        Threads that will work on the partitions (default: CPU count).
    """
    n_parallel = n_parallel or os.cpu_count() or 1
    by_size = math.ceil(n * max(p, 1) * 8 / TARGET_PARTITION_BYTES)
    parts = max(n_parallel, by_size, 1)
    return max(1, math.ceil(n / parts))


def as_feature_array(X: Any, row_chunk: int | None = None, what: str = "X") -> tuple[da.Array, list[str] | None]:
    """Coerce a feature matrix to a float64 dask array chunked by rows only.

    Parameters
    ----------
    X : ndarray, pandas.DataFrame or dask.array.Array, shape (n, p)
    row_chunk : int, optional
        Rows per partition for in-memory input; default :func:`default_row_chunk`.
    what : str
        Name used in error messages.

    Returns
    -------
    x : dask.array.Array, shape (n, p)
    names : list of str or None
        Column names when ``X`` is a DataFrame.
    """
    names: list[str] | None = None
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        for col in X.columns:
            if not (pd.api.types.is_numeric_dtype(X[col]) or pd.api.types.is_bool_dtype(X[col])):
                raise InputError(
                    f"{what} column {col!r} has dtype {X[col].dtype}, not numeric; "
                    "encode categorical columns first (e.g. pandas.get_dummies(..., drop_first=True))"
                )
        X = X.to_numpy(dtype=np.float64)
    if isinstance(X, da.Array):
        lazy: da.Array = X
        if lazy.ndim != 2:
            raise InputError(f"{what} must be 2-dimensional (n, p); got shape {lazy.shape}")
        if any(math.isnan(c) for c in lazy.chunks[0]):
            lazy = lazy.compute_chunk_sizes()
        if lazy.dtype != np.float64:
            lazy = lazy.astype(np.float64)
        if len(lazy.chunks[1]) > 1:
            lazy = lazy.rechunk({1: -1})
        return lazy, names
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be converted to a float64 matrix: {exc}") from None
    if arr.ndim != 2:
        raise InputError(f"{what} must be 2-dimensional (n, p); got shape {arr.shape}")
    chunk = row_chunk or default_row_chunk(arr.shape[0], arr.shape[1])
    return rows_of(arr, max(chunk, 1)), names


def rows_of(arr: NDArray[Any], chunks: int | tuple[int, ...]) -> da.Array:
    """A dask array of ``arr``'s row blocks, each a view of ``arr``.

    ``dask.array.from_array`` copies a NumPy array and hashes its bytes for the name (seconds for a GB); the
    blocks here are views and the name is unique per call (a checkpoint identifies in-memory data by
    :func:`dask.base.tokenize` of the input itself).

    Parameters
    ----------
    arr : ndarray, shape (n,) or (n, p)
    chunks : int or tuple of int
        Rows per block, or every block's rows.
    """
    n = arr.shape[0]
    rows = tuple(chunks) if isinstance(chunks, tuple) else normalize_chunks((chunks,), (n,))[0]
    name = f"dmlr-array-{uuid.uuid4().hex}"
    tail = (0,) if arr.ndim == 2 else ()
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(int)
    graph = {(name, i, *tail): arr[starts[i] : starts[i + 1]] for i in range(len(rows))}
    full = (rows, (arr.shape[1],)) if arr.ndim == 2 else (rows,)
    return da.Array(graph, name, full, dtype=arr.dtype)


def _as_vector_or_matrix(values: Any, what: str) -> da.Array | NDArray[Any]:
    if isinstance(values, pd.DataFrame):
        return values.to_numpy()
    if isinstance(values, (pd.Series, pd.Index, pd.Categorical)):
        return np.asarray(values)
    if isinstance(values, da.Array):
        if any(math.isnan(c) for c in values.chunks[0]):
            values = values.compute_chunk_sizes()
        return values
    return np.asarray(values)


def _align(values: da.Array | NDArray[Any], chunks: tuple[int, ...], what: str, n: int) -> da.Array:
    if values.shape[0] != n:
        raise InputError(f"{what} has {values.shape[0]} rows but X has {n}")
    if isinstance(values, da.Array):
        lazy: da.Array = values
        if lazy.chunks[0] != chunks or (lazy.ndim == 2 and len(lazy.chunks[1]) > 1):
            lazy = lazy.rechunk((chunks,) + ((-1,) if lazy.ndim == 2 else ()))
        return lazy
    return rows_of(np.asarray(values), chunks)


def build_design(
    X: Any,
    y: Any,
    *,
    base: Any = None,
    weights: Any = None,
    offset: Any = None,
    groups: Any = None,
    fit_intercept: bool = True,
    feature_names: Sequence[str] | None = None,
    row_chunk: int | None = None,
    classes: Sequence[Any] | NDArray[Any] | None = None,
    positions: bool = False,
) -> Design:
    """Validate and align the inputs of a fit, without reading any partition of a dask input.

    Parameters
    ----------
    X : array-like or dask array, shape (n, p)
    y : array-like or dask array, shape (n,)
        Labels of any sortable dtype.
    base : object, optional
        Reference label (default: smallest).
    weights : array-like, shape (n,), optional
        Non-negative frequency weights.
    offset : array-like, shape (n, K - 1), optional
        Offsets of the non-base linear predictors.
    groups : array-like, shape (n,), optional
        Cluster ids of cluster-robust covariances.
    fit_intercept : bool
        Add an intercept named ``"const"`` as model column 0.
    feature_names : sequence of str, optional
        Names of the ``p`` columns of ``X`` (default: DataFrame columns or ``x1..xp``).
    row_chunk : int, optional
        Rows per partition for in-memory input.
    classes : sequence, optional
        The class labels, when known without reading ``y`` (a store's; else a dask ``y``'s classes are learnt by
        the fit's first pass).
    positions : bool
        ``y`` holds positions into ``classes`` (as a Zarr store does).

    Returns
    -------
    Design

    Raises
    ------
    InputError
        Mismatched lengths or shapes, empty input, a single class, negative weights, a bad ``base``.
    """
    x, names = as_feature_array(X, row_chunk)
    n, p = x.shape
    if n == 0:
        raise InputError("X has 0 rows; nothing to fit")
    if p == 0 and not fit_intercept:
        raise InputError("X has 0 feature columns and fit_intercept=False: the model has no parameters")
    names = _feature_names(names, feature_names, p, fit_intercept)
    chunks = x.chunks[0]
    coding, labels, codes = _classes(y, chunks, n, base, classes)
    m = None if coding is None else coding.n_classes - 1
    rows = RowData(
        x=x, labels=labels, codes=codes, weights=_weights(weights, chunks, n), offset=_offset(offset, chunks, n, m),
        groups=_groups(groups, chunks, n),
    )  # fmt: skip
    model_names = (["const"] if fit_intercept else []) + names
    return Design(rows, coding, tuple(model_names), fit_intercept, base, positions and classes is not None)


def _feature_names(names: list[str] | None, given: Sequence[str] | None, p: int, fit_intercept: bool) -> list[str]:
    if given is not None:
        names = [str(f) for f in given]
        if len(names) != p:
            raise InputError(f"feature_names has {len(names)} names but X has {p} columns")
    names = names or [f"x{j + 1}" for j in range(p)]
    if fit_intercept and "const" in names:
        raise InputError("X already has a column named 'const'; pass fit_intercept=False to use it as the intercept")
    if len(set(names)) != len(names):
        dup = sorted({f for f in names if names.count(f) > 1})
        raise InputError(f"duplicate feature names: {dup}")
    return names


def _classes(
    y: Any, chunks: tuple[int, ...], n: int, base: Any, classes: Any
) -> tuple[LabelCoding | None, da.Array | None, da.Array | None]:
    """The coding (``None`` when a dask ``y``'s classes are learnt by the first pass), and ``y`` as labels or
    codes aligned with the rows."""
    y_arr = _as_vector_or_matrix(y, "y")
    if y_arr.ndim != 1:
        raise InputError(f"y must be 1-dimensional (n,); got shape {y_arr.shape}")
    if classes is not None:
        return LabelCoding.from_labels(np.asarray(classes), base), _align(y_arr, chunks, "y", n), None
    if isinstance(y_arr, da.Array):
        return None, _align(y_arr, chunks, "y", n), None
    if y_arr.shape[0] != n:
        raise InputError(f"y has {y_arr.shape[0]} rows but X has {n}")
    check_label_values(y_arr)
    coding = LabelCoding.from_labels(np.unique(y_arr), base)
    return coding, None, rows_of(coding.encode(y_arr), chunks)


def _weights(weights: Any, chunks: tuple[int, ...], n: int) -> da.Array | None:
    """Weights aligned with the rows (in-memory ones checked here; a dask array's by the fit's first pass)."""
    if weights is None:
        return None
    w_arr = _as_vector_or_matrix(weights, "weights")
    if w_arr.ndim != 1:
        raise InputError(f"weights must be 1-dimensional (n,); got shape {w_arr.shape}")
    if not isinstance(w_arr, da.Array):
        check_weights(np.asarray(w_arr, dtype=np.float64))
    return _align(w_arr, chunks, "weights", n).astype(np.float64)


def _offset(offset: Any, chunks: tuple[int, ...], n: int, m: int | None) -> da.Array | None:
    if offset is None:
        return None
    o_arr = _as_vector_or_matrix(offset, "offset")
    if o_arr.ndim == 1 and m in (1, None):
        o_arr = o_arr.reshape(-1, 1)
    if o_arr.ndim != 2 or (m is not None and o_arr.shape[1] != m):
        raise InputError(
            f"offset must have shape (n, K - 1) = ({n}, {m if m is not None else 'K - 1'}); got {o_arr.shape}"
        )
    return _align(o_arr, chunks, "offset", n).astype(np.float64)


def _groups(groups: Any, chunks: tuple[int, ...], n: int) -> da.Array | None:
    """Cluster ids aligned with the rows (in-memory ones checked here; a dask array's in the cluster pass)."""
    if groups is None:
        return None
    g_arr = _as_vector_or_matrix(groups, "groups")
    if g_arr.ndim != 1 or g_arr.shape[0] != n:
        raise InputError(f"groups must have shape ({n},); got {g_arr.shape}")
    if not isinstance(g_arr, da.Array):
        check_groups(np.asarray(g_arr))
    return _align(g_arr, chunks, "groups", n)
