"""The fits of every row that cross-validation's fold models start from: a fit's passes split by fold
(:class:`FoldSplit`), where they start (:class:`FoldStart`), and which penalties need a fit of their own
(:func:`near_lead`). The fold models themselves are in :mod:`dmlr.models.fold_models`."""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.checkpoint import Checkpointer, Snapshot, fingerprint
from dmlr.diagnostics import dependent_columns
from dmlr.models.bank import FoldSplitKernel
from dmlr.oracle.statistics import Statistics
from dmlr.results.results import MNLogitResults
from dmlr.steps import Objective
from dmlr.steps.base import flat

__all__ = [
    "LEAD_DISTANCE",
    "SPLIT_DECREMENT",
    "START_DECREMENT",
    "FoldSplit",
    "FoldStart",
    "StartFiles",
    "decrement_of",
    "near_lead",
]

Array = NDArray[np.float64]


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
    l2 : float
        The penalty of the models starting here (at first the fit's own).
    parts : tuple of Statistics
        Each fold's record at ``coef``.
    """

    coef: Array
    intercept: bool
    columns: tuple[int, ...] | None
    l2: float
    parts: tuple[Statistics, ...]

    @staticmethod
    def of_kernel(kernel: Any, parts: tuple[Statistics, ...], l2: float) -> FoldStart:
        """The start from a split pass of the fit's statistics kernel."""
        return FoldStart(np.array(kernel.coef), bool(kernel.intercept), kernel.columns, l2, parts)

    @functools.cached_property
    def objective(self) -> Objective:
        """The penalized objective at :attr:`l2` (the intercept, when there is one, unpenalized)."""
        return Objective.ridge(self.l2, self.coef.shape[0], self.intercept)

    def at_l2(self, l2: float) -> FoldStart:
        """The same pass as the start of another penalty's fold models (each steps from here on its own objective)."""
        return self if l2 == self.l2 else dataclasses.replace(self, l2=l2)

    def training(self, fold: int) -> Statistics:
        """The record of the rows outside ``fold``."""
        return functools.reduce(operator.add, [p for g, p in enumerate(self.parts) if g != fold])

    @functools.cached_property
    def decrement(self) -> float:
        """The fit's Newton decrement at :attr:`coef` (:func:`decrement_of`)."""
        return decrement_of(self.objective, self.coef, functools.reduce(operator.add, self.parts))


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
        What the fold models need of the fit once it has ended (its coefficients, columns, penalty; no parts).
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
                objective = Objective.ridge(self.l2, kernel.coef.shape[0], kernel.intercept)
                self.far = decrement_of(objective, kernel.coef, out) > SPLIT_DECREMENT
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
                self.final = FoldStart(result.coef, result.intercept, passes.columns, self.l2, ())
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


@dataclass(frozen=True)
class StartFiles:
    """Where the fold models' starts are kept between runs of a checkpointed cross-validation: one snapshot per fit
    of every row, written when its fold models start (:class:`~dmlr.checkpoint.Checkpointer`: atomic, checksummed).
    A resumed run starts them from it at once, so they take the same steps as in the first run (their coefficients
    are the uninterrupted run's, not only within its tolerance) and the resumed fit does not split its passes again.

    Attributes
    ----------
    directory : str
        The run's checkpoint directory.
    token : str
        Identifies the data.
    folds, seed : int
    storage_options : dict, optional
    """

    directory: str
    token: str
    folds: int
    seed: int
    storage_options: dict[str, Any] | None = None

    def _checkpointer(self, split: FoldSplit) -> Checkpointer:
        identity = {"what": "fold start", "data": self.token, "folds": self.folds, "seed": self.seed}
        return Checkpointer(
            f"{self.directory.rstrip('/')}/l2-{split.l2:g}-start", fingerprint(**identity, l2=split.l2),
            storage_options=self.storage_options,
        )  # fmt: skip

    def save(self, split: FoldSplit, start: FoldStart, penalties: tuple[int, ...]) -> None:
        """Keep ``start``, the fold models' start from ``split``'s fit, and the penalties (positions, in the order
        their models started) that started there."""
        arrays = {"coef": start.coef, "intercept": np.asarray(start.intercept)}
        arrays["penalties"] = np.asarray(penalties, dtype=np.int64)
        if start.columns is not None:
            arrays["columns"] = np.asarray(start.columns, dtype=np.int64)
        parts = {f"part{g}": part for g, part in enumerate(start.parts)}
        self._checkpointer(split).save_snapshot(Snapshot(0, 0, arrays, parts))

    def load(self, split: FoldSplit) -> tuple[FoldStart, tuple[int, ...]] | None:
        """The start kept for ``split``'s fold models and the penalties that started there, or ``None``."""
        snapshot = self._checkpointer(split).load_snapshot()
        if snapshot is None:
            return None
        arrays = snapshot.arrays
        parts = tuple(snapshot.records[f"part{g}"] for g in range(self.folds))
        columns = tuple(int(c) for c in arrays["columns"]) if "columns" in arrays else None
        start = FoldStart(arrays["coef"], bool(arrays["intercept"]), columns, split.l2, parts)
        return start, tuple(int(j) for j in arrays["penalties"])
