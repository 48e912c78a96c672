"""One partition's row-aligned blocks, by name: what every kernel of a pass receives.

NumPy only: this module runs on workers (which import no pandas or dask.array). The driver-side counterpart, the
named dask arrays these blocks come from, is :class:`dmlr.data.design.RowData`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FIELDS", "Rows"]

FIELDS = ("x", "labels", "codes", "weights", "offset", "groups")
"""The row-aligned arrays a design can have, in this order everywhere (task graphs, records, messages)."""


@dataclass(frozen=True)
class Rows:
    """Blocks of the same rows (one partition, or consecutive partitions batched together).

    Attributes
    ----------
    x : ndarray, shape (r, p), optional
        Features (float64 once a kernel reads them; stored float32 blocks are widened on reading).
    labels : ndarray, shape (r,), optional
        Class labels as the data hold them: raw labels, or positions in the sorted classes (a store's ``y``).
    codes : ndarray of int32, shape (r,), optional
        Class codes of the fit (0 = base, ``1..m`` the other classes in sorted label order).
    weights : ndarray, shape (r,), optional
        Frequency or probability weights.
    offset : ndarray, shape (r, m), optional
        Offsets of the non-base linear predictors.
    groups : ndarray, shape (r,), optional
        Cluster ids of cluster-robust covariances.
    partition : int
        Index of the (first) partition these rows come from, for messages.
    row_start : int
        Global index of the first row, for messages and row-indexed sampling (``-1`` when the partition sizes are
        not known, or when the rows are partitions joined across gaps: see ``segments``).
    segments : tuple of (int, int), optional
        For rows joined from partitions that do not follow each other: each part's ``(row_start, rows)``.
    """

    x: NDArray[np.float64] | None = None
    labels: NDArray[Any] | None = None
    codes: NDArray[np.int32] | None = None
    weights: NDArray[np.float64] | None = None
    offset: NDArray[np.float64] | None = None
    groups: NDArray[Any] | None = None
    partition: int = 0
    row_start: int = 0
    segments: tuple[tuple[int, int], ...] | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows ``r``."""
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[0])
        return 0

    def arrays(self) -> dict[str, Any]:
        """The blocks present, by name."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    def row_ids(self) -> NDArray[np.int64] | None:
        """The global index of every row (``None`` when unknown)."""
        if self.segments is not None:
            if any(start < 0 for start, _ in self.segments):
                return None
            return np.concatenate([np.arange(start, start + n, dtype=np.int64) for start, n in self.segments])
        if self.row_start < 0:
            return None
        return np.arange(self.row_start, self.row_start + self.n_rows, dtype=np.int64)

    def follows(self, previous: Rows) -> bool:
        """Whether these rows come right after ``previous``'s in the data."""
        return (
            previous.segments is None
            and previous.row_start >= 0
            and self.row_start == previous.row_start + previous.n_rows
        )

    def where(self, name: str) -> str:
        """How messages name this block: ``"X (partition 3)"``."""
        return f"{name} (partition {self.partition})"

    def slice(self, start: int, stop: int) -> Rows:
        """Rows ``start .. stop - 1`` of these (``row_start`` follows)."""
        parts = {name: value[start:stop] for name, value in self.arrays().items()}
        first = self.row_start + start if self.row_start >= 0 else -1
        return replace(Rows(**parts), partition=self.partition, row_start=first)

    def take(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> Rows:
        """The rows ``keep`` marks, or at the positions it lists, in its order (``row_start`` then no longer locates
        them: set to ``-1``)."""
        parts = {name: value[keep] for name, value in self.arrays().items()}
        return replace(Rows(**parts), partition=self.partition, row_start=-1)

    def with_blocks(self, **blocks: Any) -> Rows:
        """A copy with some blocks replaced (e.g. ``codes`` encoded from ``labels``)."""
        return replace(self, **blocks)

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """Rows joined (named after the first part); parts that do not follow each other keep their positions in
        ``segments``."""
        if len(parts) == 1:
            return parts[0]
        names = [f.name for f in fields(Rows) if f.name in FIELDS]
        joined: dict[str, Any] = {}
        for name in names:
            values = [getattr(p, name) for p in parts]
            joined[name] = None if values[0] is None else np.concatenate(values)
        if all(b.follows(a) for a, b in itertools.pairwise(parts)):
            return Rows(**joined, partition=parts[0].partition, row_start=parts[0].row_start)
        segments = tuple(s for p in parts for s in (p.segments or ((p.row_start, p.n_rows),)))
        return Rows(**joined, partition=parts[0].partition, row_start=-1, segments=segments)
