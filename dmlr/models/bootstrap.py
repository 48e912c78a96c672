"""The bootstrap of a fit in lockstep: every replicate's score in each pass, one factorization for all of them.

Replicate ``r`` weights row ``i`` by a Poisson(1) draw that is a function of ``(seed, r, i)`` (Chamandy et al.
2012's bootstrap for data too large to resample), or of ``(seed, r, cluster id)`` for the cluster bootstrap, so the
replicates do not depend on the partitioning. Each replicate starts at the fit's coefficients and iterates
``b <- b + H^-1 g_r(b)`` with ``H`` the full sample's penalized information at the fit (one pass, one Cholesky
factorization): replicates differ from the full sample by ``O(1/sqrt(n))``, so the fixed information converges at
that rate per pass. A pass evaluates every replicate not yet converged at once
(:class:`~dmlr.oracle.stacked.StackedScoreKernel`: one GEMM per class for all of them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from numpy.typing import NDArray
from scipy import stats as sps

from dmlr.data.rows import Rows
from dmlr.data.store import StoreData
from dmlr.errors import ConvergenceWarning, InputError, WorkerMemoryError, warn
from dmlr.fitting.fitter import objective_of
from dmlr.models.bank import memory_advice
from dmlr.models.many import shared_data
from dmlr.models.weightings import row_hash
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.stacked import StackedScoreKernel, StackedScores
from dmlr.oracle.statistics import Request
from dmlr.results.results import MNLogitResults
from dmlr.steps.base import flat, unflat

__all__ = ["BootstrapResults", "PoissonReplicates", "bootstrap", "poisson_weights"]

Array = NDArray[np.float64]

_LANES = 4
"""Replicates per 64-bit hash: each takes 16 of its bits."""
_POISSON_TABLE = np.searchsorted(sps.poisson(1.0).cdf(np.arange(30)), (np.arange(2**16) + 0.5) / 2**16, side="right")
"""Poisson(1) quantile of each 16-bit uniform (u + 1/2) / 2^16: the distribution to within 2^-16 in every cell."""
_POISSON_TABLE = _POISSON_TABLE.astype(np.float64)


def poisson_weights(keys: NDArray[np.int64], seed: int, replicates: NDArray[np.int64]) -> Array:
    """Poisson(1) weights of each key (rows) for each replicate (columns), shape (r, F): replicate ``j`` takes the
    16-bit lane ``j % 4`` of the hash of ``(seed, key)`` in stream ``j // 4 + 1``, looked up in a table (one hash
    for four replicates, no search)."""
    streams, where = np.unique(replicates // _LANES, return_inverse=True)
    hashes = np.empty((keys.shape[0], streams.size), dtype=np.uint64)
    for j, stream in enumerate(streams):
        hashes[:, j] = row_hash(keys, seed, stream=int(stream) + 1)
    lanes = hashes.astype("<u8").view("<u2").reshape(keys.shape[0], _LANES * streams.size)  # lane k: bits 16k..
    return _POISSON_TABLE[lanes[:, where * _LANES + replicates % _LANES]]


def _group_keys(groups: NDArray[Any]) -> NDArray[np.int64]:
    """A 63-bit key per cluster id: the id itself for integers, pandas' stable hash for anything else."""
    if groups.dtype.kind in "iu":
        return groups.astype(np.int64) & np.int64(0x7FFFFFFFFFFFFFFF)
    hashed = pd.util.hash_array(np.asarray(groups, dtype=object))
    return (hashed >> np.uint64(1)).astype(np.int64)


