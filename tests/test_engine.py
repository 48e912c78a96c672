"""The one pass engine, used from outside the package: a new kind of pass is one kernel and one record.

The reference is independent of the engine: the confusion matrix computed densely with NumPy on all rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from distributed import get_task_stream

import dmlr
from dmlr.data.design import RowData
from dmlr.data.rows import Rows
from dmlr.passes.engine import PassEngine
from tests.problems import draw_problem


@dataclass
class Confusion:
    """The record: counts of (true class, predicted class)."""

    counts: np.ndarray

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.counts + other.counts)


@dataclass(frozen=True)
class ConfusionKernel:
    """The kernel: one partition's confusion counts under coefficients ``coef`` (d, m), base class 0."""

    coef: np.ndarray
    reads: ClassVar[tuple[str, ...]] = ("x", "codes")

    def __call__(self, rows: Rows) -> Confusion:
        eta = np.column_stack([np.zeros(rows.n_rows), rows.x @ self.coef[1:] + self.coef[0]])
        k = self.coef.shape[1] + 1
        counts = np.zeros((k, k))
        np.add.at(counts, (rows.codes, np.argmax(eta, axis=1)), 1.0)
        return Confusion(counts)

    def memory(self, rows: int, p: int) -> int:
        return 8 * rows * (self.coef.shape[1] + 2)


def _dense_confusion(x, codes, coef):
    eta = np.column_stack([np.zeros(len(x)), x @ coef[1:] + coef[0]])
    k = coef.shape[1] + 1
    return np.array([[np.sum((codes == i) & (np.argmax(eta, axis=1) == j)) for j in range(k)] for i in range(k)])


@pytest.mark.cluster
def test_a_new_kind_of_pass_is_one_kernel_and_one_record(cluster_client):
    x, y, _ = draw_problem(8000, 4, 3, seed=61)
    codes = y.astype(np.int32)  # labels 0..2: class codes with base 0
    coef = np.random.default_rng(2).normal(scale=0.5, size=(5, 2))
    expected = _dense_confusion(x, codes, coef)
    tasks = {}
    for parts in (4, 400):
        rows = -(-len(y) // parts)
        data = RowData(
            x=dmlr.scatter_rows(x, cluster_client, chunk_rows=rows),
            codes=dmlr.scatter_rows(codes, cluster_client, chunk_rows=rows),
        )
        engine = PassEngine(data, cluster_client)
        engine.reduce(ConfusionKernel(coef))  # builds the tasks' data
        with get_task_stream(client=cluster_client) as stream:
            record = engine.reduce(ConfusionKernel(coef))
        np.testing.assert_array_equal(record.counts, expected)
        tasks[parts] = len([t for t in stream.data if str(t["key"]).startswith("dmlr-")])
    assert tasks[4] == tasks[400], tasks  # one task per worker thread (plus per-worker sums), however many partitions


def test_the_same_kernel_runs_without_a_cluster_and_names_a_bad_partition():
    x, y, _ = draw_problem(3000, 3, 3, seed=62)
    coef = np.random.default_rng(3).normal(scale=0.5, size=(4, 2))
    data = RowData(x=dmlr.data.design.rows_of(x, 250), codes=dmlr.data.design.rows_of(y.astype(np.int32), 250))
    record = PassEngine(data).reduce(ConfusionKernel(coef))
    np.testing.assert_array_equal(record.counts, _dense_confusion(x, y, coef))
    assert record.counts.sum() == 3000  # the engine also checked that every row was counted once


def _dependencies(dask_scheduler, prefix):
    return {str(k): len(t.dependencies) for k, t in dask_scheduler.tasks.items() if str(k).startswith(prefix)}


@pytest.mark.cluster
def test_the_set_up_reads_blocks_where_they_are_and_rebuilds_when_one_moved(cluster_client, monkeypatch):
    """A task's data take the blocks its worker holds from that worker's memory, not as task inputs (the scheduler's
    bookkeeping per input is what grew with the partition count); when the scheduler's placement was wrong (a block
    moved, or lost with its worker), the engine makes the data again with every block as an input."""
    x, y, _ = draw_problem(6000, 3, 3, seed=63)
    codes = y.astype(np.int32)
    coef = np.random.default_rng(4).normal(scale=0.5, size=(4, 2))
    expected = _dense_confusion(x, codes, coef)
    data = RowData(
        x=dmlr.scatter_rows(x, cluster_client, chunk_rows=60),
        codes=dmlr.scatter_rows(codes, cluster_client, chunk_rows=60),
    )
    engine = PassEngine(data, cluster_client)
    np.testing.assert_array_equal(engine.reduce(ConfusionKernel(coef)).counts, expected)
    prefix = engine._data[0].key.rsplit("-", 1)[0]
    inputs = cluster_client.run_on_scheduler(_dependencies, prefix=prefix)
    assert len(inputs) == len(engine.plans) and sum(inputs.values()) < 20, inputs  # 200 blocks, (almost) none inputs
    assert not engine._tracked

    workers = sorted(cluster_client.scheduler_info()["workers"])
    real = PassEngine._located
    # every block said to be on the other worker: each task's data are made where its blocks are not
    monkeypatch.setattr(
        PassEngine,
        "_located",
        lambda self, graph: {k: workers[1 - workers.index(w)] for k, w in real(self, graph).items()},
    )
    moved = PassEngine(data, cluster_client)
    np.testing.assert_array_equal(moved.reduce(ConfusionKernel(coef)).counts, expected)
    assert moved._tracked  # made again with the blocks as inputs
    np.testing.assert_array_equal(moved.reduce(ConfusionKernel(coef)).counts, expected)


@pytest.mark.cluster
def test_blocks_are_located_as_who_has_says_with_or_without_functions_on_the_scheduler(cluster_client, monkeypatch):
    """The set-up asks the scheduler where the blocks are with one function run there (positions, not address
    lists, come back); a scheduler that refuses functions is asked with ``who_has``: both equal ``who_has``."""
    from distributed.client import futures_of

    from dmlr.passes.plan import data_graph
    from dmlr.passes.scheduler import where_function

    x = np.arange(3000.0).reshape(1000, 3)
    data = RowData(x=dmlr.scatter_rows(x, cluster_client, chunk_rows=10))
    engine = PassEngine(data, cluster_client)
    futures = futures_of(data.x)
    expected = {k: sorted(ws)[0] for k, ws in cluster_client.who_has(futures).items()}
    assert len(expected) == 100
    addresses, where = cluster_client.run_on_scheduler(where_function([f.key for f in futures]))
    assert {f.key: addresses[i] for f, i in zip(futures, where, strict=True)} == expected
    assert engine._located(data_graph(data)) == expected

    def refuse(*args, **kwargs):
        raise RuntimeError("this scheduler runs no functions")

    monkeypatch.setattr(cluster_client, "run_on_scheduler", refuse)
    assert engine._located(data_graph(data)) == expected


@dataclass(frozen=True)
class RowCount:
    """A record per piece: how many rows it covers."""

    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, rows: Rows) -> Confusion:
        return Confusion(np.array([float(rows.n_rows)]))

    def memory(self, rows: int, p: int) -> int:
        return 0


