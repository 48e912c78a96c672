"""A row sample kept by a pass of the fit (``Request.sample_rate``), the same rows whatever the partitioning.

Global row ``i`` is in the sample when a 64-bit mix of ``i`` (the SplitMix64 finalizer) falls below
``rate * 2**64``: a fixed pseudo-random subset of about ``rate * n`` rows, independent of how the rows are split into
partitions or of the order in which partitions are added, and spread over the whole data (data sorted by time or by
a category are sampled evenly, unlike contiguous blocks). The driver fits the sample in memory for a start near the
optimum (:mod:`dmlr.fitting.warm`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.statistics import RowSample

__all__ = ["in_row_sample", "take_sample"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def in_row_sample(row_ids: NDArray[np.int64], rate: float) -> NDArray[np.bool_]:
    """Which of the global rows ``row_ids`` are in the sample of ``rate`` (in [0, 1]), shape (r,)."""
    if rate >= 1.0:
        return np.ones(row_ids.shape[0], dtype=bool)
    with np.errstate(over="ignore"):
        h = row_ids.astype(np.uint64) * _GOLDEN
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return np.asarray(h < np.uint64(min(max(rate, 0.0), 1.0) * 2.0**64 - 1.0))


def take_sample(rows: Rows, rate: float) -> RowSample | None:
    """The rows of a partition in the sample (``None`` when the rows' global positions are unknown).

    Parameters
    ----------
    rows : Rows
        The partition's model-ready rows (``x`` and ``codes``; weights and offset when present; ``None`` is
        returned without codes).
    rate : float
    """
    ids = rows.row_ids()
    if ids is None or rows.x is None or rows.codes is None:
        return None
    keep = in_row_sample(ids, rate)
    return RowSample(
        rows=ids[keep],
        x=np.ascontiguousarray(rows.x[keep]),
        codes=rows.codes[keep],
        weights=None if rows.weights is None else rows.weights[keep],
        offset=None if rows.offset is None else rows.offset[keep],
    )