@dataclass(frozen=True)
class PoissonReplicates:
    """The Poisson(1) weights of some replicates, each row's (or each cluster's, with ``groups``) a function of
    ``(seed, replicate, its global index or cluster id)`` only: the stacked scores' weighting
    (:mod:`dmlr.oracle.stacked`).

    Attributes
    ----------
    seed : int
    replicates : tuple of int
    groups : bool
        Draw per cluster id (the rows' ``groups``) instead of per row.
    """

    seed: int
    replicates: tuple[int, ...]
    groups: bool = False

    @property
    def reads(self) -> tuple[str, ...]:
        """The cluster ids, for the cluster bootstrap."""
        return ("groups",) if self.groups else ()

    def keys(self, rows: Rows) -> NDArray[np.int64]:
        """What the weight of each of ``rows`` is a function of: its global index, or its cluster's key."""
        index = _group_keys(rows.groups) if self.groups and rows.groups is not None else rows.row_ids()
        if index is None:
            raise InputError(f"partition {rows.partition}: the bootstrap needs every partition's size")
        return index

    def of_keys(self, keys: NDArray[np.int64]) -> Array:
        """Each replicate's weight of each key, shape (r, F) (:func:`poisson_weights`)."""
        return poisson_weights(keys, self.seed, np.asarray(self.replicates, dtype=np.int64))

    def __call__(self, rows: Rows) -> Array:
        return self.of_keys(self.keys(rows))


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
    n_passes : int
        Passes over the data (the information at the fit and the replicates' iterations).
    """

    params: Array
    result: MNLogitResults
    kind: str
    converged: NDArray[np.bool_]
    n_passes: int

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
    weights: Any = None,
    tol: float = 1e-8,
    max_iter: int = 50,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
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
    X, y = _data_of(result, X, y)
    shared = _shared(result, X, y, weights, groups if kind == "cluster" else None, storage_options, client)
    passes = shared.passes
    columns = passes.columns
    if kind == "cluster" and passes.engine.data.groups is None:
        raise InputError("kind='cluster' needs groups= (the cluster id of every row)")
    objective = objective_of(passes.design, result.l2)
    info = _information(passes.engine, result, columns, objective)
    factor = scipy.linalg.cho_factor(info)
    coefs = [result.coef.copy() for _ in range(nrep)]
    clustered = kind == "cluster"
    done = np.zeros(nrep, dtype=bool)
    for _ in range(max_iter):
        active = np.flatnonzero(~done)
        if active.size == 0:
            break
        stacked = np.stack([coefs[r] for r in active])
        weighting = PoissonReplicates(seed, tuple(int(r) for r in active), clustered)
        record = _scores(passes.engine, result, stacked, weighting, columns)
        for i, r in enumerate(active):
            gradient = objective.penalized(coefs[r], record.score[i])
            if np.abs(gradient).max() / max(float(record.weight_sum[i]), 1.0) < tol:
                done[r] = True
                continue
            coefs[r] = coefs[r] + unflat(scipy.linalg.cho_solve(factor, flat(gradient)), coefs[r].shape[0])
    if not done.all():
        warn(
            f"{int((~done).sum())} of {nrep} bootstrap replicates did not converge in {max_iter} passes",
            ConvergenceWarning,
        )
    return BootstrapResults(np.stack(coefs), result, kind, done, passes.engine.count)


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
    engine: Any, result: MNLogitResults, coefs: Array, weighting: PoissonReplicates, columns: Any
) -> StackedScores:
    """One pass: every active replicate's score (one GEMM each way per row block for all of them)."""

    def kernel_of(k: int) -> StackedScoreKernel:  # the first k replicates
        fewer = PoissonReplicates(weighting.seed, weighting.replicates[:k], weighting.groups)
        return StackedScoreKernel(coefs[:k], result.intercept, fewer, columns)

    n = len(weighting.replicates)
    try:
        record: StackedScores = engine.reduce(kernel_of(n))
    except WorkerMemoryError as error:
        raise WorkerMemoryError(f"{error} {memory_advice(engine, n, kernel_of, 'replicates')}") from None
    return record


def _information(engine: Any, result: MNLogitResults, columns: Any, objective: Any) -> Array:
    """The full sample's penalized information at the fit: one pass."""
    stats = engine.reduce(StatisticsKernel(result.coef, Request(information=True), result.intercept, columns))
    return np.asarray(objective.information(stats), dtype=np.float64)
