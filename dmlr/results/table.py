"""The prediction table (statsmodels' ``pred_table``): observed against most probable class, counted in one call for
in-memory rows or one pass of the engine for dask arrays and stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.labels import label_positions
from dmlr.errors import InputError
from dmlr.oracle.evaluation import EvaluationKernel
from dmlr.results.sums import row_sums

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["prediction_table"]


def prediction_table(res: MNLogitResults, X: Any, y: Any, stored: bool = False) -> NDArray[np.float64]:
    """See :meth:`~dmlr.results.post.PostEstimation.pred_table`; ``stored``: ``y`` holds a store's class positions."""
    x, index = res.model_rows(X)
    if isinstance(y, pd.Series):
        y = (y.loc[index] if index is not None else y).to_numpy()
    classes = np.asarray(res.classes)
    known = not isinstance(x, da.Array) or not any(np.isnan(c) for c in x.chunks[0])
    if not known or np.shape(y) != (x.shape[0],):
        raise InputError(
            f"y must have one label per row of X ({x.shape[0]} rows), got shape {np.shape(y)}"
            + ("" if known else "; for rows encoded from table files, pass X and y in memory or as dask arrays")
        )
    if not stored:  # labels as positions in the sorted classes, block by block for dask input
        lazy = isinstance(y, da.Array)
        y = da.map_blocks(label_positions, y, classes, dtype=np.int32) if lazy else label_positions(y, classes)
    kernel = EvaluationKernel(res.coef, bool(res.intercept), res.code_to_sorted, np.array([0.0, 1.0 + 1e-12]))
    return np.asarray(row_sums(x, kernel, labels=y)["confusion"])
