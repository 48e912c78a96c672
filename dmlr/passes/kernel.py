"""What a pass is: a kernel (a pure NumPy function of one partition's :class:`~dmlr.data.rows.Rows`) returning an
additive record, and how records add.

The engine (:mod:`dmlr.passes.engine`) runs a kernel over every partition with one task per worker thread, adds the
records of a task's partitions in row order (``add_`` when the record has it, else ``+``), then adds the tasks'
records per worker and up a tree. A new kind of pass is one kernel class and one record class, nothing else::

    @dataclass(frozen=True)
    class CountKernel:
        reads: tuple[str, ...] = ("codes",)

        def __call__(self, rows: Rows) -> Sums:
            return Sums({"count": np.bincount(rows.codes, minlength=3).astype(float)})

        def memory(self, rows: int, p: int) -> int:
            return 64 * rows

    engine.reduce(CountKernel())["count"]

NumPy only: kernels and records run on workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from dask.sizeof import sizeof
from numpy.typing import NDArray

from dmlr.data.rows import Rows

__all__ = ["Counted", "Kernel", "Record", "Sums", "add_into", "record_size", "total"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Record(Protocol):
    """An additive record: ``a + b`` is the record of the rows of both (neither is changed).

    A record may also have ``add_(later)``: add a record of *later rows of the same task* in place and return
    ``self`` (the engine calls it only on a task's own running sum, with partitions in row order), so that
    order-aware records (cluster sums of data sorted by cluster) can fold as they go.
    """

    def __add__(self, other: Any) -> Any: ...


class Kernel(Protocol[R_co]):
    """A pass's work on one partition.

    A task joins small partitions into one call (their rows concatenated). A kernel may set ``batch = False``
    (each partition alone: a record per partition, e.g. row counts) or ``batch = "contiguous"`` (only partitions
    that follow each other in the data: order-aware records). Joined rows that do not follow each other carry their
    global positions in ``Rows.segments``.
    """

    @property
    def reads(self) -> tuple[str, ...]:
        """The :class:`~dmlr.data.rows.Rows` fields it uses (``"x"``, ``"codes"``, ...): the engine produces only
        these (a pass over the cluster ids alone reads no features)."""
        ...

    def __call__(self, rows: Rows) -> R_co:
        """The record of ``rows``; an :class:`~dmlr.errors.InputError` names ``rows.partition`` and the row."""
        ...

    def memory(self, rows: int, p: int) -> int:
        """Bytes of temporaries and records the kernel holds for ``rows`` rows of ``p`` features (memory check)."""
        ...


def add_into(running: R | None, record: R) -> R:
    """``running + record`` for a task's running sum: in place through ``add_`` when the record has it."""
    if running is None:
        return record
    add_ = getattr(running, "add_", None)
    out: R = add_(record) if add_ is not None else running + record  # type: ignore[operator]
    return out


def record_size(kernel: Any) -> int | None:
    """Bytes of one record of ``kernel`` when it says (``kernel.record_bytes()``), else ``None``."""
    size = getattr(kernel, "record_bytes", None)
    value = size() if callable(size) else None
    return None if value is None else int(value)


def total(records: Sequence[R]) -> R:
    """The sum of a non-empty list of records (inputs unchanged)."""
    out = records[0]
    for r in records[1:]:
        out = out + r  # type: ignore[operator]
    return out


@dataclass(frozen=True)
class Counted:
    """What a task returns: its record and how many rows (and partitions) it covered, so that every pass proves each
    row was counted once."""

    record: Any
    n_rows: int
    n_partitions: int

    def __add__(self, other: Counted) -> Counted:
        return Counted(self.record + other.record, self.n_rows + other.n_rows, self.n_partitions + other.n_partitions)

    @staticmethod
    def sum(items: Sequence[Counted]) -> Counted:
        """The combine step of the tree (inputs unchanged)."""
        return total(list(items))


@sizeof.register(Counted)  # type: ignore[untyped-decorator]
def _sizeof_counted(item: Counted) -> int:
    return 64 + int(sizeof(item.record))


@dataclass
class Sums:
    """The simplest record: named arrays, added elementwise.

    Attributes
    ----------
    values : dict of str to ndarray
    """

    values: dict[str, NDArray[Any]]

    def __add__(self, other: Sums) -> Sums:
        return Sums({k: v + other.values[k] for k, v in self.values.items()})

    def add_(self, other: Sums) -> Sums:
        """Add ``other`` in place."""
        for k, v in self.values.items():
            v += other.values[k]
        return self

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self.values[name]


@sizeof.register(Sums)  # type: ignore[untyped-decorator]
def _sizeof_sums(record: Sums) -> int:
    return 64 + sum(int(np.asarray(v).nbytes) for v in record.values.values())
