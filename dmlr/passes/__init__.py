"""The pass engine: every pass over the data, a kernel run with one task per worker thread.

``plan.py`` splits the partitions into tasks (once per engine), ``task.py`` is what a task runs, ``kernel.py`` says
what a kernel and a record are, ``memory.py`` estimates and checks a task's memory and tunes the worker's allocator,
``faults.py`` names a partition that kills its worker, ``engine.py`` (:class:`PassEngine`) submits a pass and
gathers its record, ``shipping.py`` puts in-memory input on the workers, ``counts.py`` counts rows per partition.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmlr.passes.engine import PassEngine, worker_bytes_sent

__all__ = ["PassEngine", "worker_bytes_sent"]


def __getattr__(name: str) -> object:
    """The driver side (``engine``), imported on first use: workers import only ``task``, ``plan``, ``kernel``,
    ``memory``."""
    if name in __all__:
        from dmlr.passes import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'dmlr.passes' has no attribute {name!r}")
