"""From the loop's outcome to :class:`~dmlr.results.results.MNLogitResults`: the null model, the covariance
(model-based, or the sandwich with the final pass's or the cluster pass's meat), the fit's bookkeeping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.inputs import Inputs
from dmlr.diagnostics import constant_columns
from dmlr.driver import FitOutcome, LoopSettings, optimize
from dmlr.fitting.fitter import FitRun
from dmlr.options import FitOptions
from dmlr.oracle.statistics import WITH_INFORMATION, Request, Statistics
from dmlr.results.covariance import inverse_information
from dmlr.results.refit import RefitRecord
from dmlr.results.results import MNLogitResults
from dmlr.results.robust import correction, group_meat, sandwich
from dmlr.steps import Objective
from dmlr.steps.newton import NewtonRule

__all__ = ["build_results", "null_loglik"]

Array = NDArray[np.float64]


def build_results(
    run: FitRun,
    inputs: Inputs,
    options: FitOptions,
    cov: str,
    input_features: tuple[str, ...],
    n_rows: int | None = None,
) -> MNLogitResults:
    """The results of a fit: coefficients, the covariance of type ``cov``, fit statistics, the data's record
    (``input_features``: the data columns as given, before dependent ones were dropped; ``n_rows``: the rows fitted
    when not all of the design's, as for a fold model that weighted the rest 0)."""
    passes, outcome = run.passes, run.outcome
    design = passes.design
    assert design.coding is not None
    llnull = null_loglik(passes, outcome.final.stats.class_weights, has_offset=design.offset is not None)
    final = outcome.final
    covariance = None
    if final.stats.information is not None:
        names = [f"{c}:{f}" for c in design.coding.non_base for f in design.model_names]
        covariance = inverse_information(run.objective.information(final.stats), names)
    info = inputs.info()
    probability = options.weights_type == "probability"
    n_rows = design.n_rows if n_rows is None else n_rows
    res = MNLogitResults(
        coef=final.coef, covariance=covariance, feature_names=design.model_names, classes=design.coding.classes,
        base=design.coding.base, intercept=design.intercept, llf=final.stats.loglik, llnull=llnull,
        nobs=float(n_rows) if probability else final.stats.weight_sum, n_rows=n_rows,
        has_constant=_has_constant(outcome, design.intercept), converged=outcome.converged, n_iter=outcome.n_iter,
        method=outcome.method, history=outcome.history, l2=run.objective.l2,
        dep_name=info["target"] if info and "target" in info else _dep_name(inputs.y), message=outcome.message,
        data_info=info, dropped_features=run.dropped,
        input_features=input_features if run.dropped else (),
        n_missing=inputs.n_missing, cov_type=cov, weights_type=options.weights_type,
    )  # fmt: skip
    res = dataclasses.replace(res, refit=_refit_record(run, inputs))
    if cov == "nonrobust" or covariance is None:  # without inference, the type asked for is still recorded
        return res
    return _robust(res, run, cov, options.cluster_correction)


def _robust(res: MNLogitResults, run: FitRun, cov: str, cluster_correction: str) -> MNLogitResults:
    """The results with a robust covariance: the sandwich of the inverse information (the model-based covariance)
    and the meat of the final pass (HC0, HC1) or of one pass over the group ids."""
    bread = res.covariance
    assert bread is not None
    n_groups = None
    if cov == "cluster":
        passes = run.passes
        meat_of = group_meat(passes.engine, res.coef, passes.design.intercept, passes.columns)
        meat, n_groups = meat_of.meat, meat_of.n_groups
    else:
        meat = run.outcome.final.stats.full_meat()
    factor = correction(cov, res.nobs, res.n_params, n_groups or 0, cluster_correction)
    return dataclasses.replace(
        res, covariance=sandwich(bread, meat, factor), cov_type=cov, n_clusters=n_groups,
        cluster_correction=cluster_correction if cov == "cluster" else None,
    )  # fmt: skip


def _has_constant(outcome: FitOutcome, intercept: bool) -> bool:
    if intercept:
        return True
    stats = outcome.first_stats
    if stats.col_sum is None or stats.col_sumsq is None:
        return False
    constant = constant_columns(stats.col_sum, stats.col_sumsq, stats.weight_sum)
    return bool(np.any(constant & (stats.col_sum != 0)))  # a nonzero constant column acts as an intercept


def _dep_name(y: Any) -> str:
    name = getattr(y, "name", None)
    return str(name) if isinstance(y, pd.Series) and name is not None else "y"


NULL_TOL = 1e-10
"""Tolerance of the intercept-only fit behind ``llnull`` with an offset (tighter than a fit's: it is a reference)."""


def _refit_record(run: FitRun, inputs: Inputs) -> RefitRecord | None:
    """What a refit after an append needs (a store fit with the exact information at its optimum, no column
    dropped)."""
    stats = run.outcome.final.stats
    store = inputs.store
    if store is None or run.first is None or run.dropped or stats.information is None:
        return None
    if stats.information_weight != stats.weight_sum:  # estimated from a sample of the rows
        return None
    final = dataclasses.replace(stats, meat=None, sample=None)
    return RefitRecord(run.first, final, run.passes.design.n_rows, store.checksum, store.metadata.version)


def null_loglik(passes: Any, class_weights: Array, *, has_offset: bool, tol: float = NULL_TOL) -> float:
    """Log-likelihood of the intercept-only model.

    Without an offset it has the closed form ``sum_c n_c log(n_c / n)`` from the weighted class counts
    (shape (K,)). With an offset the intercept-only model is fitted by Newton over the data, through the same loop
    as every fit (a few passes; a fit that does not converge warns like any other).
    """
    total = float(class_weights.sum())
    if not has_offset:
        present = class_weights[class_weights > 0]
        return float(np.sum(present * np.log(present / total)))
    objective = Objective(0.0, np.zeros(1))
    labels = list(range(class_weights.size))
    settings = LoopSettings(objective, tol=tol, inference=False, separation="warn", class_labels=labels)
    rule = NewtonRule(objective)
    outcome = optimize(_InterceptOnly(passes), rule, settings, first_request=WITH_INFORMATION)
    return outcome.final.stats.loglik


@dataclass
class _InterceptOnly:
    """The passes of the intercept-only model (features ignored): an :class:`Evaluator` over the same data."""

    passes: Any

    @property
    def count(self) -> int:
        return self.passes.count

    @count.setter
    def count(self, value: int) -> None:
        self.passes.count = value

    def __call__(self, coef: Array, request: Request) -> Statistics:
        return self.passes(coef, request, intercept_only=True)
