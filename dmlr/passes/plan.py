"""Which partitions each task of a pass evaluates, and the part of the task graph that produces their blocks.

A pass must not cost one task per partition (scheduling costs milliseconds per task: ``benchmarks/scaling.py``).
The partitions are split once per engine into *tasks*: one per worker thread, each holding the
partitions that live on that worker (persisted or shipped data) or a contiguous range of row chunks (data read from a
store or another lazy graph). A task is described by a :class:`TaskPlan`: its partitions, the part of the data's task
graph that produces their blocks (culled once, here), and the persisted blocks it reads (dask resolves those to the
arrays on the worker). Every pass then runs one task per plan.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from dask.core import get_dependencies

if TYPE_CHECKING:
    from dmlr.data.design import RowData

__all__ = [
    "PartitionSpec",
    "Piece",
    "TaskPlan",
    "computed",
    "data_graph",
    "partition_specs",
    "pieces",
    "plan_tasks",
    "split_graph",
]

Key = Hashable


class PartitionSpec(NamedTuple):
    """One row partition of the data (a named tuple: ten thousand of them are pickled with every engine's set-up,
    which a tuple makes about three times cheaper than a dataclass).

    Attributes
    ----------
    number : int
        Position among the partitions (0-based), used in messages.
    row_start : int
        Global index of its first row (``-1`` when the partition sizes are unknown).
    rows : int
        Number of rows (``-1`` when unknown).
    keys : dict of str to key
        Task key of its block of each field (``"x"``, ``"codes"``, ...).
    """

    number: int
    row_start: int
    rows: int
    keys: dict[str, Key]


@dataclass
class TaskPlan:
    """The partitions one task evaluates.

    Attributes
    ----------
    partitions : list of PartitionSpec
        In row order.
    graph : dict
        The tasks that produce their blocks, culled to these partitions (empty when every block is persisted).
    leaves : dict
        Persisted blocks the graph or the partitions read: key -> ``distributed.Future`` on the client, replaced
        by the block itself when dask runs the task that receives it.
    worker : str, optional
        Address of the worker holding the task's persisted blocks, or the worker a lazy run was dealt to: a hint
        for adding records per worker, not a restriction (``None``: any worker).
    """

    partitions: list[PartitionSpec]
    graph: dict[Key, Any] = field(default_factory=dict)
    leaves: dict[Key, Any] = field(default_factory=dict)
    worker: str | None = None

    def bare(self, partitions: list[PartitionSpec] | None = None) -> tuple[TaskPlan, list[Any]]:
        """What the task making this plan's data receives: the plan with its leaves' keys only (for some of its
        ``partitions``), and the leaves' futures as a list, which dask resolves to the blocks where it runs."""
        keys = list(self.leaves)
        if partitions is not None:  # only the leaves these partitions read
            placeholders = {**self.graph, **dict.fromkeys(keys)}
            (needed,) = split_graph(placeholders, [[k for p in partitions for k in p.keys.values()]])
            keys = [k for k in keys if k in needed]
        plan = TaskPlan(list(partitions or self.partitions), self.graph, dict.fromkeys(keys), self.worker)
        return plan, [self.leaves[k] for k in keys]

    @property
    def rows(self) -> int:
        """Rows of the task (each partition of unknown size counted as 0)."""
        return sum(max(p.rows, 0) for p in self.partitions)

    @functools.cached_property
    def streams(self) -> bool:
        """Whether some partition's blocks are produced anew on every pass (read from a store or computed), rather
        than persisted on a worker or held as arrays in the graph."""
        return bool(self.graph) and any(computed(self.graph, spec) for spec in self.partitions)


def computed(graph: Mapping[Key, Any], spec: PartitionSpec) -> bool:
    """Whether ``spec``'s blocks come from tasks of ``graph`` (not arrays in it, not persisted leaves outside it)."""
    return any(k in graph and not isinstance(graph[k], np.ndarray) for k in spec.keys.values())


