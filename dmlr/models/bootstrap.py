"""The bootstrap of a fit in lockstep: every replicate's score in each pass, one factorization for all of them.

Replicate ``r`` weights row ``i`` by a Poisson(1) draw that is a function of ``(seed, r, i)`` (Chamandy et al.
2012's bootstrap for data too large to resample), or of ``(seed, r, cluster id)`` for the cluster bootstrap, so the
replicates do not depend on the partitioning. Each replicate starts at the fit's coefficients and iterates
``b <- b + H^-1 g_r(b)`` with ``H`` the full sample's penalized information at the fit (the fit's model-based
covariance is ``H^-1``; otherwise one pass and one Cholesky factorization): replicates differ from the full sample
by ``O(1/sqrt(n))``, so the fixed information converges at that rate per pass. The first pass, where every
replicate is at the fit, computes each row's score once and weights it for all replicates
(:class:`~dmlr.oracle.replicates.ReplicateScoreKernel`: one GEMM), and keeps each replicate's score there and its
weight sum; later passes evaluate every replicate not yet converged at once, as its departure from that score
(:class:`~dmlr.oracle.replicates.DepartureKernel`: one GEMM each way per class for all of them), in single
precision where its rounding (at most :data:`~dmlr.oracle.replicates.SINGLE_ERROR` of the departures, which the
scores at the fit bound) stays under ``tol / 10``: on large samples, whose departures shrink with ``1/sqrt(n)``.

A replicate has converged when its gradient (max-abs, over its weight sum) is below ``tol``, or when the gradient
its last step leaves is predicted below ``PREDICTED * tol``: a fixed-information iteration contracts the gradient
by about the same factor each step, so after a step from a gradient of size ``g_k`` that had contracted by
``g_k / g_(k-1)`` the next is about ``g_k^2 / g_(k-1)``; the factor ``1 / PREDICTED`` covers its error (the
contraction grew by up to 1.8x from one step to the next in samples of 50k and 1M rows). On a large sample the
first step contracts by ``O(1/sqrt(n))`` and the second pass settles every replicate (a pass to confirm would
cost as much as the whole iteration).

``steps=k`` stops every replicate after ``k`` steps (Andrews 2002's k-step bootstrap): ``steps=1`` is the one-step
bootstrap ``b_r = b + H^-1 g_r(b)``, one pass over the data, whose replicates differ from the fully iterated ones by
``O(1/n)`` against their ``O(1/sqrt(n))`` spread: the same standard errors and intervals to first order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from numpy.typing import NDArray
from scipy import stats as sps

from dmlr.checkpoint import Checkpointer, Snapshot, fingerprint
from dmlr.data.store import StoreData
from dmlr.errors import ConvergenceWarning, InputError, WorkerMemoryError, warn
from dmlr.fitting.fitter import objective_of
from dmlr.models.bank import memory_advice
from dmlr.models.many import shared_data
from dmlr.models.weightings import PoissonReplicates
from dmlr.options import FitOptions
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.replicates import SINGLE_ERROR, DepartureKernel, Departures, ReplicateScoreKernel, WeightedScores
from dmlr.oracle.statistics import Request
from dmlr.results.results import MNLogitResults
from dmlr.steps.base import flat, unflat

__all__ = ["PREDICTED", "BootstrapResults", "bootstrap"]

Array = NDArray[np.float64]

PREDICTED = 0.3
"""A replicate whose gradient after its last step is predicted below ``PREDICTED * tol`` (its gradient size times
its last contraction) has converged without a pass to confirm it."""


@dataclass(frozen=True)
class BootstrapResults:
    """The bootstrap replicates of a fit's coefficients.

    Attributes
    ----------
    params : ndarray, shape (nrep, d, m)
        Each replicate's coefficients, laid out as the fit's ``params`` (rows its features, columns its non-base
        classes).
    result : MNLogitResults
        The fit bootstrapped.
    kind : str
        ``"poisson"`` or ``"cluster"``.
    converged : ndarray of bool, shape (nrep,)
        Whether each replicate's gradient fell below ``tol``, evaluated or predicted from its last contraction (module
        docstring; all ``False`` with ``steps``: not checked).
    n_passes : int
        Passes over the data (the information at the fit, when not the fit's own, and the replicates' steps).
    steps : int, optional
        The steps each replicate took from the fit (``None``: iterated to convergence).
    """

    params: Array
    result: MNLogitResults
    kind: str
    converged: NDArray[np.bool_]
    n_passes: int
    steps: int | None = None

    def cov_params(self) -> pd.DataFrame:
        """The replicates' covariance of the flat class-major parameters, shape (m d, m d), as the fit's."""
        flat_params = np.stack([flat(p) for p in self.params])
        index = self.result.cov_params().index
        return pd.DataFrame(np.cov(flat_params, rowvar=False), index=index, columns=index)

    @property
    def bse(self) -> pd.DataFrame:
        """Bootstrap standard errors, shape (d, m), laid out as the fit's ``bse``."""
        return self.result._table(self.params.std(axis=0, ddof=1))

    def conf_int(self, alpha: float = 0.05, method: str = "percentile") -> pd.DataFrame:
        """Confidence intervals, laid out as the fit's ``conf_int``: the replicates' ``alpha/2`` and ``1 - alpha/2``
        quantiles (``"percentile"``) or the estimate -/+ the normal quantile times the bootstrap SE (``"normal"``)."""
        if not 0 < alpha < 1:
            raise InputError(f"alpha must be in (0, 1), got {alpha}")
        if method == "percentile":
            low, high = np.quantile(self.params, [alpha / 2, 1 - alpha / 2], axis=0)
        elif method == "normal":
            z = float(sps.norm.ppf(1 - alpha / 2))
            se = self.params.std(axis=0, ddof=1)
            low, high = self.result.coef - z * se, self.result.coef + z * se
        else:
            raise InputError(f"method must be 'percentile' or 'normal', got {method!r}")
        frame = self.result.conf_int(alpha)
        return pd.DataFrame({frame.columns[0]: flat(low), frame.columns[1]: flat(high)}, index=frame.index)


