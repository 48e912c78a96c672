"""Predicted probabilities and labels of new data, with delta-method standard errors and confidence intervals
(``res.predict_proba``, ``res.predict``, ``res.get_prediction``).

Probabilities of NumPy and pandas input are computed at once; of dask input lazily, per partition (a dask array of
the same row chunks).

For a row ``x`` (model columns, ``const`` included) and class ``k`` (any of the K, base included), with ``q`` the
non-base probabilities (length ``m``) and ``e_k`` the indicator of ``k`` among them (zero for the base)::

    d p_k / d theta = a_k kron x,   a_k = p_k (e_k - q)        (class-major theta, length m d)
    se(p_k)^2 = a_k^T Q a_k,        Q_{l l'} = x^T V_{l l'} x  (V the fit's covariance, d x d blocks)

so robust and cluster covariances carry through. Average predictions ``mean_i p_k(x_i)`` have the averaged
gradient, accumulated over rows in the same pass (one pass of the engine for a dask array, whatever its
partitioning). Rows are processed in blocks (``Q`` is ``r x m x m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.blocks import block_rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.effects import PredictionSumsKernel, prediction_block
from dmlr.oracle.probabilities import linear_predictor, log_probabilities
from dmlr.results.sums import row_sums

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["PredictionResults", "get_prediction", "predict_labels", "predict_proba"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class PredictionResults:
    """Predicted probabilities and their standard errors.

    Attributes
    ----------
    predicted : ndarray or dask.array.Array, shape (n, K), or (K,) when averaged
        Probabilities, columns in sorted label order.
    se : ndarray or dask.array.Array, same shape
        Delta-method standard errors.
    classes : ndarray, shape (K,)
    index : pandas.Index, optional
        Row labels of a DataFrame input.
    """

    predicted: Any
    se: Any
    classes: NDArray[Any]
    index: pd.Index | None = None

    def conf_int(self, alpha: float = 0.05) -> tuple[Any, Any]:
        """Lower and upper ``1 - alpha`` Wald limits ``p -/+ z se``, clipped to [0, 1]."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        z = scipy.stats.norm.ppf(1 - alpha / 2)
        lower, upper = self.predicted - z * self.se, self.predicted + z * self.se
        if isinstance(lower, da.Array):
            return da.clip(lower, 0.0, 1.0), da.clip(upper, 0.0, 1.0)
        return np.clip(lower, 0.0, 1.0), np.clip(upper, 0.0, 1.0)

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per observation (or one row when averaged), columns ``(class, [predicted, se, ci_lower,
        ci_upper])`` (computed if lazy)."""
        lower, upper = self.conf_int(alpha)
        parts = [np.atleast_2d(np.asarray(v)) for v in (self.predicted, self.se, lower, upper)]
        names = ["predicted", "se", "ci_lower", "ci_upper"]
        stacked = np.stack(parts, axis=2).reshape(parts[0].shape[0], -1)
        columns = pd.MultiIndex.from_product([list(self.classes.tolist()), names], names=["class", "statistic"])
        index = self.index if self.index is not None and self.predicted.ndim == 2 else None
        return pd.DataFrame(stacked, columns=columns, index=index)


def get_prediction(res: MNLogitResults, X: Any, *, average: bool = False, offset: Any = None, **encode: Any) -> Any:
    """See :meth:`dmlr.results.results.MNLogitResults.get_prediction`."""
    cov = res.cov_params().to_numpy()
    order = res.code_to_sorted
    k = res.classes.size
    x, index = res.model_rows(X, **encode)
    if offset is not None and not isinstance(x, da.Array):
        offset = np.asarray(offset, dtype=np.float64).reshape(x.shape[0], -1)
    if average:
        record = row_sums(x, PredictionSumsKernel(res.coef, res.intercept, order), offset)
        total, n = record["values"], float(record["rows"][0])
        mean = total[:k] / n
        grad = total[k:].reshape(k, res.n_params) / n
        se = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", grad, cov, grad), 0.0))
        return PredictionResults(mean, se, res.classes)
    if isinstance(x, da.Array):
        both = da.map_blocks(
            prediction_block,
            x,
            res.coef,
            cov,
            res.intercept,
            order,
            None,
            dtype=np.float64,
            chunks=(x.chunks[0], (2 * k,)),
        )
        return PredictionResults(both[:, :k], both[:, k:], res.classes)
    both = prediction_block(np.asarray(x, dtype=np.float64), res.coef, cov, res.intercept, order, offset)
    return PredictionResults(both[:, :k], both[:, k:], res.classes, index)


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
