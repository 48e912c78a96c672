"""Structured logs: one JSON object per line, for log collectors (Kubernetes, Loki, CloudWatch, Prefect)."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonLog"]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


class JsonLog:
    """Writes events as JSON lines to a stream (stderr by default) and optionally appends them to a file.

    Every line has ``time`` (UTC, ISO 8601), ``pipeline`` and ``event``; stage lines have ``stage`` and
    ``status`` (``started``, ``skipped``, ``done``, ``failed``, ``interrupted``) with ``seconds``; iteration lines
    (``event: "iteration"``) have ``iteration``, ``kind``, ``loglik``, ``max_abs_score``, ``step_size``,
    ``seconds`` and ``passes``; checkpoint lines (``resume``, ``checkpoint_invalid``, ``checkpoint_stale``) name
    the iteration and file.
    """

    def __init__(self, pipeline: str, stream: TextIO | None = None, path: str | None = None) -> None:
        self.pipeline = pipeline
        self.stream = stream if stream is not None else sys.stderr
        self.path = path
        self.lines: list[dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one line; returns the record."""
        now = time.time()
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "pipeline": self.pipeline,
            "event": event,
            **{k: _plain(v) for k, v in fields.items()},
        }
        line = json.dumps(record)
        print(line, file=self.stream, flush=True)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        self.lines.append(record)
        return record
