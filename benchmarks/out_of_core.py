"""Out-of-core fit: a store larger than the memory the workers are allowed.

Usage::

    .venv/bin/python benchmarks/out_of_core.py --gb 6 --memory-limit 1GB --dir /tmp/dmlr-ooc

1. Stages a synthetic data set whose X takes ``--gb`` GB (float64, uncompressed) into a Zarr store (generated
   lazily per chunk: it never exists in memory).
2. Fits it on a LocalCluster of ``--workers`` processes, each limited to ``--memory-limit``, streaming the chunks
   from Zarr on every pass (``persist="auto"`` declines to persist data larger than half the workers' memory),
   while a sampler records the summed resident memory (RSS) of this process and all its children.
3. Times a pass that only reads the same chunks (decompress + checksum, no arithmetic): the I/O floor.
4. Fits the same arrays held in worker memory on a machine-sized cluster and compares the coefficients.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.per_process[p.pid] = max(self.per_process.get(p.pid, 0), rss)
        return total

    def worker_peaks(self, pids: list[int]) -> list[int]:
        """Peak RSS of each of the given processes (the workers), in the order given."""
        return [self.per_process.get(pid, 0) for pid in pids]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_pass_seconds(client: object, x: object, repeat: int = 3) -> float:
    """Median seconds of a pass that reads every chunk of ``x`` and reduces it to its row count."""
    import dask.array as da

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        rows = da.map_blocks(lambda b: np.array([[b.shape[0]]]), x, chunks=(1, 1), dtype=int).sum()
        client.compute(rows).result()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=6.0, help="size of X in GB (float64, uncompressed)")
    parser.add_argument("--p", type=int, default=49, help="feature columns (d = p + 1)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB", help="per worker")
    parser.add_argument("--dir", default="/tmp/dmlr-ooc")
    parser.add_argument("--skip-in-memory", action="store_true", help="skip the in-memory reference fit")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="storage type of X")
    args = parser.parse_args()

    from dask.utils import parse_bytes

    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    n = int(args.gb * 1e9 / (8 * args.p))
    suffix = "" if args.dtype == "float64" else "-f32"
    path = os.path.join(args.dir, f"ooc-{n}x{args.p}-k{args.classes}{suffix}.zarr")
    if not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        start = time.perf_counter()
        data = make_mnlogit(n, args.p, args.classes, seed=42, chunk_rows=200_000)
        dmlr.stage_arrays(data.X, data.y, path, source="synthetic", progress=True, dtype=args.dtype)
        print(f"staged {n:,} x {args.p} in {time.perf_counter() - start:.0f}s")
    store = dmlr.open_store(path)
    disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    limit = parse_bytes(args.memory_limit) * args.workers
    print(
        f"X: {store.X.nbytes / 1e9:.2f} GB in {len(store.X.chunks[0])} chunks ({disk / 1e9:.2f} GB on disk); "
        f"workers: {args.workers} x {args.memory_limit} = {limit / 1e9:.2f} GB"
    )

    with connected("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
        floor = read_pass_seconds(client, store.X)
        worker_pids = sorted(client.run(os.getpid).values())
        with PeakRSS() as rss:
            start = time.perf_counter()
            res = dmlr.fit(store, client=client, persist="auto")
            seconds = time.perf_counter() - start
        score_passes = [r["seconds"] for r in res.history if r["kind"] in ("lbfgs", "bohning", "start")]
        info_passes = [r["seconds"] for r in res.history if r["kind"] in ("newton", "inference")]
    print(f"out-of-core fit: {seconds:.1f}s, {res.n_iter} iterations, {res.n_passes} passes, converged={res.converged}")
    print(f"peak RSS of all processes: {rss.peak / 1e9:.2f} GB (X is {store.X.nbytes / 1e9:.2f} GB)")
    peaks = ", ".join(f"{r / 2**20:.0f} MiB" for r in rss.worker_peaks(worker_pids))
    print(f"peak RSS of each worker: {peaks} (limit {args.memory_limit})")
    print(f"read-only pass (I/O floor): {floor:.2f}s")
    if score_passes:
        med = statistics.median(score_passes)
        print(f"score pass (median of {len(score_passes)}): {med:.2f}s = {med / floor:.2f} x I/O floor")
    if info_passes:
        med = statistics.median(info_passes)
        print(f"information pass (median of {len(info_passes)}): {med:.2f}s = {med / floor:.2f} x I/O floor")

    if not args.skip_in_memory:
        with connected("local", n_workers=args.workers, memory_limit=0) as client:
            start = time.perf_counter()
            ref = dmlr.fit(store, client=client, persist=True)
            ref_seconds = time.perf_counter() - start
        diff = float(np.max(np.abs(res.coef - ref.coef)) / np.max(np.abs(ref.coef)))
        print(f"in-memory fit on an unlimited cluster: {ref_seconds:.1f}s; max relative param difference {diff:.1e}")


if __name__ == "__main__":
    main()
