"""Memory of a pass on a worker: what one task needs, whether a worker has it, and the allocator setting.

A task of a pass holds one partition's blocks (read and decoded when they come from a store) and its kernel's
row-block temporaries and records (``Kernel.memory``: for the information, the ``((m + 1) d)^2`` products and the
assembled ``(m d)^2`` record). :class:`WorkingSet` adds them up; :func:`check_workers` compares it, times the
worker's threads, with what a worker can use before distributed pauses it, and refuses a pass that could only hang.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dmlr.errors import WorkerMemoryError
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES

__all__ = [
    "WorkingSet",
    "bound_shuffle_buffers",
    "bytes_sent",
    "check_workers",
    "old_objects_frozen",
    "release_freed_memory",
    "trim_and_measure",
    "tune_worker_allocator",
]

MiB = 2**20

PROCESS_BASELINE = 150 * MiB
"""Resident memory of a worker process between passes (Python, NumPy, SciPy, dask.array, distributed, Zarr and
dmlr's worker-side modules imported, the allocator's kept heap; ``benchmarks/README.md`` has the measurement). The
check uses the larger of this and what the scheduler reports."""

LAZY_READ_FACTOR = 4
"""A chunk read from a store is alive about three times at its peak: the compressed bytes, the decoded buffer and
the array handed to the kernel; one more for the partition being evaluated while the next is read
(``dmlr.passes.task`` prefetches one)."""


@dataclass(frozen=True)
class WorkingSet:
    """Estimated peak memory of one task of a pass (bytes), by part.

    Attributes
    ----------
    blocks : int
        The partition blocks the task holds (see :data:`LAZY_READ_FACTOR` for streamed ones).
    kernel : int
        The kernel's row-block temporaries and records (``Kernel.memory``).
    """

    blocks: int
    kernel: int

    @classmethod
    def of(cls, partition_bytes: int, kernel_bytes: int, *, streamed: bool) -> WorkingSet:
        """The working set of a task whose largest partition takes ``partition_bytes`` as arrays."""
        return cls(int(partition_bytes * (LAZY_READ_FACTOR if streamed else 1)), int(kernel_bytes))

    @property
    def total(self) -> int:
        """Sum of the parts."""
        return self.blocks + self.kernel

    def describe(self) -> str:
        """One line for messages."""
        return (
            f"{self.total / MiB:.0f} MiB per task (partition blocks {self.blocks / MiB:.0f} MiB, kernel temporaries "
            f"and records {self.kernel / MiB:.0f} MiB)"
        )


def check_workers(
    workers: Mapping[str, Mapping[str, Any]],
    need: WorkingSet,
    *,
    pause_fraction: float,
    advice: str,
) -> None:
    """Raise when some worker cannot run its tasks of a pass without being paused.

    Parameters
    ----------
    workers : mapping
        ``client.scheduler_info()["workers"]``: per address, ``memory_limit`` (0 = none), ``nthreads`` and
        ``metrics["memory"]`` (current resident bytes; the caller may put a fresher figure there).
    need : WorkingSet
        One task's estimate.
    pause_fraction : float
        ``distributed.worker.memory.pause`` (the fraction of the limit at which a worker stops running tasks);
        false or 0 when pausing is off.
    advice : str
        What the user can change, appended to the message.

    Raises
    ------
    WorkerMemoryError
        Naming the worker, its limit, what it already uses and what the pass needs.
    """
    for address, info in sorted(workers.items()):
        limit = int(info.get("memory_limit") or 0)
        if not limit:
            continue
        usable = limit * (pause_fraction or 1.0)
        in_use = max(int((info.get("metrics") or {}).get("memory") or 0), PROCESS_BASELINE)
        threads = int(info.get("nthreads") or 1)
        required = in_use + threads * need.total
        if required > usable:
            paused_at = (
                f"is paused by distributed at {usable / MiB:.0f} MiB ({pause_fraction:.0%})"
                if pause_fraction
                else "is never paused (distributed.worker.memory.pause is off)"
            )
            raise WorkerMemoryError(
                f"worker {address} has a memory limit of {limit / MiB:.0f} MiB and {paused_at}; "
                f"it already uses {in_use / MiB:.0f} MiB and a pass "
                f"needs {threads} x {need.describe()}, about {required / MiB:.0f} MiB in all. {advice}"
            )


_ALLOCATOR: dict[str, Any] = {"tuned": False}


def tune_worker_allocator() -> None:
    """Inside a distributed worker on glibc, let freed kernel temporaries be reused instead of returned to the OS,
    within a share of the worker's memory limit.

    distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at
    128 KiB: every temporary of a pass (several MiB each) is then mmapped, page-faulted and unmapped anew, which
    slows a pass in a worker against the same pass in the driver. Allocations up to the kernel's block budget come
    from the heap, and freed heap is kept up to 1/16 of the memory limit (at most 256 MiB; 64 MiB without a limit):
    a share, because freed heap counts as the worker's unmanaged memory, on which distributed pauses it. Done once
    per process; elsewhere (dask's threaded scheduler, other libcs) a no-op.
    """
    if _ALLOCATOR["tuned"]:
        return
    _ALLOCATOR["tuned"] = True
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    limit = int(getattr(worker.memory_manager, "memory_limit", 0) or 0)
    keep = min(256 * MiB, limit // 16) if limit else 64 * MiB
    mmap_threshold = min(DEFAULT_BLOCK_BYTES * 2, max(keep, 128 * 1024))
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, int(mmap_threshold))
    mallopt(m_trim_threshold, int(keep))
    _ALLOCATOR["settings"] = {"keep": keep, "mmap_threshold": mmap_threshold}


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_freed_memory(above: float = 0.0) -> bool:
    """Return freed heap to the operating system (glibc ``malloc_trim``) in a distributed worker whose resident
    memory exceeds ``above`` times its memory limit (always when ``above`` is 0).

    Freed memory kept by the allocator counts as the worker's "unmanaged memory", and distributed pauses a worker
    on its resident size: a pass that leaves 100 MiB of freed temporaries in the heap of a 500 MB worker would keep
    it paused. Called when a pass's task ends on a worker above 60% of its limit, and on every worker before a fit's
    memory check. Returns whether it trimmed.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return False
    if above > 0:
        import psutil

        limit = int(getattr(worker.memory_manager, "memory_limit", 0) or 0)
        if not limit or psutil.Process().memory_info().rss <= above * limit:
            return False
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def trim_and_measure() -> int:
    """In a worker (``client.run``): return freed heap to the OS, then report the resident size (bytes).

    Lives here, not in the runner, because ``client.run`` makes the worker import the function's module: the
    runner's imports (pandas through the design) would add ~100 MiB to every worker.
    """
    import psutil

    release_freed_memory()
    return int(psutil.Process().memory_info().rss)


def bytes_sent(dask_worker: Any) -> int:
    """In a worker (``client.run``): bytes it has sent to peers and clients (distributed's own accounting)."""
    return int(dask_worker.transfer_outgoing_bytes_total)


def bound_shuffle_buffers(dask_worker: Any = None) -> dict[str, str]:
    """Inside a worker: size distributed's P2P shuffle buffers to its memory limit (the defaults, 1 GiB of comm
    buffer and 100 MiB of storage buffer, exceed a 500 MB worker, which then dies mid-shuffle); the rest spills to
    disk. Run with ``client.run`` before a shuffle (the cluster pass's exchange). Returns the settings."""
    import dask

    limit = int(getattr(getattr(dask_worker, "memory_manager", None), "memory_limit", 0) or 0)
    comm = min(2**30, limit // 8) if limit else 2**30
    storage = min(100 * MiB, limit // 16) if limit else 100 * MiB
    settings = {"distributed.p2p.comm.buffer": f"{comm} B", "distributed.p2p.storage.buffer": f"{storage} B"}
    dask.config.set(settings)
    return settings


class _Freezes:
    """How many passes are inside :func:`old_objects_frozen` (the outermost freezes and unfreezes)."""

    lock = threading.Lock()
    depth = 0


@contextlib.contextmanager
def old_objects_frozen() -> Iterator[None]:
    """While a pass (or a task of one) runs, leave the objects that existed before it out of the cyclic garbage
    collector's full collections (``gc.freeze``), then hand them back (``gc.unfreeze``; nested and concurrent passes:
    the outermost).

    A process holding many small objects (a driver with a LocalCluster's scheduler; a worker holding ten thousand
    persisted blocks and the state of their keys) would walk them all in a full collection, which the objects a pass
    over many partitions makes are enough to trigger, in the driver while it waits and in a worker while it
    evaluates. The objects made during the pass are still collected as usual.
    """
    with _Freezes.lock:
        _Freezes.depth += 1
        if _Freezes.depth == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _Freezes.lock:
            _Freezes.depth -= 1
            if _Freezes.depth == 0:
                gc.unfreeze()
