"""Class probabilities and labels for new data: NumPy, pandas or dask (lazy, per partition)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.kernels import block_rows, check_finite, linear_predictor, log_probabilities

__all__ = ["encode_frame", "feature_matrix", "predict_labels", "predict_proba"]

Array = NDArray[np.float64]


def _proba_block(x: Array, coef: Array, intercept: bool, order: NDArray[np.intp], offset: Array | None = None) -> Array:
    """Probabilities of all ``K`` classes for one block, columns in sorted label order, shape (r, K)."""
    out = np.empty((x.shape[0], coef.shape[1] + 1))
    rows = block_rows(x.shape[0], coef.shape[1] + 1)
    for s in range(0, x.shape[0], rows):
        e = min(s + rows, x.shape[0])
        eta = linear_predictor(x[s:e], coef, intercept, None if offset is None else offset[s:e])
        prob, lse = log_probabilities(eta)
        coded = np.empty((e - s, coef.shape[1] + 1))
        coded[:, 0] = np.exp(-lse)
        coded[:, 1:] = prob
        out[s:e] = coded[:, order]
    return out


def encode_frame(
    frame: pd.DataFrame,
    feature_names: Sequence[str],
    *,
    formula: Any = None,
    encoding: dict[str, Any] | None = None,
    where: str = "X",
    missing: str = "raise",
    unseen: str = "raise",
) -> tuple[Array, pd.Index]:
    """A raw table encoded as the model's data columns, the way the fitted data was.

    Parameters
    ----------
    frame : pandas.DataFrame
        Raw columns: what the formula reads (formula fits), the staged source columns (store fits, DataFrame
        fits with ``category`` columns), or the feature columns by name.
    feature_names : sequence of str, length p
        The model's data columns (``const`` excluded), the order of the result's columns.
    formula : FormulaEncoding, optional
    encoding : dict, optional
        A :class:`~dmlr.data.encoding.FeatureEncoding` in JSON form.
    where : str
        Names the table in error messages.
    missing : {"raise", "drop"}
        Rows with a missing value in a column the model reads.
    unseen : {"raise", "nan"}
        Rows with a categorical level the fit never saw.

    Returns
    -------
    x : ndarray, shape (r, p)
    index : pandas.Index
        Labels of the rows of ``x`` (``frame``'s, less dropped rows).
    """
    from dmlr.data.encoding import FeatureEncoding, drop_missing

    if formula is not None:
        x, index = formula.transform(frame, where, missing, unseen)
        names = formula.column_names  # with formulaic's Intercept when there is one: not a data column
    else:
        enc = FeatureEncoding.from_json(encoding) if encoding else FeatureEncoding(tuple(feature_names))
        absent = [c for c in enc.columns if c not in frame.columns]
        if absent:
            raise InputError(f"{where} is missing the columns {absent} the model was fitted with")
        frame, _ = drop_missing(frame, list(enc.columns), missing, where)
        x, index, names = enc.transform(frame, where, unseen), frame.index, enc.feature_names
    if list(names) != list(feature_names):  # dependent columns dropped by the fit: select the kept ones
        position = {name: j for j, name in enumerate(names)}
        x = x[:, [position[f] for f in feature_names]]
    return x, index


def feature_matrix(X: Any, p: int) -> Any:
    """An array of ``p`` data columns as float64 (a dask array with one column chunk), checked.

    Raises
    ------
    InputError
        Not two-dimensional with ``p`` columns.
    """
    if isinstance(X, da.Array):
        if X.ndim != 2 or X.shape[1] != p:
            raise InputError(f"X must have shape (n, {p}); got {X.shape}")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        return X.astype(np.float64)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != p:
        raise InputError(f"X must have shape (n, {p}); got {arr.shape}")
    return arr


def predict_proba(
    x: Any,
    coef: Array,
    *,
    intercept: bool,
    code_to_sorted: NDArray[np.intp],
    offset: Any = None,
) -> Any:
    """Class probabilities, columns in sorted label order.

    Parameters
    ----------
    x : ndarray or dask.array.Array, shape (n, p)
        Data columns, float64 (:func:`feature_matrix`).
    coef : ndarray, shape (d, m)
    intercept : bool
    code_to_sorted : ndarray of int, shape (K,)
        ``order`` such that ``coded[:, order]`` lists classes in sorted order.
    offset : array-like, shape (n, m), optional

    Returns
    -------
    ndarray or dask.array.Array, shape (n, K)
        A dask input gives a lazy dask array with ``x``'s row chunks.
    """
    k = coef.shape[1] + 1
    if isinstance(x, da.Array):
        args: list[Any] = [x]
        if offset is not None:
            o = offset if isinstance(offset, da.Array) else da.from_array(np.asarray(offset))
            args.append(o.rechunk((x.chunks[0], (coef.shape[1],))))
        starts = np.cumsum((0, *x.chunks[0]))

        def block(xb: Array, *ob: Array, block_id: Any = None) -> Array:
            i = block_id[0] if block_id is not None else 0
            check_finite(xb, "X", i, int(starts[i]))
            if ob:
                check_finite(ob[0], "offset", i, int(starts[i]))
            return _proba_block(xb, coef, intercept, code_to_sorted, ob[0] if ob else None)

        return da.map_blocks(
            block,
            *args,
            chunks=(x.chunks[0], (k,)),
            dtype=np.float64,
        )
    off = None
    if offset is not None:
        off = np.asarray(offset, dtype=np.float64)
        if off.ndim == 1 and coef.shape[1] == 1:
            off = off.reshape(-1, 1)
        if off.shape != (x.shape[0], coef.shape[1]):
            raise InputError(f"offset must have shape (n, K - 1) = ({x.shape[0]}, {coef.shape[1]}); got {off.shape}")
        check_finite(off, "offset")
    check_finite(x, "X")
    return _proba_block(x, coef, intercept, code_to_sorted, off)


def _label_series(proba: pd.DataFrame, classes: NDArray[Any]) -> pd.Series:
    values = proba.to_numpy()
    labels = pd.Series(classes[np.argmax(np.nan_to_num(values, nan=-1.0), axis=1)], index=proba.index)
    undefined = np.isnan(values).any(axis=1)
    return labels.astype(object).where(~undefined, None) if undefined.any() else labels


def predict_labels(proba: Any, classes: NDArray[Any]) -> Any:
    """Most probable label per row, from :func:`predict_proba`'s output (same kind as its input; a row of NaN
    probabilities, from an unseen level with ``unseen="nan"``, has no label: ``None``)."""
    import dask.dataframe as dd

    if isinstance(proba, dd.DataFrame):
        meta = pd.Series(classes[:0], dtype=object if classes.dtype.kind in "OUS" else classes.dtype)
        return proba.map_partitions(_label_series, classes, meta=meta)
    if isinstance(proba, pd.DataFrame):
        return _label_series(proba, classes)
    if isinstance(proba, da.Array):
        return da.map_blocks(lambda b: classes[np.argmax(b, axis=1)], proba, drop_axis=1, dtype=classes.dtype)
    return classes[np.argmax(proba, axis=1)]
