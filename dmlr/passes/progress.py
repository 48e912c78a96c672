"""A long streamed pass's progress: partitions read out of the total and the read rate.

On a terminal (stderr is a TTY) one line rewritten in place once a pass has run :data:`SHOW_AFTER` seconds; on any
other stream (a log file, a batch job's captured stderr) a new line every :data:`LOG_EVERY` seconds, so a long pass
is never silent; never when :func:`quiet` is in force (the pipeline's JSON logs) or ``DMLR_PROGRESS=off``. The counts
come from the tasks themselves (:func:`dmlr.passes.group.pass_progress`), polled while the driver waits for the pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["SHOW_AFTER", "PassProgress", "quiet", "wanted"]

SHOW_AFTER = 2.0
"""Seconds a pass runs before its progress is shown on a terminal."""

LOG_EVERY = 10.0
"""Seconds between progress lines on a stream that is not a terminal (the first after as long)."""

_QUIET = [0]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress lines inside this block (structured logs own the output)."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def wanted() -> bool:
    """Whether progress is shown: not :func:`quiet`, not ``DMLR_PROGRESS=off``."""
    return not _QUIET[0] and os.environ.get("DMLR_PROGRESS", "").lower() not in ("0", "off", "no", "false")


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class PassProgress:
    """One pass's progress: on a terminal a line rewritten in place (``\\r``) and cleared when the pass ends,
    elsewhere a line every :data:`LOG_EVERY` seconds.

    Parameters
    ----------
    number : int
        The pass's number in the fit.
    partitions : int
        Partitions in the pass.
    stream : file, optional
        Where to write (stderr).
    """

    def __init__(self, number: int, partitions: int, stream: TextIO | None = None) -> None:
        self.number, self.partitions = number, partitions
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.width = 0
        self.terminal = _is_terminal(self.stream)
        self.logged = self.start

    def update(self, done: int, nbytes: int) -> None:
        """Show ``done`` partitions and ``nbytes`` read so far (once the pass is older than :data:`SHOW_AFTER`)."""
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed < SHOW_AFTER or (not self.terminal and now - self.logged < LOG_EVERY):
            return
        line = f"dmlr: pass {self.number}: {min(done, self.partitions)}/{self.partitions} partitions"
        if nbytes:  # partitions that tasks hold (read by their data tasks) count no bytes here
            line += f", {nbytes / 1e9:.2f} GB read, {nbytes / 1e6 / elapsed:.0f} MB/s"
        if not self.terminal:
            self.logged = now
            self.stream.write(f"{line}, {elapsed:.0f} s\n")
            self.stream.flush()
            return
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        """Clear the line if one was shown."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0
