"""Globalization: the backtracking (Armijo) line search along an ascent direction, and the trials of a trust-region
rule (one that judges each trial and revises its direction itself); each trial costs one data pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dmlr.oracle.statistics import Request
from dmlr.steps.base import Direction, Iterate

__all__ = ["MAX_TRIALS", "LineSearchResult", "backtrack", "trust_trials"]

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
    max_trials: int = 20,
) -> LineSearchResult:
    """Shorten the step until the objective increases by the Armijo fraction of the predicted ascent.

    After a rejected trial the next step is the maximizer of the quadratic through the objective's value and slope
    at the start and its value at the trial, kept within ``[0.1, shrink]`` times the rejected step (a non-finite
    trial: 0.1 times): a step that overshoots by far is cut at once, not halved a dozen times.

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
        Largest step multiplier after a rejection.
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
            best = step * step * slope / (2.0 * (step * slope - gain)) if step * slope > gain else shrink * step
            step = min(max(best, 0.1 * step), shrink * step)
        else:
            step *= 0.1
    return LineSearchResult(None, step, max_trials)


MAX_TRIALS = 4
"""Trial passes an iteration of a trust-region rule may spend before the loop gives up (each rejection shortens the
step to what the objective along the rejected one says is best: one or two suffice)."""


def trust_trials(
    revise: Callable[[Iterate, Direction, Iterate], Direction | None],
    evaluate: Callable[[Array, Request], Iterate],
    it: Iterate,
    direction: Direction,
) -> Iterate | None:
    """The trials of a trust-region rule from ``it``: each judged by ``revise``, which accepts it (``None``) or
    returns the direction to try next; ``None`` when :data:`MAX_TRIALS` trials found no acceptable one."""
    for _ in range(MAX_TRIALS):
        trial = evaluate(it.coef + direction.step, direction.request)
        revised = revise(it, direction, trial)
        if revised is None:
            return trial
        direction = revised
    return None
