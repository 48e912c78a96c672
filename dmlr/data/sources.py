"""Reading the tables a store is staged from: files and globs, local or fsspec URLs, CSV or Parquet."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import dask.array as da
import dask.dataframe as dd
import pandas as pd
from dask.delayed import delayed

from dmlr.errors import InputError

__all__ = [
    "Table",
    "expand_sources",
    "file_format",
    "from_partitions",
    "is_local",
    "local_path",
    "read_table",
]


def is_local(url: str) -> bool:
    """Whether ``url`` is a path on this file system (not an fsspec URL of another protocol)."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The path of a local ``url`` (``file://`` removed)."""
    return url[len("file://") :] if url.startswith("file://") else url


TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", ".pq")
"""The file names a directory given as a source is searched for."""

PER_FILE_LIMIT = 500
"""Up to this many files are read one by one (each by its own format, each partition knowing its file); more are
read by one call per format."""


def expand_sources(source: str | Sequence[str]) -> list[str]:
    """Files, globs and directories (local) and URLs as a list of paths; a local pattern matching nothing, or a
    directory holding no CSV or Parquet file, is an InputError."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in map(str, items):
        if not is_local(item):
            paths.append(item)
            continue
        found = sorted(glob.glob(local_path(item)))
        if not found:
            raise InputError(f"no file matches {item!r}")
        for path in found:
            if not os.path.isdir(path) or os.path.exists(os.path.join(path, "zarr.json")):
                paths.append(path)  # a file (or a Zarr store, refused by read_table with its own message)
                continue
            inside = sorted(
                p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                if os.path.isfile(p) and p.lower().endswith(TABLE_SUFFIXES)
            )  # fmt: skip
            if not inside:
                raise InputError(f"{path} is a directory holding no CSV or Parquet file ({', '.join(TABLE_SUFFIXES)})")
            paths += inside
    return paths


def file_format(path: str) -> str:
    """``"csv"`` or ``"parquet"``, told by the name.

    Raises
    ------
    InputError
        Another kind of name.
    """
    name = path.lower().rstrip("/")
    if name.endswith((".parquet", ".pq")) or (is_local(name) and os.path.isdir(local_path(path))):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return "csv"
    raise InputError(f"cannot tell the format of {path!r}: use .csv or .parquet files")


def _read_one(paths: list[str], fmt: str, storage_options: dict[str, Any] | None) -> dd.DataFrame:
    if fmt == "parquet":
        return dd.read_parquet(paths, storage_options=storage_options)
    # integer columns are read as floats: a column with a missing value in a later file (or a later block) is then
    # the same type in every partition, and the missing-value policy handles the value (integral labels, levels
    # and cluster ids are made integers again by staging)
    return dd.read_csv(paths, storage_options=storage_options, blocksize="64MB", assume_missing=True)


class Table(NamedTuple):
    """Source files read as one dask DataFrame.

    Attributes
    ----------
    frame : dask.dataframe.DataFrame
    format : str
        ``"csv"``, ``"parquet"`` or ``"csv+parquet"``.
    files : list of str
        The file each partition was read from, in partition order (empty when more than
        :data:`PER_FILE_LIMIT` files were read at once).
    """

    frame: dd.DataFrame
    format: str
    files: list[str]


def read_table(paths: list[str], storage_options: dict[str, Any] | None) -> Table:
    """The files as one dask DataFrame, each read by its own format (CSV or Parquet, told by its name).

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
    formats = [file_format(p) for p in paths]
    empty = [p for p in paths if is_local(p) and os.path.isfile(local_path(p)) and os.path.getsize(local_path(p)) == 0]
    if empty:
        raise InputError(f"{empty[0]} is empty (0 bytes): no header, no rows")
    kinds = sorted(set(formats))
    try:
        if len(paths) <= PER_FILE_LIMIT:
            frames = [_read_one([p], f, storage_options) for p, f in zip(paths, formats, strict=True)]
            files = [p for p, frame in zip(paths, frames, strict=True) for _ in range(frame.npartitions)]
        else:
            frames = [_read_one([p for p, f in zip(paths, formats, strict=True) if f == k], k, storage_options)
                      for k in kinds]  # fmt: skip
            files = []
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).splitlines()[-1]
        raise InputError(f"cannot read {paths[0]}{' and others' if len(paths) > 1 else ''}: {reason}") from None
    _check_columns_agree(frames, paths if len(frames) == len(paths) else kinds)
    table = frames[0] if len(frames) == 1 else dd.concat(frames, interleave_partitions=False)
    return Table(table, "+".join(kinds), files)


def _check_columns_agree(frames: list[dd.DataFrame], names: Sequence[str]) -> None:
    """Refuse files whose columns differ (naming the first file that differs from the first)."""
    first = list(frames[0].columns)
    for frame, name in zip(frames[1:], names[1:], strict=True):
        if list(frame.columns) != first:
            missing = [c for c in first if c not in frame.columns]
            extra = [c for c in frame.columns if c not in first]
            raise InputError(
                f"{name} has other columns than {names[0]}: missing {missing}, extra {extra}"
                + ("" if missing or extra else " (another order)")
            )


def from_partitions(
    table: dd.DataFrame,
    lengths: Sequence[int],
    func: Any,
    trailing: tuple[int, ...],
    dtype: Any,
    *args: Any,
    source: str = "source",
    parts: Sequence[Any] | None = None,
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
    parts : sequence of dask.delayed.Delayed, optional
        ``table.to_delayed()`` made once by the caller: arrays read from the same frame must share it (two calls
        are optimized apart, and their tasks are no longer one graph).
    """
    return da.concatenate(
        [
            da.from_delayed(
                delayed(func)(part, *args, f"{source} partition {i}"), shape=(int(k), *trailing), dtype=dtype
            )
            for i, (part, k) in enumerate(zip(table.to_delayed() if parts is None else parts, lengths, strict=True))
        ]
    )
