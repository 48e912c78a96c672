"""One data pass: a task per group of partitions, records added on each worker, then up a tree to the driver.

Per pass the scheduler sees one task per worker thread plus one combining task per worker with several threads
(and a tree of fan-in ``split_every`` above that when there are more than ``split_every`` workers): its cost does not
grow with the number of partitions, and the bytes leaving the workers are about ``workers x record``. The groups
(:mod:`dmlr.passes.plan`) are made once per fit; each becomes a :class:`~dmlr.passes.group.GroupData` future on
its worker, built by a task whose inputs are the group's persisted blocks and the culled graph of its lazy ones, so
dask keeps its guarantees: a lost worker's blocks are recomputed from the store or the graph (or shipped again by
``reship`` for in-memory input), and the group's data are rebuilt where they land.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from dmlr import interrupt
from dmlr.data.design import Design
from dmlr.errors import ClusterError, DmlrError, WorkerMemoryError
from dmlr.oracle.kernels import DEFAULT_BLOCK_BYTES
from dmlr.oracle.statistics import Request, Statistics
from dmlr.passes import progress
from dmlr.passes.group import BATCH_ROWS, evaluate_group, make_group_data, pass_progress
from dmlr.passes.memory import (
    PROCESS_BASELINE,
    WorkingSet,
    bytes_sent,
    check_workers,
    task_working_set,
    trim_and_measure,
)
from dmlr.passes.plan import GroupPlan, plan_groups
from dmlr.passes.progress import PassProgress

__all__ = ["DataPasses", "worker_bytes_sent"]

logger = logging.getLogger("dmlr")

COEF_INLINE_BYTES = 64 * 1024
"""Coefficients larger than this are scattered once per pass and fetched by the workers, not copied into every
task's arguments."""

LARGE_RECORD_BYTES = 64 * 2**20
"""Records larger than this are summed down to one on the workers before the driver fetches it."""

MEMORY_ADVICE = (
    "Give workers more memory (--memory-limit / memory_limit=), fewer threads per worker, or stage the data in "
    "smaller chunks (dmlr stage --chunk-rows, dmlr.stage_arrays(chunk_rows=)). README 'Worker memory' has the formula."
)


def _lost_data_errors() -> tuple[type[BaseException], ...]:
    from distributed.client import FutureCancelledError, FuturesCancelledError

    return (FutureCancelledError, FuturesCancelledError)


def _killed_worker_error() -> tuple[type[BaseException], ...]:
    from distributed.scheduler import KilledWorker

    return (KilledWorker,)


def _scale_sampled_information(result: Statistics, request: Request) -> None:
    """Scale an information computed on a sample of the rows up to all rows (in place); check an exact one covered
    every row."""
    covered, total = result.information_weight, result.weight_sum
    if result.information is None or (covered <= 0.0 and total > 0.0):
        raise DmlrError("the pass computed no information: no row was in its sample")
    if request.information_every > 1:
        if covered < total:
            result.information *= total / covered
    elif not result.information_exact:
        raise DmlrError(f"the information covers weight {covered} of {total}: a partition did not compute it")


def worker_bytes_sent(client: Any) -> int:
    """Bytes all workers have sent so far, to peers and to clients (distributed's own transfer accounting)."""

    return sum(client.run(bytes_sent).values())


