"""A start near the optimum from a row sample: Newton on the sample in memory, then one pass over all rows there.

Newton's iterations far from the optimum are its costly ones on real designs (raw-unit features, 100+ sparse dummy
columns): each costs a full pass, and its quadratic model is poor there. The same early iterations on a sample of
``s`` rows cost ``s / n`` of a pass, and the sample's optimum lies within ``O(1 / sqrt(s))`` of the whole data's,
where Newton converges in a few steps. A pass keeps the sample (:mod:`dmlr.oracle.sample`: the same rows
whatever the partitioning, so a fit's iterates do not depend on it); the driver fits it with the same rule (its
Levenberg-Marquardt damping, a ridge of at least :data:`SAMPLE_L2` so that levels absent from the sample stay
finite), then one pass over all rows at the sample's optimum gives the loop its start. The sample's fit is kept only
when it beats the intercept-only start.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from dmlr.diagnostics import column_magnitudes
from dmlr.driver import Start
from dmlr.fitting.evaluator import FitPasses
from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.statistics import WITH_INFORMATION, Request, RowSample, Statistics
from dmlr.steps.base import Iterate, Objective, flat, unflat
from dmlr.steps.linesearch import trust_trials
from dmlr.steps.newton import NewtonRule, shifted_cholesky

__all__ = [
    "SAMPLE_BYTES",
    "SAMPLE_GAIN",
    "SAMPLE_L2",
    "SAMPLE_MOVE",
    "SAMPLE_ROWS",
    "far_from_start",
    "sample_rate",
    "warm_start",
]

logger = logging.getLogger("dmlr")

SAMPLE_ROWS = 20_000
"""Rows of the sample, at least (more for wide designs: :data:`ROWS_PER_COLUMN`)."""
ROWS_PER_COLUMN = 150
"""... at least this many per model column."""
SAMPLE_BYTES = 64 * 2**20
"""Bytes the sample's features may take on the driver."""
WHOLE_PER_SAMPLE = 3
"""The sample is drawn only from data with at least this many times its rows (smaller data: Newton on them)."""
SAMPLE_L2 = 1.0
"""Smallest ridge of the sample's fit."""
SAMPLE_ITERATIONS = 50
"""Newton iterations at most on the sample."""
SAMPLE_GAIN = 0.05
"""The sample's fit stops once a step is predicted to gain less than this many log-likelihood units per parameter
(times the mean row weight): the sample's optimum lies about half a unit per parameter below the whole data's
optimum on the sample (the chi-square's mean), so a finer fit of the sample moves the start by nothing that
matters."""


SAMPLE_MOVE = 1.0
"""Largest move of a linear predictor by Newton's first step from the intercept-only optimum for which the loop
starts there without fitting the sample."""


def far_from_start(start: Start, objective: Objective) -> bool:
    """Whether Newton's first step from the loop's start point moves some linear predictor (each coefficient times
    its column's magnitude, :func:`~dmlr.diagnostics.column_magnitudes`) by more than :data:`SAMPLE_MOVE`; ``True``
    when the start point or the first pass's moments are not there to tell."""
    first, point = start.first, start.point
    if point is None or point[1].information is None or first.col_sum is None or first.col_sumsq is None:
        return True
    it = Iterate.at(point[0], point[1], objective)
    factor, _ = shifted_cholesky(objective.information(point[1]))
    step = unflat(scipy.linalg.cho_solve(factor, flat(it.gradient)), it.coef.shape[0])
    magnitudes = column_magnitudes(first.col_sum, first.col_sumsq, first.col_abssum, first.weight_sum)
    move = float(np.max(np.abs(step) * magnitudes[:, None])) if step.size else 0.0
    logger.debug("Newton's first step from the start moves a linear predictor by %.3g", move)
    return move > SAMPLE_MOVE


def sample_rate(n_rows: int, n_features: int) -> float:
    """The sample pass's ``Request.sample_rate`` (0.0: no sample) for data of ``n_rows`` rows and ``n_features``
    data columns.

    ``s = max(SAMPLE_ROWS, ROWS_PER_COLUMN * (p + 1))`` rows, drawn when they fit in :data:`SAMPLE_BYTES` and the
    data have at least ``WHOLE_PER_SAMPLE * s`` rows.
    """
    rows = max(SAMPLE_ROWS, ROWS_PER_COLUMN * (n_features + 1))
    if 8 * rows * (n_features + 2) > SAMPLE_BYTES or n_rows < WHOLE_PER_SAMPLE * rows:
        return 0.0
    return rows / float(n_rows)


