"""Missing values in a table being staged: the first one named by its column, file and 1-based data row."""

from __future__ import annotations

from collections.abc import Sequence

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmlr.errors import InputError

__all__ = ["missing_before_sorting", "raise_first_missing"]


def _first_missing(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """The first row of one partition with a missing value and its first such column (no row: -1)."""
    bad = frame[used].isna()
    rows = bad.any(axis=1).to_numpy()
    if not rows.any():
        return pd.DataFrame({"row": [-1], "column": [""]})
    row = int(np.argmax(rows))
    return pd.DataFrame({"row": [row], "column": [str(bad.columns[int(np.argmax(bad.iloc[row].to_numpy()))])]})


def raise_first_missing(
    table: dd.DataFrame, used: list[str], n_na: pd.Series, lengths: list[int], files: Sequence[str] = ()
) -> None:
    """Name the first missing value of the source: its column and data row (a second pass, on the error path)."""
    meta = pd.DataFrame({"row": pd.Series(dtype=np.int64), "column": pd.Series(dtype=object)})
    firsts = table.map_partitions(_first_missing, used, meta=meta).compute()
    part = int(np.argmax(firsts["row"].to_numpy() >= 0))
    columns = {str(c): int(v) for c, v in n_na.items() if v}
    if len(files) == len(lengths):  # the file and its data row (1-based, the header not counted)
        earlier = sum(k for f, k in zip(files[:part], lengths[:part], strict=True) if f == files[part])
        where = f"data row {earlier + int(firsts['row'].iloc[part]) + 1} of {files[part]}"
    else:
        where = f"data row {int(sum(lengths[:part]) + firsts['row'].iloc[part]) + 1} of the source"
    raise InputError(
        f"column {firsts['column'].iloc[part]!r} has a missing value at {where} (1-based, header not counted); "
        f"missing values per column: {columns}. Fill them, or stage with --missing drop (missing='drop') to leave "
        "such rows out"
    )


def missing_before_sorting(
    table: dd.DataFrame, used: list[str], missing: str, files: Sequence[str]
) -> tuple[dd.DataFrame, int]:
    """The missing-value policy applied before the rows are sorted by their groups (a missing cluster id cannot be
    sorted): such rows dropped (and counted) or the first named."""
    from dask.base import compute

    bad = table[used].isna()
    lengths, n_na, n_rows = compute(table.map_partitions(len), bad.sum(), bad.any(axis=1).sum())  # one pass
    if int(n_rows) == 0:
        return table, 0
    if missing != "drop":
        raise_first_missing(table, used, n_na, [int(k) for k in lengths], files)
    return table.dropna(subset=used), int(n_rows)
