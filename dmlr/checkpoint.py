"""Checkpoints of the fitting loop: the driver's whole state after every iteration, written atomically.

A checkpoint holds what the loop needs to continue as if it had never stopped: the coefficients, the statistics of
the pass evaluated there (the information too, for Newton), the first pass's record (Gram matrix and column
moments), the history, the pass count and the step rule's memory (the bound's Cholesky factors, the L-BFGS
correction pairs). Resuming therefore repeats no pass and ends with the same coefficients bit for bit.

File format: ``iter-NNNNNN.dmlrckpt`` = magic ``DMLRCKPT\\x01`` + SHA-256 of the payload (32 bytes) + payload (an
uncompressed ``.npz``; its ``meta`` entry is UTF-8 JSON). A file is written under a temporary name, flushed to disk
and renamed into place, so a crash leaves either the old set or the new file complete; a torn or corrupted file
fails its checksum on reading and the previous checkpoint is used. The newest ``keep`` files are kept.

Every checkpoint carries a *fingerprint* of the data and the fit options; one written by a different fit (other
data, method, penalty, partitioning) is never resumed from. Runs that are not a fitting loop (the bootstrap's
replicates) write :class:`Snapshot` s, named arrays, in the same files with the same guarantees.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec
import numpy as np
from numpy.typing import NDArray

from dmlr.data.writing import replace_file
from dmlr.interrupt import critical
from dmlr.oracle.statistics import Statistics

__all__ = ["Checkpointer", "DriverState", "Snapshot", "fingerprint"]

T = TypeVar("T", "DriverState", "Snapshot")

logger = logging.getLogger("dmlr")

Array = NDArray[np.float64]
MAGIC = b"DMLRCKPT\x01"
FORMAT = 2
"""Format 2 carries the fit's state besides the loop's (``DriverState.fit_state``); format 1 files are skipped."""
_NAME = re.compile(r"^iter-(\d{6,})\.dmlrckpt$")


def fingerprint(**parts: Any) -> str:
    """A stable SHA-256 of JSON-able fit identity (data checksum, options, layout)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DriverState:
    """What the fitting loop needs to continue after ``iteration``.

    Attributes
    ----------
    iteration : int
        Accepted steps so far.
    passes : int
        Data passes so far.
    coef : ndarray, shape (d, m)
        The current coefficients.
    stats : Statistics
        The pass evaluated at ``coef``.
    first_stats : Statistics
        The first pass's record (Gram matrix and moments: the rank and separation checks need them).
    history : list of dict
        The history records so far.
    rule_state : dict of str to ndarray
        The step rule's memory (``state()`` of the rule).
    fit_state : dict
        What the fit decided before its loop that a resumed fit must repeat (JSON): the classes learnt by the first
        pass, the rule and its settings (:class:`dmlr.steps.auto.Choice`).
    """

    iteration: int
    passes: int
    coef: Array
    stats: Statistics
    first_stats: Statistics
    history: list[dict[str, Any]]
    rule_state: dict[str, Array]
    fit_state: dict[str, Any] = field(default_factory=dict)


