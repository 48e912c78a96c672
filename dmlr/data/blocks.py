"""Functions that run on one row block inside task graphs (alignment, missing-value filters).

Kept apart from :mod:`dmlr.data.design` so that a worker process unpickling a pass's graph imports NumPy only, not
pandas or dask.array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["aligned", "count_kept", "kept_rows"]


def aligned(block: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``block`` itself when 16-byte aligned and C-contiguous, else an aligned copy."""
    if block.flags.c_contiguous and block.ctypes.data % 16 == 0:
        return block
    out = np.empty_like(block, order="C")  # NumPy aligns its allocations to 16 bytes
    out[...] = block
    return out


def kept_rows(block: NDArray[Any], keep: NDArray[np.bool_]) -> NDArray[Any]:
    """The rows of one block that ``keep`` (shape (r,) or (r, 1)) marks (a missing-value filter, blockwise)."""
    return block[keep.reshape(-1)]


def count_kept(keep: NDArray[np.bool_]) -> NDArray[np.int64]:
    """How many rows of one block ``keep`` marks, shape (1,)."""
    return np.array([int(keep.sum())], dtype=np.int64)
