"""Reading a store's chunks inside tasks: a Zarr array whose checksum failures name the chunk and its rows.

Kept apart from :mod:`dmlr.data.store` so that a worker process unpickling a pass's graph imports Zarr only, not
pandas or dask.dataframe.
"""

from __future__ import annotations

from typing import Any

from dmlr.errors import StoreError

__all__ = ["CheckedChunks"]


class CheckedChunks:
    """Array-like over a Zarr array whose reads turn a checksum failure into a StoreError naming the chunk."""

    def __init__(self, array: Any, name: str, url: str) -> None:
        self.array = array
        self.name = name
        self.url = url
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except ValueError as exc:
            if "checksum" not in str(exc).lower():
                raise
            rows = key[0] if isinstance(key, tuple) else key
            start = rows.start or 0 if isinstance(rows, slice) else 0
            chunk = start // self.array.chunks[0]
            stop = min(start + self.array.chunks[0], self.shape[0])
            raise StoreError(
                f"chunk {chunk} of array {self.name!r} (rows {start}-{stop - 1}) in store {self.url} failed its "
                "crc32c checksum: the store is corrupt; stage it again"
            ) from None