def bootstrap(
    result: MNLogitResults,
    X: Any = None,
    y: Any = None,
    *,
    nrep: int = 200,
    kind: str = "poisson",
    groups: Any = None,
    seed: int = 0,
    steps: int | None = None,
    weights: Any = None,
    tol: float = 1e-8,
    max_iter: int = 50,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    checkpoint: str | None = None,
) -> BootstrapResults:
    """:meth:`MNLogitResults.bootstrap <dmlr.results.results.MNLogitResults.bootstrap>`."""
    if isinstance(nrep, bool) or not isinstance(nrep, (int, np.integer)) or nrep < 2:
        raise InputError(f"nrep must be an integer >= 2, got {nrep!r}")
    if kind not in ("poisson", "cluster"):
        raise InputError(f"kind must be 'poisson' or 'cluster', got {kind!r}")
    if kind == "cluster" and groups is not None and not hasattr(groups, "dask"):
        n_groups = len(pd.unique(np.asarray(groups).ravel()))
        if n_groups < 2:
            raise InputError(
                f"kind='cluster' resamples clusters: groups has {n_groups} distinct id (at least 2 needed)"
            )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
        raise InputError(f"steps must be None (iterate to convergence) or an integer >= 1, got {steps!r}")
    FitOptions(tol=tol, max_iter=max_iter)  # checked as dmlr.fit checks them (tol > 0: the gradients' sizes divide)
    own_data = X is None or (
        isinstance(X, StoreData) and X.checksum == (result.data_info or {}).get("store_checksum", "")
    )
    X, y = _data_of(result, X, y)
    shared = _shared(result, X, y, weights, groups if kind == "cluster" else None, storage_options, client)
    passes = shared.passes
    if kind == "cluster" and passes.engine.data.groups is None:
        raise InputError("kind='cluster' needs groups= (the cluster id of every row)")
    objective = objective_of(passes.design, result.l2)
    solve = _solver(passes.engine, result, passes.columns, objective, own_data)
    identity = {"nrep": int(nrep), "kind": kind, "seed": seed, "steps": steps, "tol": tol, "data": shared.token,
                "rule": "predicted", "scores": "departures"}  # fmt: skip
    saver = _Saver.of(checkpoint, result, identity, storage_options)
    state = saver.resume(result.coef, nrep)
    coefs, done, norms, before = state.coefs, state.done, state.norms, state.passes
    for it in range(state.iteration, max_iter if steps is None else int(steps)):
        active = np.flatnonzero(~done)
        if active.size == 0:
            break
        weighting = PoissonReplicates(seed, tuple(int(r) for r in active), kind == "cluster")
        single = it > 0 and _single_is_enough(state, active, tol)
        record = _scores(passes.engine, result, np.stack([coefs[r] for r in active]), weighting, passes.columns, it,
                         single)  # fmt: skip
        scores = state.scores(active, record)
        for i, r in enumerate(active):
            gradient = objective.penalized(coefs[r], scores[i])
            size = np.abs(gradient).max() / max(float(state.weight_sum[r]), 1.0)
            if steps is None and size < tol:
                done[r] = True
                continue
            coefs[r] = coefs[r] + unflat(solve(flat(gradient)), coefs[r].shape[0])
            # the gradient this step leaves, predicted from the contraction of the last one (the fixed information
            # contracts by O(1/sqrt(n)) a step): below PREDICTED * tol, the replicate needs no pass to confirm it
            contraction = size / norms[r]  # NaN after the first pass
            done[r] = steps is None and contraction < 0.5 and size * contraction < PREDICTED * tol
            norms[r] = size
        state.iteration, state.passes = it + 1, before + passes.engine.count
        saver.save(state)
    if steps is None and not done.all():
        warn(
            f"{int((~done).sum())} of {nrep} bootstrap replicates did not converge in {max_iter} passes",
            ConvergenceWarning,
        )
    return BootstrapResults(np.stack(coefs), result, kind, done, before + passes.engine.count, steps)


