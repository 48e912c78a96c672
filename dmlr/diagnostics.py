"""Models without a finite optimum, and singular designs: detection and naming.

Separation
    When classes are (quasi-)completely separated by a linear function of x the MLE does not exist: the
    log-likelihood keeps rising along a direction to infinity. Gradient-based stopping rules are still met (the
    gradient decays like the probabilities of the separated rows), but the Newton step at that point is not small:
    along the divergent direction gradient and curvature decay together, so the step stays of order one. At a
    genuine optimum the Newton step is of the order of the tolerance. dmlr therefore checks, at the point where a
    fit stops, the Newton step ``I^{-1} g`` in units of the linear predictor (each coefficient times the typical size
    of its column's nonzero entries, :func:`column_magnitudes`: 1 for an indicator, so that a level with five rows
    counts as much as a common one); a step above ``SEPARATION_STEP`` on a full-rank design is separation. The classes
    involved are the ones whose coefficient vectors (the base's is 0) move apart along that step.

    Newton sees it coming: an undamped step that moves the linear predictor by at least ``DIVERGING_MOVE`` while its
    predicted gain is below ``DIVERGING_GAIN`` per unit weight (:func:`diverging`) says the rows it moves are
    already predicted with near certainty and the objective is flat along it. At a finite optimum that cannot happen
    twice in a row (Newton's steps shrink quadratically near it, and far from it a step that large gains much more),
    so two such iterations in a row end the fit as separated, within a few passes instead of the tens it takes the
    gradient of the separated rows to decay below the tolerance.

    Most separations of real designs are seen before any step, in the first pass: a class that never occurs among
    the rows where a one-signed column (an indicator above all) is nonzero (:func:`empty_cells`; a destination one
    carrier never flies to) sends that class's coefficient on the column to infinity (each row's likelihood rises
    monotonically as it does, and the column touches no other row). The class sums ``sum_{y = k} v x_j`` come from
    the score at ``W = 0``, where every probability is ``1/K``.

Collinearity
    Constant (besides the intercept), duplicate or collinear columns make ``X^T V X`` singular. Columns are taken in
    design order and a column whose residual variance, after projection on the columns kept before it, is below
    ``COLLINEAR_TOL`` of its own variance is dependent; the columns it is a combination of are reported with it.
    One blocked Cholesky factorization finds them all (O(d^3)).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.oracle.statistics import Statistics

__all__ = [
    "COLLINEAR_TOL",
    "DIVERGING_GAIN",
    "DIVERGING_ITERATIONS",
    "DIVERGING_MOVE",
    "SEPARATION_STEP",
    "DependentColumn",
    "EmptyCell",
    "column_magnitudes",
    "column_scales",
    "constant_columns",
    "dependent_columns",
    "diverging",
    "empty_cells",
    "empty_cells_message",
    "separated_classes",
    "separating_features",
    "separation_message",
    "standardized_newton_step",
]

Array = NDArray[np.float64]

SEPARATION_STEP = 1e-2
"""Largest standardized Newton step still taken as converged (regular fits stop at ~tol; separated ones at ~1)."""
DIVERGING_MOVE = 1.0
"""Smallest move of the linear predictor (largest coefficient step times its column's magnitude) of a diverging step."""
DIVERGING_GAIN = 1e-2
"""Largest predicted gain per unit of the mean row weight of a diverging step."""
DIVERGING_ITERATIONS = 2
"""Consecutive diverging Newton iterations that end a fit as separated."""
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


def column_magnitudes(col_sum: Array, col_sumsq: Array, col_abssum: Array | None, weight_sum: float) -> Array:
    """Typical size of each model column's nonzero entries, ``sum v x^2 / sum v |x|``, shape (d,): 1 for an indicator
    and the intercept, about the values' size for a numeric column, 1 for a zero column. Without ``col_abssum``
    (the first pass of a checkpoint written by an earlier version) the standard deviation (:func:`column_scales`)."""
    if col_abssum is None:
        return column_scales(col_sum, col_sumsq, weight_sum)
    return np.where(col_abssum > 0, col_sumsq / np.where(col_abssum > 0, col_abssum, 1.0), 1.0)


def diverging(step: Array, magnitudes: Array, predicted_gain: float, mean_weight: float) -> bool:
    """Whether an undamped Newton step moves the linear predictor by at least :data:`DIVERGING_MOVE` while it is
    predicted to gain at most :data:`DIVERGING_GAIN` per unit of the mean row weight (the signature of separation).

    Parameters
    ----------
    step : ndarray, shape (d, m)
    magnitudes : ndarray, shape (d,)
        :func:`column_magnitudes`.
    predicted_gain : float
        The quadratic model's gain for the step (``g^T delta / 2`` undamped).
    mean_weight : float
        ``sum(v) / n``.
    """
    move = float(np.max(np.abs(step) * magnitudes[:, None])) if step.size else 0.0
    return move >= DIVERGING_MOVE and predicted_gain <= DIVERGING_GAIN * mean_weight


@dataclass(frozen=True)
class EmptyCell:
    """A class that never occurs among the rows where a one-signed model column is nonzero.

    Attributes
    ----------
    column : int
        Model column index.
    code : int
        Class code (0 = base).
    weight : float
        Weight of the rows where the column is nonzero.
    """

    column: int
    code: int
    weight: float


def empty_cells(first: Statistics, intercept: bool) -> list[EmptyCell]:
    """The (column, class) cells of a first pass without an offset whose class weight is zero, for one-signed
    columns (``|sum v x| == sum v |x|``), heaviest column first (none without the moments).

    Parameters
    ----------
    first : Statistics
        The pass at ``W = 0`` (probabilities ``1/K``): its score, column sums and absolute sums.
    intercept : bool
        Whether model column 0 is the intercept (skipped: an absent class is refused before).
    """
    if first.col_sum is None or first.col_abssum is None:
        return []
    k = first.class_weights.size
    nonbase = first.score + (first.col_sum / k)[:, None]  # sum_{y = c} v x_j, classes 1 .. K - 1
    sums = np.column_stack([first.col_sum - nonbase.sum(axis=1), nonbase])
    one_signed = np.abs(np.abs(first.col_sum) - first.col_abssum) <= 1e-12 * first.col_abssum
    size = np.abs(first.col_sum)
    empty = (np.abs(sums) <= 1e-9 * size[:, None]) & (one_signed & (size > 0))[:, None]
    if intercept:
        empty[0] = False
    cells = [EmptyCell(int(j), int(c), float(size[j])) for j, c in zip(*np.nonzero(empty), strict=True)]
    return sorted(cells, key=lambda cell: (-cell.weight, cell.column, cell.code))


def _cell_text(name: str, group: Sequence[EmptyCell], labels: Sequence[Any]) -> str:
    """One column's empty cells: ``'C(carrier)[T.AS]' (weight 712): all of class 'EWR'`` when one class is left."""
    absent = {c.code for c in group}
    present = [repr(labels[c]) for c in range(len(labels)) if c not in absent]
    what = (
        f"all of class {present[0]}"
        if len(present) == 1
        else "never of class " + ", ".join(repr(labels[c.code]) for c in group)
    )
    return f"{name!r} (weight {group[0].weight:.6g}): {what}"


def empty_cells_message(cells: Sequence[EmptyCell], labels: Sequence[Any], names: Sequence[str]) -> str:
    """The separation message for :func:`empty_cells`, by column (the ten heaviest named)."""
    by_column: dict[int, list[EmptyCell]] = {}
    for cell in cells:
        by_column.setdefault(cell.column, []).append(cell)
    shown = "; ".join(_cell_text(names[j], group, labels) for j, group in list(by_column.items())[:10])
    more = f" (and {len(by_column) - 10} more columns)" if len(by_column) > 10 else ""
    return (
        f"perfect or quasi-perfect separation in {len(cells)} (column, class) cell(s) of {len(by_column)} column(s) "
        f"with no row of the class where the column is nonzero: {shown}{more}. The maximum-likelihood estimate does "
        f"not exist (those coefficients diverge to infinity). Fit with l2 > 0, or merge or remove those levels."
    )


def separation_message(step: Array, labels: Sequence[Any], features: Sequence[str]) -> str:
    """The message of a separation: the classes and the features along which they separate.

    Parameters
    ----------
    step : ndarray, shape (d, m)
        The Newton step in units of the linear predictor (:func:`standardized_newton_step` with
        :func:`column_magnitudes`).
    labels : sequence, length K
        Class labels in code order.
    features : sequence of str, length d
    """
    size = float(np.max(np.abs(step)))
    classes = separated_classes(step, labels)
    cells = ", ".join(f"{f} ({v:.3g})" for f, v in separating_features(step, features))
    return (
        f"perfect or quasi-perfect separation involving class(es) {classes} along the feature(s) {cells} "
        f"(Newton step per feature, in units of the linear predictor): the maximum-likelihood estimate does not "
        f"exist (the coefficients diverge; the step where the fit stopped moves the linear predictor by {size:.3g}, "
        f"a finite optimum gives about tol). Fit with l2 > 0, or remove or merge what separates them."
    )


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


def dependent_columns(
    gram: Array, names: Sequence[str], tol: float = COLLINEAR_TOL, block: int = 256
) -> list[DependentColumn]:
    """Columns of the (weighted) design that are linear combinations of earlier ones, in design order.

    One blocked Cholesky factorization of the correlation form of ``gram`` in design order, O(d^3) in BLAS-3
    products: a column whose pivot (its variance left after projection on the columns kept before it, relative to
    its own) is at most ``tol`` is dependent and skipped. The columns each dependent one is a combination of come
    from one solve with every kept column (its coefficients on kept columns after it are zero).

    Parameters
    ----------
    gram : ndarray, shape (d, d)
        ``X^T V X`` of the model columns (intercept included).
    names : sequence of str, length d
    tol : float
    block : int
        Columns factored per block.

    Returns
    -------
    list of DependentColumn
    """
    d = gram.shape[0]
    diag = np.diag(gram).copy()
    zero = ~(diag > 0)
    scale = np.sqrt(np.where(zero, 1.0, diag))
    corr = gram / np.outer(scale, scale)
    corr[zero, :] = 0.0
    corr[:, zero] = 0.0
    factor = corr.copy()
    dependent = [int(j) for j in np.flatnonzero(zero)]
    for b0 in range(0, d, block):
        dependent += _factor_block(factor, b0, min(b0 + block, d), zero, tol)
    dependent.sort()
    kept = np.array([j for j in range(d) if j not in set(dependent)], dtype=np.intp)
    return [DependentColumn(j, names[j], ()) if zero[j] else DependentColumn(j, names[j], p) for j, p in
            zip(dependent, _partners(corr, factor, kept, dependent, names), strict=True)]  # fmt: skip


def _factor_block(factor: Array, b0: int, b1: int, zero: NDArray[np.bool_], tol: float) -> list[int]:
    """Factor the columns ``b0 .. b1 - 1`` in place (right-looking: the block's diagonal part one column at a time,
    skipping dependent columns, then the rows below by a triangular solve and the rest by one product); returns
    the dependent columns of the block."""
    diagonal = factor[b0:b1, b0:b1]
    kept, dependent = [], []
    for i in range(b1 - b0):
        if zero[b0 + i]:
            continue
        pivot = diagonal[i, i]
        if pivot <= tol:
            dependent.append(b0 + i)
            diagonal[i:, i] = 0.0
            diagonal[i, i:] = 0.0
            continue
        column = diagonal[i:, i] / np.sqrt(pivot)
        diagonal[i:, i] = column
        diagonal[i + 1 :, i + 1 :] -= np.outer(column[1:], column[1:])
        kept.append(i)
    if b1 < factor.shape[0] and kept:
        lower = np.tril(diagonal[np.ix_(kept, kept)])
        below = scipy.linalg.solve_triangular(lower, factor[b1:, b0:b1][:, kept].T, lower=True, check_finite=False).T
        factor[b1:, np.asarray(kept) + b0] = below
        factor[b1:, b1:] -= below @ below.T
    return dependent


def _partners(
    corr: Array, factor: Array, kept: NDArray[np.intp], dependent: list[int], names: Sequence[str]
) -> list[tuple[str, ...]]:
    """For each dependent column, the kept columns it is a combination of (coefficients above 1e-6)."""
    if not dependent or kept.size == 0:
        return [() for _ in dependent]
    lower = np.tril(factor[np.ix_(kept, kept)])
    coef = scipy.linalg.cho_solve(
        (lower, True), corr[np.ix_(kept, np.asarray(dependent, dtype=np.intp))], check_finite=False
    )
    return [tuple(names[kept[i]] for i in np.flatnonzero(np.abs(coef[:, c]) > 1e-6)) for c in range(len(dependent))]


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
        with warnings.catch_warnings():  # an ill-conditioned information is expected here: not the user's concern
            warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
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
