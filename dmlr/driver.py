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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypedDict

import numpy as np
from numpy.typing import NDArray

from dmlr.checkpoint import Checkpointer, DriverState
from dmlr.diagnostics import (
    DIVERGING_ITERATIONS,
)
from dmlr.ending import Termination, diagnose
from dmlr.errors import (
    InputError,
    NumericalError,
    PerfectSeparationError,
)
from dmlr.options import FitOptions
from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION, Request, Statistics
from dmlr.steps import Direction, Iterate, Objective, StepRule, backtrack
from dmlr.steps.linesearch import trust_trials

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
    """What the loop evaluates: one data pass per call (:class:`~dmlr.fitting.evaluator.FitPasses` is the real one).

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
    point : tuple of (ndarray, Statistics), optional
        Where the loop starts and the statistics there, when not at ``W = 0`` (the intercept-only optimum, derived
        exactly from the first pass).
    """

    first: Statistics
    saved_first: Statistics
    resumed: DriverState | None = None
    clock: float = field(default_factory=time.perf_counter)
    """When the first pass began (the start record's seconds count it)."""
    point: tuple[Array, Statistics] | None = None


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
    known_separation : str
        A separation seen before the loop (:func:`dmlr.diagnostics.empty_cells`): raised at once, or warned with
        the loop not run.
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
    known_separation: str = ""


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

    if settings.known_separation and settings.separation == "raise":
        raise PerfectSeparationError(settings.known_separation)
    state = _initial(rule, start, settings.objective, log, start_fields)
    termination = Termination.SEPARATION if settings.known_separation else None
    while termination is None:
        termination, new, size = _step(rule, evaluate, state, settings.tol, settings.max_iter)
        if new is not None:
            kind = rule.name  # the rule that made the step (accepting it may switch rules)
            rule.accept(state.iterate, new)
            state = LoopState(new, state.n_iter + 1)  # replaced, never changed in place
            log.record(state.iterate, state.n_iter, kind, size)
    it, n_iter = state.iterate, state.n_iter
    final = settings.final
    if settings.inference and (not it.stats.information_exact or (final.meat and it.stats.meat is None)):
        it = evaluate(it.coef, final)
        log.record(it, n_iter, "inference", 0.0)

    def confirm(coef: Array) -> Iterate:
        trial = evaluate(coef, replace(settings.final, information=True))
        log.record(trial, n_iter, "confirm", 1.0)
        return trial

    it, termination, message = diagnose(it, termination, start.first, settings, confirm, log.records)
    return FitOutcome(it, termination.converged, n_iter, log.records, rule.name, message, start.first, termination)


def _initial(
    rule: StepRule, start: Start, objective: Objective, log: _History, start_fields: Mapping[str, Any] | None
) -> LoopState:
    """The loop's state at its start: ``W = 0`` and the rule prepared from the first pass, or a checkpoint's."""
    resumed, first = start.resumed, start.first
    if resumed is None:
        coef, stats = start.point if start.point is not None else (np.zeros(first.score.shape), first)
        it = Iterate.at(coef, stats, objective)
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
    if direction.diverging >= DIVERGING_ITERATIONS:
        return Termination.SEPARATION, None, 0.0
    if _decrement_small(direction, it, tol):
        return Termination.DECREMENT, None, 0.0
    revise = getattr(rule, "revise", None)
    if revise is not None:
        new = trust_trials(revise, evaluate, it, direction)
        return (Termination.LINE_SEARCH, None, 0.0) if new is None else (None, new, 1.0)
    ls = backtrack(lambda c: evaluate(c, direction.request), it, direction.step)
    fallback = rule.fallback(it) if ls.iterate is None else None
    if fallback is not None:
        ls = backtrack(lambda c: evaluate(c, fallback.request), it, fallback.step)
    if ls.iterate is None:
        return Termination.LINE_SEARCH, None, 0.0
    return None, ls.iterate, ls.step


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