def _block_keys(array: Any) -> list[Key]:
    """One key per row block of a dask array chunked by rows only (any trailing axis in one chunk)."""
    keys = array.__dask_keys__()
    return [k[0] if isinstance(k, list) else k for k in keys]


def partition_specs(data: RowData) -> list[PartitionSpec]:
    """The data's partitions, in row order."""
    arrays = data.arrays()
    names = list(arrays)
    per_partition = zip(*(_block_keys(a) for a in arrays.values()), strict=True)
    specs, start = [], 0
    for i, (rows, keys) in enumerate(zip(data.row_chunks, per_partition, strict=True)):
        known = start >= 0 and not math.isnan(rows)
        size = int(rows) if known else -1
        specs.append(PartitionSpec(i, start if known else -1, size, dict(zip(names, keys, strict=True))))
        start = start + size if known else -1
    return specs


def data_graph(data: RowData) -> dict[Key, Any]:
    """The merged task graph of the data's arrays, materialized once (persisted blocks appear as futures)."""
    graph: dict[Key, Any] = {}
    for array in data.arrays().values():
        layers: Any = array.__dask_graph__()
        graph.update(layers.to_dict())
    return graph


def split_graph(graph: Mapping[Key, Any], key_sets: Sequence[Sequence[Key]]) -> list[dict[Key, Any]]:
    """The part of ``graph`` each set of keys needs: one dependency walk per set, each key's dependencies found once
    (the cost is linear in the graph, not in graph x sets)."""
    dependencies: dict[Key, Any] = {}
    out = []
    leaf = (np.ndarray, _future_type())  # persisted blocks and arrays: no dependencies
    for keys in key_sets:
        found = {k: graph[k] for k in keys if k in graph}
        if all(isinstance(v, leaf) for v in found.values()):  # persisted: no walk
            out.append(found)
            continue
        part: dict[Key, Any] = {}
        stack = list(found)
        while stack:
            key = stack.pop()
            if key in part:
                continue
            value = part[key] = graph[key]
            if key not in dependencies:
                simple = isinstance(value, leaf)
                dependencies[key] = () if simple else get_dependencies(graph, key)  # type: ignore[call-overload]
            stack.extend(d for d in dependencies[key] if d in graph and d not in part)
        out.append(part)
    return out


@functools.cache
def _future_type() -> type:
    """``distributed.Future`` (imported on first use: plans are also made without distributed's client)."""
    from distributed import Future

    return Future


def _task(specs: Sequence[PartitionSpec], sub: dict[Key, Any], worker: str | None) -> TaskPlan:
    """A task's plan from the part of the graph its partitions need: persisted blocks become its leaves."""
    future = _future_type()
    leaves = {k: v for k, v in sub.items() if isinstance(v, future)}
    for k in leaves:
        del sub[k]
    return TaskPlan(list(specs), sub, leaves, worker)


def _tasks(runs: Sequence[tuple[list[PartitionSpec], str | None]], graph: Mapping[Key, Any]) -> list[TaskPlan]:
    parts = split_graph(graph, [[k for p in specs for k in p.keys.values()] for specs, _ in runs])
    return [_task(specs, sub, worker) for (specs, worker), sub in zip(runs, parts, strict=True)]


