"""Many models per pass: cross-validation against the fits it replaces, in memory and out of core.

Usage::

    .venv/bin/python -m benchmarks.many_models [--only passes|memory|store] [--gb 1.2 --memory-limit 500MB]

Tables printed:

1. Passes: 5 folds x 3 penalties (15 models) by ``dmlr.cross_validate(refit=False)`` against each of those models
   fitted alone (``dmlr.fit`` of the rows outside its fold): the bank's passes and the slowest fit's.
2. In memory (n 200k, d 50, K 6; local threads): 5-fold cross-validation of one penalty, seconds, against one
   ``dmlr.fit`` of all rows and scikit-learn's ``cross_val_score`` of ``LogisticRegression`` (lbfgs, multinomial)
   on the same folds (``PredefinedSplit`` of ``dmlr.fold_ids``): ``--repeat`` interleaved rounds, medians and each
   round's ratio.
3. Out of core (a store larger than its workers' memory, ``--gb`` GB on ``--workers`` x ``--memory-limit``): the
   whole cross-validation (5 folds x 1 and 3 penalties) and a 200-replicate bootstrap against one fit of the store
   (``--chunk-rows`` 419,430: 36 chunks, as in earlier runs; the cross-validation's memory check, 134 MiB of blocks
   on the 200-280 MiB a worker holds after some jobs, can exceed the 500 MB worker's pause: a refused job is printed
   and the round goes on without it; 131,072-row chunks avoid it):
   ``--repeat`` rounds of every job (interleaved: a slow spell of the shared machine slows a round, not one job),
   medians and each round's ratio.

Run the store table in the project's own environment (``make demo``'s), not the ``bench`` extra's: dask-ml brings
``sparse``, which dask.array imports in every worker, and numba with it (~100 MiB more per worker): 500 MB workers
then refuse the store's passes (a memory error naming the worker).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import warnings

import numpy as np


def _rounds(jobs, repeat):
    """``repeat`` rounds of every job in turn (a slow spell of the shared machine slows a round, not one job): each
    job's seconds per round, and its last output."""
    from dmlr.errors import DmlrError

    times = {name: [] for name in jobs}
    outs = {}
    for _ in range(repeat):
        for name, job in jobs.items():
            try:
                seconds, outs[name] = _timed(job)
            except DmlrError as error:  # a refused job (a worker too small): the round goes on without it
                print(f"{name}: {error}")
                seconds = float("nan")
            times[name].append(seconds)
    return times, outs


def passes_table(seed: int = 0) -> None:
    import dmlr
    from dmlr.synthetic import make_mnlogit

    data = make_mnlogit(50_000, 10, 4, seed=seed)
    l2s, folds = [0.0, 10.0, 1000.0], 5
    cv = dmlr.cross_validate(data.X, data.y, folds=folds, l2=l2s, seed=1, refit=False)
    fold = dmlr.fold_ids(len(data.y), folds, 1)
    alone = [dmlr.fit(data.X[fold != f], data.y[fold != f], l2=v).n_passes for v in l2s for f in range(folds)]
    print("\n1. passes: 5 folds x 3 penalties (n 50k, p 10, K 4, method auto)")
    print("| models | bank passes | slowest fit alone | sum of the fits alone |\n|---:|---:|---:|---:|")
    print(f"| {len(alone)} | {cv.n_passes} | {max(alone)} | {sum(alone)} |")


