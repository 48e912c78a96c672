"""Models without a finite optimum, and singular designs: detection and naming.

Separation
    When classes are (quasi-)completely separated by a linear function of x the MLE does not exist: the
    log-likelihood keeps rising along a direction to infinity. Gradient-based stopping rules are still met (the
    gradient decays like the probabilities of the separated rows), but the Newton step at that point is not small:
    along the divergent direction gradient and curvature decay together, so the step stays of order one. At a
    genuine optimum the Newton step is of the order of the tolerance. dmlr therefore checks, at the point where a
    fit stops, the Newton step ``I^{-1} g`` measured in standardized units (coefficient times the column's standard
    deviation); a step above ``SEPARATION_STEP`` on a full-rank design is separation. The classes involved are the
    ones whose coefficient vectors (the base's is 0) move apart along that step.

Collinearity
    Constant (besides the intercept), duplicate or collinear columns make ``X^T V X`` singular. Columns are taken in
    design order and a column whose residual variance, after projection on the columns kept before it, is below
    ``COLLINEAR_TOL`` of its own variance is dependent; the columns it is a combination of are reported with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

__all__ = [
    "COLLINEAR_TOL",
    "SEPARATION_STEP",
    "DependentColumn",
    "column_scales",
    "constant_columns",
    "dependent_columns",
    "separated_classes",
    "separating_features",
    "standardized_newton_step",
]

Array = NDArray[np.float64]

SEPARATION_STEP = 1e-2
"""Largest standardized Newton step still taken as converged (regular fits stop at ~tol; separated ones at ~1)."""
COLLINEAR_TOL = 1e-9
"""Relative residual variance below which a column counts as a linear combination of earlier ones."""


def constant_columns(col_sum: Array, col_sumsq: Array, weight_sum: float) -> NDArray[np.bool_]:
    """Which model columns are constant (weighted variance at most 1e-12 of the squared mean; zero columns
    included), from the first pass's column sums and sums of squares, shape (d,)."""
    mean = col_sum / weight_sum
    var = np.maximum(col_sumsq / weight_sum - mean**2, 0.0)
    return np.asarray(var <= 1e-12 * np.maximum(mean**2, 1e-300))


def column_scales(col_sum: Array, col_sumsq: Array, weight_sum: float) -> Array:
    """Standard deviation of every model column (1 for constant columns, whose coefficients are levels), (d,)."""
    mean = col_sum / weight_sum
    sd = np.sqrt(np.maximum(col_sumsq / weight_sum - mean**2, 0.0))
    return np.where(constant_columns(col_sum, col_sumsq, weight_sum), 1.0, sd)


@dataclass(frozen=True)
class DependentColumn:
    """A column that is a linear combination of earlier columns.

    Attributes
    ----------
    index : int
        Model column index.
    name : str
    partners : tuple of str
        Earlier columns it is a combination of (empty for a column that is identically zero).
    """

    index: int
    name: str
    partners: tuple[str, ...]

    def describe(self) -> str:
        """Human-readable: ``'x3' = combination of ['x1', 'x2']``."""
        if not self.partners:
            return f"{self.name!r} is identically zero"
        if self.partners == ("const",):
            return f"{self.name!r} is constant"
        return f"{self.name!r} is a linear combination of {list(self.partners)}"


def dependent_columns(gram: Array, names: Sequence[str], tol: float = COLLINEAR_TOL) -> list[DependentColumn]:
    """Columns of the (weighted) design that are linear combinations of earlier ones, in design order.

    Parameters
    ----------
    gram : ndarray, shape (d, d)
        ``X^T V X`` of the model columns (intercept included).
    names : sequence of str, length d

    Returns
    -------
    list of DependentColumn
    """
    diag = np.diag(gram).copy()
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    corr = gram / np.outer(scale, scale)
    kept: list[int] = []
    dependent: list[DependentColumn] = []
    for j in range(len(names)):
        if diag[j] <= 0:
            dependent.append(DependentColumn(j, names[j], ()))
            continue
        if kept:
            sub = corr[np.ix_(kept, kept)]
            coef = scipy.linalg.solve(sub, corr[kept, j], assume_a="pos")
            residual = corr[j, j] - corr[kept, j] @ coef
        else:
            coef, residual = np.zeros(0), corr[j, j]
        if residual <= tol * corr[j, j]:
            partners = tuple(names[kept[i]] for i in np.nonzero(np.abs(coef) > 1e-6)[0])
            dependent.append(DependentColumn(j, names[j], partners))
        else:
            kept.append(j)
    return dependent


def standardized_newton_step(information: Array, gradient: Array, scales: Array) -> Array:
    """Newton step ``I^{-1} g`` as a signed ``(d, m)`` matrix in standardized units (times each column's scale).

    Parameters
    ----------
    information : ndarray, shape (m d, m d)
        (Penalized) information at the stopping point.
    gradient : ndarray, shape (d, m)
    scales : ndarray, shape (d,)
        :func:`column_scales`.
    """
    d, m = gradient.shape
    g = gradient.ravel(order="F")
    step: NDArray[Any]
    try:
        step = scipy.linalg.solve(information, g, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning, ValueError):
        step = np.linalg.lstsq(information, g, rcond=None)[0]
    if not np.all(np.isfinite(step)):
        return np.full((d, m), np.inf)
    scaled: Array = step.reshape(m, d).T * scales[:, None]
    return scaled


def separated_classes(step: Array, labels_in_code_order: Sequence[Any]) -> list[Any]:
    """Classes whose coefficient vectors move apart from the others' along the divergent step.

    Parameters
    ----------
    step : ndarray, shape (d, m)
        Signed standardized Newton step; pairwise distances of the class columns are used.
    labels_in_code_order : sequence, length K
        Base first.

    Returns
    -------
    list
        The labels involved (for K = 2 both classes).
    """
    vectors = np.column_stack([np.zeros(step.shape[0]), step])  # the base's coefficients are fixed at 0
    k = vectors.shape[1]
    dist = np.abs(vectors[:, :, None] - vectors[:, None, :]).max(axis=0)
    if k == 2:
        return list(labels_in_code_order)
    # a separated class is far from every other class; the others keep a near neighbour
    score = np.array([np.delete(dist[c], c).min() for c in range(k)])
    return [labels_in_code_order[int(c)] for c in np.nonzero(score >= 0.5 * score.max())[0]]


def separating_features(step: Array, names: Sequence[str], share: float = 0.25) -> list[tuple[str, float]]:
    """The model columns that carry the divergent step: the direction along which classes separate.

    Parameters
    ----------
    step : ndarray, shape (d, m)
        Signed standardized Newton step at the stopping point.
    names : sequence of str, length d
        Model column names.
    share : float
        A column is named when its largest ``|step|`` over the classes is at least ``share`` of the largest.

    Returns
    -------
    list of (str, float)
        Names and their largest ``|step|``, largest first.
    """
    size = np.abs(step).max(axis=1)
    order = np.argsort(-size, kind="stable")
    return [(str(names[j]), float(size[j])) for j in order if size[j] >= share * size.max()]
