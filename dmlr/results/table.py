"""The prediction table (statsmodels' ``pred_table``): observed against most probable class, counted in one call for
in-memory rows or one pass of the engine for dask arrays and stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.design import RowData
from dmlr.data.rows import Rows
from dmlr.errors import InputError
from dmlr.oracle.evaluation import EvaluationKernel
from dmlr.passes.engine import PassEngine
from dmlr.passes.shipping import current_client

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["label_positions", "prediction_table"]


def label_positions(labels: NDArray[Any], classes: NDArray[Any]) -> NDArray[np.int32]:
    """Positions of ``labels`` among the sorted ``classes``.

    Raises
    ------
    InputError
        A label is not one of the model's classes (the first named, with its row).
    """
    labels = np.asarray(labels)
    try:
        pos = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
        outside = classes[pos] != labels
    except TypeError:  # labels of another type than the classes: none of them is a class
        outside, pos = np.ones(labels.shape, bool), np.zeros(labels.shape, np.intp)
    if np.any(outside):
        row = int(np.argmax(outside))
        value = labels[row].item() if isinstance(labels[row], np.generic) else labels[row]
        raise InputError(
            f"y has the label {value!r} at row {row}, which is not one of the model's classes {classes.tolist()}"
        )
    return pos.astype(np.int32)


def prediction_table(res: MNLogitResults, X: Any, y: Any, stored: bool = False) -> NDArray[np.float64]:
    """See :meth:`~dmlr.results.post.PostEstimation.pred_table`; ``stored``: ``y`` holds a store's class positions."""
    x, index = res.model_rows(X)
    kernel = EvaluationKernel(res.coef, bool(res.intercept), res.code_to_sorted, np.array([0.0, 1.0 + 1e-12]))
    classes = np.asarray(res.classes)
    if isinstance(y, pd.Series):
        y = y.loc[index] if index is not None else y
        y = y.to_numpy()
    if not isinstance(x, da.Array):
        labels = np.asarray(y)
        if labels.shape != (x.shape[0],):
            raise InputError(f"y must have one label per row of X ({x.shape[0]}), got shape {labels.shape}")
        positions = labels.astype(np.int32) if stored else label_positions(labels, classes)
        return np.asarray(kernel(Rows(x=x, labels=positions))["confusion"])
    lazy = y if isinstance(y, da.Array) else da.from_array(np.asarray(y))
    if any(np.isnan(c) for c in x.chunks[0]) or lazy.shape != (x.shape[0],):
        raise InputError(
            f"y must have one label per row of X ({x.shape[0]} rows), got shape {lazy.shape}; for rows encoded "
            "from table files, pass X and y in memory or as dask arrays"
        )
    positions = lazy.rechunk((x.chunks[0],))
    if not stored:
        positions = positions.map_blocks(label_positions, classes, dtype=np.int32)
    engine = PassEngine(RowData(x=x, labels=positions), current_client())
    return np.asarray(engine.reduce(kernel)["confusion"])
