"""The fitting loop: evaluate -> reduce -> step -> check termination -> record.

One iteration is one accepted move of the coefficients. Every evaluation is one data pass (``DataPasses``) that
returns the reduced statistics; the step rules of :mod:`dmlr.steps` turn them into a direction and the line search
decides how far to go. Convergence is judged on the gradient (``max |g| / sum(v) <= tol``) and, for Newton, on the
decrement (``sqrt(g^T I^{-1} g / sum(v)) <= tol``), never on the change of the coefficients.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol, TypedDict

import numpy as np
from numpy.typing import NDArray

from dmlr.checkpoint import Checkpointer, DriverState
from dmlr.diagnostics import (
    SEPARATION_STEP,
    column_scales,
    separated_classes,
    separating_features,
    standardized_newton_step,
)
from dmlr.errors import (
    ConvergenceWarning,
    InputError,
    NumericalError,
    PerfectSeparationError,
    PerfectSeparationWarning,
)
from dmlr.options import FitOptions
from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION, Request, Statistics
from dmlr.steps import Direction, Iterate, Objective, StepRule, backtrack

__all__ = [
    "Evaluator",
    "FitOutcome",
    "HistoryRecord",
    "LoopSettings",
    "LoopState",
    "Start",
    "Termination",
    "begin",
    "check_weights_total",
    "optimize",
]

logger = logging.getLogger("dmlr")

Array = NDArray[np.float64]


class Evaluator(Protocol):
    """What the loop evaluates: one data pass per call (:class:`~dmlr.passes.DataPasses` is the real one).

    Attributes
    ----------
    count : int
        Passes made so far; the loop sets it when it resumes from a checkpoint, so that counts continue.
    """

    count: int

    def __call__(self, coef: Array, request: Request) -> Statistics:
        """The reduced statistics at ``coef`` (shape (d, m))."""
        ...


class HistoryRecord(TypedDict):
    """One line of a fit's history: an evaluation that moved or finished the fit (callbacks, logs, results)."""

    iteration: int
    kind: str
    loglik: float
    objective: float
    max_abs_score: float
    step_size: float
    seconds: float
    passes: int
    information: str


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


@dataclass(frozen=True)
class LoopState:
    """The loop's state between iterations: the current iterate and the accepted steps so far. Each accepted step
    replaces it; with the pass count, the history and the rule's memory it is what a checkpoint saves."""

    iterate: Iterate
    n_iter: int


@dataclass(frozen=True)
class Start:
    """Where the loop begins, settled before it: the first pass (at ``W = 0``) or a checkpoint.

    Attributes
    ----------
    first : Statistics
        The first pass's record as the loop's design sees it (after dependent columns were dropped).
    saved_first : Statistics
        What a checkpoint stores as the first pass: the whole design's, so a resumed fit makes the same checks.
    resumed : DriverState, optional
        The checkpoint's state when resuming.
    """

    first: Statistics
    saved_first: Statistics
    resumed: DriverState | None = None
    clock: float = field(default_factory=time.perf_counter)
    """When the first pass began (the start record's seconds count it)."""


def begin(passes: Evaluator, request: Request, n_features: int, m: int, checkpoint: Checkpointer | None) -> Start:
    """The first pass (``request`` plus the Gram matrix and column moments the checks need), or the newest valid
    checkpoint of this fit, which repeats no pass (the pass count continues from it)."""
    clock = time.perf_counter()
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        passes.count = resumed.passes
        logger.info("resumed at iteration %d (%d passes done)", resumed.iteration, resumed.passes)
        return Start(resumed.first_stats, resumed.first_stats, resumed, clock)
    first = passes(np.zeros((n_features, m)), replace(request, gram=True, moments=True))
    return Start(first, first, None, clock)


