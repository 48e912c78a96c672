"""The one pass engine: every pass over the data, whatever its kernel, runs here.

A pass is a kernel (:mod:`dmlr.passes.kernel`) run over every partition with one task per worker thread; the records
of a task's partitions are added in the task, then per worker (one combining task on that worker, no transfer),
then up a tree of fan-in ``split_every`` to the driver. Per pass the scheduler sees about ``threads + workers`` tasks
and the bytes leaving the workers are about ``workers x record``, whatever the partition count. The tasks' data
(:class:`~dmlr.passes.task.TaskData`) are made once per engine by one task each, whose inputs are the task's
persisted blocks and the culled graph of its lazy ones, so dask keeps its guarantees: a lost worker's blocks are
recomputed from the store or the graph (or shipped again by ``reship`` for in-memory input), and the task's data
are rebuilt where they land.

Every pass gets the same handling: the memory check before the first pass of a kernel that needs more than any
before, a bad value's partition and row named by the kernel, a partition that kills its worker named
(:mod:`dmlr.passes.faults`), progress of long passes that read, recovery from lost workers, a pass
that stalls on paused workers ended with a :class:`~dmlr.errors.WorkerMemoryError`, and a check that every row was
counted exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
from threadpoolctl import threadpool_limits

from dmlr import interrupt
from dmlr.errors import ClusterError, DmlrError, WorkerMemoryError
from dmlr.passes import faults, progress
from dmlr.passes.kernel import Counted, Kernel, record_size
from dmlr.passes.memory import (
    PROCESS_BASELINE,
    WorkingSet,
    bytes_sent,
    check_workers,
    old_objects_frozen,
    trim_and_measure,
)
from dmlr.passes.plan import Piece, TaskPlan, data_graph, pieces, plan_tasks
from dmlr.passes.progress import PassProgress
from dmlr.passes.scheduler import keep_tasks_in_place, where_function
from dmlr.passes.task import (
    BATCH_ROWS,
    BlocksMoved,
    LocalBlocks,
    RowsTransform,
    derive_task_data,
    make_located_task_data,
    make_task_data,
    pass_progress,
    run_task,
)

if TYPE_CHECKING:
    from dmlr.data.design import RowData

__all__ = ["PassEngine", "worker_bytes_sent"]

logger = logging.getLogger("dmlr")

KERNEL_INLINE_BYTES = 64 * 1024
"""Kernels (their coefficients, a covariance) larger than this pickled are scattered once per pass and fetched by
the workers, not copied into every task's arguments."""

LARGE_RECORD_BYTES = 64 * 2**20
"""Records larger than this are summed down to one on the workers before the driver fetches it."""

MEMORY_ADVICE = (
    "Give workers more memory (--memory-limit / memory_limit=), fewer threads per worker, or stage the data in "
    "smaller chunks (dmlr stage --chunk-rows, dmlr.stage_arrays(chunk_rows=)). The formula: 'Worker memory' in "
    "docs/user-guide/memory.md."
)


def _lost_data_errors() -> tuple[type[BaseException], ...]:
    from distributed.client import FutureCancelledError, FuturesCancelledError

    return (FutureCancelledError, FuturesCancelledError)


def worker_bytes_sent(client: Any) -> int:
    """Bytes all workers have sent so far, to peers and to clients (distributed's own transfer accounting)."""
    return sum(client.run(bytes_sent).values())


