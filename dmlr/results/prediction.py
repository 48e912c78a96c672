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
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.kernels import block_rows, linear_predictor, log_probabilities

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["PredictionResults", "get_prediction", "gradient_weights", "probabilities", "probability_sums"]

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


def probabilities(x: Array, coef: Array, intercept: bool, offset: Array | None = None) -> tuple[Array, Array, Array]:
    """Probabilities of every class in code order (base first) ``p`` (r, K), the non-base ones ``q`` (r, m), and the
    design ``[1, x]`` (r, d) of a block of rows."""
    q, lse = log_probabilities(linear_predictor(x, coef, intercept, offset))
    p = np.column_stack([np.exp(-lse), q])
    design = np.column_stack([np.ones(x.shape[0]), x]) if intercept else x
    return p, q, design


def gradient_weights(p: Array, q: Array) -> Array:
    """``a_k = p_k (e_k - q)``, shape (r, K, m): ``d p_k / d theta = a_k kron x`` (code order, ``e_0 = 0``)."""
    m = q.shape[1]
    a = -p[:, :, None] * q[:, None, :]
    a[:, np.arange(1, m + 1), np.arange(m)] += p[:, 1:]
    return a


def probability_sums(
    x: Array, coef: Array, intercept: bool, offset: Array | None = None, log: bool = False
) -> tuple[Array, Array]:
    """Sums over rows of ``p`` (``log p`` with ``log``) of every class, shape (K,), and of its gradient in theta,
    shape (K, m, d); code order."""
    p, q, design = probabilities(x, coef, intercept, offset)
    a = gradient_weights(p, q)
    if log:
        a /= p[:, :, None]
    return (np.log(p) if log else p).sum(axis=0), np.einsum("rkl,rc->klc", a, design)


def block_sums(x: Any, func: Any, width: int) -> tuple[Array, int]:
    """``sum`` over the row blocks of ``x`` of ``func(block)`` (a flat array of ``width``) and the number of rows:
    one pass over a dask array (whose row count need not be known), or one call for NumPy input."""
    if not isinstance(x, da.Array):
        return func(np.asarray(x)), int(x.shape[0])

    def with_rows(block: Array) -> Array:
        return np.concatenate([func(block), [block.shape[0]]])[None, :]

    parts = da.map_blocks(with_rows, x, dtype=np.float64, chunks=((1,) * x.numblocks[0], (width + 1,)))
    total = np.asarray(parts.sum(axis=0).compute())
    return total[:width], int(total[width])


def _block(x: Array, coef: Array, cov: Array, intercept: bool, order: NDArray[np.intp], offset: Array | None) -> Array:
    """Probabilities and standard errors of one block: ``[p (r x K), se (r x K)]``, sorted label order."""
    d, m = coef.shape
    out = np.empty((x.shape[0], 2 * (m + 1)))
    blocks = cov.reshape(m, d, m, d).transpose(1, 0, 2, 3).reshape(d, m * m * d)
    step = block_rows(x.shape[0], m * m * d)
    for s in range(0, x.shape[0], step):
        e = min(s + step, x.shape[0])
        p, q, design = probabilities(x[s:e], coef, intercept, None if offset is None else offset[s:e])
        quad = np.einsum("rlkj,rj->rlk", (design @ blocks).reshape(e - s, m, m, d), design)  # x' V_{l l'} x
        a = gradient_weights(p, q)
        var = np.einsum("rkl,rlj,rkj->rk", a, quad, a)
        out[s:e, : m + 1] = p[:, order]
        out[s:e, m + 1 :] = np.sqrt(np.maximum(var, 0.0))[:, order]
    return out


def _average(x: Array, coef: Array, intercept: bool, order: NDArray[np.intp], offset: Array | None) -> Array:
    """Sums over the rows of one block: ``[sum p (K), sum of gradients (K x m d)]`` flattened, sorted label order."""
    total, grad = probability_sums(x, coef, intercept, offset)
    return np.concatenate([total[order], grad[order].ravel()])


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
        total, n = block_sums(x, lambda b: _average(b, res.coef, res.intercept, order, offset), k * (1 + res.n_params))
        mean = total[:k] / n
        grad = total[k:].reshape(k, res.n_params) / n
        se = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", grad, cov, grad), 0.0))
        return PredictionResults(mean, se, res.classes)
    if isinstance(x, da.Array):
        both = da.map_blocks(
            _block, x, res.coef, cov, res.intercept, order, None, dtype=np.float64, chunks=(x.chunks[0], (2 * k,))
        )
        return PredictionResults(both[:, :k], both[:, k:], res.classes)
    both = _block(np.asarray(x, dtype=np.float64), res.coef, cov, res.intercept, order, offset)
    return PredictionResults(both[:, :k], both[:, k:], res.classes, index)
