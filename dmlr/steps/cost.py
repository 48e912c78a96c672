"""What ``method="auto"`` means: the rule whose fit is predicted to take least time on the data at hand.

A pass costs about ``overhead + max(read, compute)``: the fixed cost of a distributed pass (scheduling, the round
trip, the records' transfer), the time to read the data when it is streamed from a store (measured: the first
pass, which computes little, is read-bound), and the arithmetic of the slowest task (a flop model of the kernels,
in units of this machine's single-core GEMM rate, measured once per process). A rule's fit costs its typical
number of passes of each kind:

- Newton: :data:`NEWTON_PASSES` information passes; the optimum's pass carries the information for inference.
- L-BFGS: :data:`LBFGS_PASSES` score passes, then one information pass when standard errors are asked for; when
  an information estimated on a sample of the rows pays for itself (:func:`refresh_every`), one pass computes it
  and :data:`REFRESH_SAVED_PASSES` fewer are needed.

Streamed from a store, reading dominates and Newton's few passes win while its information is affordable
(``(K - 1) d <=`` :data:`NEWTON_MAX_PARAMETERS`); held in memory, the arithmetic decides. The flop model's
constants were fitted to the kernels' measured times on one core (``benchmarks/README.md``); for wide designs
(``d >=`` :data:`MEASURE_COLUMNS`) the score kernel's time is also measured at the data's shape and the larger of the
two is used.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import numpy as np

from dmlr.oracle.blocks import gram_layout
from dmlr.steps.base import DataFacts
from dmlr.steps.newton import MIN_SAMPLE_ROWS

__all__ = [
    "CLUSTER_OVERHEAD",
    "LBFGS_PASSES",
    "LOCAL_OVERHEAD",
    "NEWTON_MAX_PARAMETERS",
    "NEWTON_PASSES",
    "PassModel",
    "Prediction",
    "choose_by_cost",
    "default_model",
    "gemm_rate",
    "pass_model",
    "refresh_every",
    "score_seconds_per_row",
]

NEWTON_PASSES = 6
"""Information passes of a Newton fit after the first pass (typical, ``benchmarks/README.md``)."""

LBFGS_PASSES = 20
"""Score passes of a preconditioned L-BFGS fit after the first pass (typical, ``benchmarks/README.md``)."""

NEWTON_MAX_PARAMETERS = 4096
"""Newton only while ``(K - 1) d`` is at most this: the driver factors an ``(m d)^2`` matrix every iteration and a
worker holds a few of them (128 MiB each at this size)."""

CLUSTER_OVERHEAD = 0.02
"""Fixed seconds of a pass on a cluster (scheduling, the round trip, the records' transfer; as measured on a
2-worker LocalCluster, ``benchmarks/README.md``)."""

LOCAL_OVERHEAD = 0.004
"""Fixed seconds of a pass in local threads (as measured on small problems)."""

DEFAULT_ROWS = 100_000
"""Rows per task of the model :func:`default_model` assumes when no pass has been made."""

PAIRS_FACTOR = 1.25
"""Time of the information's pairs form over its flops (fitted on one core, ``benchmarks/README.md``)."""

BLOCKED_FACTOR = 2.6
"""Time of the blocked form over the true flops, ``T d (d + 1)`` (fitted on one core, ``benchmarks/README.md``)."""


def score_flops(d: int, m: int) -> float:
    """Flop-equivalents per row of a score pass (two skinny GEMMs, ``exp``, residuals; fitted on one core)."""
    return 12.0 * m * d + 2500.0


def grams_flops(d: int, n_weights: int) -> float:
    """Flop-equivalents per row of ``n_weights`` weighted Gram matrices of ``d`` columns, in the form
    :class:`~dmlr.oracle.kernels.WeightedGrams` uses for that many (the information: ``m (m + 1) / 2`` of them)."""
    if n_weights == 0:
        return 0.0
    factor = PAIRS_FACTOR if gram_layout(d, n_weights)[0] else BLOCKED_FACTOR
    return factor * n_weights * d * (d + 1)


@functools.cache
def gemm_rate() -> float:
    """This process's single-thread GEMM rate (flop/s), best of five 384 x 384 products (about 10 ms)."""
    from threadpoolctl import threadpool_limits

    a = np.ones((384, 384))
    best = float("inf")
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(5):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
    return 2 * 384**3 / max(best, 1e-9)


MEASURE_COLUMNS = 500
"""Model columns from which the score kernel's time is measured at the data's shape, not only modelled."""


