"""Held-out evaluation of a fitted model on a staged store or on rows and labels: log-loss, accuracy, confusion
matrix, calibration.

Every quantity is a sum over rows: one pass of the engine (:class:`~dmlr.oracle.evaluation.EvaluationKernel`, one
task per worker thread whatever the data's partitioning) reads each chunk once, and the held-out set never has to
fit in memory; in-memory rows take one call of the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.data.design import RowData
from dmlr.data.store import StoreData, is_store, open_store
from dmlr.errors import InputError
from dmlr.oracle.evaluation import EvaluationKernel
from dmlr.passes.engine import PassEngine
from dmlr.passes.shipping import current_client
from dmlr.results.results import MNLogitResults
from dmlr.results.table import evaluation_sums

__all__ = ["evaluate"]

Array = NDArray[np.float64]


def evaluate(
    result: MNLogitResults,
    data: Any,
    y: Any = None,
    *,
    weights: Any = None,
    bins: int = 10,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Score ``result`` on held-out rows: a store (staged with :func:`dmlr.stage`'s ``like=``) or rows and labels.

    Parameters
    ----------
    result : MNLogitResults
    data : str, StoreData or array-like, shape (n, p)
        A store whose classes and feature columns are the model's (weights, when staged, weight every metric); or
        held-out rows in any form :meth:`~dmlr.MNLogitResults.predict_proba` reads (NumPy, pandas, dask arrays or
        DataFrames), with their labels ``y``.
    y : array-like, shape (n,), optional
        Labels of the rows of ``data`` (not with a store).
    weights : array-like, shape (n,), optional
        Weights of the rows of ``data`` (not with a store).
    bins : int
        Equal-width bins of the top-class probability for the calibration table.
    storage_options : dict, optional
        fsspec options for a store URL.
    client : distributed.Client, optional
        Where the pass over dask input runs (default the current client, else local threads).

    Returns
    -------
    dict
        ``n_rows``, ``weight_sum``, ``log_loss`` (mean negative log-likelihood), ``null_log_loss`` (predicting
        the held-out class frequencies), ``accuracy``, ``brier`` (multiclass Brier score), ``classes``,
        ``confusion_matrix`` (rows true class, columns predicted, weighted counts), ``calibration`` (per bin of
        the top-class probability: rows, weight, mean confidence, accuracy; and the expected calibration error),
        ``class_frequency`` (mean predicted probability vs observed share per class). JSON-serializable.
    """
    if bins < 1:
        raise InputError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(1.0 / len(result.classes), 1.0, bins + 1)
    edges[0], edges[-1] = 0.0, 1.0 + 1e-12
    classes = [c.item() if isinstance(c, np.generic) else c for c in np.asarray(result.classes)]
    if isinstance(data, StoreData) or (isinstance(data, str) and is_store(data, storage_options)):
        if y is not None or weights is not None:
            raise InputError("a store holds its labels and weights: pass y= and weights= only with arrays")
        store = data if isinstance(data, StoreData) else open_store(data, storage_options=storage_options)
        total, where = _store_sums(result, store, classes, edges, client), store.url
    else:
        if y is None:
            raise InputError("evaluate needs the labels y of the rows (or a store, which holds them)")
        total, where = evaluation_sums(result, data, y, edges, weights, client=client), "the rows given"
    return _metrics(total, classes, edges, where)


def _store_sums(
    result: MNLogitResults, store: StoreData, classes: list[Any], edges: Array, client: Any
) -> dict[str, Array]:
    if list(store.classes.tolist()) != classes:
        raise InputError(f"{store.url} has classes {store.classes.tolist()}, the model {classes}: stage it like= the "
                         "training store")  # fmt: skip
    expected = list(result.input_features if result.dropped_features else result.data_feature_names)
    if list(store.feature_names) != expected:
        raise InputError(f"{store.url} has features {store.feature_names}, the model {expected}")
    x = result.model_columns(store.X)
    rows = RowData(x=x, labels=store.y, weights=store.weights, offset=store.offset)
    engine = PassEngine(rows, client if client is not None else current_client())
    values: dict[str, Array] = engine.reduce(EvaluationKernel(result.coef, result.intercept, result.code_to_sorted,
                                                              edges)).values  # fmt: skip
    return values


def _metrics(total: dict[str, Array], classes: list[Any], edges: Array, where: str) -> dict[str, Any]:
    bins = edges.size - 1
    weight = float(total["weight"][0])
    if not weight > 0:
        raise InputError(f"{where} has no rows with positive weight to evaluate on")
    share = total["class_observed"] / weight
    present = share[share > 0]
    bw = total["bin_weight"]
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(bw > 0, total["bin_conf"] / bw, np.nan)
        acc = np.where(bw > 0, total["bin_hits"] / bw, np.nan)
    ece = float(np.nansum(bw * np.abs(conf - acc)) / weight)
    return {
        "data": where,
        "n_rows": int(total["rows"][0]),
        "weight_sum": weight,
        "log_loss": float(total["nll"][0]) / weight,
        "null_log_loss": float(-(present * np.log(present)).sum()),
        "accuracy": float(total["hits"][0]) / weight,
        "brier": float(total["brier"][0]) / weight,
        "classes": classes,
        "confusion_matrix": total["confusion"].tolist(),
        "calibration": {
            "bins": [
                {
                    "lower": float(max(edges[i], 0.0)),
                    "upper": float(min(edges[i + 1], 1.0)),
                    "weight": float(bw[i]),
                    "mean_confidence": None if bw[i] == 0 else float(conf[i]),
                    "accuracy": None if bw[i] == 0 else float(acc[i]),
                }
                for i in range(bins)
            ],
            "expected_calibration_error": ece,
        },
        "class_frequency": {
            "predicted": (total["class_predicted"] / weight).tolist(),
            "observed": share.tolist(),
        },
    }
