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
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import dask.core
import numpy as np
from dask.sizeof import sizeof

from dmlr.data.rows import FIELDS, Rows
from dmlr.errors import DmlrError, InputError
from dmlr.passes.kernel import Counted, Kernel, add_into
from dmlr.passes.memory import old_objects_frozen, release_freed_memory, tune_worker_allocator
from dmlr.passes.plan import PartitionSpec, TaskPlan, computed, split_graph

__all__ = [
    "BATCH_ROWS",
    "BlocksMoved",
    "LocalBlocks",
    "RowsTransform",
    "TaskData",
    "derive_task_data",
    "make_located_task_data",
    "make_task_data",
    "pass_progress",
    "run_task",
]

Key = Hashable

Clip = tuple[int, int | None] | None
"""Rows of a run of partitions: from row ``[0]`` of the first to row ``[1]`` of the last (``None``: all)."""

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
    joined : dict, optional
        Held partitions batched together when they were transformed: their indices -> the joined rows, of which
        their ``held`` rows are views (a pass takes the batch as it is instead of concatenating it again).
    """

    partitions: list[PartitionSpec]
    graphs: list[dict[Key, Any]] = field(repr=False)
    held: list[Rows] | None = field(default=None, repr=False)
    transform: RowsTransform | None = None
    owned: int = 0
    joined: dict[tuple[int, ...], Rows] | None = field(default=None, repr=False)

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
    return Rows(**arrays, partition=spec.number, row_start=spec.row_start)


@sizeof.register(TaskData)  # type: ignore[untyped-decorator]
def _sizeof_task(data: TaskData) -> int:
    # Persisted blocks are referenced only: their own keys count them. Count the graphs' other values and what the
    # task produced itself.
    graphs = sum(sizeof(v) for g in data.graphs for v in g.values() if not isinstance(v, np.ndarray))
    return 1024 + graphs + data.owned


@old_objects_frozen()
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
    values = iter(_values(graph, keys))
    held = [_rows(spec, {f: next(values) for f in fields}) for spec, fields in zip(plan.partitions, names, strict=True)]
    persisted = {id(v) for v in leaves or []}
    owned = sum(int(v.nbytes) for r in held for v in r.arrays().values() if id(v) not in persisted)
    return _rebatched(TaskData(list(plan.partitions), [{} for _ in plan.partitions], held, None, owned), transform)


class BlocksMoved(DmlrError):
    """A persisted block was not in the memory of the worker the scheduler named when the task's data were planned
    (moved by the scheduler, or lost with its worker and the task run elsewhere); the engine then makes the tasks'
    data with every block as a task input."""


@dataclass(frozen=True)
class LocalBlocks:
    """Keys of persisted blocks a task reads from its worker's memory (a dataclass: dask does not walk it when the
    task is submitted, as it walks a list of ten thousand keys)."""

    keys: list[Key]


def make_located_task_data(
    plan: TaskPlan, local: LocalBlocks, inputs: list[Any], hold: bool = False, transform: RowsTransform | None = None
) -> TaskData:
    """:func:`make_task_data` on the worker holding the blocks ``local`` (read from its memory) and given the others
    as ``inputs`` (in the order of ``plan.leaves`` without ``local``).

    Raises
    ------
    BlocksMoved
        A block of ``local`` is not in this worker's memory.
    """
    from distributed import get_worker

    memory: Any = get_worker().data
    # distributed's spill buffer records metrics on every read (~20 us a key); its in-memory dict has the blocks that
    # are not spilled, the buffer itself the rest (read back from disk)
    fast = getattr(getattr(memory, "fast", None), "d", None)
    fast = fast if isinstance(fast, dict) else {}
    try:
        found = {k: fast[k] if k in fast else memory[k] for k in local.keys}
    except KeyError as exc:
        raise BlocksMoved(f"block {exc.args[0]!r} is not on this worker") from None
    rest = iter(inputs)
    leaves = [found[k] if k in found else next(rest) for k in plan.leaves]
    return make_task_data(plan, leaves, hold, transform)


def _values(graph: dict[Key, Any], keys: list[Key]) -> list[Any]:
    """The values of ``keys`` in ``graph``: the arrays themselves when every one is persisted or held, else computed
    from the part of the graph they need (dask.core.get runs every task of the graph it is given)."""
    if all(isinstance(graph.get(k), np.ndarray) for k in keys):
        return [graph[k] for k in keys]
    (needed,) = split_graph(graph, [keys])
    return list(dask.core.get(needed, keys)) if keys else []


@old_objects_frozen()
def derive_task_data(data: TaskData, transform: RowsTransform) -> TaskData:
    """The same task's data with ``transform`` applied from now on (held rows transformed once, here: a batch of
    small partitions at a time, each partition alone when the batch has an error to name)."""
    if data.held is None:
        return TaskData(data.partitions, data.graphs, transform=transform)
    return _rebatched(data, transform)


def _rebatched(data: TaskData, transform: RowsTransform | None) -> TaskData:
    """Held rows with consecutive small partitions joined once into batches (each partition's rows then a view of
    its batch: passes take the batches as they are), ``transform`` applied to every batch."""
    assert data.held is not None
    held: list[Rows] = list(data.held)
    owned = data.owned
    joined: dict[tuple[int, ...], Rows] = {}
    for members, rows in _batches(data, range(len(data.partitions)), FIELDS):
        if len(members) > 1 and not (data.joined and tuple(members) in data.joined):  # concatenated just now
            owned += sum(int(v.nbytes) for v in rows.arrays().values())
        try:
            parts = [(members, rows if transform is None else transform(rows))]
        except InputError:
            parts = [([i], transform(held[i])) for i in members] if transform is not None else []
        for group, new in parts:
            owned += sum(int(v.nbytes) for f, v in new.arrays().items() if getattr(rows, f) is not v)
            if len(group) > 1:
                joined[tuple(group)] = new
            _cut(new, held, group)
    return TaskData(data.partitions, [{} for _ in data.partitions], held, None, owned, joined or None)


def _cut(rows: Rows, held: list[Rows], group: list[int]) -> None:
    """Set ``held[i]`` for each ``i`` of ``group`` to its part of ``rows`` (views; each part keeps its position)."""
    if len(group) == 1:
        (i,) = group
        held[i] = dataclasses.replace(rows, partition=held[i].partition, row_start=held[i].row_start, segments=None)
        return
    arrays = rows.arrays()
    start = 0
    for i in group:
        stop = start + held[i].n_rows
        parts = {name: value[start:stop] for name, value in arrays.items()}
        held[i] = Rows(**parts, partition=held[i].partition, row_start=held[i].row_start)
        start = stop


def _produced(
    data: TaskData, parts: range, fields: Sequence[str], counter: list[int] | None, clip: Clip = None
) -> Iterator[tuple[int, Rows]]:
    """Each partition's rows in row order (the first from row ``clip[0]``, the last to row ``clip[1]``). While one
    partition is evaluated, the next lazy one is read in a background thread (reading and decoding release the GIL,
    as does the arithmetic), so a streamed pass takes about ``max(read, compute)`` instead of their sum; at most two
    partitions' blocks are held at once."""
    if clip is not None and clip != (0, None):
        for i, rows in _produced(data, parts, fields, counter):
            lo = clip[0] if i == parts[0] else 0
            hi = clip[1] if i == parts[-1] and clip[1] is not None else rows.n_rows
            yield i, rows if (lo, hi) == (0, rows.n_rows) else rows.slice(lo, hi)
        return
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


