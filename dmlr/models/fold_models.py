"""Cross-validation's fold models started at the fit of every row: every fold model of a penalty iterates on its own
information at that fit, all of them in the same passes.

A fold model leaves out about ``1/folds`` of the rows, so its optimum is ``O(1/sqrt(n))`` from the fit of every row
at the same penalty. The fit of every row runs first (a model of a bank, :mod:`dmlr.models.bank`); its passes of
second-order statistics are split by fold (:class:`FoldSplit`: each row adds to its fold's record, so the split costs
no more arithmetic than the whole), and its last one, at the optimum, gives each fold model ``f`` its information
``H_f = sum_{g != f} I_g`` and score at the start. Each model then iterates ``b <- b + H_f^-1 g_f(b)`` with that
information factored once: a pass evaluates the scores of every model not yet converged with one GEMM per class for
all of them (:class:`~dmlr.oracle.stacked.StackedScoreKernel`), and their held-out scores from the same
probabilities. A model stops where :func:`dmlr.fit`'s Newton would (its gradient or its decrement below ``tol``),
at the coefficients its scores were computed at: the held-out scores are those of the coefficients reported.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import operator
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.diagnostics import dependent_columns
from dmlr.errors import InputError
from dmlr.fitting.fitter import objective_of
from dmlr.fitting.results import null_loglik
from dmlr.models.bank import BankKernel, FoldSplitKernel, Idle
from dmlr.models.weightings import FoldStack
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.stacked import HELD_SUMS, StackedScoreKernel, StackedScores
from dmlr.oracle.statistics import WITH_INFORMATION, Statistics
from dmlr.passes.kernel import Sums
from dmlr.results.results import MNLogitResults
from dmlr.steps import Objective
from dmlr.steps.base import flat
from dmlr.steps.lbfgs import InformationSolver, Pair, add_pair, two_loop

__all__ = [
    "SPLIT_DECREMENT",
    "START_DECREMENT",
    "FoldModel",
    "FoldRun",
    "FoldSplit",
    "FoldStart",
    "decrement_of",
    "fold_result",
]

Array = NDArray[np.float64]
phases = logging.getLogger("dmlr.phase")

METHOD = "fixed information from the fit of every row"
"""What a fold model's results say of how it was fitted."""


START_DECREMENT = 1e-2
"""The fit of every row's Newton decrement at a split pass from which its fold models start: the fit is then in
Newton's region of quadratic convergence (a pass or two from its optimum), and its information there is as good a
start for the fold models as at the optimum (both are within ``O(1/sqrt(n))`` of theirs); their first passes run
alongside the fit's last ones."""


SPLIT_DECREMENT = 1.0
"""A fit's passes are split by fold once the decrement of its last exact information is at most this (Newton's
quadratic phase, where :data:`START_DECREMENT` is a pass or two away): the split costs a copy of the rows, which the
passes far from the optimum would not use."""


LEAD_DISTANCE = 1e-3
"""Penalties whose difference from the lead's is at most this fraction of the smallest diagonal entry of the
penalized information at ``W = 0`` have their fold models start from the lead's fit of every row (:func:`near_lead`):
the optimum then moves by about that fraction of a coefficient's size, less than a fold's rows move it when a fold
has fewer than ~1,000,000 rows, so their fold models take as many passes as from a fit of their own."""


@dataclass(frozen=True)
class FoldStart:
    """A pass of a fit of every row split by fold: where its penalty's fold models start.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
        The coefficients of the pass.
    intercept : bool
    columns : tuple of int, optional
        The data columns the fit uses.
    objective : Objective
        The penalized objective (the fit's penalty).
    parts : tuple of Statistics
        Each fold's record at ``coef``.
    """

    coef: Array
    intercept: bool
    columns: tuple[int, ...] | None
    objective: Objective
    parts: tuple[Statistics, ...]

    @staticmethod
    def of_kernel(kernel: Any, parts: tuple[Statistics, ...], l2: float) -> FoldStart:
        """The start from a split pass of the fit's statistics kernel."""
        return FoldStart(np.array(kernel.coef), bool(kernel.intercept), kernel.columns, _objective(kernel, l2), parts)

    def at_l2(self, l2: float) -> FoldStart:
        """The same pass as the start of another penalty's fold models (each steps from here on its own objective)."""
        if l2 == self.objective.l2:
            return self
        return dataclasses.replace(self, objective=Objective.ridge(l2, self.coef.shape[0], self.intercept))

    def training(self, fold: int) -> Statistics:
        """The record of the rows outside ``fold``."""
        return functools.reduce(operator.add, [p for g, p in enumerate(self.parts) if g != fold])

    @functools.cached_property
    def decrement(self) -> float:
        """The fit's Newton decrement at :attr:`coef` (:func:`decrement_of`)."""
        return decrement_of(self.objective, self.coef, functools.reduce(operator.add, self.parts))


