"""Time dmlr's methods on synthetic problems and print a table.

Usage::

    .venv/bin/python benchmarks/run.py                # the issue-7 problems P1, P1b (and P2 with --p2)
    .venv/bin/python benchmarks/run.py --quick        # smaller problems, seconds

For each problem and method: median wall seconds over ``--repeat`` runs on a LocalCluster with 2 worker processes
(1 thread each), passes over the data, iterations, final mean log-likelihood and its difference to the best fit.
Data are generated as in issue 7: Gaussian features, coefficients N(0, 1/d) (d counts the constant), base class 0.
With ``--peers``, scikit-learn (lbfgs and newton-cholesky, no penalty) and statsmodels MNLogit (newton) fit the same
data in this process, and the table gains their seconds and dmlr's ratio to each. dask-ml, Spark and the roofline
are issue 7's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

PROBLEMS = {
    "P1": (200_000, 50, 6),
    "P1b": (200_000, 50, 2),
    "P2": (100_000, 100, 20),
}
QUICK = {"Q1": (40_000, 20, 6), "Q1b": (40_000, 20, 2)}


@dataclass
class Row:
    problem: str
    method: str
    seconds: float
    passes: int
    iterations: int
    mean_llf: float
    converged: bool


def run(problems: dict[str, tuple[int, int, int]], methods: list[str], repeat: int, max_iter: int) -> list[Row]:
    from distributed import Client, LocalCluster

    import dmlr
    from dmlr.synthetic import make_mnlogit

    rows: list[Row] = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        for name, (n, d, k) in problems.items():
            data = make_mnlogit(n, d - 1, k, seed=1)
            for method in methods:
                times, res = [], None
                for _ in range(repeat):
                    start = time.perf_counter()
                    res = dmlr.fit(data.X, data.y, method=method, client=client, max_iter=max_iter)
                    times.append(time.perf_counter() - start)
                assert res is not None
                rows.append(
                    Row(name, method, statistics.median(times), res.n_passes, res.n_iter, res.llf / n, res.converged)
                )
    return rows


def run_peers(problems: dict[str, tuple[int, int, int]], repeat: int, with_statsmodels: bool) -> list[Row]:
    """The same data fitted by scikit-learn and statsmodels (median seconds, mean log-likelihood reached)."""
    import warnings

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from dmlr.synthetic import make_mnlogit

    rows: list[Row] = []
    for name, (n, d, k) in problems.items():
        data = make_mnlogit(n, d - 1, k, seed=1)
        x, y = np.asarray(data.X), np.asarray(data.y)
        peers: dict[str, object] = {
            "sk-lbfgs": lambda: LogisticRegression(penalty=None, solver="lbfgs", max_iter=10_000, tol=1e-10),
            "sk-newton-cholesky": lambda: LogisticRegression(penalty=None, solver="newton-cholesky", tol=1e-10),
        }
        for peer, make in peers.items():
            times, model = [], None
            for _ in range(repeat):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = make().fit(x, y)  # type: ignore[operator]
                times.append(time.perf_counter() - start)
            proba = model.predict_proba(x)  # type: ignore[union-attr]
            llf = float(np.log(proba[np.arange(n), y]).sum())
            rows.append(Row(name, peer, statistics.median(times), -1, int(np.max(model.n_iter_)), llf / n, True))  # type: ignore[union-attr]
        if with_statsmodels and k * d <= 400:
            import statsmodels.api as sm

            times, llf = [], 0.0
            for _ in range(repeat):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-10, maxiter=100)
                times.append(time.perf_counter() - start)
                llf = float(res.llf)
            rows.append(Row(name, "statsmodels", statistics.median(times), -1, -1, llf / n, True))
    return rows


def render(rows: list[Row]) -> str:
    best = {r.problem: max(x.mean_llf for x in rows if x.problem == r.problem) for r in rows}
    head = (
        f"| {'problem':<7} | {'method':<8} | {'seconds':>8} | {'passes':>6} | {'iter':>5} "
        f"| {'mean llf':>13} | {'vs best':>8} |"
    )
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        gap = r.mean_llf - best[r.problem]
        flag = "" if r.converged else " (not converged)"
        passes = "-" if r.passes < 0 else str(r.passes)
        iters = "-" if r.iterations < 0 else str(r.iterations)
        lines.append(
            f"| {r.problem:<7} | {r.method:<8} | {r.seconds:>8.2f} | {passes:>6} | {iters:>5} | "
            f"{r.mean_llf:>13.10f} | {gap:>8.1e} |{flag}"
        )
    peers = [r for r in rows if r.passes < 0]
    if peers:
        lines += ["", "dmlr seconds / peer seconds (same problem, same run):", ""]
        for r in rows:
            if r.passes >= 0:
                ratios = ", ".join(f"{p.method} {r.seconds / p.seconds:.2f}" for p in peers if p.problem == r.problem)
                lines.append(f"- {r.problem} {r.method}: {ratios}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small problems")
    parser.add_argument("--p2", action="store_true", help="include P2 (K = 20, (K-1)d = 1900)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default="newton,auto,bohning")
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--peers", action="store_true", help="also fit with scikit-learn and statsmodels")
    args = parser.parse_args()
    problems = dict(QUICK) if args.quick else {k: v for k, v in PROBLEMS.items() if k != "P2" or args.p2}
    rows = run(problems, args.methods.split(","), args.repeat, args.max_iter)
    if args.peers:
        rows += run_peers(problems, args.repeat, with_statsmodels=True)
    print(render(rows))


if __name__ == "__main__":
    main()
