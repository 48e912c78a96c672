"""The work of one task of a pass: evaluate a group's partitions one after another and add their records.

Runs in a worker (or a thread of dask's local scheduler). Memory is bounded whatever the group's size: a lazy
partition's blocks are produced (read from the store, decoded) just before its turn, by a background thread while
the previous partition is evaluated, and dropped after it, so a task holds at most two partitions and the kernel's
row-block temporaries at a time. Consecutive small partitions are
evaluated together (their rows concatenated) so that ten thousand tiny partitions cost about what ten large ones do.
"""

from __future__ import annotations

import contextvars
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dask.core
import numpy as np
from dask.optimization import cull
from dask.sizeof import sizeof
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.kernels import DEFAULT_BLOCK_BYTES, partition_statistics
from dmlr.oracle.statistics import Request, Statistics
from dmlr.passes.memory import release_freed_memory, tune_worker_allocator
from dmlr.passes.plan import GroupPlan, PartitionSpec, computed

__all__ = ["BATCH_ROWS", "GroupData", "evaluate_group", "make_group_data", "pass_progress"]

Key = Hashable
Blocks = tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.float64] | None, NDArray[np.float64] | None]

BATCH_ROWS = 8192
"""Consecutive partitions smaller than this are evaluated together, up to this many rows (the kernel's per-call
overhead is tens of microseconds: a 100-row partition would otherwise cost more in calls than in arithmetic)."""


@dataclass
class GroupData:
    """A group's partitions as a worker holds them across passes.

    Persisted blocks are referenced, not copied (their own keys already count their memory); lazy blocks are kept
    as one culled task graph per partition and produced anew on every pass.

    Attributes
    ----------
    partitions : list of PartitionSpec
    graphs : list of dict
        Per partition: the tasks producing its blocks, with persisted blocks as values.
    """

    partitions: list[PartitionSpec]
    graphs: list[dict[Key, Any]] = field(repr=False)

    def blocks(self, i: int) -> Blocks:
        """The blocks of partition ``i`` of the group (computed now if they are lazy)."""
        return self.read(i)[0]

    def is_lazy(self, i: int) -> bool:
        """Whether partition ``i``'s blocks are produced on every pass (read from a store or computed)."""
        return computed(self.graphs[i], self.partitions[i])

    def read(self, i: int) -> tuple[Blocks, int]:
        """The blocks of partition ``i`` and the bytes of its features as produced (stored dtype)."""
        spec, graph = self.partitions[i], self.graphs[i]
        keys = [k for k in spec.keys if k is not None]
        values = [graph[k] for k in keys]
        if not all(isinstance(v, np.ndarray) for v in values):
            values = list(dask.core.get(graph, keys))
        x, codes = values[0], values[1]
        w = values[2] if spec.keys[2] is not None else None
        o = values[-1] if spec.keys[3] is not None else None
        return (np.asarray(x, dtype=np.float64), np.asarray(codes), w, o), int(np.asarray(x).nbytes)


def _is_value(value: Any) -> bool:
    return isinstance(value, np.ndarray)


@sizeof.register(GroupData)  # type: ignore[untyped-decorator]
def _sizeof_group(data: GroupData) -> int:
    # The persisted blocks are referenced only: their own keys count them. Count the graphs' other values.
    return 1024 + sum(sizeof(v) for g in data.graphs for v in g.values() if not _is_value(v))


def make_group_data(plan: GroupPlan, leaves: dict[Key, Any] | None = None) -> GroupData:
    """Build a group's :class:`GroupData` (on the worker that will evaluate it, once per fit).

    Parameters
    ----------
    plan : GroupPlan
        Its ``leaves`` are ignored; ``leaves`` gives their values.
    leaves : dict, optional
        Persisted blocks by key, as dask delivers them to the task.
    """
    graph = {**plan.graph, **(leaves or {})}
    graphs = []
    for spec in plan.partitions:
        keys = [k for k in spec.keys if k is not None]
        culled, _ = cull(graph, keys)
        graphs.append(dict(culled))
    return GroupData(list(plan.partitions), graphs)


def _produced(data: GroupData, counter: list[int] | None) -> Iterator[tuple[int, Blocks]]:
    """Each partition's blocks in row order. While one partition is evaluated, the next lazy one is read in a
    background thread (reading and decoding release the GIL, as does the arithmetic), so a streamed pass takes about
    ``max(read, compute)`` instead of their sum; at most two partitions' blocks are held at once."""
    n = len(data.partitions)
    if n == 1 or not any(data.is_lazy(i) for i in range(n)):
        for i in range(n):
            blocks, nbytes = data.read(i)
            _count(counter, nbytes)
            yield i, blocks
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dmlr-prefetch") as pool:
        # the task's context goes with each read (distributed.get_worker() and the like work in the graph's tasks)
        pending = pool.submit(contextvars.copy_context().run, data.read, 0)
        for i in range(n):
            blocks, nbytes = pending.result()
            if i + 1 < n:
                pending = pool.submit(contextvars.copy_context().run, data.read, i + 1)
            _count(counter, nbytes)
            yield i, blocks
            del blocks