def _objective(kernel: Any, l2: float) -> Objective:
    """The penalized objective of a fit's statistics kernel."""
    return Objective.ridge(l2, kernel.coef.shape[0], kernel.intercept)


def decrement_of(objective: Objective, coef: Array, stats: Statistics) -> float:
    """The Newton decrement ``sqrt(g^T H^-1 g / sum(v))`` of a record with the information at ``coef`` (``inf``:
    singular)."""
    gradient = flat(objective.penalized(coef, stats.score))
    try:
        move = scipy.linalg.cho_solve(scipy.linalg.cho_factor(objective.information(stats)), gradient)
    except np.linalg.LinAlgError:
        return math.inf
    return math.sqrt(max(float(gradient @ move), 0.0) / max(stats.weight_sum, 1e-300))


@dataclass
class FoldSplit:
    """The pass engine of a fit of every row (a model of a bank) that splits its passes of exact second-order
    statistics by fold: each fold's record separately, their sum for the fit. It tells the fold models' run
    (:class:`FoldRun`), through ``board``, each pass it has seen and where they may start.

    Attributes
    ----------
    folds, seed : int
        The folds (:func:`dmlr.fold_ids`).
    l2 : float
        The fit's penalty.
    board : threading.Condition
        Shared with the fold models' run.
    engine : MemberEngine
        The fit's engine in its bank (:meth:`bind`).
    latest : FoldStart, optional
        The last split pass.
    seen : int
        Passes of the bank this fit has seen the end of.
    finished : bool
        The fit has ended (or failed).
    final : FoldStart, optional
        What the fold models need of the fit once it has ended (its coefficients, columns, objective; no parts).
    far : bool
        The last exact information's decrement was above :data:`SPLIT_DECREMENT`: the next pass is not split.
    serves : tuple of int
        The penalties (positions in the run's list) whose fold models start from this fit.
    lead : float, optional
        A backup: the fit of every row at another penalty than the lead fit's (``lead``). It leaves after the first
        pass (shared with the lead's, and so free) when its fold models can start from the lead's fit
        (:func:`near_lead`), and goes on as the fit of its penalty otherwise.
    declined : bool
        The backup left: its penalties' fold models start from the lead's fit.
    """

    folds: int
    seed: int
    l2: float
    board: threading.Condition
    engine: Any = None
    latest: FoldStart | None = None
    seen: int = 0
    finished: bool = False
    final: FoldStart | None = None
    far: bool = False
    serves: tuple[int, ...] = ()
    lead: float | None = None
    declined: bool = False

    def bind(self, engine: Any) -> FoldSplit:
        """Use ``engine`` (the fit's member engine)."""
        self.engine = engine
        return self

    def reduce(self, kernel: Any) -> Any:
        """One pass of ``kernel``: split by fold when it computes an exact information near the optimum (not the
        first pass; the last exact information's decrement at most :data:`SPLIT_DECREMENT`), until a split pass
        is where the fold models start (:meth:`ready`: they take the first such pass, so later splits would go
        unused)."""
        request = getattr(kernel, "request", None)
        exact = request is not None and request.information and request.information_every <= 1
        first = request is not None and request.moments
        started = self.latest is not None and self.latest.decrement <= START_DECREMENT
        start = None
        if exact and not (first or self.far or started):
            record = self.engine.reduce(FoldSplitKernel(kernel, self.folds, self.seed))
            start = FoldStart.of_kernel(kernel, tuple(record.records), self.l2)
            out = functools.reduce(operator.add, start.parts)
            self.far = start.decrement > SPLIT_DECREMENT
        else:
            out = self.engine.reduce(kernel)
            if exact and not started:  # (once started, no pass is split again: no decrement needed)
                self.far = decrement_of(_objective(kernel, self.l2), kernel.coef, out) > SPLIT_DECREMENT
        if first and self.lead is not None and near_lead(out, self.l2, self.lead, kernel.intercept):
            with self.board:
                self.declined = True
            raise _Declined
        with self.board:
            self.latest = start or self.latest
            self.seen += 1
            self.board.notify_all()
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not bound yet
            raise AttributeError(name)
        return getattr(self.engine, name)

    def finish(self, result: MNLogitResults | None, passes: Any = None) -> None:
        """The fit has ended (``None``: failed)."""
        with self.board:
            if result is not None:
                objective = objective_of(passes.design, self.l2)
                self.final = FoldStart(result.coef, result.intercept, passes.columns, objective, ())
            self.finished = True
            self.board.notify_all()

    def ready(self) -> FoldStart | None:
        """Where the fold models start, once known: the last split pass when the fit is within
        :data:`START_DECREMENT` of its optimum or has ended there."""
        latest = self.latest
        if latest is None:
            return None
        at_end = self.final is not None and np.array_equal(latest.coef, self.final.coef)
        return latest if at_end or latest.decrement <= START_DECREMENT else None

    def job(
        self, fit: Callable[[Any], tuple[MNLogitResults, Any]]
    ) -> Callable[[Any], tuple[MNLogitResults, Any] | None]:
        """The bank job of the fit ``fit`` (given its engine): it runs on this split engine and says when it ends
        (``None``: a backup that was not needed)."""

        def run(engine: Any) -> tuple[MNLogitResults, Any] | None:
            done: tuple[MNLogitResults, Any] | None = None
            try:
                done = fit(self.bind(engine))
                return done
            except _Declined:
                return None
            finally:
                self.finish(*(done if done is not None else (None, None)))

        return run