@dataclass
class _State:
    """Where the bootstrap stands: every replicate's coefficients, whether it has converged, its last gradient size,
    its score at the fit and weight sum (from the first pass), the next pass and the passes made."""

    coefs: list[Array]
    done: NDArray[np.bool_]
    norms: Array
    base: Array
    weight_sum: Array
    iteration: int = 0
    passes: int = 0

    def scores(self, active: NDArray[np.intp], record: WeightedScores | Departures) -> Array:
        """The ``active`` replicates' scores (A, d, m) from a pass's record: their scores at the fit in the first
        pass, which are kept with their weight sums; the score at the fit minus the departure from it later."""
        if isinstance(record, WeightedScores):
            self.base[active], self.weight_sum[active] = record.score, record.weight_sum
            return record.score
        return self.base[active] - record.sums


def _single_is_enough(state: _State, active: NDArray[np.intp], tol: float) -> bool:
    """Whether the departures' single-precision rounding stays under a tenth of ``tol`` for every active replicate:
    it is below :data:`~dmlr.oracle.replicates.SINGLE_ERROR` times the departures' size, which the scores at the
    fit bound (they are the departures of an unpenalized fit's converged replicates; larger with a penalty)."""
    sizes = np.abs(state.base[active]).max(axis=(1, 2)) / np.maximum(state.weight_sum[active], 1.0)
    return bool(SINGLE_ERROR * sizes.max(initial=0.0) <= 0.1 * tol)


@dataclass
class _Saver:
    """The bootstrap's checkpoints (:class:`~dmlr.checkpoint.Checkpointer`: atomic, checksummed files, another
    run's removed): the :class:`_State`'s arrays after each pass."""

    checkpointer: Checkpointer | None

    @staticmethod
    def of(directory: str | None, result: MNLogitResults, identity: dict[str, Any], storage: Any) -> _Saver:
        if directory is None:
            return _Saver(None)
        fit = hashlib.sha256(np.ascontiguousarray(result.coef).tobytes()).hexdigest()
        return _Saver(Checkpointer(str(directory), fingerprint(what="bootstrap", fit=fit, **identity),
                                   storage_options=storage))  # fmt: skip

    def resume(self, coef: Array, nrep: int) -> _State:
        """A checkpoint's state, or the start."""
        snapshot = self.checkpointer.load_snapshot() if self.checkpointer is not None else None
        if snapshot is None:
            coefs = [coef.copy() for _ in range(nrep)]
            return _State(coefs, np.zeros(nrep, dtype=bool), np.full(nrep, np.nan), np.zeros((nrep, *coef.shape)),
                          np.zeros(nrep))  # fmt: skip
        a = {name: array.copy() for name, array in snapshot.arrays.items()}
        coefs, done = list(a["coefs"]), a["done"].astype(bool)
        return _State(coefs, done, a["norms"], a["base"], a["weight_sum"], snapshot.iteration, snapshot.passes)

    def save(self, state: _State) -> None:
        if self.checkpointer is not None:
            arrays = {"coefs": np.stack(state.coefs), "done": state.done.astype(np.float64), "norms": state.norms,
                      "base": state.base, "weight_sum": state.weight_sum}  # fmt: skip
            self.checkpointer.save_snapshot(Snapshot(state.iteration, state.passes, arrays))


