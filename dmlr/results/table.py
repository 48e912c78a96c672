"""The prediction table (statsmodels' ``pred_table``): observed against most probable class, counted in one call for
in-memory rows or one pass of the engine for dask arrays and stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.labels import LabelPositions
from dmlr.errors import InputError
from dmlr.oracle.evaluation import EvaluationKernel
from dmlr.results.sums import row_sums

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["evaluation_sums", "prediction_table"]


def prediction_table(res: MNLogitResults, X: Any, y: Any, stored: bool = False) -> NDArray[np.float64]:
    """See :meth:`~dmlr.results.post.PostEstimation.pred_table`; ``stored``: ``y`` holds a store's class positions."""
    return np.asarray(evaluation_sums(res, X, y, np.array([0.0, 1.0 + 1e-12]), stored=stored)["confusion"])


def evaluation_sums(
    res: MNLogitResults,
    X: Any,
    y: Any,
    edges: NDArray[np.float64],
    weights: Any = None,
    stored: bool = False,
    client: Any = None,
) -> dict[str, NDArray[np.float64]]:
    """The sums of :class:`~dmlr.oracle.evaluation.EvaluationKernel` over rows ``X`` (any form
    :meth:`~dmlr.MNLogitResults.model_rows` reads) labelled ``y`` (shape (n,)), weighted by ``weights`` (n,): one
    call in memory, one pass of the engine for dask input (on ``client``, default the current one).

    Raises
    ------
    InputError
        ``y`` or ``weights`` not one value per row, or a label that is not one of the model's classes (named with
        its row).
    """
    x, index = res.model_rows(X)
    if isinstance(y, pd.Series):
        y = (y.loc[index] if index is not None else y).to_numpy()
    if isinstance(weights, pd.Series):
        weights = (weights.loc[index] if index is not None else weights).to_numpy()
    classes = np.asarray(res.classes)
    known = not isinstance(x, da.Array) or not any(np.isnan(c) for c in x.chunks[0])
    for name, values in (("y", y), ("weights", weights)):
        if values is not None and (not known or np.shape(values) != (x.shape[0],)):
            raise InputError(
                f"{name} must have one value per row of X ({x.shape[0]} rows), got shape {np.shape(values)}"
                + ("" if known else "; for rows encoded from table files, pass X and y in memory or as dask arrays")
            )
    # labels as positions in the sorted classes (for dask input as the engine produces each partition's rows)
    positions = None if stored else LabelPositions(classes)
    kernel = EvaluationKernel(res.coef, bool(res.intercept), res.code_to_sorted, edges)
    sums: dict[str, NDArray[np.float64]] = row_sums(
        x, kernel, client=client, labels=y, weights=weights, transform=positions
    ).values
    return sums
