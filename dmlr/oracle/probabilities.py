"""Linear predictors and the one softmax every pass, prediction and effect uses.

Probabilities are computed class-major (``m x r``: the reductions over classes run along contiguous rows); callers
holding row-major predictors transpose. Stable for any logit: the shift includes the base class's 0, so neither
``exp`` overflows nor the normalizer underflows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["linear_predictor", "log_probabilities", "row_scores", "softmax"]

Array = NDArray[np.float64]


def linear_predictor(x: Array, coef: Array, intercept: bool, offset: Array | None = None) -> Array:
    """Linear predictor of the non-base classes.

    Parameters
    ----------
    x : ndarray, shape (r, p)
        Feature rows (without the intercept column).
    coef : ndarray, shape (d, m)
        Coefficients; row 0 is the intercept when ``intercept`` is true.
    intercept : bool
        Whether ``coef`` has an intercept row.
    offset : ndarray, shape (r, m), optional
        Added to the linear predictor.

    Returns
    -------
    ndarray, shape (r, m)
    """
    eta = x @ coef[1:] + coef[0] if intercept else x @ coef
    if offset is not None:
        eta += offset
    return eta


def softmax(eta: Array) -> tuple[Array, Array]:
    """Probabilities of the non-base classes and the log-normalizer, class-major; ``eta`` is left unchanged.

    Parameters
    ----------
    eta : ndarray, shape (m, r)
        Linear predictors of the non-base classes (the base's is 0), one row per class.

    Returns
    -------
    prob : ndarray, shape (m, r)
        ``p_ki = exp(eta_ki - lse_i)``.
    lse : ndarray, shape (r,)
        ``log(1 + sum_k exp(eta_ki))``, computed with a shift that includes the base's 0.
    """
    shift = np.max(eta, axis=0, initial=0.0)
    ex = eta - shift
    np.exp(ex, out=ex)
    denom = ex.sum(axis=0)
    denom += np.exp(-shift)
    ex /= denom
    lse = np.log(denom)
    lse += shift
    return ex, lse


def log_probabilities(eta: Array) -> tuple[Array, Array]:
    """:func:`softmax` of row-major predictors: ``prob`` (r, m) and ``lse`` (r,) from ``eta`` of shape (r, m)."""
    prob, lse = softmax(np.ascontiguousarray(eta.T))
    return prob.T, lse


def row_scores(
    x: Array, codes: NDArray[np.integer[Any]], coef: Array, intercept: bool, offset: Array | None = None
) -> tuple[Array, Array]:
    """Each row's score and log-probability of its class.

    Parameters
    ----------
    x : ndarray, shape (r, p)
    codes : ndarray of int, shape (r,)
        Class codes (0: the base).
    coef : ndarray, shape (d, m)
    intercept : bool
    offset : ndarray, shape (r, m), optional

    Returns
    -------
    scores : ndarray, shape (r, m d)
        ``(y_i - p_i) kron [1, x_i]``, class-major (class ``c``'s block: columns ``c d .. (c + 1) d``), unweighted.
    log_true : ndarray, shape (r,)
        ``log p_{i, y_i}``.
    """
    eta = linear_predictor(x, coef, intercept, offset)
    prob, lse = log_probabilities(eta)
    r = x.shape[0]
    resid = -prob
    hit = np.flatnonzero(codes > 0)
    resid[hit, codes[hit] - 1] += 1.0
    log_true = -lse
    log_true[hit] += eta[hit, codes[hit] - 1]
    design = np.column_stack([np.ones(r), x]) if intercept else x
    return (resid[:, :, None] * design[:, None, :]).reshape(r, -1), log_true
