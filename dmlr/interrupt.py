"""SIGTERM as a clean, resumable stop.

Batch schedulers (Kubernetes, SLURM, Prefect) stop a job with SIGTERM and a grace period before SIGKILL. Inside
:func:`terminate_gracefully` a SIGTERM raises :class:`~dmlr.errors.JobInterrupted` in the main thread, which
unwinds the fit (closing the cluster) after the newest checkpoint is complete: checkpoint writes run inside
:func:`critical`, and a signal that arrives during one is held until the write has finished. The command line maps
the error to :data:`dmlr.cli.EXIT_RETRY` (75, ``EX_TEMPFAIL``): rerunning the same command resumes the fit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from dmlr.errors import JobInterrupted

__all__ = ["critical", "terminate_gracefully"]

_state = {"depth": 0, "pending": None}


def _raise(signum: int) -> None:
    raise JobInterrupted(f"received {signal.Signals(signum).name}: stopped at the newest checkpoint")


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = signum  # raised when the critical section ends
        return
    _raise(signum)


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """Turn SIGTERM into :class:`JobInterrupted` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Any = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state["pending"] = None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section a SIGTERM must not cut (a checkpoint being written); the signal takes effect at its end."""
    _state["depth"] = int(_state["depth"] or 0) + 1
    try:
        yield
    finally:
        _state["depth"] = int(_state["depth"] or 0) - 1
        pending = _state["pending"]
        if pending is not None and not _state["depth"]:
            _state["pending"] = None
            _raise(int(pending))
