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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.errors import ConvergenceWarning, InputError, WorkerMemoryError, warn
from dmlr.fitting.fitter import objective_of
from dmlr.fitting.results import null_loglik
from dmlr.models.bank import BankKernel, BankRecord, FoldSplitKernel, memory_advice
from dmlr.models.weightings import FoldStack
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.stacked import HELD_SUMS, StackedScoreKernel, StackedScores
from dmlr.oracle.statistics import WITH_INFORMATION, Statistics
from dmlr.passes.kernel import Sums
from dmlr.results.results import MNLogitResults
from dmlr.steps import Objective
from dmlr.steps.base import flat, unflat

__all__ = ["FoldModel", "FoldSplit", "FoldStart", "fit_fold_models", "fold_result", "split_by_fold"]

Array = NDArray[np.float64]
phases = logging.getLogger("dmlr.phase")

METHOD = "fixed information from the fit of every row"
"""What a fold model's results say of how it was fitted."""


@dataclass
class FoldSplit:
    """The pass engine of a fit of every row that splits its passes of second-order statistics by fold: each
    fold's record separately, their sum for the fit. The last split (the fit's final pass, at its optimum) is kept.

    Attributes
    ----------
    folds, seed : int
        The folds (:func:`dmlr.fold_ids`).
    engine : MemberEngine
        The fit's engine in its bank (:meth:`bind`).
    parts : tuple of Statistics, optional
        Each fold's record of the last split pass.
    at : ndarray, shape (d, m), optional
        The coefficients of that pass.
    """

    folds: int
    seed: int
    engine: Any = None
    parts: tuple[Statistics, ...] | None = None
    at: Array | None = None

    def bind(self, engine: Any) -> FoldSplit:
        """Use ``engine`` (the fit's member engine)."""
        self.engine = engine
        return self

    def reduce(self, kernel: Any) -> Any:
        """One pass of ``kernel``: split by fold when it computes an exact information."""
        request = getattr(kernel, "request", None)
        if request is None or not request.information or request.information_every > 1:
            return self.engine.reduce(kernel)
        record = split_by_fold(self.engine, kernel, self.folds, self.seed)
        self.parts, self.at = tuple(record.records), np.array(kernel.coef)
        return functools.reduce(operator.add, self.parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def split_by_fold(engine: Any, kernel: Any, folds: int, seed: int) -> BankRecord:
    """One pass of ``kernel`` on each fold's rows: a record per fold."""
    record: BankRecord = engine.reduce(FoldSplitKernel(kernel, folds, seed))
    return record


@dataclass(frozen=True)
class FoldStart:
    """Where the fold models of one penalty start: the fit of every row and its final pass split by fold.

    Attributes
    ----------
    result : MNLogitResults
        The fit of every row at the penalty.
    columns : tuple of int, optional
        The data columns it uses.
    objective : Objective
    parts : tuple of Statistics
        Each fold's record at ``result.coef``.
    """

    result: MNLogitResults
    columns: tuple[int, ...] | None
    objective: Objective
    parts: tuple[Statistics, ...]

    @staticmethod
    def of(result: MNLogitResults, passes: Any, split: FoldSplit) -> FoldStart:
        """The start of a fit whose engine was ``split``: its final pass split by fold, or (a fit without the
        information at its optimum: ``inference=False``) one more pass that computes it."""
        parts = split.parts
        if parts is None or split.at is None or not np.array_equal(split.at, result.coef):
            kernel = StatisticsKernel(result.coef, WITH_INFORMATION, result.intercept, passes.columns)
            parts = tuple(split_by_fold(passes.engine, kernel, split.folds, split.seed).records)
        return FoldStart(result, passes.columns, objective_of(passes.design, result.l2), parts)

    def training(self, fold: int) -> Statistics:
        """The record of the rows outside ``fold``."""
        return functools.reduce(operator.add, [p for g, p in enumerate(self.parts) if g != fold])


@dataclass
class FoldModel:
    """One fold model's iteration and outcome.

    Attributes
    ----------
    start : FoldStart
    fold : int
    coef : ndarray, shape (d, m)
    factor : tuple
        The Cholesky factor of its penalized information at the start.
    train : Statistics
        Its training rows' record at the start (rows, class weights).
    loglik, weight_sum : float
        At ``coef``, once it has stopped.
    held : ndarray, shape (5,)
        Held-out sums (:data:`~dmlr.oracle.stacked.HELD_SUMS`) at ``coef``.
    n_iter : int
    converged : bool
    evaluated : ndarray, shape (d, m), optional
        The coefficients of the last pass (``coef`` once stopped).
    """

    start: FoldStart
    fold: int
    coef: Array
    factor: Any
    train: Statistics
    loglik: float = math.nan
    weight_sum: float = math.nan
    held: Array | None = None
    n_iter: int = 0
    converged: bool = False
    evaluated: Array | None = None
    previous: Array | None = None
    last_gradient: Array | None = None
    pairs: list[tuple[Array, Array, float]] = dataclasses.field(default_factory=list)

    @staticmethod
    def at_start(start: FoldStart, fold: int) -> FoldModel:
        """Fold ``fold``'s model one step from the fit of every row (its information and score there)."""
        train = start.training(fold)
        try:
            factor = scipy.linalg.cho_factor(start.objective.information(train))
        except np.linalg.LinAlgError:
            raise InputError(
                f"the rows outside fold {fold} do not identify the model (l2={start.result.l2:g}: their information "
                "is singular); use fewer folds, a penalty, or fold_inference=True (each fold model fitted alone)"
            ) from None
        model = FoldModel(start, fold, start.result.coef.copy(), factor, train, previous=start.result.coef)
        model.step(start.objective.penalized(model.coef, train.score))
        return model

    def step(self, gradient: Array) -> None:
        """Move by ``H^-1 gradient`` (the first step, from the fit of every row)."""
        self.last_gradient = flat(gradient)
        self.coef = self.coef + unflat(self.direction(self.last_gradient), self.coef.shape[0])

    def direction(self, gradient: Array) -> Array:
        """``B^-1 gradient`` (flat): ``B`` the information at the start updated by BFGS with every step's change
        of gradient so far (the two-loop recursion, ``H^-1`` its first matrix), so the steps converge
        superlinearly from the start's accurate information."""
        q = gradient.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * float(s @ q)
            q -= alpha * y
            alphas.append(alpha)
        r = np.asarray(scipy.linalg.cho_solve(self.factor, q))
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            r += s * (alpha - rho * float(y @ r))
        return r

    def update(self, record: StackedScores, i: int, tol: float) -> bool:
        """Model ``i`` of a stacked pass at :attr:`coef`: keep its values there, and stop when converged (True),
        else step (:attr:`evaluated` keeps where the values are from)."""
        assert record.held is not None
        self.n_iter += 1
        self.loglik, self.weight_sum = float(record.loglik[i]), float(record.weight_sum[i])
        self.held, self.evaluated = record.held[i].copy(), self.coef
        gradient = flat(self.start.objective.penalized(self.coef, record.score[i]))
        self._learn(gradient)
        weight = max(self.weight_sum, 1e-300)
        move = self.direction(gradient)
        decrement = math.sqrt(max(float(gradient @ move), 0.0) / weight)
        self.converged = bool(np.abs(gradient).max() / weight <= tol or decrement <= tol)
        if not self.converged:
            self.coef = self.coef + unflat(move, self.coef.shape[0])
        return self.converged

    def _learn(self, gradient: Array) -> None:
        """Add the last step and its change of gradient (``H s = g_old - g_new``) as a BFGS pair, when curved."""
        assert self.evaluated is not None and self.last_gradient is not None
        if self.previous is not None:
            s, y = flat(self.evaluated - self.previous), self.last_gradient - gradient
            curvature = float(s @ y)
            if curvature > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
                self.pairs.append((s, y, 1.0 / curvature))
        self.previous, self.last_gradient = self.evaluated, gradient

    def held_sums(self) -> Sums:
        """The held-out sums as :func:`~dmlr.models.scores.scores_of` reads them."""
        assert self.held is not None
        return Sums({name: np.array([v]) for name, v in zip(HELD_SUMS, self.held, strict=True)})


def fit_fold_models(
    engine: Any, starts: Sequence[FoldStart], folds: int, seed: int, tol: float, max_iter: int
) -> list[FoldModel]:
    """Every fold model of every start (penalty-major), iterated in lockstep until each has converged."""
    models = [FoldModel.at_start(start, f) for start in starts for f in range(folds)]
    active = list(models)
    phases.info(f"cross-validation: {len(models)} fold models from the fits of every row")
    for it in range(max_iter):
        groups = _by_columns(active)
        records = _stacked_pass(engine, groups, folds, seed)
        active = [
            m
            for group, rec in zip(groups, records, strict=True)
            for i, m in enumerate(group)
            if not m.update(rec, i, tol)
        ]
        phases.info(f"cross-validation: pass {it + 1} of the fold models, {len(active)} of them still iterating")
        if not active:
            return models
    for m in active:
        assert m.evaluated is not None
        m.coef = m.evaluated  # reported where its values were computed
    warn(f"{len(active)} of {len(models)} fold models did not converge in {max_iter} passes", ConvergenceWarning)
    return models


def _stacked_pass(engine: Any, groups: list[list[FoldModel]], folds: int, seed: int) -> tuple[StackedScores, ...]:
    """One pass: each group's stacked scores; a worker too small says how many fold models fit."""
    try:
        record: BankRecord = engine.reduce(BankKernel(tuple(_kernel(group, folds, seed) for group in groups)))
    except WorkerMemoryError as error:
        models = [m for group in groups for m in group]

        def first(k: int) -> BankKernel:
            return BankKernel(tuple(_kernel(group, folds, seed) for group in _by_columns(models[:k])))

        raise WorkerMemoryError(f"{error} {memory_advice(engine, len(models), first, 'fold models')}") from None
    return record.records


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
    return StackedScoreKernel(coefs, first.result.intercept, weighting, first.columns, held_out=True)


def fold_result(model: FoldModel, passes: Any) -> MNLogitResults:
    """The results of a fold model (no covariance: its scores need the coefficients only)."""
    full = model.start.result
    probability = full.weights_type == "probability"
    n_rows = int(model.train.n_rows)
    message = "converged" if model.converged else "did not converge"
    return dataclasses.replace(
        full, coef=model.coef, covariance=None, llf=model.loglik,
        llnull=null_loglik(passes, model.train.class_weights, has_offset=False),
        nobs=float(n_rows) if probability else model.weight_sum, n_rows=n_rows, converged=model.converged,
        n_iter=model.n_iter, method=METHOD, history=[], message=f"{message} ({model.n_iter} passes)", refit=None,
        fitted_data=None, fitted_labels=None, n_clusters=None, cluster_correction=None,
    )  # fmt: skip
