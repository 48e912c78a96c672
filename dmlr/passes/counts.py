"""Per-partition row counts as a pass of the engine (partitions whose size is not known, rows kept by a filter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dmlr.data.rows import Rows

if TYPE_CHECKING:
    from dmlr.data.design import RowData

__all__ = ["PartitionCounts", "PartitionRows", "partition_counts"]


@dataclass
class PartitionCounts:
    """Rows per partition index: a record that grows with the partitions (8 bytes each), for set-up passes only."""

    counts: dict[int, int]

    def __add__(self, other: PartitionCounts) -> PartitionCounts:
        return PartitionCounts({**self.counts, **other.counts})


@dataclass(frozen=True)
class PartitionRows:
    """Each partition's rows, or (``marked``) how many of them ``x[:, 0]`` marks with 1."""

    marked: bool = False
    reads: ClassVar[tuple[str, ...]] = ("x",)
    batch: ClassVar[bool] = False  # one record per partition: partitions are not joined

    def __call__(self, rows: Rows) -> PartitionCounts:
        assert rows.x is not None
        n = int(np.count_nonzero(rows.x[:, 0])) if self.marked else rows.n_rows
        return PartitionCounts({rows.partition: n})

    def memory(self, rows: int, p: int) -> int:
        return 0


def partition_counts(data: RowData, client: Any = None, *, marked: bool = False) -> list[int]:
    """Rows of each partition (``marked``: rows whose ``x[:, 0]`` is nonzero), one engine pass."""
    from dmlr.passes.engine import PassEngine

    record: PartitionCounts = PassEngine(data, client).reduce(PartitionRows(marked))
    return [record.counts[i] for i in range(data.n_partitions)]