def _count(counter: list[int] | None, nbytes: int) -> None:
    if counter is not None:
        counter[0] += 1
        counter[1] += nbytes


_PROGRESS: dict[str, list[int]] = {}
"""Per pass (key): partitions read and their feature bytes, in this process (read by :func:`pass_progress`)."""


def pass_progress(key: str) -> tuple[int, int]:
    """Partitions read so far by this process's tasks of pass ``key``, and their bytes (polled by the driver)."""
    done = _PROGRESS.get(key, [0, 0])
    return done[0], done[1]


def _counter(key: str | None) -> list[int] | None:
    if key is None:
        return None
    while len(_PROGRESS) > 64:  # keep the last passes' counters only
        _PROGRESS.pop(next(iter(_PROGRESS)))
    return _PROGRESS.setdefault(key, [0, 0])


def _batches(data: GroupData, counter: list[int] | None = None) -> Iterator[tuple[list[PartitionSpec], Blocks]]:
    """The group's partitions in row order, consecutive small ones concatenated up to :data:`BATCH_ROWS` rows."""
    pending: list[tuple[PartitionSpec, Blocks]] = []
    rows = 0
    for i, blocks in _produced(data, counter):
        spec = data.partitions[i]
        if spec.rows >= BATCH_ROWS:
            if pending:
                yield _join(pending)
                pending, rows = [], 0
            yield [spec], blocks
            continue
        pending.append((spec, blocks))
        rows += spec.rows
        if rows >= BATCH_ROWS:
            yield _join(pending)
            pending, rows = [], 0
    if pending:
        yield _join(pending)


def _join(items: list[tuple[PartitionSpec, Blocks]]) -> tuple[list[PartitionSpec], Blocks]:
    specs = [s for s, _ in items]
    if len(items) == 1:
        return specs, items[0][1]
    parts = list(zip(*(b for _, b in items), strict=True))
    joined = tuple(None if col[0] is None else np.concatenate(col) for col in parts)
    return specs, joined  # type: ignore[return-value]


def evaluate_group(
    data: GroupData,
    coef: NDArray[np.float64],
    intercept: bool,
    request: Request,
    intercept_only: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress_key: str | None = None,
) -> Statistics:
    """The summed statistics of every partition of a group at ``coef``.

    Parameters
    ----------
    data : GroupData
    coef : ndarray, shape (d, m)
        ``(1, m)`` when ``intercept_only``.
    intercept : bool
        Whether model column 0 is an intercept (not stored in the blocks).
    request : Request
    intercept_only : bool
        Ignore the features (the intercept-only model, for the null log-likelihood with an offset).
    block_bytes : int
        Memory budget of the kernel's largest row-block temporary.
    progress_key : str, optional
        Count the partitions read under this key (:func:`pass_progress`).

    Returns
    -------
    Statistics
        The group's record; ``n_rows`` counts every row of the group once.
    """
    tune_worker_allocator()
    evaluate = partial(
        _statistics, coef=coef, intercept=intercept, request=request, intercept_only=intercept_only,
        block_bytes=block_bytes,
    )  # fmt: skip
    total: Statistics | None = None
    for specs, blocks in _batches(data, _counter(progress_key)):
        try:
            record = evaluate(specs[0], blocks)
        except InputError:
            if len(specs) > 1:  # a batch: evaluate its partitions one by one so the error names its own partition
                for spec in specs:
                    evaluate(spec, data.blocks(data.partitions.index(spec)))
            raise
        total = record if total is None else total.add_(record)
    if total is None:
        raise InputError("a task of the pass received no partition")
    release_freed_memory(above=0.6)
    return total


def _statistics(
    spec: PartitionSpec,
    blocks: Blocks,
    *,
    coef: NDArray[np.float64],
    intercept: bool,
    request: Request,
    intercept_only: bool,
    block_bytes: int,
) -> Statistics:
    """:func:`partition_statistics` of the rows in ``blocks``, named in errors after ``spec``."""
    x, codes, w, o = blocks
    if intercept_only:
        x, intercept = x[:, :0], True
    return partition_statistics(
        x, codes, w, o, coef, intercept=intercept, request=request,
        partition=spec.index, row_start=spec.row_start, block_bytes=block_bytes,
    )  # fmt: skip