def test_pieces_of_a_map_depend_on_the_rows_not_the_partitioning():
    x, _, _ = draw_problem(10_000, 2, 3, seed=64)
    for rows in (100, 2500, 10_000):  # 100 partitions, 4, and one larger than a piece
        data = RowData(x=dmlr.data.design.rows_of(x, rows))
        engine = PassEngine(data)
        pieces = engine.map(RowCount(), max_rows=3000)
        # each task's rows in pieces of 3,000 and its remainder, whatever partitions the task holds
        expected = sorted(
            float(min(3000, plan.rows - lo)) for plan in engine.plans for lo in range(0, plan.rows, 3000)
        )  # fmt: skip
        assert sorted(float(p.counts[0]) for p in pieces) == expected, rows
        assert sum(expected) == 10_000


def test_a_pass_leaves_the_objects_made_before_it_out_of_full_collections_and_hands_them_back():
    """old_objects_frozen: gc.freeze while the outermost pass runs (nested and concurrent ones share it), then every
    object is back in the collector's generations, and garbage made meanwhile is still collected. Whether an object
    is frozen is read from the collector itself (a frozen object is in none of its generations), not from the
    freeze count, which other threads' freed objects lower."""
    import gc
    import time
    import weakref

    from dmlr.passes.memory import _Freezes, old_objects_frozen

    class Node:
        pass

    def tracked(obj: object) -> bool:
        return any(o is obj for o in gc.get_objects())

    deadline = time.monotonic() + 30
    while _Freezes.depth and time.monotonic() < deadline:  # a pass of an earlier test still ending in a thread
        time.sleep(0.05)
    assert _Freezes.depth == 0 and gc.get_freeze_count() == 0
    before = [[] for _ in range(3)]
    assert tracked(before)
    with old_objects_frozen():
        assert not tracked(before) and gc.get_freeze_count() > 1000  # frozen: out of every generation
        made = [[] for _ in range(3)]
        with old_objects_frozen():
            assert tracked(made)  # made during the pass: a nested pass does not freeze again
        assert not tracked(before)  # the inner pass did not hand them back early
        cycle = Node()
        cycle.self = cycle  # garbage in a cycle, made during the pass
        ref = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert ref() is None
    assert tracked(before) and gc.get_freeze_count() == 0


@dataclass
class Frozen:
    """The record of :class:`FrozenCountKernel`: the fewest objects seen frozen while a partition was evaluated."""

    fewest: int

    def __add__(self, other: Frozen) -> Frozen:
        return Frozen(min(self.fewest, other.fewest))


@dataclass(frozen=True)
class FrozenCountKernel:
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, rows: Rows) -> Frozen:
        import gc

        return Frozen(gc.get_freeze_count())

    def memory(self, rows: int, p: int) -> int:
        return 0


@pytest.mark.cluster
def test_a_workers_old_objects_are_kept_out_of_full_collections_while_its_task_runs(cluster_client):
    """A worker holding many persisted blocks walked them all in a full collection that a pass's new objects
    triggered (0.3 s in some fits of 10,000 partitions): its tasks run with the objects made before them frozen, and
    hand them back after."""
    import gc

    x, _, _ = draw_problem(2000, 3, 3, seed=64)
    engine = PassEngine(RowData(x=dmlr.scatter_rows(x, cluster_client, chunk_rows=100)), cluster_client)
    assert engine.reduce(FrozenCountKernel()).fewest > 10_000  # a worker process holds far more objects than that
    assert set(cluster_client.run(gc.get_freeze_count).values()) == {0}  # handed back once the task ended
