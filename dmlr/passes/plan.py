"""Which partitions each task of a pass evaluates, and how a task obtains their arrays.

A pass must not cost one task per partition (scheduling alone made a 4,000-partition pass 42x slower than a
10-partition one). The partitions are split once per fit into *groups*: one per worker thread, each holding the
partitions that live on that worker (persisted or shipped data) or a contiguous range of row chunks (data read from
a store or another lazy graph). A group is described by a :class:`GroupPlan`: its partitions, the part of the
design's task graph that produces their blocks (culled once, here), and the keys of the persisted blocks it
reads (dask resolves those to the arrays on the worker). Every pass then runs one task per group.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.optimization import cull

if TYPE_CHECKING:
    from dmlr.data.design import Design

__all__ = ["GroupPlan", "PartitionSpec", "computed", "design_graph", "partition_specs", "plan_groups"]

Key = Hashable


@dataclass(frozen=True)
class PartitionSpec:
    """One row partition of the design.

    Attributes
    ----------
    index : int
        Position among the design's partitions (0-based), used in messages.
    row_start : int
        Global index of its first row.
    rows : int
        Number of rows.
    keys : tuple
        Task keys of its blocks of ``x``, ``codes``, ``weights`` and ``offset`` (``None`` where the design has no
        such array).
    """

    index: int
    row_start: int
    rows: int
    keys: tuple[Key, Key, Key | None, Key | None]


@dataclass
class GroupPlan:
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
        Address of the worker holding the group's persisted blocks, or the worker a lazy group was dealt to: a hint
        for adding records per worker, not a restriction (``None``: any worker).
    """

    partitions: list[PartitionSpec]
    graph: dict[Key, Any] = field(default_factory=dict)
    leaves: dict[Key, Any] = field(default_factory=dict)
    worker: str | None = None

    @property
    def rows(self) -> int:
        """Rows in the group."""
        return sum(p.rows for p in self.partitions)

    @property
    def streams(self) -> bool:
        """Whether some partition's blocks are produced anew on every pass (read from a store or computed), rather
        than persisted on a worker or held as arrays in the graph."""
        return any(computed(self.graph, spec) for spec in self.partitions)


def computed(graph: Mapping[Key, Any], spec: PartitionSpec) -> bool:
    """Whether ``spec``'s blocks come from tasks of ``graph`` (not arrays in it, not persisted leaves outside it)."""
    return any(k in graph and not isinstance(graph[k], np.ndarray) for k in spec.keys if k is not None)


def _block_keys(array: Any) -> list[Key]:
    """One key per row block of a dask array chunked by rows only (any trailing axis in one chunk)."""
    keys = array.__dask_keys__()
    return [k[0] if isinstance(k, list) else k for k in keys]


def partition_specs(design: Design) -> list[PartitionSpec]:
    """The design's partitions, in row order."""
    columns = [_block_keys(design.x), _block_keys(design.codes)]
    n_parts = len(columns[0])
    for extra in (design.weights, design.offset):
        columns.append(_block_keys(extra) if extra is not None else [None] * n_parts)
    specs, start = [], 0
    for i, (rows, keys) in enumerate(zip(design.x.chunks[0], zip(*columns, strict=True), strict=True)):
        specs.append(PartitionSpec(i, start, int(rows), keys))
        start += int(rows)
    return specs


def design_graph(design: Design) -> dict[Key, Any]:
    """The merged task graph of the design's arrays, materialized once (persisted blocks appear as futures)."""
    graph: dict[Key, Any] = {}
    for array in design.arrays():
        layers: Any = array.__dask_graph__()
        graph.update(layers.to_dict())
    return graph


def _is_future(value: Any) -> bool:
    try:
        from distributed import Future
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(value, Future)


def _split(specs: Sequence[PartitionSpec], graph: Mapping[Key, Any], worker: str | None) -> GroupPlan:
    keys = [k for p in specs for k in p.keys if k is not None]
    direct = [k for k in keys if _is_future(graph.get(k))]
    lazy = [k for k in keys if not _is_future(graph.get(k))]
    sub: dict[Key, Any] = {}
    if lazy:
        culled, _ = cull(dict(graph), lazy)
        sub = dict(culled)
    leaves = {k: v for k, v in sub.items() if _is_future(v)}
    leaves.update((k, graph[k]) for k in direct)
    for k in leaves:
        sub.pop(k, None)
    return GroupPlan(list(specs), sub, leaves, worker)


def _contiguous(specs: Sequence[PartitionSpec], n_groups: int) -> list[list[PartitionSpec]]:
    """Split partitions in row order into at most ``n_groups`` runs of about equal rows."""
    n_groups = max(1, min(n_groups, len(specs)))
    total = sum(p.rows for p in specs)
    groups: list[list[PartitionSpec]] = [[] for _ in range(n_groups)]
    done = 0
    for p in specs:
        g = min(n_groups - 1, done * n_groups // max(total, 1))
        groups[g].append(p)
        done += p.rows
    return [g for g in groups if g]


def plan_groups(
    design: Design,
    threads: Mapping[str, int] | int,
    homes: Mapping[Key, str] | None = None,
) -> list[GroupPlan]:
    """Split the design's partitions into one group per worker thread.

    Parameters
    ----------
    design : Design
    threads : mapping of str to int, or int
        Worker address -> its number of threads; an int for dask's local threaded scheduler (no placement).
    homes : mapping, optional
        Key of a partition's ``x`` block -> the worker holding it (persisted data); such partitions are grouped
        on their worker, the others (lazy, or on a worker that left) spread over all workers as contiguous runs.

    Returns
    -------
    list of GroupPlan
    """
    specs = partition_specs(design)
    graph = design_graph(design)
    if isinstance(threads, int):
        return [_split(run, graph, None) for run in _contiguous(specs, threads)]
    homes = homes or {}
    workers = sorted(threads)
    placed: dict[str, list[PartitionSpec]] = {w: [] for w in workers}
    loose: list[PartitionSpec] = []
    for p in specs:
        home = homes.get(p.keys[0])
        (placed[home] if home in placed else loose).append(p)
    plans: list[GroupPlan] = []
    for w in workers:
        for run in _contiguous(placed[w], threads[w]):
            plans.append(_split(run, graph, w))
    if loose:
        total_threads = sum(threads.values())
        runs = _contiguous(loose, total_threads)
        # contiguous runs dealt to workers in proportion to their threads
        slots = [w for w in workers for _ in range(threads[w])]
        for i, run in enumerate(runs):
            plans.append(_split(run, graph, slots[i % len(slots)]))
    return plans
