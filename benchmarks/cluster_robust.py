"""Cluster-robust standard errors out of core: a store larger than the workers' memory, 10^6 clusters spread over
every partition.

Usage::

    .venv/bin/python benchmarks/cluster_robust.py --gb 1.5 --clusters 1000000 --memory-limit 500MB

Stages ``--gb`` GB of X (synthetic multinomial-logit data, generated per chunk) with random cluster ids in
``[0, --clusters)`` (every cluster spans many partitions: the exchange path), or with ``--sorted`` the same ids in
row order (a store staged sorted by its groups column: the local path), then on a LocalCluster of ``--workers`` x
``--memory-limit``: times a read-only pass (the I/O floor), a model-based fit, the cluster-robust fit of the same
store (its extra cost is the cluster pass: scores summed by cluster per partition, summed by key across partitions
with dask's shuffle), and records each worker's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.out_of_core import PeakRSS, read_pass_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.5)
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="500MB")
    parser.add_argument("--dir", default="/tmp/dmlr-cluster")
    parser.add_argument("--sorted", action="store_true", help="rows in cluster order (as a store staged sorted)")
    args = parser.parse_args()

    import dask.array as da

    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    n = int(args.gb * 1e9 / (8 * args.p))
    order = "sorted" if args.sorted else "random"
    path = os.path.join(args.dir, f"cl-{n}x{args.p}-k{args.classes}-g{args.clusters}-{order}.zarr")
    if not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        data = make_mnlogit(n, args.p, args.classes, seed=7, chunk_rows=200_000)
        if args.sorted:
            groups = da.arange(n, chunks=200_000, dtype=np.int64) * args.clusters // n
        else:
            groups = da.random.default_rng(8).integers(0, args.clusters, size=n, chunks=200_000)
        dmlr.stage_arrays(data.X, data.y, path, source="synthetic", groups=groups, progress=True)
    store = dmlr.open_store(path)
    print(f"X: {store.X.nbytes / 1e9:.2f} GB in {len(store.X.chunks[0])} chunks, {n:,} rows, "
          f"{args.clusters:,} cluster ids ({order} rows); workers {args.workers} x {args.memory_limit}")  # fmt: skip
    with connected("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
        floor = read_pass_seconds(client, store.X)
        pids = sorted(client.run(os.getpid).values())
        start = time.perf_counter()
        plain = dmlr.fit(store, client=client, method="newton")
        plain_s = time.perf_counter() - start
        with PeakRSS() as rss:
            start = time.perf_counter()
            robust = dmlr.fit(store, client=client, method="newton", cov_type="cluster")
            robust_s = time.perf_counter() - start
    peaks = ", ".join(f"{r / 2**20:.0f} MiB" for r in rss.worker_peaks(pids))
    extra = robust_s - plain_s
    print(f"read-only pass (I/O floor): {floor:.1f} s")
    print(f"model-based fit: {plain_s:.1f} s, {plain.n_passes} passes")
    print(f"cluster-robust fit: {robust_s:.1f} s ({robust.n_clusters:,} clusters); extra {extra:.1f} s = "
          f"{extra / floor:.2f} x the I/O floor")  # fmt: skip
    print(f"peak RSS of each worker during the cluster-robust fit: {peaks} (limit {args.memory_limit})")
    ratio = robust.bse.to_numpy() / plain.bse.to_numpy()
    print(f"cluster / model-based standard errors: {ratio.min():.3f} .. {ratio.max():.3f} (independent rows: ~1)")
    assert np.allclose(robust.coef, plain.coef, rtol=1e-12, atol=1e-14)


if __name__ == "__main__":
    main()
