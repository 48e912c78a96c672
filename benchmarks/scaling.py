"""Seconds per pass, bytes moved and worker memory against the number of partitions.

Usage::

    .venv/bin/python benchmarks/scaling.py [--n 1000000] [--p 9] [--classes 3] [--repeat 5] [--dir DIR]
    .venv/bin/python benchmarks/scaling.py --many-workers 8 --memory-limit 400MB --partitions 10000
    .venv/bin/python benchmarks/scaling.py --only kinds  # the every-kind-of-pass and whole-fit tables alone
    .venv/bin/python benchmarks/scaling.py --only fits --repeat 5  # the whole-fit table alone

Tables printed:

1. Persisted data on 2 worker processes: the same n x p data, K classes, in 10 ... 10,000 partitions. Per count:
   the one-off set-up (splitting the partitions into tasks and building each task's data on its worker), the
   median score pass and information pass, the bytes the workers sent per information pass (distributed's
   ``transfer_outgoing_bytes_total``, to peers and to this client), and the tasks per pass.
2. A Zarr store of the same data chunked from 1,000 to 100,000 rows, streamed (not persisted): median passes.
3. Every kind of pass besides the fit's, at ``--kinds`` partitions of the same data (median of ``--repeat``, each
   call with its own set-up): held-out evaluation of persisted dask arrays and of a store chunked in as many
   chunks (which adds Zarr's per-chunk reading), ``get_margeff(at="overall")`` and ``get_prediction(average=True)``
   of a persisted dask array, the cluster-robust meat of data sorted by group (local) and not (exchange).
4. A whole ``method="newton"`` fit of persisted data (``y`` a dask array, so the first pass also learns the
   classes) divided by its passes, at ``--fits`` partitions (median of up to 5 fits).
5. (--many-workers) one machine with many small workers and many partitions: table 1.
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

    from dmlr.fitting.evaluator import FitPasses
    from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION
    from dmlr.passes import worker_bytes_sent

    start = time.perf_counter()
    passes = FitPasses.over(design, client)
    coef = np.full((d, m), 0.01)
    passes(coef, SCORE_ONLY)  # the groups' data are built during the first pass
    setup = time.perf_counter() - start
    score = _median_pass(passes, coef, SCORE_ONLY, repeat)
    info = _median_pass(passes, coef, WITH_INFORMATION, repeat)
    before = worker_bytes_sent(client)
    record = passes(coef, WITH_INFORMATION)
    moved = worker_bytes_sent(client) - before
    plans = passes.engine.plans
    tasks = len(plans) + len({g.worker for g in plans if sum(h.worker == g.worker for h in plans) > 1})
    print(
        f"| {label:>12} | {design.n_partitions:>10,} | {setup:>8.2f} | {score:>9.3f} | {info:>9.3f} | "
        f"{moved / 1e6:>9.2f} | {record.nbytes / 1e6:>8.3f} | {tasks:>5} |"
    )
    return score, info, moved


KINDS_HEADER = (
    "| partitions | evaluate s | evaluate, store s | get_margeff s | get_prediction s | meat, sorted s "
    "| meat, exchange s |\n"
    "|-----------:|-----------:|------------------:|--------------:|-----------------:|---------------:"
    "|-----------------:|"
)
KINDS = ("evaluate", "evaluate store", "get_margeff", "get_prediction", "meat sorted", "meat exchange")


def _kinds(client, data, parts_list, repeat, root):
    """Table 3: every kind of pass besides the fit's, at each partition count; returns the seconds per count."""
    import numpy as np
    from distributed import wait

    import dmlr
    from dmlr.data.design import build_design
    from dmlr.passes.engine import PassEngine
    from dmlr.results.evaluate import evaluate
    from dmlr.results.robust import group_meat

    n = data.X.shape[0]
    ref = dmlr.fit(data.X, data.y, method="newton", client=client)
    sorted_ids = np.repeat(np.arange(-(-n // 50)), 50)[:n]  # 50 rows per group, in row order
    shuffled = np.random.default_rng(0).permutation(sorted_ids)
    classes = np.unique(data.y)
    print(KINDS_HEADER)
    out = {}
    for parts in parts_list:
        rows = -(-n // parts)
        x = dmlr.scatter_rows(data.X, client, chunk_rows=rows)
        y = dmlr.scatter_rows(data.y, client, chunk_rows=rows)
        store = dmlr.stage_arrays(data.X, data.y, f"{root}/kinds{parts}.zarr", chunk_rows=rows)
        wait([x, y])
        calls = (
            lambda x=x, y=y: evaluate(ref, x, y, client=client),
            lambda store=store: evaluate(ref, store, client=client),
            lambda x=x: ref.get_margeff(x, at="overall"),
            lambda x=x: ref.get_prediction(x, average=True),
        )
        times = [statistics.median(_times(f, repeat)) for f in calls]
        for ids in (sorted_ids, shuffled):
            groups = dmlr.scatter_rows(ids, client, chunk_rows=rows)
            wait(groups)  # scatter_rows persists asynchronously: time the meat, not the shipping
            design = build_design(x, y, classes=classes, groups=groups)

            def meat(design=design):
                engine = PassEngine(design.rows, client, transform=design.transform)
                return group_meat(engine, ref.coef, design.intercept)

            times.append(statistics.median(_times(meat, repeat)))
        out[parts] = times
        cells = " | ".join(f"{t:>{w}.3f}" for t, w in zip(times, (10, 17, 13, 16, 14, 16), strict=True))
        print(f"| {parts:>10,} | {cells} |")
    return out


def _whole_fits(client, data, parts_list, repeat):
    """Table 4: a whole Newton fit of persisted data divided by its passes."""
    from distributed import wait

    import dmlr

    n = data.X.shape[0]
    print("| partitions | fit s | passes | s / pass |\n|-----------:|------:|-------:|---------:|")
    out = {}
    for parts in parts_list:
        rows = -(-n // parts)
        x = dmlr.scatter_rows(data.X, client, chunk_rows=rows)
        y = dmlr.scatter_rows(data.y, client, chunk_rows=rows)
        wait([x, y])  # scatter_rows persists asynchronously: time the fit, not the shipping
        results: list = []

        def fit(x=x, y=y, results=results):
            results.append(dmlr.fit(x, y, method="newton", client=client))

        times = _times(fit, repeat)
        seconds, passes = statistics.median(times), results[-1].n_passes
        out[parts] = seconds / passes
        print(f"| {parts:>10,} | {seconds:>5.2f} | {passes:>6} | {seconds / passes:>8.3f} |")
    return out


def _times(func, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


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
    parser.add_argument("--kinds", type=int, nargs="*", default=[10, 2000])
    parser.add_argument("--fits", type=int, nargs="*", default=[10, 10_000])
    parser.add_argument("--only", choices=["kinds", "fits"], default=None)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    import numpy as np
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
        root = args.dir or tempfile.mkdtemp(prefix="dmlr-scaling-")
        if not args.many_workers:
            if args.only != "fits":
                print("\nevery kind of pass (median seconds of one call, set-up included)")
                kinds = _kinds(client, data, args.kinds, args.repeat, root)
                lo, hi = min(kinds), max(kinds)
                ratios = ", ".join(f"{n} x{b / a:.2f}" for n, a, b in zip(KINDS, kinds[lo], kinds[hi], strict=True))
            print("\na whole method='newton' fit of persisted data, y a dask array")
            fits = _whole_fits(client, data, args.fits, min(args.repeat, 5))
            if args.only != "fits":
                print(f"\n{hi:,} vs {lo:,} partitions: {ratios}")
            f_lo, f_hi = min(fits), max(fits)
            print(f"whole fit per pass, {f_hi:,} vs {f_lo:,} partitions: x{fits[f_hi] / fits[f_lo]:.2f}")
            if args.only is not None:
                return
        print(f"\n{n_workers} worker processes x 1 thread{' x ' + args.memory_limit if options else ''}; persisted")
        print(HEADER.format("data"))
        results = {}
        for parts in args.partitions:
            rows = -(-args.n // parts)
            x = dmlr.scatter_rows(data.X, client, chunk_rows=rows)
            y = dmlr.scatter_rows(data.y, client, chunk_rows=rows)
            design = build_design(x, y, classes=np.unique(data.y))
            wait(list(design.rows.arrays().values()))  # the set-up column times dmlr's own work, not shipping
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
        try:
            print("\nstore, streamed (read and decoded on every pass)")
            print(HEADER.format("chunk rows"))
            for chunk in args.store_chunks:
                store = dmlr.stage_arrays(data.X, data.y, f"{root}/s{chunk}.zarr", chunk_rows=chunk)
                design = build_design(store.X, store.y, classes=store.classes, positions=True)
                _row(f"{chunk:,}", client, design, args.repeat, m, d)
        finally:
            if args.dir is None:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
