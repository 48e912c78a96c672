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
from dmlr.oracle.statistics import WITH_INFORMATION, Request, Statistics
from dmlr.passes import DataPasses
from dmlr.steps import Direction, Iterate, Objective, StepRule, backtrack
from dmlr.steps.lbfgs import QuasiNewtonRule
from dmlr.steps.newton import NewtonRule
from dmlr.steps.registry import make_rule

__all__ = [
    "Evaluator",
    "FitOutcome",
    "HistoryRecord",
    "LoopState",
    "Start",
    "Termination",
    "begin",
    "check_weights_total",
    "null_loglik",
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


def optimize(
    passes: Evaluator,
    *,
    n_classes: int,
    n_features: int,
    method: str,
    objective: Objective,
    tol: float,
    max_iter: int,
    inference: bool,
    callback: Callable[[dict[str, Any]], None] | None = None,
    separation: str = "raise",
    class_labels: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
    checkpoint: Checkpointer | None = None,
    start: Start | None = None,
    full_rank: bool = True,
    final: Request = WITH_INFORMATION,
    sample_information: int = 1,
    refresh_every: int = 0,
    start_fields: Mapping[str, Any] | None = None,
) -> FitOutcome:
    """Maximize the penalized log-likelihood from ``W = 0``.

    Parameters
    ----------
    passes : DataPasses
        Evaluates statistics (one pass per call).
    n_classes, n_features : int
        ``K`` and ``d``.
    method : {"auto", "newton", "bohning"}
    objective : Objective
    tol : float
        Convergence tolerance (see module docstring).
    max_iter : int
        Maximum accepted steps.
    inference : bool
        End with the information at the optimum (one extra pass for bound-based rules).
    callback : callable, optional
        Called with each history record as it is made.
    separation : {"raise", "warn"}
        What a detected separation does: raise :class:`PerfectSeparationError`, or warn and report
        ``converged=False``.
    class_labels : sequence, optional
        Labels in code order (base first), to name separated classes.
    feature_names : sequence of str, optional
        The ``d`` model column names, to name the features along which classes separate.
    checkpoint : Checkpointer, optional
        Write the loop's state after every recorded iteration, and start from the newest valid checkpoint of this
        fit if there is one (no pass is repeated; the result is the one an uninterrupted run gives).
    start : Start, optional
        The first pass or checkpoint, already made and checked (:func:`begin`; ``dmlr.fit`` checks the weights and
        the rank before the loop). Without it the loop makes the first pass itself and checks the weights.
    full_rank : bool
        Whether the design has full column rank (the separation check needs it).
    final : Request
        What the statistics at the optimum must hold for inference: the information, and the meat of a robust
        covariance (then every pass that computes the information also computes the meat, so the optimum's
        pass has both and no extra pass is made).
    sample_information : int
        Newton's ``sample_every`` (:class:`~dmlr.steps.newton.NewtonRule`): far from the optimum, estimate the
        information from every ``sample_information``-th unit of rows.
    refresh_every : int
        L-BFGS's preconditioner refresh (:class:`~dmlr.steps.lbfgs.QuasiNewtonRule`; 0: none).
    start_fields : mapping, optional
        Added to the history's start record: L-BFGS's ``refresh_every`` and what ``method="auto"`` chose
        (:meth:`~dmlr.steps.cost.Choice.record`), so that a resumed fit repeats the same choices.

    Returns
    -------
    FitOutcome
    """
    m, d = n_classes - 1, n_features
    rule: StepRule = make_rule(method, objective, n_classes, d)
    if isinstance(rule, NewtonRule):
        rule.sample_every = sample_information
    if isinstance(rule, QuasiNewtonRule):
        rule.refresh_every = refresh_every

    if start is None:
        start = begin(passes, rule.first_request, d, m, checkpoint)
        check_weights_total(start.first, class_labels)
    log = _History(passes, rule, start.saved_first, checkpoint, callback, clock=start.clock)

    def evaluate(coef: Array, request: Request) -> Iterate:
        if request.information and request.information_every == 1 and final.meat:
            request = replace(request, meat=True, probability_weights=final.probability_weights)
        return Iterate.at(coef, passes(coef, request), objective)

    first_stats, resumed, n_iter = start.first, start.resumed, 0
    if resumed is None:
        it = Iterate.at(np.zeros((d, m)), first_stats, objective)
        rule.prepare(first_stats)
        log.record(it, 0, "start", 0.0, dict(start_fields or {}))
    else:
        it = Iterate.at(resumed.coef, resumed.stats, objective)
        log.records.extend(resumed.history)
        n_iter = resumed.iteration
        rule.restore(resumed.rule_state, None if first_stats.gram is None else first_stats.full_gram())

    state = LoopState(it, n_iter)
    termination: Termination | None = None
    while termination is None:
        termination, new, size = _step(rule, lambda c: evaluate(c, rule.request), state, tol, max_iter)
        if new is not None:
            rule.accept(state.iterate, new)
            state = LoopState(new, state.n_iter + 1)  # replaced, never changed in place
            log.record(state.iterate, state.n_iter, rule.name, size)
    it, n_iter = state.iterate, state.n_iter

    if inference and (not it.stats.information_exact or (final.meat and it.stats.meat is None)):
        it = evaluate(it.coef, final)
        log.record(it, n_iter, "inference", 0.0)
    labels = class_labels or list(range(n_classes))
    names = feature_names or [f"x{j}" for j in range(d)]
    termination, message = _diagnose(
        it, termination, first_stats, objective, (labels, names), separation, tol, max_iter, full_rank
    )
    return FitOutcome(it, termination.converged, n_iter, log.records, rule.name, message, first_stats, termination)


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
                iteration, self.passes.count, it.coef, it.stats, self.saved_first, self.records, self.rule.state()
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
    it: Iterate,
    termination: Termination,
    first: Statistics,
    objective: Objective,
    names: tuple[Sequence[Any], Sequence[str]],
    separation: str,
    tol: float,
    max_iter: int,
    full_rank: bool,
) -> tuple[Termination, str]:
    """After the loop: a converged fit that is really separated (raise or warn), or a warning for no convergence.

    ``names`` holds the class labels in code order and the model column names (to name what is separated)."""
    message = _message(termination, tol, max_iter)
    if termination.converged and full_rank and it.stats.information is not None:
        separated = _separation(it, first, objective, *names)
        if separated:
            if separation == "raise":
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
    rule: StepRule, trial: Callable[[Array], Iterate], state: LoopState, tol: float, max_iter: int
) -> tuple[Termination | None, Iterate | None, float]:
    """One iteration: why the loop stops here, or the accepted iterate and its step length."""
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
    ls = backtrack(trial, it, direction.step)
    fallback = rule.fallback(it) if ls.iterate is None else None
    if fallback is not None:
        ls = backtrack(trial, it, fallback.step)
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