class _Declined(Exception):
    """A backup fit of every row is not needed (:attr:`FoldSplit.lead`): it leaves its bank."""


def near_lead(first: Statistics, l2: float, lead: float, intercept: bool) -> bool:
    """Whether the fold models of penalty ``l2`` start from the fit of every row at ``lead`` rather than from their
    own, decided from the first pass's record (at ``W = 0``, with its Gram matrix): not when ``l2 = 0`` and the
    design has dependent columns (which a fit without penalty drops or refuses, where a penalty keeps them), nor
    when the penalties differ by more than :data:`LEAD_DISTANCE` of the smallest diagonal entry of the penalized
    information at ``W = 0`` (the change of penalty then moves the optimum enough that the fold models' first
    step from the lead's would leave them several passes from theirs)."""
    if first.gram is None:
        return False
    gram = first.full_gram()
    if l2 == 0.0 and dependent_columns(gram, [str(j) for j in range(gram.shape[0])]):
        return False
    k = first.score.shape[1] + 1
    diagonal = np.diag(gram)[int(intercept) :] * (k - 1) / k**2  # the information's at W = 0: p = 1/K for every class
    return bool(diagonal.size == 0 or abs(l2 - lead) <= LEAD_DISTANCE * float(diagonal.min()))


@dataclass
class FoldModel:
    """One fold model's iteration and outcome: L-BFGS's two-loop recursion (:func:`~dmlr.steps.lbfgs.two_loop`)
    around its exact information at the start, every pair kept.

    Attributes
    ----------
    start : FoldStart
    fold : int
    coef : ndarray, shape (d, m)
    solver : InformationSolver
        Its penalized information at the start, factored.
    train : Statistics
        Its training rows' record at the start (rows, class weights).
    loglik, weight_sum : float
        At ``coef``, once it has stopped.
    held : ndarray, shape (5,)
        Held-out sums (:data:`~dmlr.oracle.stacked.HELD_SUMS`) at ``coef``.
    n_iter : int
    converged : bool
    stopped : bool
        Stopped at ``max_iter`` passes without converging.
    value : float
        The penalized log-likelihood at the last point kept (a step that lowers it is halved).
    kept, gradient : ndarray, shape (d, m)
        The last point kept and its gradient (the start's, until a pass is kept).
    pairs : deque
        The BFGS pairs ``(s, y, 1 / s^T y)``.
    """

    start: FoldStart
    fold: int
    coef: Array
    solver: InformationSolver
    train: Statistics
    kept: Array
    gradient: Array
    value: float
    loglik: float = math.nan
    weight_sum: float = math.nan
    held: Array | None = None
    n_iter: int = 0
    converged: bool = False
    stopped: bool = False
    pairs: deque[Pair] = dataclasses.field(default_factory=deque)

    @staticmethod
    def at_start(start: FoldStart, fold: int) -> FoldModel:
        """Fold ``fold``'s model one step from a pass of the fit of every row (its information and score there)."""
        train = start.training(fold)
        try:
            solver = InformationSolver.exact(start.objective.information(train))
        except np.linalg.LinAlgError:
            raise InputError(
                f"the rows outside fold {fold} do not identify the model (l2={start.objective.l2:g}: their information "
                "is singular); use fewer folds, a penalty, or fold_inference=True (each fold model fitted alone)"
            ) from None
        gradient = start.objective.penalized(start.coef, train.score)
        value = start.objective.value(start.coef, train)
        return FoldModel(start, fold, start.coef + solver.solve(gradient), solver, train, start.coef, gradient, value)

    def update(self, record: StackedScores, i: int, tol: float, max_iter: int) -> bool:
        """Model ``i`` of a stacked pass at :attr:`coef`: keep its values there, and stop when converged (True) or
        after ``max_iter`` passes (:attr:`stopped`), else step."""
        assert record.held is not None
        self.n_iter += 1
        self.loglik, self.weight_sum = float(record.loglik[i]), float(record.weight_sum[i])
        self.held = record.held[i].copy()
        objective = self.start.objective
        value = self.loglik - objective.penalty(self.coef)
        if value < self.value - 1e-10 * (1 + abs(self.value)) and self.n_iter < max_iter:
            # the step went past the optimum (a fold far from the fit of every row): half of it, no curvature learned
            # (not a rounding-level change near the optimum, where the sums' order differs from the start's)
            self.coef = self.kept + 0.5 * (self.coef - self.kept)
            return False
        gradient = objective.penalized(self.coef, record.score[i])
        add_pair(self.pairs, self.coef - self.kept, self.gradient - gradient)
        self.kept, self.gradient, self.value = self.coef, gradient, value
        move = two_loop(gradient, self.pairs, self.solver.solve, scaled=False)
        weight = max(self.weight_sum, 1e-300)
        decrement = math.sqrt(max(float(np.vdot(gradient, move)), 0.0) / weight)
        self.converged = bool(np.abs(gradient).max() / weight <= tol or decrement <= tol)
        self.stopped = not self.converged and self.n_iter >= max_iter
        if not (self.converged or self.stopped):
            self.coef = self.coef + move
        return self.converged

    def held_sums(self) -> Sums:
        """The held-out sums as :func:`~dmlr.models.scores.scores_of` reads them."""
        assert self.held is not None
        return Sums({name: np.array([v]) for name, v in zip(HELD_SUMS, self.held, strict=True)})