@dataclass
class DataPasses:
    """Evaluates the statistics of a design at given coefficients, one full data pass per call.

    Parameters
    ----------
    design : Design
        The data (persisted, shipped, or lazy: read from a store on every pass).
    client : distributed.Client, optional
        Runs the passes; ``None`` uses local threads (one group per core, BLAS limited to one thread each).
    split_every : int
        Fan-in of the reduction across workers.
    reship : callable, optional
        Ships in-memory input again when workers holding it died; returns the new design.
    max_reships : int
        How many times a pass may ship the input again before giving up.
    stall_seconds : float
        A pass during which some worker stays paused by distributed's memory monitor this long, executing nothing
        while tasks of the pass are unfinished, fails with :class:`~dmlr.errors.WorkerMemoryError` instead of
        waiting forever.
    source : Design, optional
        The design before it was persisted: when a task making an input partition is reported as killing its
        worker, partitions are recomputed from it alone (graph cloned, fresh keys) to confirm which one does
        (a task queued beside the culprit on the dying worker is counted too and may be named first).

    Attributes
    ----------
    count : int
        Number of passes made so far.
    seconds : float
        Wall time spent in passes.
    groups : list of GroupPlan
        How the partitions are split into tasks.
    """

    design: Design
    client: Any = None
    split_every: int = 8
    reship: Callable[[], Design] | None = None
    max_reships: int = 3
    stall_seconds: float = 30.0
    count: int = 0
    seconds: float = 0.0
    block_bytes: int = DEFAULT_BLOCK_BYTES
    source: Design | None = field(default=None, repr=False)
    groups: list[GroupPlan] = field(default_factory=list, repr=False)
    _data: list[Any] = field(default_factory=list, repr=False)
    _checked: set[bool] = field(default_factory=set, repr=False)
    _holders: dict[Any, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._set_design(self.design)

    # -- set-up, once per fit (and again after the input is shipped anew) -------------------------------------

    def _set_design(self, design: Design) -> None:
        self.design = design
        self._checked = set()
        if self.client is None:
            self.groups = plan_groups(design, os.cpu_count() or 1)
            self._data = [make_group_data(g) for g in self.groups]
            return
        workers = self._workers()
        threads = {w: int(info.get("nthreads") or 1) for w, info in workers.items()}
        self.groups = plan_groups(design, threads, self._homes())
        token = uuid.uuid4().hex[:12]
        self._data = [
            self.client.submit(
                make_group_data,
                GroupPlan(g.partitions, g.graph, {}, g.worker),
                g.leaves,
                key=f"dmlr-group-{token}-{i}",
                pure=False,
            )
            for i, g in enumerate(self.groups)
        ]
        # No worker restrictions anywhere: a group's data go where its persisted blocks are (dask places a task
        # with its dependencies), a pass task where its group's data are, a per-worker sum where its inputs are.
        # (A task restricted to a worker, even loosely, is never rescheduled once every worker it named has died.)
        self._holders = {}
        logger.debug("%d partitions in %d groups on %d workers", design.n_partitions, len(self.groups), len(workers))

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

    def _homes(self) -> dict[Hashable, str]:
        """Worker holding each persisted block of ``x``."""
        from distributed import Future

        graph = self.design.x.__dask_graph__()
        keys: list[Any] = [k[0] if isinstance(k, list) else k for k in self.design.x.__dask_keys__()]
        persisted = [f for f in (graph.get(k) for k in keys) if isinstance(f, Future)]
        if not persisted:
            return {}
        from distributed import wait

        try:
            with self.client.as_current():
                wait(persisted)  # where a block lives is known once it is computed (persisting is asynchronous)
        except Exception:  # lost or failed blocks: placement is only a hint, and the pass reports the error
            pass
        who = self.client.who_has(persisted)
        return {k: sorted(ws)[0] for k, ws in who.items() if ws}

    @property
    def streamed(self) -> bool:
        """Whether a pass produces (some of) the blocks anew: read from a store or computed from a graph."""
        return any(g.streams for g in self.groups)

    def working_set(self, information: bool) -> WorkingSet:
        """Estimated peak memory of one task of a pass (see :func:`dmlr.passes.memory.task_working_set`)."""
        design = self.design
        rows = max(max(design.x.chunks[0]), min(BATCH_ROWS, design.n_rows))
        lazy = self.streamed
        return task_working_set(
            rows, design.x.shape[1], design.n_nonbase, information=information, lazy=lazy,
            weights=design.weights is not None, offset=design.offset is not None, block_bytes=self.block_bytes,
        )  # fmt: skip

    def _check_memory(self, information: bool) -> None:
        if self.client is None or information in self._checked:
            return
        workers = self._workers()
        if any(info.get("memory_limit") for info in workers.values()):
            # freed heap left by earlier work is not in use: return it, then read each worker's resident size
            # a worker lost meanwhile answers with its error: it is left out here, and the pass itself recovers
            resident = self.client.run(trim_and_measure, on_error="return")
            for address, rss in resident.items():
                if address in workers and isinstance(rss, int):
                    workers[address] = {**workers[address], "metrics": {"memory": rss}}
            pause = dask.config.get("distributed.worker.memory.pause", 0.8)
            check_workers(workers, self.working_set(information), pause_fraction=pause, advice=MEMORY_ADVICE)
        self._checked.add(information)

    def without_columns(self, columns: list[int]) -> DataPasses:
        """Passes over the same data without some model columns (indices into ``design.model_names``); the pass
        count continues, and input shipped again after a loss loses the same columns."""
        reship = self.reship

        def again() -> Design:
            assert reship is not None
            return reship().without_columns(columns)

        out = DataPasses(
            self.design.without_columns(columns), self.client, self.split_every, again if reship else None,
            self.max_reships, self.stall_seconds, block_bytes=self.block_bytes,
            source=None if self.source is None else self.source.without_columns(columns),
        )  # fmt: skip
        out.count, out.seconds = self.count, self.seconds
        return out

    # -- one pass ---------------------------------------------------------------------------------------------

    def __call__(self, coef: NDArray[np.float64], request: Request, *, intercept_only: bool = False) -> Statistics:
        """One pass over the data at ``coef``.

        Parameters
        ----------
        coef : ndarray, shape (d, m)
            Coefficients (``(1, m)`` when ``intercept_only``).
        request : Request
            Second-order statistics to compute besides log-likelihood and score.
        intercept_only : bool
            Evaluate the intercept-only model (features ignored), for the null log-likelihood with an offset.

        Returns
        -------
        Statistics
            The reduced record.

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
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        start = time.perf_counter()
        args = (self.design.intercept, request, intercept_only, self.block_bytes)
        if self.client is None:
            result = self._local_pass(coef, args)
        else:
            result = self._cluster_pass(coef, args, request.information)
        self.seconds += time.perf_counter() - start
        self.count += 1
        if result.n_rows != self.design.n_rows:
            raise DmlrError(
                f"the reduction counted {result.n_rows} rows but the data has {self.design.n_rows}: "
                "a partition was lost or counted twice"
            )
        if request.information:
            _scale_sampled_information(result, request)
        return result

    def _local_pass(self, coef: NDArray[np.float64], args: tuple[Any, ...]) -> Statistics:
        if len(self._data) == 1:
            return evaluate_group(self._data[0], coef, *args)
        # Parallel tasks each get one BLAS thread; the tasks themselves fill the cores.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(len(self._data)) as pool:
            records = list(pool.map(lambda data: evaluate_group(data, coef, *args), self._data))
        return Statistics.sum(records)

    def _cluster_pass(self, coef: NDArray[np.float64], args: tuple[Any, ...], information: bool) -> Statistics:
        self._check_memory(information)
        for attempt in range(self.max_reships + 1):
            try:
                return self._submit_and_gather(coef, args)
            except _lost_data_errors() as exc:
                # Worker processes died holding the in-memory input shipped to them: ship it again and redo the
                # pass (data read from a store or a graph is recomputed by dask itself and never lands here).
                if self.reship is None or attempt == self.max_reships:
                    raise ClusterError(
                        f"a pass failed {attempt + 1} time(s) because workers holding the input died: {exc}"
                    ) from exc
                logger.warning("workers lost the shipped input (%s); shipping it again", exc)
                self._set_design(self.reship())
            except _killed_worker_error() as exc:
                raise ClusterError(self._describe_killed(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _submit_and_gather(self, coef: NDArray[np.float64], args: tuple[Any, ...]) -> Statistics:
        client = self.client
        token = uuid.uuid4().hex[:12]
        coef_arg: Any = coef
        if coef.nbytes > COEF_INLINE_BYTES:
            coef_arg = client.scatter(coef, hash=False)
        per_worker: dict[str | None, list[Any]] = {}
        for i, (plan, data) in enumerate(zip(self.groups, self._data, strict=True)):
            future = client.submit(
                evaluate_group, data, coef_arg, *args, progress_key=token, key=f"dmlr-pass-{token}-{i}", pure=False
            )
            per_worker.setdefault(self._holders.get(data.key, plan.worker), []).append(future)
        # add the records of one worker's tasks on that worker, then up a tree across workers
        level = []
        for j, (_, futures) in enumerate(sorted(per_worker.items(), key=lambda kv: str(kv[0]))):
            if len(futures) == 1:
                level.append(futures[0])
                continue
            level.append(client.submit(Statistics.sum, futures, key=f"dmlr-combine-{token}-w{j}", pure=False))
        # The driver adds at most split_every records; a large record (the information at (K - 1) d in the
        # thousands is hundreds of MB) is reduced to one on the workers, so the driver holds one such matrix.
        keep = 1 if self._record_bytes(args[1]) > LARGE_RECORD_BYTES else self.split_every
        depth = 0
        while len(level) > keep:
            depth += 1
            level = [
                client.submit(Statistics.sum, level[i : i + self.split_every], key=f"dmlr-combine-{token}-{depth}-{i}")
                for i in range(0, len(level), self.split_every)
            ]
        records = self._gather(level, token)
        if not self._holders:  # where the groups' data landed: the per-worker sums of later passes follow it
            self._holders = {k: sorted(ws)[0] for k, ws in client.who_has(self._data).items() if ws}
        return records[0] if len(records) == 1 else Statistics.sum(records)

    def _record_bytes(self, request: Request) -> int:
        md = self.design.n_features * self.design.n_nonbase
        return 8 * md * md if request.information else 8 * md

    def _gather(self, futures: list[Any], token: str) -> list[Statistics]:
        """Wait for the pass, failing instead of waiting forever when a worker stays paused for lack of memory;
        a long streamed pass shows its progress on a terminal."""
        from distributed import wait

        paused_since: float | None = None
        shown = PassProgress(self.count + 1, self.design.n_partitions) if self.streamed and progress.wanted() else None
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

        def executing(dask_worker: Any) -> int:
            return int(dask_worker.state.executing_count)

        try:
            counts = self.client.run(executing, workers=paused)
        except Exception:  # a worker that left meanwhile: look again at the next poll
            return []
        return [w for w in paused if counts.get(w, 0) == 0]

    def _stall_message(self, paused: list[str], seconds: float) -> str:
        workers = self._workers()
        limits = ", ".join(f"{w} limit {(workers.get(w, {}).get('memory_limit') or 0) / 2**20:.0f} MiB" for w in paused)
        need = self.working_set(True).describe()
        return (
            f"the pass made no progress for {seconds:.0f} s because distributed paused worker(s) for lack of memory "
            f"({limits}); a task of this pass needs about {need}, plus the worker's own "
            f"~{PROCESS_BASELINE / 2**20:.0f} MiB. {MEMORY_ADVICE}"
        )

    # -- naming a partition that kills its worker --------------------------------------------------------------

    def _describe_killed(self, exc: BaseException) -> str:
        key = getattr(exc, "task", None)
        failures = getattr(exc, "allowed_failures", "several")
        text = str(key)
        if text.startswith(("dmlr-pass-", "dmlr-group-")):
            index = self._isolate(self.groups[int(text.rsplit("-", 1)[1])])
            if index is not None:
                return self._partition_message(index, failures, key)
            return f"task {key} (a group of partitions) killed its worker {failures} times"
        layers = {str(name) for a in self.design.arrays() for name in a.dask.layers}
        # a task producing row chunk i of the input (reading, decoding, ...): match its layer by containment
        if isinstance(key, tuple) and len(key) > 1 and any(n in str(key[0]) for n in layers):
            return self._partition_message(self._confirm_chunk(int(key[1])), failures, key)
        return f"task {key} killed its worker {failures} times (distributed.scheduler.allowed-failures)"

    def _partition_message(self, index: int, failures: Any, key: Any) -> str:
        bounds = np.cumsum((0, *self.design.x.chunks[0]))
        return (
            f"partition {index} (rows {bounds[index]}-{bounds[index + 1] - 1}) killed the worker running it "
            f"{failures} times (distributed.scheduler.allowed-failures); giving up on it. Task: {key}"
        )

    def _chunk_kills(self, index: int) -> bool:
        """Whether input partition ``index``, recomputed alone from the unpersisted design, kills its worker."""
        from dask.graph_manipulation import clone
        from distributed import wait

        assert self.source is not None
        blocks = clone(*[a.blocks[index] for a in self.source.arrays()])
        futures = self.client.compute(list(blocks))
        with self.client.as_current():
            wait(futures)
        own = {str(k) for b in blocks for k in b.__dask_graph__()}
        tokens = {str(f.key).rsplit("-", 1)[-1] for f in futures}  # the finalize tasks dask adds to compute them
        for future in futures:
            exc = future.exception() if future.status == "error" else None
            if isinstance(exc, _killed_worker_error()):
                task = str(getattr(exc, "task", None) or (exc.args[0] if exc.args else ""))
                if task in own or any(token in task for token in tokens):
                    return True
        return False

    def _confirm_chunk(self, named: int) -> int:
        """The input partition that kills its worker: the named one if it does so alone, else the first other
        one that does (checked one at a time, so no task runs beside another); the named one when unknown."""
        if self.source is None or self.client is None:
            return named
        from distributed import futures_of

        # the fit is failing: stop the persisted input's retries so that no task of it kills workers meanwhile
        self.client.cancel(futures_of(self.design.arrays()))
        if self._chunk_kills(named):
            return named
        for index in range(self.design.n_partitions):
            if index != named and self._chunk_kills(index):
                return index
        return named

    def _isolate(self, group: GroupPlan) -> int | None:
        """Evaluate a failed group's partitions one task each to find the one that kills its worker."""
        from distributed import wait

        token = uuid.uuid4().hex[:12]
        coef = np.zeros((self.design.n_features, self.design.n_nonbase))
        futures = []
        for spec in group.partitions:
            single = GroupPlan([spec], group.graph, {}, None)
            data = self.client.submit(
                make_group_data, single, group.leaves, key=f"dmlr-isolate-data-{token}-{spec.index}"
            )
            futures.append(
                self.client.submit(
                    evaluate_group,
                    data,
                    coef,
                    self.design.intercept,
                    Request(),
                    key=f"dmlr-isolate-{token}-{spec.index}",
                    pure=False,
                )
            )
        with self.client.as_current():
            wait(futures)
        for future in futures:
            if future.status == "error" and isinstance(future.exception(), _killed_worker_error()):
                return int(str(future.key).rsplit("-", 1)[1])
        return None