@dataclass
class PassEngine:
    """Runs passes of any kernel over row-aligned data.

    Parameters
    ----------
    data : RowData
        The named row-aligned dask arrays (persisted, shipped, or lazy: read from a store on every pass).
    client : distributed.Client, optional
        Runs the passes; ``None`` uses local threads (one task per core, BLAS limited to one thread each).
    split_every : int
        Fan-in of the reduction across workers.
    hold : bool
        Produce every partition once, when the tasks' data are made, and keep it on the workers (``persist``);
        otherwise streamed partitions are produced on every pass.
    transform : RowsTransform, optional
        Applied to every partition's rows as they are produced (label encoding).
    reship : callable, optional
        Ships in-memory input again when workers holding it died; returns the new data.
    max_reships : int
        How many times a pass may ship the input again before giving up.
    stall_seconds : float
        A pass during which some worker stays paused by distributed's memory monitor this long, executing nothing
        while tasks of the pass are unfinished, fails with :class:`~dmlr.errors.WorkerMemoryError`.

    Attributes
    ----------
    count : int
        Passes made so far.
    seconds : float
        Wall time spent in passes.
    plans : list of TaskPlan
        How the partitions are split into tasks.
    """

    data: RowData
    client: Any = None
    split_every: int = 8
    hold: bool = False
    transform: RowsTransform | None = None
    reship: Callable[[], RowData] | None = None
    max_reships: int = 3
    stall_seconds: float = 30.0
    count: int = 0
    seconds: float = 0.0
    plans: list[TaskPlan] = field(default_factory=list, repr=False)
    _data: list[Any] = field(default_factory=list, repr=False)
    _checked_bytes: int = field(default=-1, repr=False)
    _holders: dict[Any, str] = field(default_factory=dict, repr=False)
    _tracked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._set_data(self.data)

    # -- set-up, once per engine (and again after the input is shipped anew) -----------------------------------

    @old_objects_frozen()
    def _set_data(self, data: RowData) -> None:
        self.data = data
        self._checked_bytes = -1
        if self.client is None:
            self.plans = plan_tasks(data, os.cpu_count() or 1)
            self._data = [make_task_data(p, None, self.hold, self.transform) for p in self.plans]
            return
        workers = self._workers()
        threads = {w: int(info.get("nthreads") or 1) for w, info in workers.items()}
        keep_tasks_in_place(self.client)
        graph = data_graph(data)
        located = self._located(graph)
        self.plans = plan_tasks(data, threads, located, graph)
        token = uuid.uuid4().hex[:12]
        self._data = [self._make_data(p, f"dmlr-data-{token}-{i}", located) for i, p in enumerate(self.plans)]
        # A task's data go where its persisted blocks are; a pass task goes where its task's data are (a loose
        # restriction: any worker once that one is gone), a per-worker sum where its inputs are.
        self._holders = {}
        logger.debug("%d partitions in %d tasks on %d workers", data.n_partitions, len(self.plans), len(workers))

    def _make_data(self, plan: TaskPlan, key: str, located: dict[Hashable, str]) -> Any:
        """The future of one task's data, made on the worker holding its persisted blocks.

        The blocks that worker holds are read from its memory by key, not passed as the task's inputs: the
        scheduler's bookkeeping costs tens of microseconds per input, which ten thousand partitions would pay on
        every engine's set-up. Blocks held elsewhere (or all, once a block was not where the scheduler said: see
        :class:`~dmlr.passes.task.BlocksMoved`) are the task's inputs, so dask fetches them.
        """
        bare, leaves = plan.bare()
        home = plan.worker
        local = [] if home is None or self._tracked else [f.key for f in leaves if located.get(f.key) == home]
        if not local:
            return self.client.submit(make_task_data, bare, leaves, self.hold, self.transform, key=key, pure=False)
        here = set(local)
        inputs = [f for f in leaves if f.key not in here]
        return self.client.submit(
            make_located_task_data, bare, LocalBlocks(local), inputs, self.hold, self.transform,
            key=key, pure=False, workers=[home], allow_other_workers=True,
        )  # fmt: skip

    def derive(self, transform: RowsTransform) -> None:
        """Apply ``transform`` to every partition from now on (held partitions are transformed once, by one task
        per task's data)."""
        self.transform = transform
        if self.client is None:
            self._data = [derive_task_data(d, transform) for d in self._data]
            return
        token = uuid.uuid4().hex[:12]
        self._data = [
            self.client.submit(derive_task_data, d, transform, key=f"dmlr-derive-{token}-{i}", pure=False)
            for i, d in enumerate(self._data)
        ]
        self._holders = {}

    def _workers(self, wait: float = 60.0) -> dict[str, Any]:
        """The scheduler's view of the workers, waiting up to ``wait`` seconds for at least one."""
        deadline = time.monotonic() + wait
        while True:
            workers = dict(self.client.scheduler_info(n_workers=-1)["workers"])
            if workers:
                return workers
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster has no workers (waited {wait:.0f} s for one)")
            time.sleep(0.5)

    def _located(self, graph: dict[Hashable, Any]) -> dict[Hashable, str]:
        """Worker holding each persisted block of the data's ``graph`` (one scheduler call for all)."""
        from distributed import Future, wait

        persisted = [v for v in graph.values() if isinstance(v, Future)]
        if not persisted:
            return {}
        if not all(f.status == "finished" for f in persisted):
            try:
                with self.client.as_current():
                    wait(persisted)  # where a block lives is known once it is computed (persisting is asynchronous)
            except Exception:  # lost or failed blocks: placement is only a hint, and the pass reports the error
                pass
        keys = [f.key for f in persisted]
        try:  # grouped on the scheduler: who_has would send a list of addresses for every key back
            addresses, where = self.client.run_on_scheduler(where_function(keys))
        except Exception:  # a scheduler that runs no functions sent to it: ask it the standard way
            try:
                who = self.client.who_has(persisted)
            except _lost_data_errors():  # lost blocks: no placement (the pass reports them)
                return {}
            return {k: sorted(ws)[0] for k, ws in who.items() if ws}
        return {k: addresses[i] for k, i in zip(keys, where, strict=True) if i >= 0}

    @property
    def streamed(self) -> bool:
        """Whether a pass produces (some of) the blocks anew: read from a store or computed from a graph."""
        return not self.hold and any(p.streams for p in self.plans)

    @property
    def largest_task_rows(self) -> int:
        """Rows of the largest task (the pass ends with it)."""
        return max(p.rows for p in self.plans)

    def working_set(self, kernel: Kernel[Any]) -> WorkingSet:
        """Estimated peak memory of one task of a pass of ``kernel``: a partition (two when streamed: the next is
        read meanwhile, each alive about three times while decoded) and the kernel's temporaries and records."""
        chunks = [int(c) for c in self.data.row_chunks if c == c]
        rows = max(max(chunks, default=BATCH_ROWS), min(BATCH_ROWS, sum(chunks) or BATCH_ROWS))
        blocks = rows * self.data.row_bytes(kernel.reads)
        return WorkingSet.of(blocks, kernel.memory(rows, self.data.n_features), streamed=self.streamed)

    def fits_memory(self, kernel: Kernel[Any]) -> bool:
        """Whether a pass of ``kernel`` fits every worker by the scheduler's last readings (no check raised)."""
        if self.client is None:
            return True
        pause = dask.config.get("distributed.worker.memory.pause", 0.8)
        try:
            check_workers(self._workers(), self.working_set(kernel), pause_fraction=pause, advice="")
        except WorkerMemoryError:
            return False
        return True

    def _check_memory(self, kernel: Kernel[Any]) -> None:
        need = self.working_set(kernel)
        if self.client is None or need.total <= self._checked_bytes:
            return
        workers = self._workers()
        pause = dask.config.get("distributed.worker.memory.pause", 0.8)
        if any(info.get("memory_limit") for info in workers.values()):
            try:  # the scheduler's last reading, with room to spare: no need to ask the workers
                check_workers(workers, WorkingSet(2 * need.blocks, 2 * need.kernel), pause_fraction=pause, advice="")
            except WorkerMemoryError:
                # close: freed heap left by earlier work is not in use, so return it, then read each worker's
                # resident size (a worker lost meanwhile answers with its error: left out; the pass recovers)
                resident = self.client.run(trim_and_measure, on_error="return")
                for address, rss in resident.items():
                    if address in workers and isinstance(rss, int):
                        workers[address] = {**workers[address], "metrics": {"memory": rss}}
                check_workers(workers, need, pause_fraction=pause, advice=MEMORY_ADVICE)
        self._checked_bytes = need.total

    # -- one pass ---------------------------------------------------------------------------------------------

    def reduce(self, kernel: Kernel[Any]) -> Any:
        """One pass of ``kernel`` over every partition, its records added into one.

        Raises
        ------
        DmlrError
            If the reduction did not count every row exactly once.
        ClusterError
            Workers lost the input too often, a partition keeps killing its worker, or (``WorkerMemoryError``) a
            worker is too small for a task of the pass.
        JobInterrupted
            If SIGTERM arrived under :func:`dmlr.interrupt.terminate_gracefully` (checked before the pass).
        """
        interrupt.check()
        start = time.perf_counter()
        if self.client is None:
            result = self._local(kernel)
        else:
            with old_objects_frozen():
                result = self._retrying(lambda: self._submit(kernel))
        self.seconds += time.perf_counter() - start
        self.count += 1
        self._check_counts(result)
        return result.record

    def map(self, kernel: Kernel[Any], max_rows: int | None = None) -> list[Any]:
        """One pass of ``kernel``, not reduced: one record per piece (at most ``max_rows`` rows of a task, partitions
        cut where a piece ends: :func:`~dmlr.passes.plan.pieces`), as futures on a cluster (for an exchange between
        workers) or records locally. The pieces depend on the data's size, not on its partitioning."""
        interrupt.check()
        runs = [(i, piece) for i, plan in enumerate(self.plans) for piece in pieces(plan, max_rows)]
        if self.client is None:
            return [_record_of(self._data[i], kernel, piece) for i, piece in runs]
        self._check_memory(kernel)
        token = uuid.uuid4().hex[:12]
        arg = self._kernel_arg(kernel)
        return [
            self.client.submit(_record_of, self._data[i], arg, piece, key=f"dmlr-piece-{token}-{j}", pure=False)
            for j, (i, piece) in enumerate(runs)
        ]

    def _check_counts(self, result: Counted) -> None:
        expected = self.data.n_rows
        if result.n_partitions != self.data.n_partitions or (expected >= 0 and result.n_rows != expected):
            raise DmlrError(
                f"the reduction counted {result.n_rows} rows in {result.n_partitions} partitions but the data has "
                f"{expected} in {self.data.n_partitions}: a partition was lost or counted twice"
            )

    def _local(self, kernel: Kernel[Any]) -> Counted:
        if len(self._data) == 1:
            result: Counted = run_task(self._data[0], kernel)
            return result
        # Parallel tasks each get one BLAS thread; the tasks themselves fill the cores.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(len(self._data)) as pool:
            return Counted.sum(list(pool.map(lambda data: run_task(data, kernel), self._data)))

    def _retrying(self, attempt: Callable[[], Counted]) -> Counted:
        reships = 0
        rebuild = False
        while True:
            try:
                if rebuild:
                    rebuild = False
                    self._set_data(self.data)
                return attempt()
            except _lost_data_errors() as exc:
                # Worker processes died holding the in-memory input shipped to them: ship it again and redo the
                # pass (data read from a store or a graph is recomputed by dask itself and never lands here).
                if self.reship is None or reships == self.max_reships:
                    raise ClusterError(
                        f"a pass failed {reships + 1} time(s) because workers holding the input died: {exc}"
                    ) from exc
                reships += 1
                logger.warning("workers lost the shipped input (%s); shipping it again", exc)
                self._set_data(self.reship())
            except BlocksMoved:
                if self._tracked:
                    raise
                # a block was not on the worker the scheduler named (moved, or lost with its worker): make the
                # tasks' data again with every block as an input, which dask fetches or recomputes
                logger.info("a persisted block moved; the tasks' data take their blocks as inputs from now on")
                self._tracked = rebuild = True
            except faults.killed_worker_errors() as exc:
                raise ClusterError(faults.describe_killed(self, exc)) from exc

    def _kernel_arg(self, kernel: Kernel[Any]) -> Any:
        if len(pickle.dumps(kernel, protocol=5)) > KERNEL_INLINE_BYTES:
            return self.client.scatter(kernel, hash=False)
        return kernel

    def _submit(self, kernel: Kernel[Any]) -> Counted:
        self._check_memory(kernel)
        client = self.client
        token = uuid.uuid4().hex[:12]
        arg = self._kernel_arg(kernel)
        per_worker: dict[str | None, list[Any]] = {}
        for i, (plan, data) in enumerate(zip(self.plans, self._data, strict=True)):
            holder = self._holders.get(data.key)
            # where the task's data are, loosely (any worker when that one is gone): the data's sizeof counts only
            # what it owns, so the scheduler would take the task for cheap to run elsewhere, and move every block
            place: dict[str, Any] = {} if holder is None else {"workers": [holder], "allow_other_workers": True}
            future = client.submit(
                run_task, data, arg, progress_key=token, key=f"dmlr-pass-{token}-{i}", pure=False, **place
            )
            per_worker.setdefault(holder or plan.worker, []).append(future)
        # add the records of one worker's tasks on that worker, then up a tree across workers
        level = []
        for j, (_, futures) in enumerate(sorted(per_worker.items(), key=lambda kv: str(kv[0]))):
            if len(futures) == 1:
                level.append(futures[0])
                continue
            level.append(client.submit(Counted.sum, futures, key=f"dmlr-combine-{token}-w{j}", pure=False))
        # The driver adds at most split_every records; large records (the information at (K - 1) d in the thousands
        # is hundreds of MB) are reduced to one on the workers, so the driver holds one such matrix.
        keep = 1 if self.record_bytes(kernel) > LARGE_RECORD_BYTES else self.split_every
        depth = 0
        while len(level) > keep:
            depth += 1
            level = [
                client.submit(Counted.sum, level[i : i + self.split_every], key=f"dmlr-combine-{token}-{depth}-{i}")
                for i in range(0, len(level), self.split_every)
            ]
        records = self._gather(level, token)
        if not self._holders:  # where the tasks' data landed: the per-worker sums of later passes follow it
            self._holders = {k: sorted(ws)[0] for k, ws in client.who_has(self._data).items() if ws}
        return records[0] if len(records) == 1 else Counted.sum(records)

    def record_bytes(self, kernel: Kernel[Any]) -> int:
        """Bytes of one record of ``kernel`` (``kernel.record_bytes`` when it says, else small)."""
        return record_size(kernel) or 0

    def _gather(self, futures: list[Any], token: str) -> list[Counted]:
        """Wait for the pass, failing instead of waiting forever when a worker stays paused for lack of memory;
        a long pass that reads shows its progress (:mod:`dmlr.passes.progress`)."""
        from distributed import wait

        paused_since: float | None = None
        reads = self.streamed or (self.count == 0 and any(p.streams for p in self.plans))  # held: the first reads
        shown = PassProgress(self.count + 1, self.data.n_partitions) if reads and progress.wanted() else None
        checked = time.monotonic()
        try:
            while True:
                try:
                    with self.client.as_current():  # the pass's client, not whichever is the default
                        wait(futures, timeout=5.0 if shown is None else 0.5)
                    break
                except TimeoutError:
                    if shown is not None:
                        with contextlib.suppress(Exception):  # a worker lost meanwhile: the pass itself reports it
                            counts = self.client.run(pass_progress, token).values()
                            shown.update(sum(c[0] for c in counts), sum(c[1] for c in counts))
                        if time.monotonic() - checked < 5.0:
                            continue
                        checked = time.monotonic()
                    paused = self._stalled_workers()
                    if not paused:
                        paused_since = None
                        continue
                    now = time.monotonic()
                    paused_since = paused_since or now
                    if now - paused_since >= self.stall_seconds:
                        self.client.cancel(futures)
                        raise WorkerMemoryError(self._stall_message(paused, now - paused_since)) from None
        finally:
            if shown is not None:
                shown.close()
        return list(self.client.gather(futures))

    def _stalled_workers(self) -> list[str]:
        """Workers paused by the memory monitor that execute nothing (a paused worker finishes what it runs)."""
        paused = sorted(w for w, i in self._workers().items() if i.get("status") == "paused")
        if not paused:
            return []
        try:
            counts = self.client.run(_executing, workers=paused)
        except Exception:  # a worker that left meanwhile: look again at the next poll
            return []
        return [w for w in paused if counts.get(w, 0) == 0]

    def _stall_message(self, paused: list[str], seconds: float) -> str:
        workers = self._workers()
        limits = ", ".join(f"{w} limit {(workers.get(w, {}).get('memory_limit') or 0) / 2**20:.0f} MiB" for w in paused)
        need = f"{self._checked_bytes / 2**20:.0f} MiB"
        return (
            f"the pass made no progress for {seconds:.0f} s because distributed paused worker(s) for lack of memory "
            f"({limits}); a task of this pass needs about {need}, plus the worker's own "
            f"~{PROCESS_BASELINE / 2**20:.0f} MiB. {MEMORY_ADVICE}"
        )


def _executing(dask_worker: Any) -> int:
    return int(dask_worker.state.executing_count)


def _record_of(data: Any, kernel: Kernel[Any], piece: Piece) -> Any:
    return run_task(data, kernel, piece.start, piece.stop, clip=(piece.first, piece.last)).record
