"""``python -m dmlr.demo`` (what ``make demo`` runs): synthesize, fit on a LocalCluster, print the summary.

The data have known coefficients, so the demo ends by comparing every estimate with the truth in units of its
standard error.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "run_demo"]


def run_demo(
    n: int = 400_000, p: int = 5, n_classes: int = 4, *, n_workers: int = 2, seed: int = 2026
) -> tuple[str, float]:
    """Fit a generated data set on a LocalCluster of worker processes.

    Parameters
    ----------
    n, p, n_classes : int
        Size of the generated data set.
    n_workers : int
        Worker processes (one thread each).
    seed : int

    Returns
    -------
    report : str
        The summary followed by the comparison with the true coefficients.
    max_z : float
        Largest ``|estimate - truth| / std err``.
    """
    from distributed import Client, LocalCluster

    import dmlr
    from dmlr.synthetic import make_mnlogit

    chunk = max(1, n // (4 * n_workers))
    problem = make_mnlogit(n, p, n_classes, seed=seed, chunk_rows=chunk)
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        X, y = client.persist([problem.X, problem.y])
        start = time.perf_counter()
        res = dmlr.fit(
            X,
            y,
            feature_names=[f"x{j + 1}" for j in range(p)],
            client=client,
            callback=lambda r: print(
                f"  iter {r['iteration']:>2} {r['kind']:<9} loglik {r['loglik']:.8g}  "
                f"max|score| {r['max_abs_score']:.2e}  {r['seconds']:.2f}s",
                file=sys.stderr,
            ),
        )
        seconds = time.perf_counter() - start
    z = (res.params.to_numpy() - problem.coef) / res.bse.to_numpy()
    lines = [
        res.summary(),
        "",
        f"Fitted n={n:,} rows x {p + 1} columns, K={n_classes} on {n_workers} worker processes "
        f"in {seconds:.2f}s ({res.n_passes} data passes).",
        "Estimates against the coefficients the data were generated from, in standard errors:",
        f"{'':<8}" + "".join(f"{'y=' + str(c):>12}" for c in res.params.columns),
    ]
    for j, name in enumerate(res.params.index):
        lines.append(f"{name:<8}" + "".join(f"{v:>12.2f}" for v in z[j]))
    max_z = float(np.max(np.abs(z)))
    lines.append(f"max |estimate - truth| / se = {max_z:.2f} (within 4: {max_z < 4})")
    return "\n".join(lines), max_z


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--p", type=int, default=5)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    report, max_z = run_demo(args.n, args.p, args.classes, n_workers=args.workers)
    print(report)
    return 0 if max_z < 4 else 1


if __name__ == "__main__":
    sys.exit(main())
