"""The cost model of one pass (docs/scaling.md): each term measured on this machine, then projected.

Usage::

    .venv/bin/python benchmarks/cost_model.py [--rows 1e9] [--d 100] [--classes 20] [--workers 100] [--cores 8]
        [--network-gbit 10]

Terms measured here (one core unless stated):

- ``task``: the scheduler's cost per task: 2,000 no-op tasks submitted at once and gathered, on a 2-process
  LocalCluster, divided by 2,000; and the round trip of one no-op task.
- ``score``, ``info``: the kernel's seconds per row at the projected d and K (``partition_statistics`` on 20,000 rows).
- ``read``: seconds per MB of X to read and decode one 32 MB store chunk (zstd level 1 + crc32c, random floats).
- ``record``: bytes of one information record, ``8 ((K - 1) d)^2`` plus the score.
- ``solve``: the driver's Cholesky factorization and inverse (LAPACK potrf + potri) at ``(K - 1) d``, all cores.

Assumed (not measurable on one machine): the network bandwidth per worker (``--network-gbit``), that every core
reads and computes at this machine's per-core rates, and that the scheduler's per-task cost stays what it is here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _median(func, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=float, default=1e9)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--network-gbit", type=float, default=10.0)
    parser.add_argument("--chunk-mb", type=float, default=32.0)
    args = parser.parse_args()

    import numpy as np
    import scipy.linalg
    import zarr
    from distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    from dmlr.cluster import BLAS_ENV
    from dmlr.oracle.kernels import partition_statistics
    from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION

    d, k = args.d, args.classes
    m, p = k - 1, d - 1
    rng = np.random.default_rng(0)

    # scheduler: per task, and the round trip of one
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", env=BLAS_ENV) as cluster,
        Client(cluster) as client,
    ):
        client.submit(int, 0, pure=False).result()
        rtt = _median(lambda: client.submit(int, 0, pure=False).result(), 15)
        many = _median(lambda: client.gather(client.map(int, range(2000), pure=False)), 3)
    per_task = many / 2000

    # kernel per row, one core
    n = 20_000
    x = rng.normal(size=(n, p))
    codes = rng.integers(0, k, size=n).astype(np.int32)
    coef = rng.normal(scale=0.05, size=(d, m))
    with threadpool_limits(1, user_api="blas"):
        score = _median(lambda: partition_statistics(x, codes, None, None, coef, intercept=True, request=SCORE_ONLY))
        info = _median(
            lambda: partition_statistics(x, codes, None, None, coef, intercept=True, request=WITH_INFORMATION), 3
        )
    score_row, info_row = score / n, info / n

    # reading and decoding one chunk, one core
    rows = int(args.chunk_mb * 2**20 / (8 * p))
    with tempfile.TemporaryDirectory() as root:
        from zarr.codecs import Crc32cCodec, ZstdCodec

        z = zarr.create_array(
            f"{root}/x.zarr", shape=(rows, p), chunks=(rows, p), dtype="f8",
            compressors=[ZstdCodec(level=1), Crc32cCodec()],
        )  # fmt: skip
        z[:] = rng.normal(size=(rows, p))
        read = _median(lambda: z[:])
    read_mb = read / (rows * p * 8 / 1e6)

    # the driver's solve at (K - 1) d
    q = m * d
    a = rng.normal(size=(q, q)) / np.sqrt(q)
    a = a @ a.T + np.eye(q)

    def solve() -> None:
        c, _ = scipy.linalg.lapack.dpotrf(a, lower=0)
        scipy.linalg.lapack.dpotri(c, lower=0, overwrite_c=1)

    solve_s = _median(solve, 3)
    record = 8 * (q * q + q)

    print(f"Measured on this machine (d = {d}, K = {k}, (K-1)d = {q:,}):")
    print("| term | value |")
    print("|---|---|")
    print(f"| scheduler, per task (2,000 no-op tasks at once) | {per_task * 1e3:.3f} ms |")
    print(f"| scheduler, round trip of one task | {rtt * 1e3:.1f} ms |")
    print(f"| score kernel, per row, one core | {score_row * 1e9:.0f} ns |")
    print(f"| information kernel, per row, one core | {info_row * 1e6:.1f} µs |")
    print(f"| read + decode X, per MB, one core | {read_mb * 1e3:.2f} ms ({1 / read_mb:.0f} MB/s) |")
    print(f"| information record | {record / 1e6:.1f} MB |")
    print(f"| driver solve (potrf + potri), {q:,} x {q:,} | {solve_s:.2f} s |")

    cores = args.workers * args.cores
    n = args.rows
    bw = args.network_gbit * 1e9 / 8
    x_mb = n * p * 8 / 1e6
    tasks = cores + args.workers + int(np.ceil(args.workers / 8)) + 2
    sched = rtt + tasks * per_task
    compute_score = n * score_row / cores
    compute_info = n * info_row / cores
    io = x_mb * read_mb / cores
    # per-worker records are combined on their workers; the tree moves ~ workers records, in ceil(log8) levels
    levels = int(np.ceil(np.log(max(args.workers, 2)) / np.log(8)))
    traffic_info = args.workers * record
    traffic_time = levels * 8 * record / bw
    print()
    print(
        f"Projection: {n:.0e} rows x d = {d} x K = {k}, {args.workers} workers x {args.cores} cores "
        f"({cores} tasks per pass, {x_mb / 1e6:.2f} TB of X), network {args.network_gbit:g} Gbit/s per worker:"
    )
    print("| term | score pass | information pass |")
    print("|---|---|---|")
    print(f"| scheduling ({tasks} tasks) | {sched:.2f} s | {sched:.2f} s |")
    print(f"| compute (kernel rate x rows / cores) | {compute_score:.1f} s | {compute_info:.0f} s |")
    print(f"| read + decode from a store (streamed) | {io:.1f} s | {io:.1f} s |")
    print(
        f"| traffic (bytes leaving workers; time up the tree) | {args.workers * 8 * (q + 64) / 1e6:.2f} MB; ~0 s | "
        f"{traffic_info / 1e9:.1f} GB; {traffic_time:.2f} s |"
    )
    print(f"| driver (solve; memory) | ~0 s; {8 * q / 1e6:.2f} MB | {solve_s:.2f} s; ~4 x {record / 1e6:.0f} MB |")
    per_score = sched + max(compute_score, io)
    per_info = sched + max(compute_info, io) + traffic_time + solve_s
    print(f"| **pass, streamed** (reads overlap nothing yet: sum) | {sched + compute_score + io:.1f} s | "
          f"{sched + compute_info + io + traffic_time + solve_s:.0f} s |")  # fmt: skip
    print(f"| **pass, persisted** (no read) | {sched + compute_score:.2f} s | {per_info - io:.0f} s |")
    print(
        f"\nA fit by auto (L-BFGS, ~20 score passes + 1 information pass), streamed: "
        f"~{20 * (sched + compute_score + io) + sched + compute_info + io + traffic_time + solve_s:.0f} s; "
        f"by Newton (~6 information passes): ~{6 * (sched + compute_info + io + traffic_time + solve_s):.0f} s "
        f"(overlapped reads would make them ~{20 * per_score + per_info:.0f} s and ~{6 * per_info:.0f} s)."
    )


if __name__ == "__main__":
    main()
