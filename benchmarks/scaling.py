"""Seconds per pass, bytes moved and worker memory against the number of partitions (issue 12's measurements).

Usage::

    .venv/bin/python benchmarks/scaling.py [--n 1000000] [--p 9] [--classes 3] [--repeat 5] [--dir DIR]
    .venv/bin/python benchmarks/scaling.py --many-workers 8 --memory-limit 400MB --partitions 10000

Tables printed:

1. Persisted data on 2 worker processes: the same n x p data, K classes, in 10 ... 10,000 partitions. Per count:
   the one-off set-up (grouping the partitions and building each group's data on its worker), the median score
   pass and information pass, the bytes the workers sent per information pass (distributed's
   ``transfer_outgoing_bytes_total``, to peers and to this client), and the tasks per pass.
2. A Zarr store of the same data chunked from 1,000 to 100,000 rows, streamed (not persisted): median passes.
3. (--many-workers) one machine with many small workers and many partitions: the same table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time


def _median_pass(passes, coef, request, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        passes(coef, request)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(label, client, design, repeat, m, d):
    import numpy as np

    from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION
    from dmlr.passes import DataPasses, worker_bytes_sent

    start = time.perf_counter()
    passes = DataPasses(design, client)
    coef = np.full((d, m), 0.01)
    passes(coef, SCORE_ONLY)  # the groups' data are built during the first pass
    setup = time.perf_counter() - start
    score = _median_pass(passes, coef, SCORE_ONLY, repeat)
    info = _median_pass(passes, coef, WITH_INFORMATION, repeat)
    before = worker_bytes_sent(client)
    record = passes(coef, WITH_INFORMATION)
    moved = worker_bytes_sent(client) - before
    tasks = len(passes.groups) + len(
        {g.worker for g in passes.groups if sum(h.worker == g.worker for h in passes.groups) > 1}
    )
    print(
        f"| {label:>12} | {design.n_partitions:>10,} | {setup:>8.2f} | {score:>9.3f} | {info:>9.3f} | "
        f"{moved / 1e6:>9.2f} | {record.nbytes / 1e6:>8.3f} | {tasks:>5} |"
    )
    return score, info, moved


HEADER = (
    "| {:>12} | partitions | set-up s | score s/pass | info s/pass | MB sent/info pass | record MB | tasks |\n"
    "|--------------|------------|----------|-----------|-----------|-----------|----------|-------|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--p", type=int, default=9)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--many-workers", type=int, default=0)
    parser.add_argument("--memory-limit", default="400MB")
    parser.add_argument("--partitions", type=int, nargs="*", default=[10, 100, 1000, 10000])
    parser.add_argument("--store-chunks", type=int, nargs="*", default=[100_000, 10_000, 1_000])
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    from distributed import Client, LocalCluster, wait

    import dmlr
    from dmlr.cluster import BLAS_ENV
    from dmlr.data.design import build_design
    from dmlr.synthetic import make_mnlogit

    data = make_mnlogit(args.n, args.p, args.classes, seed=1)
    m, d = args.classes - 1, args.p + 1
    print(f"n={args.n:,} p={args.p} K={args.classes}; median of {args.repeat} passes; coefficients 0.01")
    n_workers = args.many_workers or args.workers
    options = {"memory_limit": args.memory_limit} if args.many_workers else {}
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0", env=BLAS_ENV, **options
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"\n{n_workers} worker processes x 1 thread{' x ' + args.memory_limit if options else ''}; persisted")
        print(HEADER.format("data"))
        results = {}
        for parts in args.partitions:
            rows = -(-args.n // parts)
            x = dmlr.scatter_rows(data.X, client, chunk_rows=rows)
            y = dmlr.scatter_rows(data.y, client, chunk_rows=rows)
            design = build_design(x, y)
            design = design.with_arrays(client.persist(design.arrays()))
            wait(design.arrays())  # the set-up column times dmlr's own work, not shipping the data
            results[parts] = _row("persisted", client, design, args.repeat, m, d)
            del design, x, y
        if len(results) > 1:
            lo, hi = min(results), max(results)
            print(
                f"\n{hi:,} vs {lo:,} partitions: score pass x{results[hi][0] / results[lo][0]:.2f}, information pass "
                f"x{results[hi][1] / results[lo][1]:.2f}, bytes sent x{results[hi][2] / max(results[lo][2], 1):.2f}"
            )
        if args.many_workers or not args.store_chunks:
            return
        root = args.dir or tempfile.mkdtemp(prefix="dmlr-scaling-")
        try:
            print("\nstore, streamed (read and decoded on every pass)")
            print(HEADER.format("chunk rows"))
            for chunk in args.store_chunks:
                store = dmlr.stage_arrays(data.X, data.y, f"{root}/s{chunk}.zarr", chunk_rows=chunk)
                design = build_design(store.X, store.y, y_classes=store.classes)
                _row(f"{chunk:,}", client, design, args.repeat, m, d)
        finally:
            if args.dir is None:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
