"""SIGTERM and SIGINT (Ctrl-C) as a clean, resumable stop.

Batch schedulers (Kubernetes, SLURM, Prefect) stop a job with SIGTERM and a grace period before SIGKILL. Inside
:func:`terminate_gracefully` a SIGTERM raises :class:`~dmlr.errors.JobInterrupted` in the main thread, which
unwinds the fit (closing the cluster) after the newest checkpoint is complete: checkpoint writes run inside
:func:`critical`, and a signal that arrives during one is held until the write has finished. The command line maps
the error to ``dmlr.cli_support.EXIT_RETRY`` (75, ``EX_TEMPFAIL``) for SIGTERM and to 130 (128 + SIGINT, the shell's
convention) for Ctrl-C: rerunning the same command resumes the fit.

An exception raised from a signal handler lands wherever the main thread happens to be, and some code there
swallows it (a bare ``except:`` in a library, an object's ``__del__``, whose exceptions Python only prints). The
request is therefore also kept: :func:`check`, called before every pass over the data (so at the latest right after
the newest checkpoint) and between pipeline stages, raises it again until the job has stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from dmlr.errors import JobInterrupted

__all__ = ["check", "critical", "terminate_gracefully"]

_state: dict[str, int | None] = {"depth": 0, "requested": None}


def _raise(signum: int) -> None:
    raise JobInterrupted(f"received {signal.Signals(signum).name}: stopped at the newest checkpoint", signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    _state["requested"] = signum  # kept until the job stops: see check()
    if not _state["depth"]:  # inside a critical section it is raised when the section ends
        _raise(signum)


def check() -> None:
    """Raise :class:`JobInterrupted` if a stop was requested and no critical section is open.

    A no-op outside :func:`terminate_gracefully` and when no signal has arrived; cheap enough for every pass.
    """
    requested = _state["requested"]
    if requested is not None and not _state["depth"]:
        _raise(int(requested))


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`JobInterrupted` for the duration (main thread only; elsewhere a
    no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state["requested"] = None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section a SIGTERM must not cut (a checkpoint being written); the signal takes effect at its end."""
    _state["depth"] = int(_state["depth"] or 0) + 1
    try:
        yield
    finally:
        _state["depth"] = int(_state["depth"] or 0) - 1
        check()
