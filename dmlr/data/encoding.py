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

__all__ = ["FeatureEncoding"]


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

    def transform(self, frame: pd.DataFrame, where: str = "data") -> NDArray[np.float64]:
        """Encode one table partition.

        Parameters
        ----------
        frame : pandas.DataFrame
            Must contain every column of :attr:`columns`.
        where : str
            Names the partition in error messages.

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
        j = 0
        for col in self.columns:
            values = frame[col]
            if col in self.levels:
                levels = self.levels[col]
                if values.isna().any():
                    row = int(np.argmax(values.isna().to_numpy()))
                    raise InputError(f"categorical column {col!r} has a missing value at row {row} of {where}")
                raw = values.to_numpy()
                index = pd.Index(levels)
                pos = index.get_indexer(raw)
                if (pos < 0).any():
                    bad = raw[int(np.argmax(pos < 0))]
                    raise InputError(
                        f"categorical column {col!r} has level {bad!r} in {where}, not seen at staging "
                        f"(known levels: {levels})"
                    )
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
                    )
                j += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (stored in Zarr attributes and result directories)."""
        return {"columns": list(self.columns), "levels": {k: _plain(v) for k, v in self.levels.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureEncoding:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(data["columns"]), {k: list(v) for k, v in data.get("levels", {}).items()})