def _data_of(result: MNLogitResults, X: Any, y: Any) -> tuple[Any, Any]:
    """The rows to resample: given, or the fit's (its in-memory data, or its store as fitted)."""
    if X is not None:
        return X, y
    if result.fitted_data is not None:
        return result.fitted_data, result.fitted_labels
    from dmlr.results.encoding import _fitted_store

    store, rows = _fitted_store(result)
    if rows is not None:
        raise InputError("rows were appended to the fitted store since the fit: pass the rows to bootstrap")
    return store, None


def _shared(
    result: MNLogitResults, X: Any, y: Any, weights: Any, groups: Any, storage_options: Any, client: Any
) -> Any:
    """The data as the fit saw them: its base, intercept, classes and columns."""
    options = {"base": result.base, "fit_intercept": result.intercept, "weights_type": result.weights_type}
    args = {"weights": weights, "groups": groups, "storage_options": storage_options, "client": client}
    if not isinstance(X, (str, StoreData, pd.DataFrame)) and getattr(X, "columns", None) is None:
        args["feature_names"] = list(result.input_features or result.data_feature_names)  # arrays carry no names
    if groups is not None:
        options["cov_type"] = "cluster"  # the groups travel with the rows (they weight the cluster bootstrap)
    shared = shared_data(X, y, args, options, "bootstrap")
    design = shared.passes.design
    assert design.coding is not None
    if list(design.coding.classes) != list(result.classes):
        raise InputError(f"the data's classes {list(design.coding.classes)} are not the fit's {list(result.classes)}")
    names = list(result.feature_names)
    missing = [n for n in names if n not in design.model_names]
    if missing:
        raise InputError(f"the data lack the fit's columns {missing}")
    drop = [j for j, n in enumerate(design.model_names) if n not in names]
    return dataclasses.replace(shared, passes=shared.passes.without_columns(drop)) if drop else shared


def _scores(
    engine: Any,
    result: MNLogitResults,
    coefs: Array,
    weighting: PoissonReplicates,
    columns: Any,
    it: int,
    single: bool,
) -> WeightedScores | Departures:
    """One pass: every active replicate's score at the fit (the first pass: each row's score once, weighted for all
    replicates by one GEMM), or its departure from the fit's (later passes: one GEMM each way per class for all of
    them, in single precision where ``single`` and the block is near)."""

    def kernel_of(k: int) -> Any:  # the first k replicates
        fewer = PoissonReplicates(weighting.seed, weighting.replicates[:k], weighting.groups)
        if it == 0:
            return ReplicateScoreKernel(result.coef, result.intercept, fewer, columns)
        return DepartureKernel(result.coef, coefs[:k], result.intercept, fewer, columns, single)

    n = len(weighting.replicates)
    try:
        record: WeightedScores | Departures = engine.reduce(kernel_of(n))
    except WorkerMemoryError as error:
        raise WorkerMemoryError(f"{error} {memory_advice(engine, n, kernel_of, 'replicates')}") from None
    return record


def _solver(engine: Any, result: MNLogitResults, columns: Any, objective: Any, own_data: bool) -> Any:
    """``g -> H^-1 g`` with ``H`` the full sample's penalized information at the fit: the fit's model-based
    covariance when the replicates resample the fit's own data, else one pass and a Cholesky factorization."""
    if own_data and result.cov_type == "nonrobust" and result.covariance is not None:
        covariance = result.covariance
        if np.all(np.isfinite(covariance)):
            return lambda g: covariance @ g
    stats = engine.reduce(StatisticsKernel(result.coef, Request(information=True), result.intercept, columns))
    factor = scipy.linalg.cho_factor(np.asarray(objective.information(stats), dtype=np.float64))
    return lambda g: scipy.linalg.cho_solve(factor, g)