def warm_start(
    passes: FitPasses,
    start: Start,
    objective: Objective,
    use: bool = True,
    request: Request = WITH_INFORMATION,
    say: Callable[[str], None] | None = None,
) -> Start:
    """The loop's start at the sample's optimum, or ``start`` unchanged (not ``use``, resuming, data too small for a
    sample, or a sample fit no better than ``start``'s point).

    Two passes: one keeps the sample rows (it computes only the score besides), one over all rows at the sample's
    optimum computes ``request``. ``say`` announces the sample's fit (a phase of the fit).
    """
    rate = sample_rate(start.first.n_rows, passes.design.n_features)
    if not use or start.resumed is not None or rate <= 0.0:
        return start
    clock = time.perf_counter()
    coef = np.zeros(start.first.score.shape) if start.point is None else start.point[0]
    sample = passes(coef, Request(sample_rate=rate)).sample
    if sample is None or sample.rows.size == 0:
        return start
    if say is not None:
        say(f"fitting a {sample.rows.size:,}-row sample in memory for the start")
    coef, iterations = _fit_sample(sample.in_row_order(), passes, start, objective)
    stats = passes(coef, request)
    warm = Iterate.at(coef, stats, objective)
    current = start.point
    base = None if current is None else Iterate.at(current[0], current[1], objective).objective
    logger.info(
        "start from a %d-row sample: %d iterations, %.2fs; objective %.10g (intercept-only start %s)",
        sample.rows.size, iterations, time.perf_counter() - clock, warm.objective,
        "none" if base is None else f"{base:.10g}",
    )  # fmt: skip
    if warm.finite and (base is None or warm.objective > base):
        start = replace(start, point=(coef, stats))
    return start


def _fit_sample(sample: RowSample, passes: FitPasses, start: Start, objective: Objective) -> tuple[np.ndarray, int]:
    """Newton (Levenberg-Marquardt damped) on the sample in memory, from the loop's start point; the coefficients
    and the iterations it took."""
    design = passes.design
    x = sample.x if passes.columns is None else sample.x[:, list(passes.columns)]
    codes = sample.codes
    share = float(x.shape[0] if sample.weights is None else sample.weights.sum()) / max(start.first.weight_sum, 1e-300)
    local = Objective(max(objective.l2 * share, SAMPLE_L2), objective.mask)

    pieces = np.array_split(np.arange(x.shape[0]), max(1, min(os.cpu_count() or 1, x.shape[0] // 1000)))

    def piece(coef: np.ndarray, rows: np.ndarray) -> Statistics:
        w, o = sample.weights, sample.offset
        return partition_statistics(
            x[rows], codes[rows], None if w is None else w[rows], None if o is None else o[rows], coef,
            intercept=design.intercept, request=WITH_INFORMATION,
        )  # fmt: skip

    def evaluate(coef: np.ndarray, request: Request) -> Iterate:
        # the sample's rows split over the cores, one BLAS thread each (as the local engine runs partitions)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(len(pieces)) as pool:
            stats = Statistics.sum(list(pool.map(lambda rows: piece(coef, rows), pieces)))
        return Iterate.at(coef, stats, local)

    coef = np.zeros(start.first.score.shape) if start.point is None else start.point[0]
    it = evaluate(coef, WITH_INFORMATION)
    rule = NewtonRule(local)
    enough = SAMPLE_GAIN * coef.size * it.stats.weight_sum / max(it.stats.n_rows, 1)
    for iteration in range(SAMPLE_ITERATIONS):
        direction = rule.direction(it)
        logger.debug("sample iteration %d: objective %.10g, predicted gain %.4g", iteration, it.objective,
                     direction.predicted)  # fmt: skip
        if not it.finite or (direction.predicted or 0.0) <= enough:
            return it.coef, iteration
        new = trust_trials(rule.revise, evaluate, it, direction)
        if new is None:
            return it.coef, iteration
        it = new
    return it.coef, SAMPLE_ITERATIONS
