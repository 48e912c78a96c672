"""Data passes: the partitions grouped into one task per worker thread, each group's records added where they are
computed, the per-worker records reduced to the driver.

``plan.py`` splits the partitions into groups (once per fit), ``group.py`` is what a task runs, ``memory.py``
estimates and checks a task's memory and tunes the worker's allocator, ``runner.py`` (:class:`DataPasses`)
submits a pass and gathers its record.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmlr.passes.runner import DataPasses, worker_bytes_sent

__all__ = ["DataPasses", "worker_bytes_sent"]


def __getattr__(name: str) -> object:
    """The driver side (``runner``), imported on first use: workers import only ``group``, ``plan``, ``memory``."""
    if name in __all__:
        from dmlr.passes import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'dmlr.passes' has no attribute {name!r}")
