"""Predicted probabilities with delta-method standard errors and confidence intervals (``res.get_prediction``).

For a row ``x`` (model columns, ``const`` included) and class ``k`` (any of the K, base included), with ``q`` the
non-base probabilities (length ``m``) and ``e_k`` the indicator of ``k`` among them (zero for the base)::

    d p_k / d theta = a_k kron x,   a_k = p_k (e_k - q)        (class-major theta, length m d)
    se(p_k)^2 = a_k^T Q a_k,        Q_{l l'} = x^T V_{l l'} x  (V the fit's covariance, d x d blocks)

so robust and cluster covariances carry through. Average predictions ``mean_i p_k(x_i)`` have the averaged
gradient, accumulated over rows in the same pass. Rows are processed in blocks (``Q`` is ``r x m x m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.effects import prediction_block, prediction_sums, with_rows

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["PredictionResults", "block_sums", "get_prediction"]

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


def block_sums(x: Any, func: Any, width: int) -> tuple[Array, int]:
    """``sum`` over the row blocks of ``x`` of ``func(block)`` (a flat array of ``width``) and the number of rows:
    one pass over a dask array (whose row count need not be known), or one call for NumPy input."""
    if not isinstance(x, da.Array):
        return func(np.asarray(x)), int(x.shape[0])
    parts = da.map_blocks(with_rows, x, func, dtype=np.float64, chunks=((1,) * x.numblocks[0], (width + 1,)))
    total = np.asarray(parts.sum(axis=0).compute())
    return total[:width], int(total[width])


def get_prediction(res: MNLogitResults, X: Any, *, average: bool = False, offset: Any = None, **encode: Any) -> Any:
    """See :meth:`dmlr.results.results.MNLogitResults.get_prediction`."""
    cov = res.cov_params().to_numpy()
    order = res.code_to_sorted
    k = res.classes.size
    x, index = res.model_rows(X, **encode)
    if offset is not None and not isinstance(x, da.Array):
        offset = np.asarray(offset, dtype=np.float64).reshape(x.shape[0], -1)
    if average:
        if isinstance(x, da.Array) and offset is not None:
            raise InputError("offset is for NumPy/pandas input; predict a dask array without it")
        sums = partial(prediction_sums, coef=res.coef, intercept=res.intercept, order=order, offset=offset)
        total, n = block_sums(x, sums, k * (1 + res.n_params))
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