def _records(named: dict[str, Statistics]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Statistics records as named arrays and JSON scalars, each under its name (:meth:`Statistics.to_arrays`; a row
    sample serves a fit's start only, which a checkpoint is past)."""
    arrays: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for prefix, stats in named.items():
        more, values = stats.to_arrays(prefix)
        arrays.update(more)
        scalars.update(values)
    return arrays, scalars


def _encode(state: DriverState, fp: str) -> bytes:
    arrays, scalars = _records({"stats": state.stats, "first": state.first_stats})
    arrays["coef"] = state.coef
    for key, value in state.rule_state.items():
        arrays[f"rule.{key}"] = value
    meta = {
        "fit_state": state.fit_state,
        "iteration": state.iteration,
        "passes": state.passes,
        "history": state.history,
        "scalars": scalars,
    }
    return _pack(arrays, meta, fp)


def _pack(arrays: dict[str, Any], meta: dict[str, Any], fp: str) -> bytes:
    """A checkpoint file's bytes: the arrays and the JSON ``meta`` (with the format and fingerprint) as an npz,
    behind the magic and the payload's SHA-256."""
    meta = {"format": FORMAT, "fingerprint": fp, **meta}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _unpack(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays and ``meta`` of a checkpoint file, verified; raises ``ValueError`` naming what is wrong."""
    head = len(MAGIC) + 32
    if len(blob) < head or not blob.startswith(MAGIC):
        raise ValueError(f"not a dmlr checkpoint or truncated header ({len(blob)} bytes)")
    digest, payload = blob[len(MAGIC) : head], blob[head:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"checksum mismatch ({len(payload)} payload bytes): truncated or corrupted")
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"written by an earlier dmlr (checkpoint format {meta.get('format', 1)}, this dmlr writes {FORMAT}): "
            "the fit starts anew"
        )
    return arrays, meta


@dataclass
class Snapshot:
    """The state of a run that is not a fitting loop (the bootstrap's replicates) after ``iteration`` passes of it:
    named arrays, written and found as a fit's checkpoints are.

    Attributes
    ----------
    iteration : int
    passes : int
        Passes over the data so far.
    arrays : dict of str to ndarray
    records : dict of str to Statistics
        Statistics records, stored as a fit's checkpoint stores its own.
    """

    iteration: int
    passes: int
    arrays: dict[str, Array]
    records: dict[str, Statistics] = field(default_factory=dict)


def _encode_snapshot(snapshot: Snapshot, fp: str) -> bytes:
    arrays, scalars = _records(snapshot.records)
    meta = {"snapshot": True, "iteration": snapshot.iteration, "passes": snapshot.passes, "scalars": scalars,
            "records": list(snapshot.records)}  # fmt: skip
    return _pack(arrays | dict(snapshot.arrays), meta, fp)


def _decode_snapshot(blob: bytes) -> tuple[str, Snapshot]:
    arrays, meta = _unpack(blob)
    if not meta.get("snapshot"):
        raise ValueError("a fit's checkpoint, not a snapshot")
    names = list(meta.get("records", []))
    records = {name: Statistics.from_arrays(name, arrays, meta["scalars"]) for name in names}
    own = {k: v for k, v in arrays.items() if k.split(".", 1)[0] not in names}
    return str(meta["fingerprint"]), Snapshot(int(meta["iteration"]), int(meta["passes"]), own, records)


def _decode(blob: bytes) -> tuple[str, DriverState]:
    """Parse and verify a checkpoint file; raises ``ValueError`` naming what is wrong."""
    arrays, meta = _unpack(blob)
    if meta.get("snapshot"):
        raise ValueError("a snapshot, not a fit's checkpoint")
    scalars = meta["scalars"]

    def stats(prefix: str) -> Statistics:
        return Statistics.from_arrays(prefix, arrays, scalars)

    rule = {k[len("rule.") :]: v for k, v in arrays.items() if k.startswith("rule.")}
    state = DriverState(
        iteration=int(meta["iteration"]),
        passes=int(meta["passes"]),
        coef=arrays["coef"],
        stats=stats("stats"),
        first_stats=stats("first"),
        history=list(meta["history"]),
        rule_state=rule,
        fit_state=dict(meta["fit_state"]),
    )
    return str(meta["fingerprint"]), state


class Checkpointer:
    """Writes and finds the checkpoints of one fit in a directory (local or fsspec URL).

    Parameters
    ----------
    directory : str
        Where the checkpoint files go (created on the first write).
    fingerprint : str
        Identity of the fit (:func:`fingerprint`); checkpoints with another one are ignored and removed.
    keep : int
        How many of the newest checkpoints to keep (at least 2, so a corrupt newest one has a predecessor).
    storage_options : dict, optional
        fsspec options.
    on_event : callable, optional
        Called with a dict for ``resume``, ``checkpoint_invalid`` and ``checkpoint_stale`` events (structured logs).
    """

    def __init__(
        self,
        directory: str,
        fingerprint: str,
        *,
        keep: int = 2,
        storage_options: dict[str, Any] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if keep < 2:
            raise ValueError("keep at least 2 checkpoints")
        self.url = str(directory).rstrip("/")
        self.fingerprint = fingerprint
        self.keep = keep
        self.on_event = on_event
        self._fs, self._root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self._root = self._root.rstrip("/")
        self._local = self._fs.protocol in ("file", ("file", "local")) or "file" in self._fs.protocol

    def _event(self, event: str, **fields_: Any) -> None:
        record = {"event": event, **fields_}
        logger.info("checkpoint: %s", json.dumps(record))
        if self.on_event is not None:
            self.on_event(record)

    def _files(self) -> list[tuple[int, str]]:
        if not self._fs.exists(self._root):
            return []
        found = []
        for path in self._fs.ls(self._root, detail=False):
            match = _NAME.match(os.path.basename(str(path).rstrip("/")))
            if match:
                found.append((int(match.group(1)), str(path)))
        return sorted(found)

    def newest(self) -> int | None:
        """The iteration of the newest checkpoint file (not validated), or ``None`` when there is none."""
        files = self._files()
        return files[-1][0] if files else None

    def path(self, iteration: int) -> str:
        """The file name of the checkpoint after ``iteration``."""
        return f"{self._root}/iter-{iteration:06d}.dmlrckpt"

    def save(self, state: DriverState) -> str:
        """Write ``state`` atomically and prune older checkpoints; returns the file's path.

        A SIGTERM that arrives while writing takes effect once the file is complete.
        """
        return self._write(state.iteration, _encode(state, self.fingerprint))

    def save_snapshot(self, snapshot: Snapshot) -> str:
        """Write ``snapshot`` as :meth:`save` writes a fit's state; returns the file's path."""
        return self._write(snapshot.iteration, _encode_snapshot(snapshot, self.fingerprint))

    def _write(self, iteration: int, blob: bytes) -> str:
        final = self.path(iteration)
        with critical():
            self._fs.makedirs(self._root, exist_ok=True)
            tmp = f"{self._root}/.tmp-{uuid.uuid4().hex}"
            if self._local:
                replace_file(final, blob, tmp)
            else:
                self._fs.pipe_file(tmp, blob)
                self._fs.mv(tmp, final)
            files = self._files()
            for _, path in files[: max(0, len(files) - self.keep)]:
                self._fs.rm(path)
        return final

    def load(self) -> DriverState | None:
        """The newest valid checkpoint of this fit, or ``None``.

        Invalid files (truncated, corrupted) are reported and skipped, falling back to the previous one;
        checkpoints of another fit (fingerprint differs) are reported and removed.
        """
        return self._read(_decode)

    def load_snapshot(self) -> Snapshot | None:
        """The newest valid snapshot of this run, or ``None`` (as :meth:`load`)."""
        return self._read(_decode_snapshot)

    def _read(self, decode: Callable[[bytes], tuple[str, T]]) -> T | None:
        for tmp in self._fs.glob(f"{self._root}/.tmp-*") if self._fs.exists(self._root) else []:
            self._fs.rm(tmp)  # a write cut short before its rename
        for iteration, path in reversed(self._files()):
            try:
                fp, state = decode(self._fs.cat_file(path))
            except Exception as exc:
                self._event("checkpoint_invalid", iteration=iteration, path=path, reason=str(exc))
                continue
            if fp != self.fingerprint:
                self._event("checkpoint_stale", iteration=iteration, path=path)
                self._fs.rm(path)
                continue
            self._event("resume", iteration=state.iteration, passes=state.passes, path=path)
            return state
        return None

    def clear(self) -> None:
        """Remove every checkpoint of this directory (after the result is safely written)."""
        if self._fs.exists(self._root):
            self._fs.rm(self._root, recursive=True)
