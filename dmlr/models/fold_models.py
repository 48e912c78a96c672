"""Cross-validation's fold models started at the fit of every row: every fold model of a penalty iterates on its own
information at that fit, all of them in the same passes.

A fold model leaves out about ``1/folds`` of the rows, so its optimum is ``O(1/sqrt(n))`` from the fit of every row
at the same penalty, and a small change of penalty moves it less (:func:`near_lead`): one fit of every row, the
lead, serves the fold models of every penalty near its own, each on its own objective. A fit of every row runs first
(a model of a bank, :mod:`dmlr.models.bank`); its passes of
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
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.fitting.results import null_loglik
from dmlr.models.bank import BankKernel, FoldSplitKernel, Idle
from dmlr.models.fold_split import FoldSplit, FoldStart, StartFiles
from dmlr.models.weightings import FoldStack
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.stacked import HELD_SUMS, StackedScoreKernel, StackedScores
from dmlr.oracle.statistics import WITH_INFORMATION, Statistics
from dmlr.passes.kernel import Sums
from dmlr.results.results import MNLogitResults
from dmlr.steps.lbfgs import InformationSolver, Pair, add_pair, two_loop

__all__ = ["FoldModel", "FoldRun", "fold_result"]

Array = NDArray[np.float64]
phases = logging.getLogger("dmlr.phase")

METHOD = "fixed information from the fit of every row"
"""What a fold model's results say of how it was fitted."""


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
                f"the rows outside fold {fold} do not identify the model (l2={start.l2:g}: their information "
                "is singular); use fewer folds, a penalty, or fold_inference=True (each fold model fitted alone)"
            ) from None
        gradient = start.objective.penalized(start.coef, train.score)
        value = start.objective.value(start.coef, train)
        return FoldModel(start, fold, start.coef + solver.solve(gradient), solver, train, start.coef, gradient, value)

    def update(self, record: StackedScores, i: int, tol: float, max_iter: int) -> bool:
        """Model ``i`` of a stacked pass at :attr:`coef`: keep its values there, and stop when converged (True) or
        after ``max_iter`` passes (:attr:`stopped`), else step. A model that stopped in a pass without held-out sums
        is evaluated again at the same coefficients for them (:meth:`wants_held`)."""
        if self.converged or self.stopped:
            assert record.held is not None
            self.held = record.held[i].copy()
            return self.converged
        self.n_iter += 1
        self.loglik, self.weight_sum = float(record.loglik[i]), float(record.weight_sum[i])
        self.held = None if record.held is None else record.held[i].copy()
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

    @property
    def working(self) -> bool:
        """It needs a pass: still iterating, or stopped without its held-out sums."""
        return not (self.converged or self.stopped) or self.held is None

    @property
    def wants_held(self) -> bool:
        """Its next pass computes its held-out sums: not at its first evaluation, one step from the fit of every row,
        which is rarely where it stops (``O(1/n)`` from its optimum, where ``tol`` mostly asks for less; one that
        stops there is evaluated again for them, :attr:`working`): those sums cost a quarter of a stacked pass."""
        return self.n_iter > 0 or self.converged or self.stopped

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
    files : StartFiles, optional
        Keeps each fit's start for the fold models (a checkpointed run).
    kept : list, optional
        A resumed run's: per fit, the start a previous run kept and the penalties that started there, or ``None``.
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
    files: StartFiles | None = None
    kept: list[tuple[FoldStart, tuple[int, ...]] | None] = dataclasses.field(default_factory=list)
    models: dict[tuple[int, int], FoldModel] = dataclasses.field(default_factory=dict)
    origin: dict[int, int] = dataclasses.field(default_factory=dict)

    def __call__(self, engine: Any) -> dict[tuple[int, int], FoldModel]:
        board = self.splits[0].board
        passes = 0
        self._resume()
        while True:
            with board:  # every fit has taken in the last pass (its split, if any)
                board.wait_for(functools.partial(self._caught_up, passes))
            if any(s.finished and s.final is None and not s.declined for s in self.splits):
                return self.models  # a fit failed: the bank raises its error
            for i, split in enumerate(self.splits):
                self._start(i, split.ready())
            active = [m for m in self.models.values() if m.working]
            missing = [i for i, s in enumerate(self.splits) if s.final is not None and self._unstarted(i)]
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

    def _unstarted(self, i: int) -> bool:
        """Fit ``i`` serves a penalty whose fold models have not started (from it or, resumed, from a kept start)."""
        return any(j not in self.origin for j in self._served(i))

    def _began(self, i: int) -> bool:
        """Fit ``i``'s fold models have started."""
        return i in self.origin.values()

    def _served(self, i: int) -> tuple[int, ...]:
        """The penalties whose fold models start from fit ``i``: its own, and the lead's those of declined backups."""
        if i > 0:
            return () if self.splits[i].declined else self.splits[i].serves
        return tuple(j for s in self.splits if s is self.splits[0] or s.declined for j in s.serves)

    def _resume(self) -> None:
        """Start the fold models from the starts a previous run kept, each penalty's where and in the order it
        started then (the stacked kernels the same, so the same steps bit for bit; the fits split no pass again)."""
        for i, (split, kept) in enumerate(zip(self.splits, self.kept, strict=False)):
            if kept is not None:
                with split.board:
                    split.latest = kept[0]
                self._start(i, kept[0], kept[1])
                phases.info(f"cross-validation: the fold models of l2={split.l2:g}'s fit resumed from its kept start")

    def _start(self, i: int, start: FoldStart | None, kept: tuple[int, ...] | None = None) -> None:
        """Start the fold models of the penalties fit ``i`` serves from ``start`` (each once; ``kept``: those a
        previous run started there, from its kept start), and keep the start for a resumed run the first time."""
        if start is None:
            return
        new = [j for j in (self._served(i) if kept is None else kept) if j not in self.origin]
        if new and kept is None and self.files is not None and not self._began(i):
            self.files.save(self.splits[i], start, tuple(new))
        for j in new:
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
    """The models grouped by the columns they use and whether they want held-out sums (one stacked kernel per
    group)."""
    groups: dict[Any, list[FoldModel]] = {}
    for m in models:
        groups.setdefault((m.start.columns, m.wants_held), []).append(m)
    return list(groups.values())


def _kernel(group: list[FoldModel], folds: int, seed: int) -> StackedScoreKernel:
    """The stacked kernel of a group of :func:`_by_columns` (its models share columns and whether they want
    held-out sums)."""
    first = group[0].start
    weighting = FoldStack(tuple(m.fold for m in group), folds, seed)
    coefs = np.stack([m.coef for m in group])
    return StackedScoreKernel(coefs, first.intercept, weighting, first.columns, held_out=group[0].wants_held)


def fold_result(model: FoldModel, full: MNLogitResults, passes: Any) -> MNLogitResults:
    """The results of a fold model, laid out as the fit of every row ``full`` it started from, at its own penalty
    (no covariance: its scores need the coefficients only)."""
    probability = full.weights_type == "probability"
    n_rows = int(model.train.n_rows)
    message = "converged" if model.converged else "did not converge"
    return dataclasses.replace(
        full, coef=model.coef, covariance=None, llf=model.loglik, l2=model.start.l2,
        llnull=null_loglik(passes, model.train.class_weights, has_offset=False),
        nobs=float(n_rows) if probability else model.weight_sum, n_rows=n_rows, converged=model.converged,
        n_iter=model.n_iter, method=METHOD, history=[], message=f"{message} ({model.n_iter} passes)", refit=None,
        fitted_data=None, fitted_labels=None, n_clusters=None, cluster_correction=None,
    )  # fmt: skip