@dataclass
class FitOutcome:
    """What the optimizer returns to the results layer.

    Attributes
    ----------
    final : Iterate
        The last accepted iterate; ``final.stats.information`` is set when inference was computed.
    converged : bool
    n_iter : int
        Accepted steps.
    history : list of dict
        One record per evaluation that moved or finished the fit.
    method : str
        The rule used (``"newton"``, ``"bohning"``, ``"lbfgs"``, or any registered rule's name).
    message : str
        Why the loop stopped, in words.
    first_stats : Statistics
        The first pass's record (it carries the column moments used to detect a constant column).
    termination : Termination
        Why the loop stopped.
    """

    final: Iterate
    converged: bool
    n_iter: int
    history: list[dict[str, Any]]
    method: str
    message: str
    first_stats: Statistics = field(repr=False)
    termination: Termination = Termination.MAX_ITER


@dataclass(frozen=True)
class LoopSettings:
    """What stays fixed for a whole loop.

    Attributes
    ----------
    objective : Objective
    tol : float
        Convergence tolerance (see module docstring).
    max_iter : int
        Maximum accepted steps.
    inference : bool
        End with the information at the optimum (one extra pass for rules whose passes do not compute it).
    separation : {"raise", "warn"}
        What a detected separation does: raise :class:`PerfectSeparationError`, or warn and report
        ``converged=False``.
    class_labels : sequence, optional
        Labels in code order (base first), to name separated classes.
    feature_names : sequence of str, optional
        The ``d`` model column names, to name the features along which classes separate.
    full_rank : bool
        Whether the design has full column rank (the separation check needs it).
    final : Request
        What the statistics at the optimum must hold for inference: the information, and the meat of a robust
        covariance (then every pass that computes the exact information also computes the meat, so the optimum's
        pass has both and no extra pass is made).
    """

    objective: Objective
    tol: float = FitOptions.tol
    max_iter: int = FitOptions.max_iter
    inference: bool = True
    separation: str = "raise"
    class_labels: Sequence[Any] | None = None
    feature_names: Sequence[str] | None = None
    full_rank: bool = True
    final: Request = WITH_INFORMATION


def optimize(
    passes: Evaluator,
    rule: StepRule,
    settings: LoopSettings,
    *,
    start: Start | None = None,
    first_request: Request = SCORE_ONLY,
    checkpoint: Checkpointer | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    start_fields: Mapping[str, Any] | None = None,
    fit_state: Mapping[str, Any] | None = None,
) -> FitOutcome:
    """Maximize the penalized log-likelihood from ``W = 0`` (or from a checkpoint).

    Parameters
    ----------
    passes : Evaluator
        Evaluates statistics (one pass per call).
    rule : StepRule
        Proposes the directions (built for this fit: :func:`dmlr.steps.registry.make_rule`).
    settings : LoopSettings
    start : Start, optional
        The first pass or checkpoint, already made and checked (``dmlr.fit`` checks the weights and the rank
        before the loop). Without it the loop makes the first pass itself (``first_request`` plus the Gram matrix
        and moments, at ``W = 0`` of shape ``(len(objective.mask), len(class_labels) - 1)``: one non-base class
        when ``class_labels`` is not given) and checks the weights.
    checkpoint : Checkpointer, optional
        Write the loop's state after every recorded iteration (no pass is repeated on resuming; the result is the
        one an uninterrupted run gives).
    callback : callable, optional
        Called with each history record as it is made.
    start_fields : mapping, optional
        Added to the history's start record (the rule's settings, what ``method="auto"`` chose).
    fit_state : mapping, optional
        JSON-able facts the fit's checkpoints carry besides the loop's state (the classes, auto's choice), so that
        a resumed fit is set up as the interrupted one was.

    Returns
    -------
    FitOutcome
    """
    first_stats = None if start is None else start.first
    d = first_stats.score.shape[0] if first_stats is not None else len(settings.objective.mask)
    if start is None:
        m = len(settings.class_labels or ()) - 1 if settings.class_labels else 1
        start = begin(passes, first_request, d, m, checkpoint)
        check_weights_total(start.first, settings.class_labels)
    log = _History(passes, rule, start.saved_first, checkpoint, callback, clock=start.clock, fit_state=fit_state)

    def evaluate(coef: Array, request: Request) -> Iterate:
        final = settings.final
        if request.information and request.information_every == 1 and final.meat:
            request = replace(request, meat=True, probability_weights=final.probability_weights)
        return Iterate.at(coef, passes(coef, request), settings.objective)

    state = _initial(rule, start, settings.objective, log, start_fields)
    termination: Termination | None = None
    while termination is None:
        termination, new, size = _step(rule, evaluate, state, settings.tol, settings.max_iter)
        if new is not None:
            rule.accept(state.iterate, new)
            state = LoopState(new, state.n_iter + 1)  # replaced, never changed in place
            log.record(state.iterate, state.n_iter, rule.name, size)
    it, n_iter = state.iterate, state.n_iter
    final = settings.final
    if settings.inference and (not it.stats.information_exact or (final.meat and it.stats.meat is None)):
        it = evaluate(it.coef, final)
        log.record(it, n_iter, "inference", 0.0)
    termination, message = _diagnose(it, termination, start.first, settings)
    return FitOutcome(it, termination.converged, n_iter, log.records, rule.name, message, start.first, termination)


