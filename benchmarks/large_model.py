"""A Newton step and the inference at a large (K - 1) d: the driver's memory against the information's size.

Usage::

    .venv/bin/python benchmarks/large_model.py [--n 3000] [--classes 50] [--p 199] [--workers 2]

Fits ``n`` rows with ``K`` classes and ``d = p + 1`` model columns by Newton (``l2 = 1`` so the optimum exists with
few rows per class), one iteration (``max_iter=1``), with the covariance at the end, on a LocalCluster. Samples the
resident memory of the driver (this process) and of each worker every 50 ms and reports the peaks in units of
one information matrix ``8 ((K - 1) d)^2`` bytes, and the seconds of each part.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--p", type=int, default=199)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import psutil
    from distributed import Client, LocalCluster

    import dmlr
    from dmlr.cluster import BLAS_ENV
    from dmlr.synthetic import make_mnlogit

    m, d = args.classes - 1, args.p + 1
    matrix = 8 * (m * d) ** 2
    data = make_mnlogit(args.n, args.p, args.classes, seed=5)
    print(f"n={args.n:,} K={args.classes} d={d}: (K-1)d = {m * d:,}, one information matrix = {matrix / 2**20:.0f} MiB")
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=0, dashboard_address=":0", env=BLAS_ENV)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        procs = [psutil.Process(), *(psutil.Process(p) for p in client.run(os.getpid).values())]
        base = [p.memory_info().rss for p in procs]
        peaks = list(base)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for i, p in enumerate(procs):
                    peaks[i] = max(peaks[i], p.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dmlr.ConvergenceWarning)
            res = dmlr.fit(data.X, data.y, method="newton", l2=1.0, max_iter=1, client=client)
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
    bse = res.bse.to_numpy()
    print(f"fit (1 Newton iteration, {res.n_passes} passes, covariance): {seconds:.1f} s")
    print(f"standard errors finite: {bool(np.isfinite(bse).all())}")
    for r in res.history:
        print(f"  {r['kind']:<9} {r['seconds']:7.1f} s")
    names = ["driver"] + [f"worker {i}" for i in range(args.workers)]
    print("| process | RSS before (MiB) | peak (MiB) | peak - before, in information matrices |")
    print("|---|---|---|---|")
    for name, b, p in zip(names, base, peaks, strict=True):
        print(f"| {name} | {b / 2**20:.0f} | {p / 2**20:.0f} | {(p - b) / matrix:.2f} |")


if __name__ == "__main__":
    main()
