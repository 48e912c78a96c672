"""Monte Carlo coverage of 95% intervals under within-cluster dependence: cluster-robust vs model-based.

(Not named coverage.py: a script's folder comes first on sys.path, and numba, which dask-ml brings, imports the
``coverage`` package.)

Usage::

    .venv/bin/python benchmarks/interval_coverage.py --reps 400

Each replication draws ``--clusters`` clusters of ``--size`` rows. A feature has a cluster-level component, and the
labels of a cluster are dependent through a shared uniform (a Gaussian-free copula): each row's label is the inverse
CDF of its multinomial-logit probabilities at the cluster's uniform with probability ``--rho``, at its own uniform
otherwise. Every label is therefore exactly multinomial-logit given its features (the MLE targets the true
coefficients), but rows of a cluster are positively dependent, so model-based standard errors are too small and
cluster-robust ones are right. Printed: the share of the true coefficients inside their 95% intervals, over all
replications and all ``(K - 1) d`` coefficients, for both covariances, with its Monte Carlo standard error.

Second table: predicted probabilities (``res.get_prediction``) at 20 fixed points, each replication on independent
rows (``rho = 0``): the share of the true probabilities inside their 95% delta-method intervals.

Third table (``--bootstrap-reps``, default 200 replications): the Poisson bootstrap's 95% percentile intervals
(``res.bootstrap(nrep=--nrep)``, iterated and one-step) on independent rows, and the cluster bootstrap's on
clustered rows (``rho``), the share of true coefficients inside, next to the model-based and cluster-robust Wald
intervals of the same fits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.stats

import dmlr

TRUE = np.array([[0.2, -0.4], [0.8, 0.3], [-0.5, 0.6]])  # (d, m): const, x1, x2 for classes 1, 2 (base 0)


def draw(rng: np.random.Generator, clusters: int, size: int, rho: float) -> tuple[np.ndarray, ...]:
    n = clusters * size
    groups = np.repeat(np.arange(clusters), size)
    x = rng.normal(size=(n, 2))
    x[:, 0] += rng.normal(size=clusters)[groups]  # a cluster-level component of x1
    eta = np.column_stack([np.zeros(n), TRUE[0] + x @ TRUE[1:]])
    p = np.exp(eta - eta.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    shared = rng.uniform(size=clusters)[groups]
    own = rng.uniform(size=n)
    u = np.where(rng.uniform(size=n) < rho, shared, own)
    y = (u[:, None] > np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)
    return x, y, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--bootstrap-reps", type=int, default=200)
    parser.add_argument("--nrep", type=int, default=200)
    parser.add_argument("--only-bootstrap", action="store_true")
    args = parser.parse_args()
    if args.only_bootstrap:
        bootstrap_coverage(args)
        return
    rng = np.random.default_rng(args.seed)
    truth = TRUE.ravel(order="F")
    q = scipy.stats.norm.ppf(0.975)
    hits = {"nonrobust": 0, "cluster": 0}
    total = 0
    points = np.random.default_rng(1).normal(size=(20, 2))
    eta0 = np.column_stack([np.zeros(20), TRUE[0] + points @ TRUE[1:]])
    p_true = np.exp(eta0) / np.exp(eta0).sum(axis=1, keepdims=True)
    p_hits = 0
    start = time.perf_counter()
    for _ in range(args.reps):
        x, y, groups = draw(rng, args.clusters, args.size, args.rho)
        for cov in hits:
            res = dmlr.fit(x, y, groups=groups if cov == "cluster" else None, cov_type=cov, method="newton")
            theta = res.coef.ravel(order="F")
            se = res.bse.to_numpy().ravel(order="F")
            hits[cov] += int(np.sum(np.abs(theta - truth) <= q * se))
        total += truth.size
        x, y, _ = draw(rng, args.clusters, args.size, 0.0)
        pred = dmlr.fit(x, y, method="newton").get_prediction(points)
        p_hits += int(np.sum(np.abs(pred.predicted - p_true) <= q * pred.se))
    seconds = time.perf_counter() - start
    print(f"{args.reps} replications x {truth.size} coefficients, {args.clusters} clusters of {args.size} rows, "
          f"rho {args.rho}: {seconds:.1f} s")  # fmt: skip
    print("| covariance | 95% interval coverage | Monte Carlo s.e. |")
    print("|---|---|---|")
    for cov, hit in hits.items():
        rate = hit / total
        print(f"| {cov} | {100 * rate:.1f}% | {100 * np.sqrt(rate * (1 - rate) / args.reps):.1f}% |")
    rate = p_hits / (args.reps * p_true.size)
    mc = 100 * np.sqrt(rate * (1 - rate) / args.reps)
    print(f"\npredicted probabilities at 20 points x {p_true.shape[1]} classes, independent rows: 95% interval "
          f"coverage {100 * rate:.1f}% (Monte Carlo s.e. {mc:.1f}%)")  # fmt: skip
    bootstrap_coverage(args)


def bootstrap_coverage(args: argparse.Namespace) -> None:
    """Table 3: percentile intervals of the Poisson bootstrap (independent rows) and of the cluster bootstrap
    (clustered rows), with the Wald intervals of the same fits."""
    rng = np.random.default_rng(args.seed + 1)
    truth = TRUE.ravel(order="F")
    q = scipy.stats.norm.ppf(0.975)
    hits = dict.fromkeys(["bootstrap", "one-step bootstrap", "wald", "cluster bootstrap",
                          "one-step cluster bootstrap", "cluster-robust wald"], 0)  # fmt: skip
    start = time.perf_counter()
    for r in range(args.bootstrap_reps):
        x, y, groups = draw(rng, args.clusters, args.size, 0.0)
        res = dmlr.fit(x, y, method="newton")
        ci = res.bootstrap(nrep=args.nrep, seed=r).conf_int(method="percentile").to_numpy()
        hits["bootstrap"] += int(np.sum((ci[:, 0] <= truth) & (truth <= ci[:, 1])))
        ci = res.bootstrap(nrep=args.nrep, seed=r, steps=1).conf_int(method="percentile").to_numpy()
        hits["one-step bootstrap"] += int(np.sum((ci[:, 0] <= truth) & (truth <= ci[:, 1])))
        hits["wald"] += int(
            np.sum(np.abs(res.coef.ravel(order="F") - truth) <= q * res.bse.to_numpy().ravel(order="F"))
        )
        x, y, groups = draw(rng, args.clusters, args.size, args.rho)
        res = dmlr.fit(x, y, groups=groups, method="newton")
        ci = res.bootstrap(nrep=args.nrep, kind="cluster", groups=groups, seed=r).conf_int().to_numpy()
        hits["cluster bootstrap"] += int(np.sum((ci[:, 0] <= truth) & (truth <= ci[:, 1])))
        ci = res.bootstrap(nrep=args.nrep, kind="cluster", groups=groups, seed=r, steps=1).conf_int().to_numpy()
        hits["one-step cluster bootstrap"] += int(np.sum((ci[:, 0] <= truth) & (truth <= ci[:, 1])))
        se = res.bse.to_numpy().ravel(order="F")
        hits["cluster-robust wald"] += int(np.sum(np.abs(res.coef.ravel(order="F") - truth) <= q * se))
    total = args.bootstrap_reps * truth.size
    print(f"\nbootstrap: {args.bootstrap_reps} replications x {truth.size} coefficients, nrep {args.nrep}, "
          f"{args.clusters} clusters of {args.size} rows: {time.perf_counter() - start:.1f} s")  # fmt: skip
    print("| rows | intervals | 95% coverage | Monte Carlo s.e. |\n|---|---|---|---|")
    for name, hit in hits.items():
        rate = hit / total
        rows = "clustered (rho)" if "cluster" in name else "independent"
        print(
            f"| {rows} | {name} | {100 * rate:.1f}% | {100 * np.sqrt(rate * (1 - rate) / args.bootstrap_reps):.1f}% |"
        )


if __name__ == "__main__":
    main()
