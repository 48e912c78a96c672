"""Putting in-memory input on the workers once, and deciding whether lazy input is held in their memory.

``dmlr.fit`` ships NumPy/pandas input to the workers before its first pass (one scatter per row block, spread evenly),
so that no pass embeds the data in its graph; the shipped blocks live as long as the design's arrays (their graphs
hold the futures). A fit keeps a function that ships the input again, for a pass that finds the workers holding it
died.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from dmlr.data.blocks import aligned
from dmlr.data.design import RowData, default_row_chunk

__all__ = ["client_threads", "current_client", "fits_in_cluster_memory", "scatter_rows", "ship_in_memory"]


def current_client() -> Any:
    """distributed's default client, or ``None``."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def client_threads(client: Any) -> int:
    """Worker threads of ``client``'s cluster (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def ship_in_memory(rows: RowData, client: Any, lazy: set[str]) -> RowData:
    """The arrays of ``rows`` whose data are in this process (not in ``lazy``: given as dask arrays) put on the
    workers once, instead of being embedded in every pass's graph."""
    shipped = {name: _scatter_rows(a, client) for name, a in rows.arrays().items() if name not in lazy}
    return rows.replace(**shipped) if shipped else rows


def scatter_rows(array: Any, client: Any, *, chunk_rows: int | None = None) -> da.Array:
    """Put an in-memory array on the workers of ``client`` once, as a persisted dask array of row blocks.

    ``dmlr.fit`` ships NumPy/pandas input itself on every call; for several fits of the same data
    (cross-validation, methods, penalties) ship it once with this and pass the result instead.

    Parameters
    ----------
    array : ndarray or array-like, shape (n,) or (n, p)
    client : distributed.Client
    chunk_rows : int, optional
        Rows per block; default so that every worker thread gets about the same share.

    Returns
    -------
    dask.array.Array
        Same shape and dtype, one aligned, persisted block per row chunk (spread over the workers).
    """
    values = np.asarray(array)
    if chunk_rows is None:
        p = values.shape[1] if values.ndim == 2 else 1
        chunk_rows = default_row_chunk(values.shape[0], p, client_threads(client))
    chunks = (chunk_rows,) + ((-1,) if values.ndim == 2 else ())
    return _scatter_rows(da.from_array(values, chunks=chunks), client)


def _scatter_rows(arr: da.Array, client: Any) -> da.Array:
    """Scatter the row blocks of an in-memory-backed dask array to the workers (once, spread evenly).

    ``client.persist`` would embed every block in the task graph and push it through the scheduler. The workers get
    contiguous runs of blocks in the order of their addresses, so arrays of the same rows scattered one after another
    (features, labels, weights) put the blocks of one partition on the same worker: a pass reads them there.
    """
    index = (lambda i: (i, 0)) if arr.ndim == 2 else (lambda i: (i,))
    blocks = [np.asarray(arr.blocks[index(i)].compute(scheduler="sync")) for i in range(arr.numblocks[0])]
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"]) or [None]  # none yet: wherever they start
    futures: list[Any] = []
    for j, worker in enumerate(workers):
        run = blocks[j * len(blocks) // len(workers) : (j + 1) * len(blocks) // len(workers)]
        if run:
            futures += client.scatter(run, hash=False, workers=None if worker is None else [worker])
    parts = [da.from_delayed(f, shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks, strict=True)]
    # Deserialized blocks sit at arbitrary offsets of the received frames (4 bytes off 8-byte alignment was seen),
    # which slows every kernel on them; one aligned copy per block, made where it lives. Persisting also leaves one
    # key per block, so a pass's graph holds no alias tasks. (The scheduler keeps each scattered block until its
    # aligned copy exists, then forgets it.)
    return client.persist(da.concatenate(parts, axis=0).map_blocks(aligned, dtype=arr.dtype))


def fits_in_cluster_memory(rows: RowData, client: Any, fraction: float = 0.5) -> bool:
    """Whether the arrays take at most ``fraction`` of the workers' total memory limit."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    if not limits:
        return False
    if any(limit == 0 for limit in limits):  # unlimited workers: compare with the machine's memory
        import psutil

        total = float(psutil.virtual_memory().total)
    else:
        total = float(sum(limits))
    return rows.nbytes <= fraction * total
