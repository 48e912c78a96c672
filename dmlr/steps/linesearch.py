"""Backtracking (Armijo) line search along an ascent direction; each trial costs one data pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dmlr.steps.base import Iterate

__all__ = ["LineSearchResult", "backtrack"]

Array = NDArray[np.float64]
EPS = float(np.finfo(np.float64).eps)


@dataclass
class LineSearchResult:
    """Outcome of a line search.

    Attributes
    ----------
    iterate : Iterate or None
        The accepted point, ``None`` when no step length improved the objective.
    step : float
        Accepted step length (last one tried when failed).
    trials : int
        Number of points evaluated (data passes).
    """

    iterate: Iterate | None
    step: float
    trials: int


def backtrack(
    evaluate: Callable[[Array], Iterate],
    start: Iterate,
    direction: Array,
    *,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_trials: int = 40,
) -> LineSearchResult:
    """Halve the step until the objective increases by the Armijo fraction of the predicted ascent.

    Parameters
    ----------
    evaluate : callable
        Maps coefficients (shape (d, m)) to the iterate there (one data pass).
    start : Iterate
        Current point.
    direction : ndarray, shape (d, m)
        Ascent direction (``gradient . direction > 0``).
    c1 : float
        Armijo fraction.
    shrink : float
        Step multiplier after a rejection.
    max_trials : int
        Evaluations before giving up.

    Returns
    -------
    LineSearchResult

    Notes
    -----
    When the predicted ascent is below the rounding level of the objective, a trial is accepted if the objective
    did not fall beyond rounding and the gradient shrank: the step is then a refinement the objective cannot see.
    """
    slope = float(np.vdot(start.gradient, direction))
    if not np.isfinite(slope) or slope <= 0.0:
        return LineSearchResult(None, 0.0, 0)
    noise = 16.0 * EPS * max(abs(start.objective), 1.0)
    step = 1.0
    for trial in range(1, max_trials + 1):
        new = evaluate(start.coef + step * direction)
        if new.finite:
            gain = new.objective - start.objective
            if gain >= c1 * step * slope:
                return LineSearchResult(new, step, trial)
            if step * slope <= noise and gain >= -noise and (new.max_abs_gradient() < start.max_abs_gradient()):
                return LineSearchResult(new, step, trial)
        step *= shrink
    return LineSearchResult(None, step, max_trials)
