"""The work of one task of a pass: produce a task's partitions one after another, run the kernel, add the records.

Runs in a worker (or a thread of dask's local scheduler). Memory is bounded whatever the task's size: a streamed
partition's blocks are produced (read from the store, decoded) just before its turn, by a background thread while the
previous partition is evaluated, and dropped after it, so a task holds at most two partitions and the kernel's
row-block temporaries at a time. A *held* task (``persist``) produced its partitions once, when its data were made,
and keeps them. Consecutive small partitions are evaluated together (their rows concatenated) so that ten thousand
tiny partitions cost about what ten large ones do.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import dask.core
import numpy as np
from dask.sizeof import sizeof

from dmlr.data.rows import FIELDS, Rows
from dmlr.errors import InputError
from dmlr.passes.kernel import Counted, Kernel, add_into
from dmlr.passes.memory import release_freed_memory, tune_worker_allocator
from dmlr.passes.plan import PartitionSpec, TaskPlan, computed, split_graph

__all__ = ["BATCH_ROWS", "RowsTransform", "TaskData", "derive_task_data", "make_task_data", "pass_progress", "run_task"]

Key = Hashable

BATCH_ROWS = 8192
"""Consecutive partitions smaller than this are evaluated together, up to this many rows (the kernel's per-call
overhead is tens of microseconds: a 100-row partition would otherwise cost more in calls than in arithmetic)."""


class RowsTransform(Protocol):
    """A function of a partition's rows applied when they are produced (e.g. labels encoded as class codes).

    ``inputs(fields)`` says which stored fields it needs to produce the kernel's ``fields``.
    """

    def inputs(self, fields: Sequence[str]) -> tuple[str, ...]: ...

    def __call__(self, rows: Rows) -> Rows: ...


@dataclass
class TaskData:
    """A task's partitions as a worker holds them across passes.

    Persisted blocks are referenced, not copied (their own keys already count their memory); streamed blocks are kept
    as one culled task graph per partition and produced anew on every pass; held partitions were produced once.

    Attributes
    ----------
    partitions : list of PartitionSpec
    graphs : list of dict
        Per partition: the tasks producing its blocks, with persisted blocks as values (empty once held).
    held : list of Rows, optional
        Per partition: its rows, produced once (``persist``) and transformed.
    transform : RowsTransform, optional
        Applied to every partition's rows as they are produced (held rows were transformed when made).
    owned : int
        Bytes of held blocks this task made (not persisted blocks it only references).
    """

    partitions: list[PartitionSpec]
    graphs: list[dict[Key, Any]] = field(repr=False)
    held: list[Rows] | None = field(default=None, repr=False)
    transform: RowsTransform | None = None
    owned: int = 0

    def is_lazy(self, i: int) -> bool:
        """Whether partition ``i``'s blocks are produced on every pass (read from a store or computed)."""
        return self.held is None and computed(self.graphs[i], self.partitions[i])

    def read(self, i: int, fields: Sequence[str]) -> tuple[Rows, int]:
        """The rows of partition ``i`` with ``fields`` (transformed), and the bytes of its features as produced."""
        if self.held is not None:
            return self.held[i], 0
        spec = self.partitions[i]
        wanted = self.transform.inputs(fields) if self.transform is not None else tuple(fields)
        names = [f for f in FIELDS if f in wanted and f in spec.keys]
        blocks = _produce(self.graphs[i], [spec.keys[f] for f in names], names)
        nbytes = int(np.asarray(blocks["x"]).nbytes) if "x" in blocks else 0
        rows = _rows(spec, blocks)
        return (self.transform(rows) if self.transform is not None else rows), nbytes


def _produce(graph: dict[Key, Any], keys: list[Key], names: list[str]) -> dict[str, Any]:
    values = [graph[k] for k in keys]
    if not all(isinstance(v, np.ndarray) for v in values):
        values = list(dask.core.get(graph, keys))
    return dict(zip(names, values, strict=True))


def _rows(spec: PartitionSpec, blocks: dict[str, Any]) -> Rows:
    if "x" in blocks:
        blocks["x"] = np.asarray(blocks["x"], dtype=np.float64)  # float32 stores are widened here
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in blocks.items()}
    return Rows(**arrays, partition=spec.index, row_start=spec.row_start)


@sizeof.register(TaskData)  # type: ignore[untyped-decorator]
def _sizeof_task(data: TaskData) -> int:
    # Persisted blocks are referenced only: their own keys count them. Count the graphs' other values and what the
    # task produced itself.
    graphs = sum(sizeof(v) for g in data.graphs for v in g.values() if not isinstance(v, np.ndarray))
    return 1024 + graphs + data.owned


def make_task_data(
    plan: TaskPlan, leaves: list[Any] | None = None, hold: bool = False, transform: RowsTransform | None = None
) -> TaskData:
    """Build a task's :class:`TaskData` (on the worker that will evaluate it, once per engine).

    Parameters
    ----------
    plan : TaskPlan
        Its ``leaves`` name the persisted blocks (their keys, in order); ``leaves`` gives their values.
    leaves : list, optional
        The persisted blocks, in the order of ``plan.leaves``, as dask delivers them to the task (a list: dask
        parses a task's arguments, and a list of futures costs it a third of a dict's).
    hold : bool
        Produce every partition's rows now and keep them (``persist``).
    transform : RowsTransform, optional
    """
    graph = {**plan.graph, **dict(zip(plan.leaves, leaves or [], strict=True))}
    if not hold:
        graphs = split_graph(graph, [list(spec.keys.values()) for spec in plan.partitions])
        return TaskData(list(plan.partitions), graphs, transform=transform)
    # every partition produced now, in one walk of the task's graph (what each partition shares is computed once)
    names = [[f for f in FIELDS if f in spec.keys] for spec in plan.partitions]
    keys = [spec.keys[f] for spec, fields in zip(plan.partitions, names, strict=True) for f in fields]
    (needed,) = split_graph(graph, [keys])  # dask.core.get runs every task of the graph it is given
    values = iter(dask.core.get(needed, keys) if keys else [])
    held = [_rows(spec, {f: next(values) for f in fields}) for spec, fields in zip(plan.partitions, names, strict=True)]
    persisted = {id(v) for v in leaves or []}
    owned = sum(int(v.nbytes) for r in held for v in r.arrays().values() if id(v) not in persisted)
    out = TaskData(list(plan.partitions), [{} for _ in plan.partitions], held, None, owned)
    return out if transform is None else derive_task_data(out, transform)