def memory_table(repeat: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_score

    import dmlr
    from dmlr.synthetic import make_mnlogit

    data = make_mnlogit(200_000, 50, 6, seed=2)
    folds = dmlr.fold_ids(len(data.y), 5, 0)
    model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-6)

    def sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cross_val_score(model, data.X, data.y, cv=PredefinedSplit(folds), scoring="neg_log_loss")

    dmlr.fit(data.X, data.y, l2=1.0)  # imports and caches warm
    jobs = {
        "fit": lambda: dmlr.fit(data.X, data.y, l2=1.0),
        "cv": lambda: dmlr.cross_validate(data.X, data.y, folds=5, l2=[1.0], refit=False),
        "sklearn": sklearn,
    }
    times, outs = _rounds(jobs, repeat)
    fit_s, cv_s, sk_s = (statistics.median(times[name]) for name in jobs)
    res, cv = outs["fit"], outs["cv"]
    print(f"\n2. in memory: n 200k, d 50, K 6, 5-fold cross-validation of one penalty (local threads); median of "
          f"{repeat} rounds (each round: every job once)")  # fmt: skip
    print("| | seconds | passes | ratio to one dmlr fit |\n|---|---:|---:|---:|")
    print(f"| dmlr.fit (all rows, {res.method}) | {fit_s:.2f} | {res.n_passes} | 1.00 |")
    print(f"| dmlr.cross_validate (5 folds) | {cv_s:.2f} | {cv.n_passes} | {cv_s / fit_s:.2f} |")
    print(f"| scikit-learn cross_val_score (lbfgs) | {sk_s:.2f} | | {sk_s / fit_s:.2f} |")
    rounds = ", ".join(f"{c / s:.2f}" for c, s in zip(times["cv"], times["sklearn"], strict=True))
    print(f"dmlr cv / scikit-learn: x{cv_s / sk_s:.2f} (each round's: {rounds}); held-out log-loss dmlr "
          f"{cv.scores.log_loss.mean():.5f}, scikit-learn {-outs['sklearn'].mean():.5f}")  # fmt: skip


def store_table(gb: float, workers: int, memory_limit: str, folder: str, repeat: int, chunk_rows: int) -> None:
    import dmlr
    from dmlr.cluster import connected
    from dmlr.synthetic import make_mnlogit

    if importlib.util.find_spec("sparse") is not None:
        print("note: `sparse` is installed (the bench extra's dask-ml brings it): every worker imports it and numba "
              "(~100 MiB more each); run the store table in an environment without it")  # fmt: skip
    p = 10
    n = int(gb * 1e9 / (8 * p))
    path = os.path.join(folder, f"mm-{n}x{p}-{chunk_rows}.zarr")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        data = make_mnlogit(n, p, 3, seed=5, chunk_rows=200_000)
        dmlr.stage_arrays(data.X, data.y, path, source="synthetic", chunk_rows=chunk_rows)
    store = dmlr.open_store(path)
    with connected("local", n_workers=workers, memory_limit=memory_limit) as client:
        res = dmlr.fit(store, client=client)  # the workers' imports and page cache warm
        jobs = {f"one dmlr.fit of the store ({res.method})": lambda: dmlr.fit(store, client=client)}
        for l2s in ([1.0], [0.0, 10.0, 1000.0]):
            name = f"dmlr.cross_validate (5 folds x {len(l2s)} l2, {5 * len(l2s)} fold models)"
            jobs[name] = lambda l2s=l2s: dmlr.cross_validate(store, folds=5, l2=l2s, refit=False, client=client)
        for steps, what in ((1, "one-step (steps=1)"), (None, "iterated to convergence")):
            jobs[f"res.bootstrap(nrep=200), {what}"] = lambda steps=steps: res.bootstrap(
                store, nrep=200, steps=steps, client=client
            )
        times, outs = _rounds(jobs, repeat)
        passes = {name: out.n_passes for name, out in outs.items()}
    chunks = len(store.X.chunks[0])
    gb_x = store.X.nbytes / 1e9
    fits = times[next(iter(jobs))]
    print(f"\n3. out of core: X {gb_x:.2f} GB in {chunks} chunks on {workers} workers x {memory_limit}; median of "
          f"{repeat} rounds (each round: every job once), and each round's ratio to its fit")  # fmt: skip
    print("| | seconds | passes | ratio to one fit | each round's |\n|---|---:|---:|---:|---|")
    for name, seconds in times.items():
        each = ", ".join(f"{s / f:.2f}" for s, f in zip(seconds, fits, strict=True))
        ran = [t for t in seconds if t == t]  # the rounds where it ran
        median = statistics.median(ran) if ran else float("nan")
        print(f"| {name} | {median:.1f} | {passes.get(name, '')} | {median / statistics.median(fits):.2f} | {each} |")


def _timed(func):
    start = time.perf_counter()
    out = func()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["passes", "memory", "store"], default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gb", type=float, default=1.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="500MB")
    parser.add_argument("--dir", default="/tmp/dmlr-many-models")
    parser.add_argument("--chunk-rows", type=int, default=419_430, help="rows of the store's chunks")
    args = parser.parse_args()
    if args.only in (None, "passes"):
        passes_table()
    if args.only in (None, "memory"):
        memory_table(args.repeat)
    if args.only in (None, "store"):
        store_table(args.gb, args.workers, args.memory_limit, args.dir, args.repeat, args.chunk_rows)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
