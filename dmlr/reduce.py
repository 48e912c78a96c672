"""One data pass: per-partition statistics, tree-reduced to the driver.

This follows the contract of ``dask.array.reduction(chunk, combine, aggregate, split_every)``: every partition
produces one :class:`~dmlr.oracle.statistics.Statistics` record, records are summed ``split_every`` at a time in a
tree, and only the final record (of size ~ ``(m d)^2``) is ever computed onto the driver. Coefficients travel to the
tasks as small literal arguments.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from dask.base import compute
from dask.delayed import Delayed, delayed
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from dmlr import interrupt
from dmlr.data.design import Design
from dmlr.errors import ClusterError, DmlrError
from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.statistics import Request, Statistics

__all__ = ["DataPasses", "tree_reduce"]

T = TypeVar("T")
logger = logging.getLogger("dmlr")


def _lost_data_errors() -> tuple[type[BaseException], ...]:
    from distributed.client import FutureCancelledError

    return (FutureCancelledError,)


def _killed_worker_error() -> tuple[type[BaseException], ...]:
    from distributed.scheduler import KilledWorker

    return (KilledWorker,)


def tree_reduce(
    parts: Sequence[Delayed], combine: Callable[[list[T]], T], split_every: int, *, keep: int = 1
) -> list[Delayed]:
    """Sum delayed records in a tree of fan-in ``split_every`` until at most ``keep`` remain.

    Parameters
    ----------
    parts : sequence of Delayed
        One record per partition (non-empty).
    combine : callable
        Takes a list of records and returns their sum.
    split_every : int
        Fan-in of each combine task (>= 2).
    keep : int
        Stop once this many records (or fewer) are left: the caller gathers and adds them itself, which saves the
        last hop between workers (one worker fetching the others' records before the driver fetches the sum).

    Returns
    -------
    list of Delayed
        The reduced records (one when ``keep`` is 1).
    """
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}")
    level = list(parts)
    if not level:
        raise ValueError("nothing to reduce")
    while len(level) > max(keep, 1):
        level = [delayed(combine, pure=True)(level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level


def _partition_task(
    x: NDArray[np.float64],
    codes: NDArray[np.int32],
    weights: NDArray[np.float64] | None,
    offset: NDArray[np.float64] | None,
    coef: NDArray[np.float64],
    intercept: bool,
    request: Request,
    partition: int,
    row_start: int,
    intercept_only: bool,
) -> Statistics:
    if intercept_only:
        x, intercept = x[:, :0], True
    _tune_worker_allocator()
    return partition_statistics(
        x, codes, weights, offset, coef, intercept=intercept, request=request, partition=partition, row_start=row_start
    )


_ALLOCATOR = {"tuned": False}


def _tune_worker_allocator() -> None:
    """Inside a distributed worker on glibc, let freed kernel temporaries be reused instead of returned to the OS.

    distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at
    128 KiB: every temporary of a pass (several MiB each) is then mmapped, page-faulted and unmapped anew, which
    made a score pass 1.5x slower in a worker than in the driver (measured 29.6 vs 19.9 ms per 100k rows, P1).
    Allocations up to 64 MiB come from the heap, and up to 256 MiB of freed heap is kept by the process
    (distributed reports it as unmanaged memory). Done once per process; elsewhere (the threaded scheduler,
    other libcs) a no-op.
    """
    if _ALLOCATOR["tuned"]:
        return
    _ALLOCATOR["tuned"] = True
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 * 2**20)
    mallopt(m_trim_threshold, 256 * 2**20)


@dataclass
class DataPasses:
    """Evaluates the statistics of a design at given coefficients, one full data pass per call.

    Parameters
    ----------
    design : Design
        The (possibly persisted) data.
    client : distributed.Client, optional
        Runs the passes; ``None`` uses dask's threaded scheduler with BLAS limited to one thread per task.
    split_every : int
        Fan-in of the tree reduction.

    Attributes
    ----------
    count : int
        Number of passes made so far.
    seconds : float
        Wall time spent in passes.
    """

    design: Design
    client: Any = None
    split_every: int = 8
    reship: Callable[[], Design] | None = None
    max_reships: int = 3
    count: int = 0
    seconds: float = 0.0
    _blocks: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._set_design(self.design)

    def _set_design(self, design: Design) -> None:
        self.design = design
        cols = [a.to_delayed().ravel() for a in (design.x, design.codes)]
        n_parts = len(cols[0])
        for extra in (design.weights, design.offset):
            cols.append(extra.to_delayed().ravel() if extra is not None else [None] * n_parts)
        self._blocks = list(zip(*cols, strict=True))

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
        JobInterrupted
            If SIGTERM arrived under :func:`dmlr.interrupt.terminate_gracefully` (checked before the pass).
        """
        interrupt.check()
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        start = time.perf_counter()
        for attempt in range(self.max_reships + 1):
            starts = np.cumsum((0, *self.design.x.chunks[0]))
            parts = [
                delayed(_partition_task, pure=True)(
                    x, c, w, o, coef, self.design.intercept, request, i, int(starts[i]), intercept_only
                )
                for i, (x, c, w, o) in enumerate(self._blocks)
            ]
            # the last level (at most split_every records) is gathered and added on the driver
            top = tree_reduce(parts, Statistics.sum, self.split_every, keep=self.split_every)
            try:
                result: Statistics = self._compute(top)
                break
            except _lost_data_errors() as exc:
                # Worker processes died holding the in-memory input shipped to them: ship it again and redo the
                # pass (data read from a store is recomputed by dask itself and never lands here).
                if self.reship is None or attempt == self.max_reships:
                    raise ClusterError(
                        f"a pass failed {attempt + 1} time(s) because workers holding the input died: {exc}"
                    ) from exc
                logger.warning("workers lost the shipped input (%s); shipping it again", exc)
                self._set_design(self.reship())
            except _killed_worker_error() as exc:
                raise ClusterError(self._describe_killed(exc, parts)) from exc
        self.seconds += time.perf_counter() - start
        self.count += 1
        if result.n_rows != self.design.n_rows:
            raise DmlrError(
                f"the reduction counted {result.n_rows} rows but the data has {self.design.n_rows}: "
                "a partition was lost or counted twice"
            )
        return result

    def _describe_killed(self, exc: BaseException, parts: list[Delayed]) -> str:
        key = getattr(exc, "task", None)
        bounds = np.cumsum((0, *self.design.x.chunks[0]))
        failures = getattr(exc, "allowed_failures", "several")
        index = next((i for i, part in enumerate(parts) if part.key == key), None)
        layers = {str(name) for a in self.design.arrays() for name in a.dask.layers}
        # graph optimization may rename a layer's keys (e.g. "array-" + name): match by containment
        if index is None and isinstance(key, tuple) and len(key) > 1 and any(n in str(key[0]) for n in layers):
            index = int(key[1])  # a task producing row chunk i of the input (reading, decoding, ...)
        if index is not None and index < len(bounds) - 1:
            return (
                f"partition {index} (rows {bounds[index]}-{bounds[index + 1] - 1}) killed the worker running it "
                f"{failures} times (distributed.scheduler.allowed-failures); giving up on it. Task: {key}"
            )
        return f"task {key} killed its worker {failures} times (distributed.scheduler.allowed-failures)"

    def _compute(self, top: list[Delayed]) -> Statistics:
        if self.client is not None:
            records = self.client.gather(self.client.compute(top))
            return Statistics.sum(list(records))
        threads = os.cpu_count() or 1
        if threads > 1:
            # Parallel tasks each get one BLAS thread; the tasks themselves fill the cores.
            with threadpool_limits(limits=1, user_api="blas"):
                out = compute(*top, scheduler="threads", num_workers=threads)
        else:
            out = compute(*top, scheduler="threads")
        return Statistics.sum(list(out))
