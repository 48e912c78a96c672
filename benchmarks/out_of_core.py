"""Out-of-core fit: a store larger than the memory the workers are allowed.

Usage::

    .venv/bin/python benchmarks/out_of_core.py --gb 6 --memory-limit 1GB --dir /tmp/dmlr-ooc

1. Stages a synthetic data set whose X takes ``--gb`` GB (float64, uncompressed) into a Zarr store (generated
   lazily per chunk: it never exists in memory).
2. Fits it on a LocalCluster of ``--workers`` processes, each limited to ``--memory-limit``, streaming the chunks
   from Zarr on every pass (``persist="auto"`` declines to persist data larger than half the workers' memory),
   while a sampler records the summed resident memory (RSS) of this process and all its children.
3. Times a pass that only reads the same chunks (decompress + checksum, no arithmetic): the I/O floor.
4. Does it for each storage type in ``--dtypes`` (float64 and float32 by default) and prints one table, the
   fit time against ``passes x`` the read-only pass, and the float32 store's fit over the float64 store's.
5. With ``--in-memory``: fits the float64 store held in worker memory and compares the coefficients.
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


def run_one(args: argparse.Namespace, dtype: str) -> dict[str, object]:
    """Stage (once) and fit the store of one storage type; the measurements of one table row."""
    from dask.utils import parse_bytes

    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    n = int(args.gb * 1e9 / (8 * args.p))
    path = os.path.join(args.dir, f"ooc-{n}x{args.p}-k{args.classes}-{dtype}.zarr")
    if not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        start = time.perf_counter()
        data = make_mnlogit(n, args.p, args.classes, seed=42, chunk_rows=200_000)
        dmlr.stage_arrays(data.X, data.y, path, source="synthetic", progress=False, dtype=dtype)
        print(f"staged {n:,} x {args.p} ({dtype}) in {time.perf_counter() - start:.0f}s")
    store = dmlr.open_store(path)
    x_dir = os.path.join(path, "X")
    disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(x_dir) for f in fs)
    limit = parse_bytes(args.memory_limit) * args.workers
    codec = store.metadata.get("codecs", {}).get("X", {}).get("codec", "zstd")
    print(
        f"X: {n * args.p * 8 / 1e9:.2f} GB as float64, {disk / 1e9:.2f} GB staged ({dtype}, codec {codec}) in "
        f"{len(store.X.chunks[0])} chunks; workers: {args.workers} x {args.memory_limit} = {limit / 1e9:.2f} GB"
    )
    with connected("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
        floor = read_pass_seconds(client, store.X)
        worker_pids = sorted(client.run(os.getpid).values())
        with PeakRSS() as rss:
            start = time.perf_counter()
            res = dmlr.fit(store, client=client, persist="auto", method=args.method)
            seconds = time.perf_counter() - start
    passes = [r["seconds"] for r in res.history[1:]]
    print(f"  {res.history[0].get('choice', res.method)}")
    for r in res.history:
        print(f"  iter {r['iteration']:>2} {r['kind']:<9} {r['seconds']:6.2f}s  passes {r['passes']}")
    return {
        "dtype": dtype,
        "staged_gb": disk / 1e9,
        "codec": codec,
        "method": res.method,
        "passes": res.n_passes,
        "seconds": seconds,
        "floor": floor,
        "ratio": seconds / (res.n_passes * floor),
        "median_pass": statistics.median(passes) if passes else float("nan"),
        "first_pass": res.history[0]["seconds"],
        "peak_total": rss.peak,
        "peaks": rss.worker_peaks(worker_pids),
        "converged": res.converged,
        "coef": res.coef,
        "store": store,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=6.0, help="size of X in GB as float64")
    parser.add_argument("--p", type=int, default=49, help="feature columns (d = p + 1)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB", help="per worker")
    parser.add_argument("--dir", default="/tmp/dmlr-ooc")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--dtypes", default="float64,float32", help="storage types of X to stage and fit")
    parser.add_argument("--in-memory", action="store_true", help="also fit the float64 store held in memory")
    args = parser.parse_args()

    import dmlr
    from dmlr.cluster import connected

    rows = [run_one(args, dtype) for dtype in args.dtypes.split(",")]
    print()
    print(
        "| X stored as | staged GB | codec | method | passes | fit s | read-only pass s (floor) | "
        "fit / (passes x floor) | median pass s after the first | first pass s | peak RSS per worker | "
        "peak RSS, all processes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peaks = ", ".join(f"{v / 2**20:.0f} MiB" for v in r["peaks"])  # type: ignore[attr-defined]
        print(
            f"| {r['dtype']} | {r['staged_gb']:.2f} | {r['codec']} | {r['method']} | {r['passes']} | "
            f"{r['seconds']:.1f} | {r['floor']:.2f} | {r['ratio']:.2f} | {r['median_pass']:.2f} | "
            f"{r['first_pass']:.2f} | {peaks} (limit {args.memory_limit}) | {r['peak_total'] / 1e9:.2f} GB |"
        )
    if len(rows) == 2:
        a, b = rows
        print(f"\n{b['dtype']} fit / {a['dtype']} fit = {b['seconds'] / a['seconds']:.2f}")  # type: ignore[operator]
    if args.in_memory:
        store = rows[0]["store"]
        with connected("local", n_workers=args.workers, memory_limit=0) as client:
            start = time.perf_counter()
            ref = dmlr.fit(store, client=client, persist=True)
            ref_seconds = time.perf_counter() - start
        diff = float(np.max(np.abs(rows[0]["coef"] - ref.coef)) / np.max(np.abs(ref.coef)))  # type: ignore[operator]
        print(f"in-memory fit on an unlimited cluster: {ref_seconds:.1f}s; max relative param difference {diff:.1e}")


if __name__ == "__main__":
    main()
