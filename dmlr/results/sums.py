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
from dmlr.passes.task import RowsTransform

__all__ = ["row_sums"]


def row_sums(
    x: Any,
    kernel: Kernel[Any],
    offset: Any = None,
    client: Any = None,
    labels: Any = None,
    weights: Any = None,
    transform: RowsTransform | None = None,
) -> Any:
    """The record of ``kernel`` over the rows of ``x`` (shape (n, p); with ``offset`` (n, m), ``labels`` (n,) and
    ``weights`` (n,) for kernels that read them, ``transform`` applied to the rows first): a call on NumPy input, a
    pass of the engine on a dask array (on ``client``, default the current one)."""
    if not isinstance(x, da.Array):
        values = np.asarray(x, dtype=np.float64)
        o = None if offset is None else np.asarray(offset, dtype=np.float64).reshape(values.shape[0], -1)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        block = Rows(x=values, offset=o, labels=None if labels is None else np.asarray(labels), weights=w)
        return kernel(block if transform is None else transform(block))
    rows = RowData(x=x.astype(np.float64) if x.dtype != np.float64 else x)
    if offset is not None:
        lazy = offset if isinstance(offset, da.Array) else da.from_array(np.asarray(offset, dtype=np.float64))
        rows = rows.replace(offset=lazy.rechunk((x.chunks[0], -1)))
    for name, values in (("labels", labels), ("weights", weights)):
        if values is not None:
            lazy = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
            rows = rows.replace(**{name: lazy.rechunk((x.chunks[0],))})
    engine = PassEngine(rows, client if client is not None else current_client(), transform=transform)
    return engine.reduce(kernel)
