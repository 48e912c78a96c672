"""Turning user inputs into aligned, row-chunked dask arrays: the :class:`Design` every fit consumes.

Accepted inputs are NumPy arrays, pandas objects and dask arrays. ``X`` is chunked by rows only; ``y`` (as class
codes), ``weights`` and ``offset`` are rechunked to exactly ``X``'s row chunks so partition ``i`` of each array holds
the same rows. In-memory inputs are wrapped without copying.
"""

from __future__ import annotations

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

from dmlr.data.blocks import check_weights, checked_weights_block, encode_block, encode_positions_block
from dmlr.data.labels import LabelCoding, check_label_values
from dmlr.errors import InputError

__all__ = ["Design", "as_feature_array", "build_design", "default_row_chunk"]

TARGET_PARTITION_BYTES = 64 * 2**20
"""Default upper bound of one in-memory partition of ``X``."""


@dataclass(frozen=True)
class Design:
    """Aligned row-partitioned model data.

    Attributes
    ----------
    x : dask.array.Array, shape (n, p)
        Features, float64, chunked by rows only (no intercept column).
    codes : dask.array.Array, shape (n,)
        Class codes (0 = base), int32, same row chunks as ``x``.
    weights : dask.array.Array, shape (n,), optional
        Frequency weights, same row chunks.
    offset : dask.array.Array, shape (n, m), optional
        Offsets of the non-base linear predictors, same row chunks.
    labels : LabelCoding
        Class labels and the base.
    model_names : tuple of str, length d
        Model column names; ``"const"`` first when ``intercept``. (The ``p`` data columns of ``x`` are
        ``model_names[intercept:]``; stores and ``dmlr.fit`` call those ``feature_names``.)
    intercept : bool
        Whether the model adds an intercept (model column 0, not stored in ``x``).
    """

    x: da.Array
    codes: da.Array
    weights: da.Array | None
    offset: da.Array | None
    labels: LabelCoding
    model_names: tuple[str, ...]
    intercept: bool

    @property
    def n_rows(self) -> int:
        """Number of rows ``n``."""
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        """Model columns ``d`` (intercept included)."""
        return len(self.model_names)

    @property
    def n_nonbase(self) -> int:
        """Number of coefficient columns ``m = K - 1``."""
        return self.labels.n_classes - 1

    @property
    def n_partitions(self) -> int:
        """Number of row partitions."""
        return len(self.x.chunks[0])

    def arrays(self) -> list[da.Array]:
        """The dask arrays of the design (for persisting)."""
        return [a for a in (self.x, self.codes, self.weights, self.offset) if a is not None]

    def without_columns(self, model_columns: Sequence[int]) -> Design:
        """A copy without the given model columns (indices into :attr:`model_names`; the intercept stays)."""
        drop = set(model_columns)
        if self.intercept and 0 in drop:
            raise ValueError("the intercept cannot be dropped")
        keep_model = [j for j in range(self.n_features) if j not in drop]
        keep_data = [j - self.intercept for j in keep_model if j >= self.intercept]
        x = self.x[:, keep_data]
        names = tuple(self.model_names[j] for j in keep_model)
        return Design(x, self.codes, self.weights, self.offset, self.labels, names, self.intercept)

    def with_arrays(self, arrays: Sequence[da.Array]) -> Design:
        """A copy whose arrays are replaced, in the order of :meth:`arrays` (e.g. by persisted ones)."""
        it = iter(arrays)
        x, codes = next(it), next(it)
        weights = next(it) if self.weights is not None else None
        offset = next(it) if self.offset is not None else None
        return Design(x, codes, weights, offset, self.labels, self.model_names, self.intercept)


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

    ``dask.array.from_array`` copies a NumPy array and hashes its bytes for the name (2 s for 800 MB here); the
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
    fit_intercept: bool = True,
    feature_names: Sequence[str] | None = None,
    row_chunk: int | None = None,
    y_classes: Sequence[Any] | NDArray[Any] | None = None,
) -> Design:
    """Validate and align the inputs of a fit.

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
    fit_intercept : bool
        Add an intercept named ``"const"`` as model column 0.
    feature_names : sequence of str, optional
        Names of the ``p`` columns of ``X`` (default: DataFrame columns or ``x1..xp``).
    row_chunk : int, optional
        Rows per partition for in-memory input.
    y_classes : sequence, optional
        When given, ``y`` holds positions into these sorted labels (as a Zarr store does) and no pass over ``y``
        is needed to find the classes.

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
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(names) != p:
            raise InputError(f"feature_names has {len(names)} names but X has {p} columns")
    names = names or [f"x{j + 1}" for j in range(p)]
    if fit_intercept and "const" in names:
        raise InputError("X already has a column named 'const'; pass fit_intercept=False to use it as the intercept")
    if len(set(names)) != len(names):
        dup = sorted({f for f in names if names.count(f) > 1})
        raise InputError(f"duplicate feature names: {dup}")

    chunks = x.chunks[0]
    y_arr = _as_vector_or_matrix(y, "y")
    if y_arr.ndim != 1:
        raise InputError(f"y must be 1-dimensional (n,); got shape {y_arr.shape}")
    if y_classes is not None:
        coding = LabelCoding.from_labels(np.asarray(y_classes), base)
        codes = da.map_blocks(encode_positions_block, _align(y_arr, chunks, "y", n), coding, dtype=np.int32)
    elif isinstance(y_arr, da.Array):
        coding = LabelCoding.from_labels(np.asarray(da.unique(y_arr).compute()), base)
        y_al = _align(y_arr, chunks, "y", n)
        codes = da.map_blocks(encode_block, y_al, coding, dtype=np.int32)
    else:
        if y_arr.shape[0] != n:
            raise InputError(f"y has {y_arr.shape[0]} rows but X has {n}")
        check_label_values(y_arr)
        coding = LabelCoding.from_labels(np.unique(y_arr), base)
        codes = rows_of(coding.encode(y_arr), chunks)
    m = coding.n_classes - 1

    w = None
    if weights is not None:
        w_arr = _as_vector_or_matrix(weights, "weights")
        if w_arr.ndim != 1:
            raise InputError(f"weights must be 1-dimensional (n,); got shape {w_arr.shape}")
        w = _align(w_arr, chunks, "weights", n).astype(np.float64)
        if not isinstance(w_arr, da.Array):
            check_weights(np.asarray(w_arr, dtype=np.float64))
        else:
            w = da.map_blocks(checked_weights_block, w, dtype=np.float64)
    o = None
    if offset is not None:
        o_arr = _as_vector_or_matrix(offset, "offset")
        if o_arr.ndim == 1 and m == 1:
            o_arr = o_arr.reshape(-1, 1)
        if o_arr.ndim != 2 or o_arr.shape[1] != m:
            raise InputError(f"offset must have shape (n, K - 1) = ({n}, {m}); got {o_arr.shape}")
        o = _align(o_arr, chunks, "offset", n).astype(np.float64)

    model_names = (["const"] if fit_intercept else []) + names
    return Design(x, codes, w, o, coding, tuple(model_names), fit_intercept)