def derive_task_data(data: TaskData, transform: RowsTransform) -> TaskData:
    """The same task's data with ``transform`` applied from now on (held rows transformed once, here: a batch of
    small partitions at a time, each partition alone when the batch has an error to name)."""
    if data.held is None:
        return TaskData(data.partitions, data.graphs, transform=transform)
    held: list[Rows] = list(data.held)
    owned = data.owned
    for members, rows in _batches(data, range(len(data.partitions)), FIELDS):
        try:
            parts = list(zip([members], [transform(rows)], strict=True))
        except InputError:
            parts = [([i], transform(held[i])) for i in members]
        for group, new in parts:
            owned += sum(int(v.nbytes) for f, v in new.arrays().items() if getattr(rows, f) is not v)
            for i, part in zip(group, _split(new, [held[j].n_rows for j in group]), strict=True):
                held[i] = dataclasses.replace(part, partition=held[i].partition, row_start=held[i].row_start)
    return TaskData(data.partitions, [{} for _ in data.partitions], held, None, owned)


def _split(rows: Rows, sizes: list[int]) -> list[Rows]:
    """``rows`` cut back into consecutive parts of ``sizes`` rows (views; positions as the parts had them)."""
    if len(sizes) == 1:
        return [rows]
    bounds = np.cumsum([0, *sizes])
    return [dataclasses.replace(rows.slice(int(a), int(b)), segments=None) for a, b in itertools.pairwise(bounds)]


def _produced(
    data: TaskData, parts: range, fields: Sequence[str], counter: list[int] | None
) -> Iterator[tuple[int, Rows]]:
    """Each partition's rows in row order. While one partition is evaluated, the next lazy one is read in a
    background thread (reading and decoding release the GIL, as does the arithmetic), so a streamed pass takes about
    ``max(read, compute)`` instead of their sum; at most two partitions' blocks are held at once."""
    if len(parts) == 1 or not any(data.is_lazy(i) for i in parts):
        for i in parts:
            rows, nbytes = data.read(i, fields)
            _count(counter, nbytes)
            yield i, rows
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dmlr-prefetch") as pool:
        # the task's context goes with each read (distributed.get_worker() and the like work in the graph's tasks)
        pending = pool.submit(contextvars.copy_context().run, data.read, parts[0], fields)
        for j, i in enumerate(parts):
            rows, nbytes = pending.result()
            if j + 1 < len(parts):
                pending = pool.submit(contextvars.copy_context().run, data.read, parts[j + 1], fields)
            _count(counter, nbytes)
            yield i, rows
            del rows


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


def _batches(
    data: TaskData, parts: range, fields: Sequence[str], counter: list[int] | None = None, batch: bool | str = True
) -> Iterator[tuple[list[int], Rows]]:
    """The task's partitions in row order, small ones concatenated up to :data:`BATCH_ROWS` rows (``batch``: the
    kernel's: ``False`` each alone, ``"contiguous"`` only partitions that follow each other in the data)."""
    pending: list[tuple[int, Rows]] = []
    rows = 0
    for i, block in _produced(data, parts, fields, counter):
        if pending and batch == "contiguous" and not block.follows(pending[-1][1]):
            yield _join(pending)
            pending, rows = [], 0
        if block.n_rows >= BATCH_ROWS or not batch:
            if pending:
                yield _join(pending)
                pending, rows = [], 0
            yield [i], block
            continue
        pending.append((i, block))
        rows += block.n_rows
        if rows >= BATCH_ROWS:
            yield _join(pending)
            pending, rows = [], 0
    if pending:
        yield _join(pending)


def _join(items: list[tuple[int, Rows]]) -> tuple[list[int], Rows]:
    return [i for i, _ in items], Rows.concat([r for _, r in items])


def run_task(
    data: TaskData, kernel: Kernel[Any], start: int = 0, stop: int | None = None, progress_key: str | None = None
) -> Counted:
    """The summed records of a task's partitions ``start .. stop - 1`` (all by default).

    Parameters
    ----------
    data : TaskData
    kernel : Kernel
    start, stop : int
        A run of the task's partitions (the engine's ``map`` splits a task into pieces).
    progress_key : str, optional
        Count the partitions read under this key (:func:`pass_progress`).

    Returns
    -------
    Counted
        The record, and the rows and partitions it covers.
    """
    tune_worker_allocator()
    parts = range(start, len(data.partitions) if stop is None else stop)
    total: Any = None
    n_rows = 0
    batch = getattr(kernel, "batch", True)
    for indices, rows in _batches(data, parts, kernel.reads, _counter(progress_key), batch):
        try:
            record = kernel(rows)
        except InputError:
            if len(indices) > 1:  # a batch: evaluate its partitions one by one so the error names its own partition
                for i in indices:
                    kernel(data.read(i, kernel.reads)[0])
            raise
        total = add_into(total, record)
        n_rows += rows.n_rows
    if total is None:
        raise InputError("a task of the pass received no partition")
    release_freed_memory(above=0.6)
    return Counted(total, n_rows, len(parts))
