"""A fit from its design to the loop's outcome: the engine, the first pass or checkpoint, the checks, the rule and its
settings (auto's choice), the loop."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmlr.checkpoint import Checkpointer
from dmlr.data.design import Design
from dmlr.data.labels import check_class_count
from dmlr.driver import FitOutcome, LoopSettings, Start, optimize
from dmlr.fitting.evaluator import FitPasses
from dmlr.fitting.refit import WarmStart, begin_incremental, start_at
from dmlr.fitting.setup import (
    begin_fit,
    check_rank,
    fit_identity,
    from_intercept_optimum,
    known_separation,
    resumed_state,
    with_zero_information,
)
from dmlr.fitting.warm import far_from_start, warm_start
from dmlr.options import FitOptions
from dmlr.oracle.statistics import WITH_INFORMATION, Request, Statistics
from dmlr.steps import DataFacts, Objective, RuleContext, make_rule, rule_spec
from dmlr.steps.auto import Choice, choose, first_request
from dmlr.steps.cost import choose_by_cost, pass_model
from dmlr.steps.switching import watched

__all__ = ["FitRun", "Fitter", "objective_of"]

logger = logging.getLogger("dmlr")
phases = logging.getLogger("dmlr.phase")

WIDE_COLUMNS = 500
"""Model columns from which the fit announces its phases and predicts its time (each phase may take seconds)."""


@dataclass(frozen=True)
class FitRun:
    """What the loop produced, with the passes and objective the results are built from.

    Attributes
    ----------
    passes : FitPasses
        The fit's passes (dependent columns dropped); later passes (the cluster-robust meat) use the same engine.
    objective : Objective
    outcome : FitOutcome
    dropped : tuple of str
        Dependent columns dropped.
    full_rank : bool
    first : Statistics, optional
        The first pass's record over all rows (the whole design's; an incremental refit's sum of records).
    """

    passes: FitPasses
    objective: Objective
    outcome: FitOutcome
    dropped: tuple[str, ...]
    full_rank: bool
    first: Statistics | None = None


def objective_of(design: Design, l2: float) -> Objective:
    """The ridge objective of a design (the intercept, model column 0, unpenalized)."""
    return Objective.ridge(l2, design.n_columns, design.intercept)


@dataclass
class Fitter:
    """Runs one fit's loop on its passes.

    Attributes
    ----------
    options : FitOptions
    callback : callable, optional
        Receives every history record (and checkpoint events).
    checkpoint : str or path, optional
        Directory of the fit's checkpoints.
    data_token : str
        Identifies the data in the checkpoints' fingerprint.
    storage_options : dict, optional
        fsspec options of the checkpoint directory.
    final : Request
        What the optimum's pass must compute for the covariance asked for.
    check_classes : bool
        Refuse a target with too many classes (``options.max_classes``; a store's was checked when staged).
    warm : WarmStart, optional
        Where the loop starts (``start_params``), and the previous fit's records for an incremental refit.
    """

    options: FitOptions
    callback: Callable[[dict[str, Any]], None] | None = None
    checkpoint: str | os.PathLike[str] | None = None
    data_token: str = ""
    storage_options: dict[str, Any] | None = None
    final: Request = WITH_INFORMATION
    check_classes: bool = True
    warm: WarmStart | None = None

    def run(self, passes: FitPasses) -> FitRun:
        """First pass or checkpoint, the checks (weights, rank: dependent columns dropped here), the choice of rule
        and settings, then the loop."""
        o = self.options
        checkpointer = self._checkpointer(passes.design)
        request = first_request(o.method, passes.design.offset is not None)
        warm = self.warm
        # a checkpoint of this refit is resumed by begin_fit (listed here, read and checked once, there)
        incremental = warm is not None and warm.incremental and (checkpointer is None or checkpointer.newest() is None)
        if incremental:
            assert warm is not None
            self.phase("refit from the previous result: reading the appended rows only before the first step")
            start = begin_incremental(passes, warm, request)
        else:
            passes, start = begin_fit(passes, request, checkpointer)
        assert passes.design.coding is not None
        if self.check_classes:
            check_class_count(passes.design.coding.classes, "y", o.max_classes)
        if passes.design.n_columns >= WIDE_COLUMNS:
            self.phase(f"checking the rank of the {passes.design.n_columns:,}-column design (one factorization)")
        passes, start, dependent = check_rank(passes, start, o.collinear, o.l2)
        design = passes.design
        assert design.coding is not None
        objective = objective_of(design, o.l2)
        facts = self._facts(passes)
        choice = self._choice(start, facts, incremental)
        context = RuleContext(objective, design.coding.n_classes, facts, choice.settings)
        rule = make_rule(choice.method, context)
        if choice.asked == "auto":
            rule = watched(rule, choice.passes.get(choice.method, 0), context, o.tol, o.max_iter)
        if choice.asked == "auto" and start.resumed is None:
            logger.info(choice.describe())
        if start.resumed is None and design.n_columns >= WIDE_COLUMNS:
            self.phase(_prediction(choice.method, facts, o.inference))
        spec = rule_spec(choice.method)
        needs_information = spec.first_request.information
        separated = known_separation(start, design, o.l2)
        if warm is not None and start.resumed is None:
            start = start_at(passes, start, warm, spec.first_request)
        else:
            start = from_intercept_optimum(start, design, needs_information)
            if needs_information:
                start = with_zero_information(passes, start)
            use_sample = choice.method == "newton" and not separated and far_from_start(start, objective)
            start = warm_start(passes, start, objective, use=use_sample, say=self.phase)
        settings = LoopSettings(
            objective, o.tol, o.max_iter, o.inference, o.separation, design.coding.model_order.tolist(),
            design.model_names, not dependent, self.final, separated,
        )  # fmt: skip
        state = {"classes": design.coding.classes.tolist(), "choice": choice.to_state()}
        outcome = optimize(
            passes, rule, settings, start=start, checkpoint=checkpointer, callback=self.callback,
            start_fields=choice.record() | self._refit_fields(incremental), fit_state=state,
        )  # fmt: skip
        return FitRun(passes, objective, outcome, tuple(c.name for c in dependent), not dependent, start.saved_first)

    def _refit_fields(self, incremental: bool) -> dict[str, Any]:
        """What the start record says of an incremental refit: the rows read before the first step and by how many
        passes (over those rows only)."""
        if not incremental or self.warm is None or self.warm.record is None:
            return {}
        new = self.warm.new_passes
        rows = 0 if new is None else new.design.n_rows
        return {"refit": {"appended_rows": rows, "appended_row_passes": 0 if new is None else 2}}

    @staticmethod
    def phase(text: str) -> None:
        """Say what the fit is doing: an INFO record of the ``dmlr.phase`` logger (``dmlr fit`` prints them)."""
        phases.info(text)

    def _checkpointer(self, design: Design) -> Checkpointer | None:
        if self.checkpoint is None:
            return None
        o = self.options
        identity = fit_identity(design, self.data_token, o.method, o.l2, o.tol, o.split_every)
        return Checkpointer(
            str(self.checkpoint), identity, storage_options=self.storage_options, on_event=self.callback
        )

    @staticmethod
    def _facts(passes: FitPasses) -> DataFacts:
        design, engine = passes.design, passes.engine
        return DataFacts(
            n_rows=design.n_rows, n_columns=design.n_columns, n_nonbase=design.n_nonbase,
            task_rows=engine.largest_task_rows, streamed=engine.streamed, on_cluster=engine.client is not None,
            first_pass_seconds=engine.seconds,
        )  # fmt: skip

    def _choice(self, start: Start, facts: DataFacts, incremental: bool = False) -> Choice:
        """The rule and its settings: the interrupted run's when resuming (they depend on its timings); Newton for
        ``"auto"`` in an incremental refit (it starts with the exact information, near the optimum)."""
        recorded = resumed_state(start).get("choice")
        if recorded is not None:
            return Choice.from_state(recorded)
        method = "newton" if incremental and self.options.method == "auto" else self.options.method
        return choose(method, facts, inference=self.options.inference)


def _prediction(method: str, facts: DataFacts, inference: bool) -> str:
    """The chosen rule's predicted passes and seconds (:mod:`dmlr.steps.cost`) as a phase message."""
    prediction = choose_by_cost(pass_model(facts), inference=inference, n_rows=facts.n_rows)
    if method not in prediction.predicted:
        return f"fitting {facts.n_columns:,} columns x {facts.n_nonbase + 1} classes with {method}"
    return (
        f"fitting {facts.n_columns:,} columns x {facts.n_nonbase + 1} classes with {method}: predicted "
        f"{prediction.passes[method]} passes, about {prediction.predicted[method]:.3g} s (typical conditioning)"
    )