@dataclass
class FoldRun:
    """The fold models of every penalty, as a model of the same bank as the fits of every row: in each pass of the
    bank it evaluates every fold model started and not yet stopped (stacked scores), so the first of their passes
    runs alongside the last of the fits' (:data:`START_DECREMENT`). A fit that ended without a split pass at its
    optimum (``inference=False``) has one run here.

    Attributes
    ----------
    splits : list of FoldSplit
        The fits of every row, the lead first: each penalty's fold models start from the fit that serves it
        (:attr:`FoldSplit.serves`; a declined backup's from the lead's).
    l2s : tuple of float
        The penalties.
    folds, seed : int
    tol : float
        A fold model stops where its gradient or decrement (per unit weight) is at most ``tol``.
    max_iter : int
        Passes at most per fold model.
    models : dict of (int, int) to FoldModel
        By (penalty's position, fold).
    origin : dict of int to int
        The fit (position in :attr:`splits`) each started penalty's fold models started from.
    """

    splits: list[FoldSplit]
    l2s: tuple[float, ...]
    folds: int
    seed: int
    tol: float
    max_iter: int
    models: dict[tuple[int, int], FoldModel] = dataclasses.field(default_factory=dict)
    origin: dict[int, int] = dataclasses.field(default_factory=dict)

    def __call__(self, engine: Any) -> dict[tuple[int, int], FoldModel]:
        board = self.splits[0].board
        passes = 0
        while True:
            with board:  # every fit has taken in the last pass (its split, if any)
                board.wait_for(functools.partial(self._caught_up, passes))
            if any(s.finished and s.final is None and not s.declined for s in self.splits):
                return self.models  # a fit failed: the bank raises its error
            for i, split in enumerate(self.splits):
                self._start(i, split.ready())
            active = [m for m in self.models.values() if not (m.converged or m.stopped)]
            missing = [i for i, s in enumerate(self.splits) if s.final is not None and not self._began(i)]
            if not active and not missing and all(s.finished for s in self.splits):
                return self.models
            groups = _by_columns(active)
            kernels = [_kernel(group, self.folds, self.seed) for group in groups] + [
                FoldSplitKernel(_final_kernel(self.splits[i]), self.folds, self.seed) for i in missing
            ]
            records = engine.reduce(BankKernel(tuple(kernels) or (Idle(),))).records
            passes += 1
            for group, record in zip(groups, records, strict=False):
                for j, model in enumerate(group):
                    model.update(record, j, self.tol, self.max_iter)
            for i, record in zip(missing, records[len(groups) : len(groups) + len(missing)], strict=True):
                final = self.splits[i].final
                assert final is not None
                self._start(i, dataclasses.replace(final, parts=tuple(record.records)))
            if active:
                still = sum(not (m.converged or m.stopped) for m in self.models.values())
                phases.info(f"cross-validation: fold models' pass {passes}, {still} of them still iterating")

    def _caught_up(self, passes: int) -> bool:
        """Every fit has seen ``passes`` passes, or ended."""
        return all(s.finished or s.seen >= passes for s in self.splits)

    def _began(self, i: int) -> bool:
        """Fit ``i``'s fold models have started."""
        return i in self.origin.values()

    def _served(self, i: int) -> tuple[int, ...]:
        """The penalties whose fold models start from fit ``i``: its own, and the lead's those of declined backups."""
        if i > 0:
            return () if self.splits[i].declined else self.splits[i].serves
        return tuple(j for s in self.splits if s is self.splits[0] or s.declined for j in s.serves)

    def _start(self, i: int, start: FoldStart | None) -> None:
        """Start the fold models of the penalties fit ``i`` serves from ``start`` (each once)."""
        if start is None:
            return
        for j in self._served(i):
            if j in self.origin:
                continue
            self.origin[j] = i
            for fold in range(self.folds):
                self.models[(j, fold)] = FoldModel.at_start(start.at_l2(self.l2s[j]), fold)
            phases.info(f"cross-validation: {self.folds} fold models of l2={self.l2s[j]:g} started")


