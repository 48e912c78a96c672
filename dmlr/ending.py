"""How a fit's loop ended: convergence, separation (seen before, during or after the loop), or ``max_iter`` with
the rate that says how far it was from ``tol``.

:func:`diagnose` runs once after the loop; the criteria are in :mod:`dmlr.diagnostics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dmlr.diagnostics import SEPARATION_STEP, column_magnitudes, separation_message, standardized_newton_step
from dmlr.errors import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning, warn
from dmlr.oracle.statistics import Statistics
from dmlr.steps import Iterate, Objective

if TYPE_CHECKING:
    from dmlr.driver import LoopSettings

__all__ = ["Termination", "diagnose"]

Array = NDArray[np.float64]


class Termination(Enum):
    """Why the loop stopped."""

    GRADIENT = "max |score| / n <= tol"
    DECREMENT = "Newton decrement <= tol"
    MAX_ITER = "max_iter reached"
    LINE_SEARCH = "the line search found no step that increases the log-likelihood"
    SEPARATION = "separation"

    @property
    def converged(self) -> bool:
        """Whether this ending is convergence."""
        return self in (Termination.GRADIENT, Termination.DECREMENT)


def diagnose(
    it: Iterate,
    termination: Termination,
    first: Statistics,
    settings: LoopSettings,
    confirm: Callable[[Array], Iterate],
    records: Sequence[Mapping[str, Any]] = (),
) -> tuple[Iterate, Termination, str]:
    """After the loop: a separation (seen by the loop, or a converged fit whose Newton step is still large, confirmed
    by one pass along it: at a finite optimum that pass refines the fit instead) raised or warned, or a warning for
    no convergence."""
    tol, max_iter = settings.tol, settings.max_iter
    message = message_of(termination, tol, max_iter)
    if termination is Termination.SEPARATION and settings.known_separation:
        return it, termination, _separated(settings.known_separation, settings.separation)
    separated = termination is Termination.SEPARATION
    if (separated or termination.converged) and settings.full_rank and it.stats.information is not None:
        step = _linear_predictor_step(it, first, settings.objective)
        if not separated and step is not None and float(np.max(np.abs(step))) > SEPARATION_STEP:
            trial = confirm(it.coef + _newton_step(it, settings.objective))
            after = _linear_predictor_step(trial, first, settings.objective)
            separated = after is not None and float(np.max(np.abs(after))) >= 0.5 * float(np.max(np.abs(step)))
            it, step = (trial, after) if separated or trial.objective >= it.objective else (it, None)
        if separated and step is not None:
            labels = settings.class_labels or list(range(it.coef.shape[1] + 1))
            names = settings.feature_names or [f"x{j}" for j in range(it.coef.shape[0])]
            return it, Termination.SEPARATION, _separated(separation_message(step, labels, names), settings.separation)
    if not termination.converged:
        if termination is Termination.MAX_ITER:
            message += _projection(records, it.stats.weight_sum, tol)
        warn(
            f"dmlr did not converge: {message}; max |score| / n = {it.max_abs_gradient():.3e} "
            f"(tol {tol:g}). Increase max_iter or use method='newton'.",
            ConvergenceWarning,
        )
    return it, termination, message


def _projection(records: Sequence[Mapping[str, Any]], weight_sum: float, tol: float, window: int = 10) -> str:
    """Why ``max_iter`` was not enough: the rate at which ``max |score|`` fell over the last ``window`` iterations
    and the iterations that rate still needs to reach ``tol`` (``""`` with too short a history)."""
    scores = [float(r["max_abs_score"]) for r in records if r.get("kind") not in ("start", "inference", "confirm")]
    if len(scores) <= window or weight_sum <= 0:
        return ""
    now, before = max(scores[-1], 1e-300), max(scores[-window - 1], 1e-300)
    rate = math.log10(before / now) / window
    if rate <= 0:
        return f"; max |score| did not fall over the last {window} iterations"
    needed = math.log10(now / (tol * weight_sum)) / rate
    return (
        f"; over the last {window} iterations max |score| fell {10**rate:.3g}-fold per iteration, a rate that needs "
        f"about {needed:.0f} more to reach tol"
    )


def message_of(termination: Termination, tol: float, max_iter: int) -> str:
    if termination in (Termination.GRADIENT, Termination.DECREMENT):
        return f"{termination.value} ({tol:g})"
    if termination is Termination.MAX_ITER:
        return f"max_iter ({max_iter}) reached"
    return termination.value


def _separated(text: str, what: str) -> str:
    """Raise the separation (``what == "raise"``) or warn; the fit's message."""
    if what == "raise":
        raise PerfectSeparationError(text)
    warn(text, PerfectSeparationWarning)
    return "separation: " + text


def _newton_step(it: Iterate, objective: Objective) -> Array:
    """The Newton step ``I^{-1} g`` at ``it``, shape (d, m) (unit magnitudes)."""
    return standardized_newton_step(objective.information(it.stats), it.gradient, np.ones(it.coef.shape[0]))


def _linear_predictor_step(it: Iterate, first: Statistics, objective: Objective) -> Array | None:
    """The Newton step at ``it`` in units of the linear predictor (``None`` without the first pass's moments)."""
    if first.col_sum is None or first.col_sumsq is None:
        return None
    magnitudes = column_magnitudes(first.col_sum, first.col_sumsq, first.col_abssum, first.weight_sum)
    return _newton_step(it, objective) * magnitudes[:, None]