def _contiguous(specs: Sequence[PartitionSpec], n_tasks: int) -> list[list[PartitionSpec]]:
    """Split partitions in row order into at most ``n_tasks`` runs of about equal rows (of equal partition counts
    when the sizes are unknown)."""
    n_tasks = max(1, min(n_tasks, len(specs)))
    sizes = [p.rows if p.rows >= 0 else 1 for p in specs]
    whole = sum(sizes)
    runs: list[list[PartitionSpec]] = [[] for _ in range(n_tasks)]
    done = 0
    for p, size in zip(specs, sizes, strict=True):
        runs[min(n_tasks - 1, done * n_tasks // max(whole, 1))].append(p)
        done += size
    return [r for r in runs if r]


def plan_tasks(
    data: RowData,
    threads: Mapping[str, int] | int,
    homes: Mapping[Key, str] | None = None,
    graph: dict[Key, Any] | None = None,
) -> list[TaskPlan]:
    """Split the data's partitions into one task per worker thread.

    Parameters
    ----------
    data : RowData
    threads : mapping of str to int, or int
        Worker address -> its number of threads; an int for dask's local threaded scheduler (no placement).
    homes : mapping, optional
        Key of a partition's first block -> the worker holding it (persisted data); such partitions are grouped
        on their worker, the others (lazy, or on a worker that left) spread over all workers as contiguous runs.
    graph : dict, optional
        :func:`data_graph` of the data, when the caller has it already.

    Returns
    -------
    list of TaskPlan
    """
    specs = partition_specs(data)
    graph = data_graph(data) if graph is None else graph
    if isinstance(threads, int):
        return _tasks([(run, None) for run in _contiguous(specs, threads)], graph)
    homes = homes or {}
    workers = sorted(threads)
    placed: dict[str, list[PartitionSpec]] = {w: [] for w in workers}
    loose: list[PartitionSpec] = []
    for p in specs:
        home = homes.get(next(iter(p.keys.values())))
        (placed[home] if home in placed else loose).append(p)
    runs: list[tuple[list[PartitionSpec], str | None]] = []
    for w in workers:
        runs += [(run, w) for run in _contiguous(placed[w], threads[w])]
    if loose:
        # contiguous runs dealt to workers in proportion to their threads, each joining a task of its worker when
        # the worker already has one per thread (a block not yet placed, or moving, adds no task)
        slots = [w for w in workers for _ in range(threads[w])]
        for i, run in enumerate(_contiguous(loose, sum(threads.values()))):
            _join(runs, run, slots[i % len(slots)], threads[slots[i % len(slots)]])
    return _tasks(runs, graph)


def _join(runs: list[tuple[list[PartitionSpec], str | None]], run: list[PartitionSpec], worker: str, n: int) -> None:
    """Add ``run`` as a task of ``worker``, or, when the worker has ``n`` tasks already, to its smallest one (in row
    order: a task's partitions need not be adjacent)."""
    own = [i for i, (_, w) in enumerate(runs) if w == worker]
    if len(own) < n:
        runs.append((run, worker))
        return
    smallest = min(own, key=lambda i: len(runs[i][0]))
    joined = sorted(runs[smallest][0] + run, key=lambda p: p.number)
    runs[smallest] = (joined, worker)


class Piece(NamedTuple):
    """Rows of a task in one piece of the engine's ``map``: partitions ``start .. stop - 1``, from row ``first`` of
    the first to row ``last`` (exclusive; ``None``: its end) of the last."""

    start: int
    stop: int
    first: int
    last: int | None


def pieces(plan: TaskPlan, max_rows: int | None) -> list[Piece]:
    """A task's rows in pieces of at most ``max_rows`` rows (partitions cut where a piece ends), so that the pieces
    depend on the data's size, not on its partitioning; with unknown partition sizes, runs of whole partitions."""
    n = len(plan.partitions)
    sizes = [spec.rows for spec in plan.partitions]
    if max_rows is None or not sizes or min(sizes) < 0 or sum(sizes) == 0:
        return [Piece(0, n, 0, None)]
    bounds = list(itertools.accumulate(sizes, initial=0))
    out: list[Piece] = []
    for lo in range(0, bounds[-1], max_rows):
        hi = min(lo + max_rows, bounds[-1])
        first = bisect.bisect_right(bounds, lo) - 1
        last = bisect.bisect_right(bounds, hi - 1) - 1
        out.append(Piece(first, last + 1, lo - bounds[first], hi - bounds[last]))
    return out
