"""How source table columns become the numeric feature matrix, identically at staging and at prediction.

Numeric columns pass through as float64. Categorical columns named by the user are one-hot encoded with the first
level (in sorted order) dropped; the levels are recorded so new data encodes the same way, and a level never seen
at staging is an error naming the column and the level. Encoded columns are named ``col[T.level]`` as in
patsy/statsmodels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.errors import InputError

__all__ = ["FeatureEncoding", "drop_missing", "is_categorical", "missing_rows"]


def _plain(values: Sequence[Any]) -> list[Any]:
    """Labels/levels as plain JSON-able Python values, in sorted order."""
    return list(np.asarray(values).tolist())


@dataclass(frozen=True)
class FeatureEncoding:
    """The feature columns of a source table and the levels of its categorical columns.

    Attributes
    ----------
    columns : tuple of str
        Source columns, in design order.
    levels : dict of str to list
        Sorted levels of each categorical column (the first is the dropped reference level).
    """

    columns: tuple[str, ...]
    levels: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        """Names of the ``p`` design columns."""
        names: list[str] = []
        for col in self.columns:
            if col in self.levels:
                names += [f"{col}[T.{lvl}]" for lvl in self.levels[col][1:]]
            else:
                names.append(col)
        return names

    @property
    def n_features(self) -> int:
        """Number of design columns ``p``."""
        return len(self.feature_names)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> FeatureEncoding:
        """The encoding of a pandas DataFrame: ``category`` columns one-hot encoded against their first category
        (the reference: order the categories to choose it), numeric and boolean columns as they are.

        Raises
        ------
        InputError
            A column that is neither numeric, boolean nor ``category`` (named, with what to do).
        """
        columns = [str(c) for c in frame.columns] if columns is None else list(columns)
        levels: dict[str, list[Any]] = {}
        for col in columns:
            dtype = frame[col].dtype
            if isinstance(dtype, pd.CategoricalDtype):
                levels[col] = _plain(list(dtype.categories))
            elif not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
                raise InputError(
                    f"column {col!r} has dtype {dtype}, not numeric: make it a pandas category "
                    f"(df[{col!r}].astype('category'); its first category is the reference) or encode it yourself"
                )
        return cls(tuple(columns), levels)

    def transform(self, frame: pd.DataFrame, where: str = "data", unseen: str = "raise") -> NDArray[np.float64]:
        """Encode one table partition.

        Parameters
        ----------
        frame : pandas.DataFrame
            Must contain every column of :attr:`columns`.
        where : str
            Names the partition in error messages.
        unseen : {"raise", "nan"}
            A categorical level not seen at staging: an error naming the column and level, or a row of NaN.

        Returns
        -------
        ndarray, shape (len(frame), p)

        Raises
        ------
        InputError
            A missing column, a missing or non-numeric value, an unseen categorical level.
        """
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InputError(f"{where} lacks the feature columns {missing}")
        out = np.empty((len(frame), self.n_features))
        nan_rows = np.zeros(len(frame), dtype=bool)
        j = 0
        for col in self.columns:
            values = frame[col]
            if col in self.levels:
                levels = self.levels[col]
                if values.isna().any():
                    row = int(np.argmax(values.isna().to_numpy()))
                    raise InputError(
                        f"categorical column {col!r} has a missing value at row {row} of {where} "
                        "(missing='drop' drops such rows)"
                    )
                raw = np.asarray(values.astype(object).to_numpy())
                pos = pd.Index(levels, dtype=object).get_indexer(raw)
                if (pos < 0).any() and unseen == "raise":
                    bad = raw[int(np.argmax(pos < 0))]
                    raise InputError(
                        f"categorical column {col!r} has level {bad!r} at row {int(np.argmax(pos < 0))} of {where}, "
                        f"not seen when the model was fitted (known levels: {levels}); unseen='nan' gives such "
                        "rows NaN probabilities"
                    )
                nan_rows |= pos < 0
                width = len(levels) - 1
                out[:, j : j + width] = pos[:, None] == np.arange(1, len(levels))[None, :]
                j += width
            else:
                if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
                    raise InputError(
                        f"column {col!r} has dtype {values.dtype}, not numeric, in {where}; "
                        "declare it categorical or leave it out of the features"
                    )
                out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
                bad = ~np.isfinite(out[:, j])
                if bad.any():
                    raise InputError(
                        f"column {col!r} has a missing or non-finite value at row {int(np.argmax(bad))} of {where}"
                        + (" (missing='drop' drops rows with missing values)" if values.isna().any() else "")
                    )
                j += 1
        out[nan_rows] = np.nan
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (stored in Zarr attributes and result directories)."""
        return {"columns": list(self.columns), "levels": {k: _plain(v) for k, v in self.levels.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureEncoding:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(data["columns"]), {k: list(v) for k, v in data.get("levels", {}).items()})


def is_categorical(dtype: Any) -> bool:
    """Whether a column of this dtype is encoded by levels (pandas ``category``, strings, objects)."""
    return isinstance(dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    )


def missing_rows(frame: pd.DataFrame, columns: Sequence[str]) -> NDArray[np.bool_]:
    """Rows of ``frame`` with a missing value (NaN, None, NA, empty field) in any of ``columns``."""
    if not len(columns):
        return np.zeros(len(frame), dtype=bool)
    return np.asarray(frame[list(columns)].isna().any(axis=1).to_numpy(), dtype=bool)


def drop_missing(
    frame: pd.DataFrame, columns: Sequence[str], missing: str, where: str = "data"
) -> tuple[pd.DataFrame, int]:
    """Apply the missing-value policy to ``columns`` of one table.

    Parameters
    ----------
    frame : pandas.DataFrame
    columns : sequence of str
        The columns the model reads (features, label, weights, offset).
    missing : {"raise", "drop"}
    where : str
        Names the table in the error.

    Returns
    -------
    frame : pandas.DataFrame
        Without the rows holding a missing value (``"drop"``), else ``frame`` itself.
    dropped : int
        Rows dropped.

    Raises
    ------
    InputError
        ``missing="raise"`` and a value is missing: names the column, the row position and its index label.
    """
    bad = missing_rows(frame, columns)
    if not bad.any():
        return frame, 0
    if missing == "drop":
        return frame.loc[~bad], int(bad.sum())
    row = int(np.argmax(bad))
    col = next(c for c in columns if pd.isna(frame[c].iloc[row]))
    label = frame.index[row]
    at = f"row {row}" + ("" if label == row else f" (index {label!r})")
    raise InputError(
        f"column {col!r} has a missing value at {at} of {where} ({int(bad.sum())} rows have one); "
        "pass missing='drop' (--missing drop) to drop such rows"
    )