def null_loglik(passes: DataPasses, class_weights: Array, *, has_offset: bool, tol: float = 1e-10) -> float:
    """Log-likelihood of the intercept-only model.

    Without an offset it has the closed form ``sum_c n_c log(n_c / n)`` from the weighted class counts
    (shape (K,)). With an offset the intercept-only model is fitted by Newton over the data, through the same loop
    as every fit (a few passes; a fit that does not converge warns like any other).
    """
    total = float(class_weights.sum())
    if not has_offset:
        present = class_weights[class_weights > 0]
        return float(np.sum(present * np.log(present / total)))
    outcome = optimize(
        _InterceptOnly(passes), n_classes=class_weights.size, n_features=1, method="newton",
        objective=Objective(0.0, np.zeros(1)), tol=tol, max_iter=100, inference=False, separation="warn",
    )  # fmt: skip
    return outcome.final.stats.loglik


@dataclass
class _InterceptOnly:
    """The passes of the intercept-only model (features ignored): an :class:`Evaluator` over the same data."""

    passes: DataPasses

    @property
    def count(self) -> int:
        return self.passes.count

    @count.setter
    def count(self, value: int) -> None:
        self.passes.count = value

    def __call__(self, coef: Array, request: Request) -> Statistics:
        return self.passes(coef, request, intercept_only=True)
