"""Average marginal effects out of core: one pass over a store larger than the workers' memory, timed against the
fit's information passes.

Usage::

    .venv/bin/python -m benchmarks.margins --gb 1.2 --memory-limit 500MB
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.out_of_core import PeakRSS, read_pass_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.2)
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="500MB")
    parser.add_argument("--dir", default="/tmp/dmlr-margins")
    args = parser.parse_args()

    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    n = int(args.gb * 1e9 / (8 * args.p))
    path = os.path.join(args.dir, f"m-{n}x{args.p}-k{args.classes}.zarr")
    if not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        data = make_mnlogit(n, args.p, args.classes, seed=5, chunk_rows=200_000)
        dmlr.stage_arrays(data.X, data.y, path, source="synthetic")
    store = dmlr.open_store(path)
    print(f"X: {store.X.nbytes / 1e9:.2f} GB in {len(store.X.chunks[0])} chunks; workers {args.workers} x "
          f"{args.memory_limit}")  # fmt: skip
    with connected("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
        floor = read_pass_seconds(client, store.X)
        res = dmlr.fit(store, client=client, method="newton")
        info = statistics.median(r["seconds"] for r in res.history if r["kind"] == "newton")
        pids = sorted(client.run(os.getpid).values())
        with PeakRSS() as rss:
            start = time.perf_counter()
            me = res.get_margeff(store.X)
            seconds = time.perf_counter() - start
    peaks = ", ".join(f"{r / 2**20:.0f} MiB" for r in rss.worker_peaks(pids))
    print(f"read-only pass {floor:.2f} s; information pass (median of the fit's) {info:.2f} s")
    print(f"get_margeff(at='overall') over the store: {seconds:.2f} s = {seconds / info:.2f} x an information pass; "
          f"peak RSS per worker {peaks}")  # fmt: skip
    print(me.margeff.round(4).to_string())


if __name__ == "__main__":
    main()