def _count(counter: list[int] | None, nbytes: int, partitions: int = 1) -> None:
    if counter is not None:
        counter[0] += partitions
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
    data: TaskData,
    parts: range,
    fields: Sequence[str],
    counter: list[int] | None = None,
    batch: bool | str = True,
    clip: Clip = None,
) -> Iterator[tuple[list[int], Rows]]:
    """The task's partitions in row order, small ones concatenated up to :data:`BATCH_ROWS` rows (``batch``: the
    kernel's: ``False`` each alone, ``"contiguous"`` only partitions that follow each other in the data)."""
    pending: list[tuple[int, Rows]] = []
    rows = 0
    whole = len(parts) == len(data.partitions) and clip in (None, (0, None))
    if data.joined and batch is True and whole:  # the batches made when transformed
        yield from _joined(data, counter)
        return
    for i, block in _produced(data, parts, fields, counter, clip):
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


def _joined(data: TaskData, counter: list[int] | None) -> Iterator[tuple[list[int], Rows]]:
    """A held task's partitions as batched when they were transformed (the rest one by one)."""
    assert data.held is not None and data.joined is not None
    first = {members[0]: (list(members), rows) for members, rows in data.joined.items()}
    i = 0
    while i < len(data.partitions):
        members, rows = first.get(i, ([i], data.held[i]))
        _count(counter, 0, len(members))
        yield members, rows
        i += len(members)


def _join(items: list[tuple[int, Rows]]) -> tuple[list[int], Rows]:
    return [i for i, _ in items], Rows.concat([r for _, r in items])


@old_objects_frozen()
def run_task(
    data: TaskData,
    kernel: Kernel[Any],
    start: int = 0,
    stop: int | None = None,
    progress_key: str | None = None,
    clip: Clip = None,
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
    clip : (int, int or None), optional
        Only rows ``clip[0]`` onwards of the first partition and up to ``clip[1]`` of the last (a piece of the
        engine's ``map``).

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
    for indices, rows in _batches(data, parts, kernel.reads, _counter(progress_key), batch, clip):
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
