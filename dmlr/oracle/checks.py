"""Validation of a partition's values inside the kernels, naming the partition and the row (NumPy only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError

__all__ = ["check_finite", "check_groups", "check_rows", "check_weights", "where_row"]


def where_row(row: int, partition: int | None, row_start: int, n: int) -> str:
    """``row 4321 (row 1 of partition 432, rows 4320-4329)`` (only the row within the partition when the global
    position is unknown, ``row_start = -1``)."""
    if row_start < 0:
        return f"row {row} of partition {partition}" if partition is not None else f"row {row}"
    at = f"row {row_start + row}"
    if partition is not None:
        at += f" (row {row} of partition {partition}, rows {row_start}-{row_start + n - 1})"
    return at


def check_finite(values: NDArray[Any], name: str, partition: int | None = None, row_start: int = 0) -> None:
    """Raise :class:`InputError` naming the value, column and row of the first non-finite entry.

    Parameters
    ----------
    values : ndarray, shape (r,) or (r, c)
    name : str
        The array's name in the message (``"X"``, ``"weights"``, ``"offset"``).
    partition : int, optional
        When the values are one partition: its index, added to the message with the partition's row range.
    row_start : int
        Global index of the first row (``-1``: unknown, the row is then counted within the partition).
    """
    if np.isfinite(np.add.reduce(values, axis=None)):  # no NaN or infinity can hide in a finite sum
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    where = where_row(int(bad[0]), partition, row_start, values.shape[0])
    if values.ndim == 2:
        where = f"column {bad[1]}, " + where
    raise InputError(f"{name} has a non-finite value ({float(values[tuple(bad)])}) at {where}")


def check_weights(
    w: NDArray[np.float64], where: str = "weights", partition: int | None = None, row_start: int = 0
) -> None:
    """Raise :class:`InputError` naming the row of the first non-finite or negative weight (``w`` shape (r,);
    ``partition`` and ``row_start`` as in :func:`check_finite`)."""
    check_finite(w, where, partition, row_start)
    if (w < 0).any():
        row = int(np.argmax(w < 0))
        raise InputError(
            f"{where} has a negative value ({float(w[row])}) at {where_row(row, partition, row_start, w.shape[0])}"
        )


def check_groups(groups: NDArray[Any], where: str = "groups", partition: int | None = None, row_start: int = 0) -> None:
    """Refuse missing cluster ids (NaN, None), naming the first row.

    Raises
    ------
    InputError
    """
    if groups.dtype.kind == "f":
        bad = np.isnan(groups)
    elif groups.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, float) and v != v) for v in groups.tolist()], dtype=bool)
    else:
        return
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{where} has a missing cluster id at {where_row(row, partition, row_start, groups.shape[0])}")


def check_rows(
    x: NDArray[Any], weights: NDArray[Any] | None, offset: NDArray[Any] | None, partition: int, row_start: int
) -> None:
    """The checks of a partition's rows before its statistics: features and offset finite, weights finite and
    non-negative; the error names the partition and the row."""
    check_finite(x, "X", partition, row_start)
    if weights is not None:
        check_weights(weights, "weights", partition, row_start)
    if offset is not None:
        check_finite(offset, "offset", partition, row_start)
