"""Reading the tables a store is staged from: files and globs, local or fsspec URLs, CSV or Parquet."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import dask.array as da
import dask.dataframe as dd
import pandas as pd
from dask.delayed import delayed

from dmlr.errors import InputError

__all__ = ["expand_sources", "from_partitions", "is_local", "local_path", "read_table"]


def is_local(url: str) -> bool:
    """Whether ``url`` is a path on this file system (not an fsspec URL of another protocol)."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The path of a local ``url`` (``file://`` removed)."""
    return url[len("file://") :] if url.startswith("file://") else url


def expand_sources(source: str | Sequence[str]) -> list[str]:
    """Files or globs (local) and URLs as a list of paths; a local pattern matching nothing is an InputError."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in map(str, items):
        if is_local(item):
            found = sorted(glob.glob(local_path(item)))
            if not found:
                raise InputError(f"no file matches {item!r}")
            paths += found
        else:
            paths.append(item)
    return paths


def read_table(paths: list[str], storage_options: dict[str, Any] | None) -> tuple[dd.DataFrame, str]:
    """The files as one dask DataFrame (CSV or Parquet, told by the first name) and the format's name.

    Raises
    ------
    InputError
        A Zarr store given as a source, an unknown format, an empty or unreadable file (named).
    """
    for path in paths:
        if is_local(path) and os.path.exists(os.path.join(local_path(path), "zarr.json")):
            raise InputError(
                f"{path} is a Zarr store, not a CSV/Parquet source (were the paths swapped? the store comes last: "
                "dmlr stage SOURCE... STORE)"
            )
    first = paths[0].lower()
    if is_local(first):
        empty = [p for p in paths if os.path.isfile(local_path(p)) and os.path.getsize(local_path(p)) == 0]
        if empty:
            raise InputError(f"{empty[0]} is empty (0 bytes): no header, no rows")
    try:
        if first.endswith((".parquet", ".pq")) or (is_local(first) and os.path.isdir(first)):
            return dd.read_parquet(paths, storage_options=storage_options), "parquet"
        if first.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            return dd.read_csv(paths, storage_options=storage_options, blocksize="64MB"), "csv"
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).splitlines()[-1]
        raise InputError(f"cannot read {paths[0]}{' and others' if len(paths) > 1 else ''}: {reason}") from None
    raise InputError(f"cannot tell the format of {paths[0]!r}: use .csv or .parquet files")


def from_partitions(
    table: dd.DataFrame,
    lengths: Sequence[int],
    func: Any,
    trailing: tuple[int, ...],
    dtype: Any,
    *args: Any,
    source: str = "source",
) -> da.Array:
    """Apply ``func(frame, *args, where)`` to every partition of ``table`` and stack the NumPy results by rows.

    Parameters
    ----------
    table : dask.dataframe.DataFrame
    lengths : sequence of int
        Rows of each partition (known, so the array has known chunks).
    func : callable
        Gets the partition's pandas DataFrame, ``args`` and a ``where`` string naming the partition for errors;
        returns an array of shape ``(rows, *trailing)``.
    trailing : tuple of int
        Shape of each row of the result.
    dtype : numpy dtype
    source : str
        How ``where`` names the table.
    """
    return da.concatenate(
        [
            da.from_delayed(
                delayed(func)(part, *args, f"{source} partition {i}"), shape=(int(k), *trailing), dtype=dtype
            )
            for i, (part, k) in enumerate(zip(table.to_delayed(), lengths, strict=True))
        ]
    )
