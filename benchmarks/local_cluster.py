"""connect("local") against a single-process fit of the same in-memory data, and the BLAS threads per worker.

Usage::

    .venv/bin/python benchmarks/local_cluster.py [--n 200000] [--p 49] [--classes 6] [--repeat 3]

Single process: ``dmlr.fit(X, y)`` with no client (dask's threaded scheduler, one task per core, BLAS limited to
one thread per task). Local cluster: ``dmlr.cluster.connect("local")`` (one worker process per core, one thread and
one BLAS thread each); the time includes shipping the in-memory arrays to the workers, as a user's fit does.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--p", type=int, default=49)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from threadpoolctl import threadpool_info

    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    data = make_mnlogit(args.n, args.p, args.classes, seed=1)
    print(f"n={args.n:,} d={args.p + 1} K={args.classes}; median of {args.repeat} runs")
    print(f"| {'method':<7} | {'single process (s)':>18} | {'connect(local) (s)':>18} | {'ratio':>6} | passes |")
    print("|---------|--------------------|--------------------|--------|--------|")
    with connected("local") as client:
        blas = client.run(lambda: max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        for method in ("newton", "auto"):
            single, local = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                a = dmlr.fit(data.X, data.y, method=method)
                single.append(time.perf_counter() - start)
                start = time.perf_counter()
                b = dmlr.fit(data.X, data.y, method=method, client=client)
                local.append(time.perf_counter() - start)
            assert np.max(np.abs(a.coef - b.coef)) <= 1e-10 * np.max(np.abs(a.coef))
            s, c = statistics.median(single), statistics.median(local)
            print(f"| {method:<7} | {s:>18.2f} | {c:>18.2f} | {c / s:>6.2f} | {b.n_passes:>6} |")
    print(f"BLAS threads inside each worker: {blas}")
    print(f"workers: {len(blas)} processes x 1 thread")


if __name__ == "__main__":
    main()
