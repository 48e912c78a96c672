"""dmlr against its peers on the issue-7 problems, with a roofline for dmlr's own passes; prints tables.

Usage::

    .venv/bin/python benchmarks/run.py                    # P1, P2, P1b: dmlr, peers, roofline (about 15 min)
    .venv/bin/python benchmarks/run.py --problems P1b     # one problem
    .venv/bin/python benchmarks/run.py --quick            # small problems, a minute

``make bench`` installs the peers (extra ``dmlr[bench]``: scikit-learn, statsmodels, dask-ml) and runs it.

What is timed, in one run, on this machine:

- Data: ``y`` drawn from a multinomial logit with Gaussian features, true coefficients N(0, 1/d) (d counts the
  constant), base class 0; the same arrays for every solver.
- dmlr: a LocalCluster of 2 worker processes x 1 thread (``dmlr.cluster.connect("local")``, BLAS pinned to one
  thread per worker). The data are put on the workers once (``dmlr.scatter_rows``, timed separately as "ship") and
  each fit starts from them, as a fit of staged or persisted data does. Every dmlr time includes the exact
  information pass at the optimum (standard errors) unless the row says ``inference=False``.
- Peers, in this process on the same 2 cores: scikit-learn ``LogisticRegression`` (lbfgs and newton-cholesky,
  ``penalty=None``, tight tolerances so that they reach the optimum), statsmodels ``MNLogit`` (Newton, which also
  computes standard errors; skipped for P2 where its Python-level Hessian takes many minutes), dask-ml
  ``LogisticRegression(solver="newton")`` for K = 2 on the same LocalCluster (its penalty made negligible, C=1e12).
- Seconds are the median of ``--repeat`` runs (slow peers: ``--slow-repeat``); every fit's mean log-likelihood is
  compared with the best one (``Δ``); the target is agreement to 1e-9.

Roofline: on the same workers, the aggregate GEMM rate (each worker multiplies 2000 x 2000 matrices on its single
thread, both at once) and the aggregate read bandwidth (each worker sums a 256 MB array, both at once). A score
pass must read X (8 n p bytes) and do 4 n d (K-1) flops; an information pass must do n m(m+1) d(d+1)/2 flops
(m = K - 1: the m(m+1)/2 distinct class blocks, each a symmetric d x d sum over rows, its d(d+1)/2 distinct entries
at 2 flops per row: the true floor). The floor is the larger of bytes/bandwidth and flops/rate; dmlr's pass time is
the median of 5 passes at the optimum. "kernel / its floor" is the kernel alone on one worker's rows against the
same floor for those rows on one core (the GEMM rate per worker).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PROBLEMS = {
    "P1": (200_000, 50, 6),
    "P2": (100_000, 100, 20),
    "P1b": (200_000, 50, 2),
    "P3": (2_000_000, 50, 6),  # in one process: dmlr.fit on NumPy arrays without a cluster, against scikit-learn
    # shapes of our own (issue 23), so that no target is met by tuning to one shape: many rows and few columns,
    # and wide with few classes
    "P4": (1_000_000, 20, 4),
    "P5": (100_000, 200, 3),
}
ONE_PROCESS = {"P3"}
QUICK = {"Q1": (40_000, 20, 6), "Q1b": (40_000, 20, 2)}
# The targets: dmlr method -> (peer, max ratio)
TARGETS = {
    ("P1", "auto"): [("sk-lbfgs", 0.4)],
    ("P1", "newton"): [("sk-newton-cholesky", 0.3), ("statsmodels", 0.15)],
    ("P2", "auto inference=False"): [("sk-lbfgs", 0.5)],
    ("P2", "auto"): [("sk-newton-cholesky", 0.05)],
    ("P3", "auto one process"): [("sk-lbfgs", 0.6)],
    ("P1b", "auto"): [("sk-newton-cholesky", 1.0), ("dask-ml-newton", 0.3)],
    ("P1b", "newton"): [("sk-newton-cholesky", 1.0), ("dask-ml-newton", 0.3)],
    ("P4", "auto"): [("sk-lbfgs", 0.4)],
    ("P5", "auto"): [("sk-lbfgs", 0.4)],
}


@dataclass
class Row:
    problem: str
    solver: str
    seconds: float
    passes: int | None
    iterations: int | None
    mean_llf: float
    note: str = ""


def _median_time(fit: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _mean_llf(proba: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.log(proba[np.arange(y.size), y])))


def machine_rates(client: Any) -> tuple[float, float, float]:
    """Aggregate GEMM GFLOP/s and read GB/s of the workers, all of them working at once (best of 5), and the
    median seconds of distributed's own round trip for one no-op task (submit, run, result; 30 times): the least
    any pass can cost on this cluster."""

    def gemm() -> float:
        a = np.random.default_rng(0).random((2000, 2000))
        a @ a
        best = np.inf
        for _ in range(5):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
        return 2 * 2000**3 / best / 1e9

    def read() -> float:
        a = np.ones(32 * 2**20)  # 256 MB
        a.sum()
        best = np.inf
        for _ in range(5):
            start = time.perf_counter()
            a.sum()
            best = min(best, time.perf_counter() - start)
        return a.nbytes / best / 1e9

    import dmlr

    dmlr.scatter_rows(np.ones((1000, 2)), client)  # warm the workers up (imports, first transfer)
    gflops = sum(client.run(gemm).values())
    gbps = sum(client.run(read).values())
    trips = []
    for _ in range(30):
        start = time.perf_counter()
        client.submit(_noop, pure=False).result()
        trips.append(time.perf_counter() - start)
    return gflops, gbps, statistics.median(trips)


def _noop() -> None:
    return None


def dmlr_rows(
    name: str,
    n: int,
    d: int,
    k: int,
    x: np.ndarray,
    y: np.ndarray,
    client: Any,
    repeat: int,
    rates: tuple[float, float, float],
) -> tuple[list[Row], list[str]]:
    from distributed import wait

    import dmlr
    from dmlr.data.design import build_design
    from dmlr.fitting.evaluator import FitPasses
    from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION

    rows: list[Row] = []
    if name in ONE_PROCESS:
        seconds, res = _median_time(lambda: dmlr.fit(x, y, max_iter=500, client=None), repeat)
        rows.append(
            Row(name, "dmlr auto one process", seconds, res.history[-1]["passes"], res.n_iter, res.llf / n, res.method)
        )
        return rows, []
    start = time.perf_counter()
    xd, yd = dmlr.scatter_rows(x, client), dmlr.scatter_rows(y, client)
    wait([xd, yd])
    ship = time.perf_counter() - start
    variants: list[tuple[str, dict[str, Any]]] = [("newton", {"method": "newton"}), ("auto", {"method": "auto"})]
    if name.startswith("P2"):
        variants = [("auto", {"method": "auto"}), ("auto inference=False", {"method": "auto", "inference": False})]
    best = None
    for label, kwargs in variants:
        seconds, res = _median_time(lambda kw=kwargs: dmlr.fit(xd, yd, client=client, max_iter=500, **kw), repeat)
        rule = res.method
        rows.append(Row(name, f"dmlr {label}", seconds, res.history[-1]["passes"], res.n_iter, res.llf / n, rule))
        best = res
    # the roofline: passes at the optimum
    assert best is not None
    design = build_design(xd, yd, classes=np.unique(y))
    passes = FitPasses.over(design, client, hold=True)
    coef = best.coef
    timing = {}
    for kind, request, count in (("score", SCORE_ONLY, 5), ("information", WITH_INFORMATION, 3 if d * k < 1000 else 2)):
        times = []
        for i in range(count):
            c = coef * (1.0 + 1e-9 * (i + 1))  # a new point each time (identical passes would be cached)
            t0 = time.perf_counter()
            passes(c, request)
            times.append(time.perf_counter() - t0)
        timing[kind] = statistics.median(times)
    # where a pass's time goes: the kernel alone on one worker's share of rows, in this process on one core, and
    # the round trip of a pass over a tiny design of the same shape (scheduling, transfers, the driver's sum)
    from threadpoolctl import threadpool_limits

    from dmlr.oracle.kernels import partition_statistics

    share = n // len(xd.chunks[0])
    xs, ys = np.ascontiguousarray(x[:share]), design.coding.encode(y[:share])
    kernel = {}
    with threadpool_limits(1):
        for kind, request in (("score", SCORE_ONLY), ("information", WITH_INFORMATION)):
            kernel[kind] = min(
                _median_time(lambda r=request: partition_statistics(xs, ys, None, None, coef, intercept=True,
                                                                    request=r), 1)[0]
                for _ in range(3)
            )  # fmt: skip
    per = max(8, k)  # two partitions that hold every class between them
    first = np.unique(y, return_index=True)[1]
    picked = np.concatenate([first, np.setdiff1d(np.arange(2 * per), first)])[: 2 * per]
    tiny_x = dmlr.scatter_rows(x[picked], client, chunk_rows=per)
    tiny_y = dmlr.scatter_rows(y[picked], client, chunk_rows=per)
    tiny = build_design(tiny_x, tiny_y, classes=np.unique(y))
    tiny_passes = FitPasses.over(tiny, client, hold=True)
    trip = []
    for i in range(10):
        t0 = time.perf_counter()
        tiny_passes(coef * (1.0 + 1e-9 * i), SCORE_ONLY)
        trip.append(time.perf_counter() - t0)
    round_trip = statistics.median(trip)
    gflops, gbps, _ = rates
    m, p = k - 1, d - 1
    floors = {
        "score": max(8 * n * p / (gbps * 1e9), 4 * n * d * m / (gflops * 1e9)),
        "information": n * m * (m + 1) * d * (d + 1) / 2 / (gflops * 1e9),
    }
    workers = len(xd.chunks[0])
    lines = [
        f"| {name} | {kind} | {timing[kind]:.3f} | {kernel[kind]:.3f} | {round_trip:.3f} | {floors[kind]:.3f} | "
        f"{timing[kind] / floors[kind]:.1f} | {kernel[kind] / (floors[kind] * workers * share / n):.2f} |"
        for kind in ("score", "information")
    ]
    rows.append(Row(name, "dmlr ship NumPy to workers", ship, None, None, float("nan"), "once per data set"))
    return rows, lines


def peer_rows(
    name: str, n: int, d: int, k: int, x: np.ndarray, y: np.ndarray, client: Any, repeat: int, slow_repeat: int
) -> list[Row]:
    rows: list[Row] = []
    from sklearn.linear_model import LogisticRegression

    for solver in ("lbfgs",) if name in ONE_PROCESS else ("lbfgs", "newton-cholesky"):
        reps = slow_repeat if (solver == "newton-cholesky" and d * k > 500) else repeat
        model = LogisticRegression(penalty=None, solver=solver, max_iter=10_000, tol=1e-10)
        seconds, fitted = _median_time(lambda model=model: model.fit(x, y), reps)
        rows.append(
            Row(name, f"sk-{solver}", seconds, None, int(np.max(fitted.n_iter_)), _mean_llf(fitted.predict_proba(x), y))
        )
    if d * k <= 400 and name not in ONE_PROCESS:
        import statsmodels.api as sm

        exog = sm.add_constant(x)
        seconds, fitted = _median_time(
            lambda: sm.MNLogit(y, exog).fit(method="newton", disp=0, tol=1e-10, maxiter=100),
            slow_repeat if d * k > 200 else repeat,
        )
        rows.append(Row(name, "statsmodels", seconds, None, int(fitted.mle_retvals["iterations"]), fitted.llf / n))
    if k == 2:
        try:
            import dask.array as da
            from dask_ml.linear_model import LogisticRegression as DaskLogisticRegression
        except ImportError:
            rows.append(Row(name, "dask-ml-newton", float("nan"), None, None, float("nan"), "not installed"))
        else:
            chunk = -(-n // 2)
            xd = client.persist(da.from_array(x, chunks=(chunk, -1)))
            yd = client.persist(da.from_array(y, chunks=chunk))
            model = DaskLogisticRegression(solver="newton", C=1e12, max_iter=100, tol=1e-10)
            seconds, fitted = _median_time(lambda: model.fit(xd, yd), repeat)
            proba = np.asarray(fitted.predict_proba(x))
            if proba.ndim == 1:
                proba = np.column_stack([1 - proba, proba])
            rows.append(Row(name, "dask-ml-newton", seconds, None, None, _mean_llf(proba, y), "2 worker processes"))
    return rows


def render(rows: list[Row]) -> str:
    best = {}
    for r in rows:
        if np.isfinite(r.mean_llf):
            best[r.problem] = max(best.get(r.problem, -np.inf), r.mean_llf)
    out = [
        "| problem | solver | seconds | passes | iterations | mean log-lik | Δ vs best | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = r.mean_llf - best.get(r.problem, np.nan) if np.isfinite(r.mean_llf) else float("nan")
        out.append(
            f"| {r.problem} | {r.solver} | {r.seconds:.2f} | {'' if r.passes is None else r.passes} | "
            f"{'' if r.iterations is None else r.iterations} | "
            f"{'' if not np.isfinite(r.mean_llf) else f'{r.mean_llf:.10f}'} | "
            f"{'' if not np.isfinite(gap) else f'{gap:.1e}'} | {r.note} |"
        )
    return "\n".join(out)


def render_targets(rows: list[Row]) -> str:
    by = {(r.problem, r.solver): r for r in rows}
    out = ["| problem | dmlr | peer | dmlr s | peer s | ratio | target | met |", "|---|---|---|---|---|---|---|---|"]
    for (problem, label), goals in TARGETS.items():
        mine = by.get((problem, f"dmlr {label}"))
        for peer, limit in goals:
            theirs = by.get((problem, peer))
            if mine is None or theirs is None or not np.isfinite(theirs.seconds):
                continue
            ratio = mine.seconds / theirs.seconds
            out.append(
                f"| {problem} | {label} | {peer} | {mine.seconds:.2f} | {theirs.seconds:.2f} | {ratio:.2f} | "
                f"≤ {limit} | {'yes' if ratio <= limit else 'no'} |"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="P1,P2,P1b,P3,P4,P5", help="comma-separated names of PROBLEMS")
    parser.add_argument("--quick", action="store_true", help="small problems instead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow-repeat", type=int, default=3, help="repeats of peers that take minutes")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()

    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    problems = dict(QUICK) if args.quick else {p: PROBLEMS[p] for p in args.problems.split(",")}
    rows: list[Row] = []
    roof = [
        "| problem | pass | dmlr pass s | kernel alone s | round trip s | floor s | dmlr / floor "
        "| kernel / its floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # one-process problems first: with a cluster running, dmlr.fit would use it as the default client
    for name, (n, d, k) in problems.items():
        if name not in ONE_PROCESS:
            continue
        data = make_mnlogit(n, d - 1, k, seed=1)
        x, y = np.asarray(data.X), np.asarray(data.y)
        rows += dmlr_rows(name, n, d, k, x, y, None, args.repeat, (0.0, 0.0, 0.0))[0]
        if not args.no_peers:
            rows += peer_rows(name, n, d, k, x, y, None, args.repeat, args.slow_repeat)
        print(f"[{name} done]", flush=True)
    with connected("local", n_workers=2) as client:
        rates = machine_rates(client)
        for name, (n, d, k) in problems.items():
            if name in ONE_PROCESS:
                continue
            data = make_mnlogit(n, d - 1, k, seed=1)
            x, y = np.asarray(data.X), np.asarray(data.y)
            found, lines = dmlr_rows(name, n, d, k, x, y, client, args.repeat, rates)
            rows += found
            roof += lines
            if not args.no_peers:
                rows += peer_rows(name, n, d, k, x, y, client, args.repeat, args.slow_repeat)
            print(f"[{name} done]", flush=True)
    print(
        f"\nMachine: GEMM {rates[0]:.0f} GFLOP/s and read bandwidth {rates[1]:.1f} GB/s, both workers at once; "
        f"distributed's round trip for one no-op task {rates[2] * 1e3:.1f} ms (median of 30).\n"
    )
    print(render(rows))
    print("\nTargets (ratios from this run):\n")
    print(render_targets(rows))
    print(
        "\nRoofline: median pass at the optimum on the cluster; the kernel alone on one worker's rows in one process "
        "on one core; the round trip of a pass over a few rows per partition; "
        "floor = max(bytes / bandwidth, flops / GEMM rate):\n"
    )
    print("\n".join(roof))


if __name__ == "__main__":
    main()