def _initial(
    rule: StepRule, start: Start, objective: Objective, log: _History, start_fields: Mapping[str, Any] | None
) -> LoopState:
    """The loop's state at its start: ``W = 0`` and the rule prepared from the first pass, or a checkpoint's."""
    resumed, first = start.resumed, start.first
    if resumed is None:
        it = Iterate.at(np.zeros(first.score.shape), first, objective)
        rule.prepare(first)
        log.record(it, 0, "start", 0.0, dict(start_fields or {}))
        return LoopState(it, 0)
    it = Iterate.at(resumed.coef, resumed.stats, objective)
    log.records.extend(resumed.history)
    rule.restore(resumed.rule_state, None if first.gram is None else first.full_gram())
    return LoopState(it, resumed.iteration)


@dataclass
class _History:
    """The loop's records: each one logged, checkpointed with the loop's state, and passed to the callback."""

    passes: Evaluator
    rule: StepRule
    saved_first: Statistics
    checkpoint: Checkpointer | None
    callback: Callable[[dict[str, Any]], None] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    clock: float = field(default_factory=time.perf_counter)
    fit_state: Mapping[str, Any] | None = None

    def record(self, it: Iterate, iteration: int, kind: str, step: float, extra: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        rec: HistoryRecord = {
            "iteration": iteration,
            "kind": kind,
            "loglik": it.stats.loglik,
            "objective": it.objective,
            "max_abs_score": float(np.max(np.abs(it.gradient))),
            "step_size": step,
            "seconds": now - self.clock,
            "passes": self.passes.count,
            "information": _information_kind(it.stats),
        }
        self.clock = now
        # stored and passed on as plain dicts (JSON, checkpoints, callbacks)
        self.records.append({**rec, **(extra or {})})
        if self.checkpoint is not None:
            state = DriverState(
                iteration,
                self.passes.count,
                it.coef,
                it.stats,
                self.saved_first,
                self.records,
                self.rule.state(),
                dict(self.fit_state or {}),
            )
            self.checkpoint.save(state)
        logger.info(
            "iter %3d %-9s loglik %.10g  max|score| %.3e  step %.3g  %.2fs  passes %d",
            iteration, kind, rec["loglik"], rec["max_abs_score"], step, rec["seconds"], rec["passes"],
        )  # fmt: skip
        if self.callback is not None:
            self.callback(self.records[-1])


def _information_kind(stats: Statistics) -> str:
    """What the record's pass computed of the information: ``"exact"``, ``"estimated"`` (on a sample of the rows,
    ``Request.information_every``) or ``"none"``."""
    if stats.information is None:
        return "none"
    return "exact" if stats.information_exact else "estimated"


def _diagnose(
    it: Iterate, termination: Termination, first: Statistics, settings: LoopSettings
) -> tuple[Termination, str]:
    """After the loop: a converged fit that is really separated (raise or warn), or a warning for no convergence."""
    tol, max_iter = settings.tol, settings.max_iter
    message = _message(termination, tol, max_iter)
    if termination.converged and settings.full_rank and it.stats.information is not None:
        d, m = it.coef.shape
        labels = settings.class_labels or list(range(m + 1))
        names = settings.feature_names or [f"x{j}" for j in range(d)]
        separated = _separation(it, first, settings.objective, labels, names)
        if separated:
            if settings.separation == "raise":
                raise PerfectSeparationError(separated)
            warnings.warn(separated, PerfectSeparationWarning, stacklevel=4)
            return Termination.SEPARATION, "separation: " + separated
    if not termination.converged:
        warnings.warn(
            f"dmlr did not converge: {message}; max |score| / n = {it.max_abs_gradient():.3e} "
            f"(tol {tol:g}). Increase max_iter or use method='newton'.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return termination, message


def _step(
    rule: StepRule, evaluate: Callable[[Array, Request], Iterate], state: LoopState, tol: float, max_iter: int
) -> tuple[Termination | None, Iterate | None, float]:
    """One iteration: why the loop stops here, or the accepted iterate and its step length (each trial computes what
    its direction asks for)."""
    it, n_iter = state.iterate, state.n_iter
    if not it.finite:
        raise NumericalError(
            f"non-finite log-likelihood or coefficients at iteration {n_iter}; "
            "the data may be separable or badly scaled"
        )
    if it.max_abs_gradient() <= tol:
        return Termination.GRADIENT, None, 0.0
    if n_iter >= max_iter:
        return Termination.MAX_ITER, None, 0.0
    direction = rule.direction(it)
    if _decrement_small(direction, it, tol):
        return Termination.DECREMENT, None, 0.0
    ls = backtrack(lambda c: evaluate(c, direction.request), it, direction.step)
    fallback = rule.fallback(it) if ls.iterate is None else None
    if fallback is not None:
        ls = backtrack(lambda c: evaluate(c, fallback.request), it, fallback.step)
    if ls.iterate is None:
        return Termination.LINE_SEARCH, None, 0.0
    return None, ls.iterate, ls.step


def _message(termination: Termination, tol: float, max_iter: int) -> str:
    if termination in (Termination.GRADIENT, Termination.DECREMENT):
        return f"{termination.value} ({tol:g})"
    if termination is Termination.MAX_ITER:
        return f"max_iter ({max_iter}) reached"
    return termination.value


def _separation(
    it: Iterate, first: Statistics, objective: Objective, labels: Sequence[Any], features: Sequence[str]
) -> str:
    """A message naming the separated classes and the features along which they separate when the stopping
    point is not a finite optimum, else ``""``."""
    if first.col_sum is None or first.col_sumsq is None:
        return ""
    scales = column_scales(first.col_sum, first.col_sumsq, first.weight_sum)
    step = standardized_newton_step(objective.information(it.stats), it.gradient, scales)
    size = float(np.max(np.abs(step)))
    if size <= SEPARATION_STEP:
        return ""
    classes = separated_classes(step, labels)
    cells = ", ".join(f"{f} ({v:.3g})" for f, v in separating_features(step, features))
    return (
        f"perfect or quasi-perfect separation involving class(es) {classes} along the feature(s) {cells} "
        f"(standardized Newton step per feature): the maximum-likelihood estimate does not exist (the coefficients "
        f"diverge; the step where the fit stopped is {size:.3g} in standardized units, a finite optimum gives about "
        f"tol). Fit with l2 > 0, or remove or merge what separates them."
    )


def _decrement_small(direction: Direction, it: Iterate, tol: float) -> bool:
    """Whether an exact (unshifted) Newton decrement says the optimum is reached."""
    if direction.decrement is None or direction.shift != 0.0:
        return False
    return math.sqrt(max(direction.decrement, 0.0) / max(it.stats.weight_sum, 1e-300)) <= tol


def check_weights_total(stats: Statistics, labels: Sequence[Any] | None = None) -> None:
    """Raise :class:`InputError` when the weights sum to zero or some class carries no weight (named)."""
    if not stats.weight_sum > 0:
        raise InputError("the weights sum to zero: no observation contributes to the fit")
    empty = np.nonzero(stats.class_weights <= 0)[0]
    if empty.size:
        names = [labels[int(i)] if labels is not None else int(i) for i in empty]
        raise InputError(
            f"class(es) {names} have zero total weight: their coefficients would diverge to -inf. "
            f"Remove those labels, or give their rows weight (only {int((stats.class_weights > 0).sum())} class(es) "
            "carry weight)"
        )