def _final_kernel(split: FoldSplit) -> StatisticsKernel:
    """The fit's statistics with the information at its optimum, for a fit that ended without them."""
    final = split.final
    assert final is not None
    return StatisticsKernel(final.coef, WITH_INFORMATION, final.intercept, final.columns)


def _by_columns(models: list[FoldModel]) -> list[list[FoldModel]]:
    """The models grouped by the columns they use (one stacked kernel per group)."""
    groups: dict[Any, list[FoldModel]] = {}
    for m in models:
        groups.setdefault(m.start.columns, []).append(m)
    return list(groups.values())


def _kernel(group: list[FoldModel], folds: int, seed: int) -> StackedScoreKernel:
    first = group[0].start
    weighting = FoldStack(tuple(m.fold for m in group), folds, seed)
    coefs = np.stack([m.coef for m in group])
    return StackedScoreKernel(coefs, first.intercept, weighting, first.columns, held_out=True)


def fold_result(model: FoldModel, full: MNLogitResults, passes: Any) -> MNLogitResults:
    """The results of a fold model, laid out as the fit of every row ``full`` it started from, at its own penalty
    (no covariance: its scores need the coefficients only)."""
    probability = full.weights_type == "probability"
    n_rows = int(model.train.n_rows)
    message = "converged" if model.converged else "did not converge"
    return dataclasses.replace(
        full, coef=model.coef, covariance=None, llf=model.loglik, l2=model.start.objective.l2,
        llnull=null_loglik(passes, model.train.class_weights, has_offset=False),
        nobs=float(n_rows) if probability else model.weight_sum, n_rows=n_rows, converged=model.converged,
        n_iter=model.n_iter, method=METHOD, history=[], message=f"{message} ({model.n_iter} passes)", refit=None,
        fitted_data=None, fitted_labels=None, n_clusters=None, cluster_correction=None,
    )  # fmt: skip