@functools.cache
def score_seconds_per_row(d: int, m: int) -> float:
    """Seconds per row of the score kernel on one core at ``d`` model columns and ``m`` non-base classes: the best
    of three calls on ``2^23 / d`` synthetic rows (64 MiB of features; about 0.1 s in all)."""
    from threadpoolctl import threadpool_limits

    from dmlr.oracle.kernels import partition_statistics
    from dmlr.oracle.statistics import SCORE_ONLY

    rows = max(256, 2**23 // max(d, 1))
    rng = np.random.default_rng(0)
    x = rng.random((rows, d - 1))
    codes = rng.integers(0, m + 1, size=rows)
    coef = np.zeros((d, m))
    best = float("inf")
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(3):
            start = time.perf_counter()
            partition_statistics(x, codes, None, None, coef, intercept=True, request=SCORE_ONLY)
            best = min(best, time.perf_counter() - start)
    return best / rows


@dataclass(frozen=True)
class PassModel:
    """The cost of one pass over the data at hand.

    Attributes
    ----------
    rows : int
        Rows of the largest task of a pass (the pass ends with it).
    d, m : int
        Model columns and non-base classes.
    read : float
        Seconds a pass spends reading (0 for data held in memory).
    overhead : float
        Fixed seconds per pass.
    rate : float
        Single-core GEMM rate, flop/s.
    score_row : float
        Measured seconds per row of the score kernel at this ``d`` and ``m`` (:func:`score_seconds_per_row`; 0: the
        flop model alone). Wide designs' skinny GEMMs stream ``X`` far below the GEMM rate.
    """

    rows: int
    d: int
    m: int
    read: float
    overhead: float
    rate: float
    score_row: float = 0.0

    def compute(self, n_weights: int = 0, every: int = 1) -> float:
        """Seconds of a task's arithmetic: the score, and ``n_weights`` weighted Gram matrices of
        ``1/every`` of its rows."""
        score = max(score_flops(self.d, self.m) / self.rate, self.score_row)
        return self.rows * (score + grams_flops(self.d, n_weights) / every / self.rate)

    def seconds(self, information: bool = False, every: int = 1) -> float:
        """Predicted seconds of one pass (its information from ``1/every`` of the rows)."""
        n_weights = self.m * (self.m + 1) // 2 if information else 0
        return self.overhead + max(self.read, self.compute(n_weights, every))


REFRESH_SAVED_PASSES = 7
"""Passes L-BFGS saves when its preconditioner becomes an estimated information after the second step (the median
over the benchmark problems, ``benchmarks/README.md``)."""


def refresh_every(model: PassModel, n_rows: int) -> int:
    """The row-block sampling rate of L-BFGS's preconditioner refresh, or 0 when it does not pay.

    The largest sample (smallest rate among 1, 2, 4, ..., 64) whose extra arithmetic in one pass costs at most half
    of the :data:`REFRESH_SAVED_PASSES` score passes it saves, with at least :data:`MIN_SAMPLE_ROWS` rows per
    parameter.
    """
    score = model.seconds()
    for every in (1, 2, 4, 8, 16, 32, 64):
        if n_rows / every < MIN_SAMPLE_ROWS * model.m * model.d:  # the sample's rows per parameter
            return 0
        if model.seconds(True, every) - score <= REFRESH_SAVED_PASSES * score / 2:
            return every
    return 0


@dataclass(frozen=True)
class Prediction:
    """The rule with the least predicted fit time, and each candidate's predicted seconds and passes.

    ``refresh_every`` is L-BFGS's preconditioner sampling rate (:func:`refresh_every`; 0 for none).
    """

    method: str
    predicted: dict[str, float]
    passes: dict[str, int]
    refresh_every: int = 0


def pass_model(facts: DataFacts) -> PassModel:
    """The pass model of the data at hand: the fixed overhead of where passes run, and for streamed data the read
    time the first pass measured (it computes only the score and the Gram matrix: it is bound by reading)."""
    overhead = CLUSTER_OVERHEAD if facts.on_cluster else LOCAL_OVERHEAD
    d, m = facts.n_columns, facts.n_nonbase
    measured = score_seconds_per_row(d, m) if d >= MEASURE_COLUMNS else 0.0
    model = PassModel(facts.task_rows, d, m, 0.0, overhead, gemm_rate(), measured)
    if facts.streamed:
        read = max(0.0, facts.first_pass_seconds - overhead - model.compute(n_weights=1))
        model = dataclasses.replace(model, read=read)
    return model


def default_model(d: int, m: int) -> PassModel:
    """A pass model without measurements: :data:`DEFAULT_ROWS` rows per task held in memory on a cluster."""
    return PassModel(DEFAULT_ROWS, d, m, 0.0, CLUSTER_OVERHEAD, gemm_rate())


def choose_by_cost(model: PassModel, *, inference: bool, n_rows: int = 0) -> Prediction:
    """The rule with the least predicted fit time (see the module docstring).

    Parameters
    ----------
    model : PassModel
    inference : bool
        Whether the fit ends with standard errors (L-BFGS then adds one information pass).
    n_rows : int
        Rows of the data (for L-BFGS's preconditioner refresh; 0: none).
    """
    info, score = model.seconds(True), model.seconds()
    every = refresh_every(model, n_rows) if n_rows else 0
    lbfgs_passes = LBFGS_PASSES - (REFRESH_SAVED_PASSES if every else 0)
    lbfgs = lbfgs_passes * score + (info if inference else 0.0)
    if every:  # one of its passes also estimates the information
        lbfgs += model.seconds(True, every) - score
    predicted = {"newton": NEWTON_PASSES * info, "lbfgs": lbfgs}
    passes = {"newton": NEWTON_PASSES, "lbfgs": lbfgs_passes + int(inference)}
    if model.m * model.d > NEWTON_MAX_PARAMETERS:
        method = "lbfgs"
    else:
        method = min(predicted, key=lambda name: predicted[name])
    return Prediction(method, predicted, passes, every)
