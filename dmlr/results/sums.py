"""Sums over the rows of prediction data: one call for in-memory arrays, one pass of the engine for dask arrays
(whatever their partitioning, one task per worker thread, with the engine's memory check, named bad partitions and
recovery from lost workers)."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from dmlr.data.design import RowData
from dmlr.data.rows import Rows
from dmlr.passes.engine import PassEngine
from dmlr.passes.kernel import Kernel
from dmlr.passes.shipping import current_client

__all__ = ["row_sums"]


def row_sums(x: Any, kernel: Kernel[Any], offset: Any = None, client: Any = None, labels: Any = None) -> Any:
    """The record of ``kernel`` over the rows of ``x`` (shape (n, p); with ``offset`` (n, m) and ``labels`` (n,) for
    kernels that read them): a call on NumPy input, a pass of the engine on a dask array (on ``client``, default the
    current one)."""
    if not isinstance(x, da.Array):
        values = np.asarray(x, dtype=np.float64)
        o = None if offset is None else np.asarray(offset, dtype=np.float64).reshape(values.shape[0], -1)
        return kernel(Rows(x=values, offset=o, labels=None if labels is None else np.asarray(labels)))
    rows = RowData(x=x.astype(np.float64) if x.dtype != np.float64 else x)
    if offset is not None:
        lazy = offset if isinstance(offset, da.Array) else da.from_array(np.asarray(offset, dtype=np.float64))
        rows = rows.replace(offset=lazy.rechunk((x.chunks[0], -1)))
    if labels is not None:
        lazy = labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels))
        rows = rows.replace(labels=lazy.rechunk((x.chunks[0],)))
    engine = PassEngine(rows, client if client is not None else current_client())
    return engine.reduce(kernel)
