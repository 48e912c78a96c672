"""Functions that run on one row block inside task graphs (label encoding, weight checks).

Kept apart from :mod:`dmlr.data.design` so that a worker process unpickling a pass's graph imports NumPy and the
label coding only, not pandas or dask.array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.data.labels import LabelCoding
from dmlr.errors import InputError
from dmlr.oracle.kernels import check_finite

__all__ = ["aligned", "check_weights", "checked_weights_block", "encode_block", "encode_positions_block"]


def encode_block(labels: NDArray[Any], coding: LabelCoding, block_id: Any = None) -> NDArray[np.int32]:
    """Class codes (shape (r,), 0 = base) of one block of labels; errors name the partition."""
    where = "y" if block_id is None else f"y (partition {block_id[0]})"
    return coding.encode(labels, where)


def encode_positions_block(pos: NDArray[Any], coding: LabelCoding, block_id: Any = None) -> NDArray[np.int32]:
    """Class codes (shape (r,)) of one block of positions into the sorted labels (as a store holds ``y``)."""
    where = "y" if block_id is None else f"y (partition {block_id[0]})"
    return coding.encode_positions(pos, where)


def check_weights(
    w: NDArray[np.float64], where: str = "weights", partition: int | None = None, row_start: int = 0
) -> None:
    """Raise :class:`InputError` naming the row of the first non-finite or negative weight (``w`` shape (r,);
    ``partition`` and ``row_start`` as in :func:`~dmlr.oracle.kernels.check_finite`)."""
    check_finite(w, where, partition, row_start)
    if (w < 0).any():
        row = int(np.argmax(w < 0))
        at = f"row {row_start + row}"
        if partition is not None:
            at += f" (row {row} of partition {partition}, rows {row_start}-{row_start + w.shape[0] - 1})"
        raise InputError(f"{where} has a negative value ({float(w[row])}) at {at}")


def checked_weights_block(w: NDArray[np.float64], block_info: dict[Any, Any] | None = None) -> NDArray[np.float64]:
    """One block of weights (shape (r,)), unchanged, after :func:`check_weights` naming its partition and rows
    (``block_info`` as dask's ``map_blocks`` passes it)."""
    info = (block_info or {}).get(0)
    if info is None:
        check_weights(w)
    else:
        check_weights(w, "weights", info["chunk-location"][0], info["array-location"][0][0])
    return w


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
