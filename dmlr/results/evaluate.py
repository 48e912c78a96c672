"""Held-out evaluation of a fitted model on a staged store: log-loss, accuracy, confusion matrix, calibration.

Every quantity is a sum over rows, so each partition produces a small record (one task per chunk, reading the
chunk once) and the records are added up: the held-out set never has to fit in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dask.base import compute
from dask.delayed import delayed
from numpy.typing import NDArray

from dmlr.data.store import StoreData, open_store
from dmlr.errors import InputError
from dmlr.results.results import MNLogitResults

__all__ = ["evaluate"]

Array = NDArray[np.float64]


def _block(proba: Array, codes: NDArray[np.int32], weights: Array | None, edges: Array) -> dict[str, Array]:
    """Sums for one chunk: log-loss, hits, confusion counts (true x predicted), calibration bins."""
    n, k = proba.shape
    w = np.ones(n) if weights is None else weights
    p_true = proba[np.arange(n), codes]
    pred = np.argmax(proba, axis=1)
    conf = proba[np.arange(n), pred]
    hit = (pred == codes).astype(np.float64)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (codes, pred), w)
    bins = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, edges.size - 2)
    nb = edges.size - 1
    observed = np.zeros(k)
    np.add.at(observed, codes, w)
    return {
        "rows": np.array([float(n)]),
        "weight": np.array([w.sum()]),
        "nll": np.array([-(w * np.log(np.maximum(p_true, np.finfo(np.float64).tiny))).sum()]),
        "hits": np.array([(w * hit).sum()]),
        "brier": np.array([(w * ((proba**2).sum(axis=1) - 2 * p_true + 1)).sum()]),
        "confusion": confusion,
        "bin_weight": np.bincount(bins, weights=w, minlength=nb),
        "bin_conf": np.bincount(bins, weights=w * conf, minlength=nb),
        "bin_hits": np.bincount(bins, weights=w * hit, minlength=nb),
        "class_predicted": (w[:, None] * proba).sum(axis=0),
        "class_observed": observed,
    }


def _add(records: list[dict[str, Array]]) -> dict[str, Array]:
    return {key: np.sum([r[key] for r in records], axis=0) for key in records[0]}


def evaluate(
    result: MNLogitResults,
    data: str | StoreData,
    *,
    bins: int = 10,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``result`` on held-out rows staged in a store (with :func:`dmlr.stage`'s ``like=``).

    Parameters
    ----------
    result : MNLogitResults
    data : str or StoreData
        A store whose classes and feature columns are the model's (weights, when staged, weight every metric).
    bins : int
        Equal-width bins of the top-class probability for the calibration table.
    storage_options : dict, optional
        fsspec options for a store URL.

    Returns
    -------
    dict
        ``n_rows``, ``weight_sum``, ``log_loss`` (mean negative log-likelihood), ``null_log_loss`` (predicting
        the held-out class frequencies), ``accuracy``, ``brier`` (multiclass Brier score), ``classes``,
        ``confusion_matrix`` (rows true class, columns predicted, weighted counts), ``calibration`` (per bin of
        the top-class probability: rows, weight, mean confidence, accuracy; and the expected calibration error),
        ``class_frequency`` (mean predicted probability vs observed share per class). JSON-serializable.
    """
    store = data if isinstance(data, StoreData) else open_store(data, storage_options=storage_options)
    classes = [c.item() if isinstance(c, np.generic) else c for c in np.asarray(result.classes)]
    if list(store.classes.tolist()) != classes:
        raise InputError(f"{store.url} has classes {store.classes.tolist()}, the model {classes}: stage it like= the "
                         "training store")  # fmt: skip
    expected = list(result.input_features if result.dropped_features else result.data_feature_names)
    if list(store.feature_names) != expected:
        raise InputError(f"{store.url} has features {store.feature_names}, the model {expected}")
    if bins < 1:
        raise InputError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(1.0 / len(classes), 1.0, bins + 1)
    edges[0], edges[-1] = 0.0, 1.0 + 1e-12
    proba = result.predict_proba(store.X, offset=store.offset)
    parts = []
    arrays = [proba, store.y] + ([store.weights] if store.weights is not None else [])
    blocks = [a.to_delayed().ravel() for a in arrays]
    for items in zip(*blocks, strict=True):
        w = items[2] if len(items) > 2 else None
        parts.append(delayed(_block, pure=True)(items[0], items[1], w, edges))
    (total,) = compute(delayed(_add)(parts))
    weight = float(total["weight"][0])
    if not weight > 0:
        raise InputError(f"{store.url} has no rows with positive weight to evaluate on")
    share = total["class_observed"] / weight
    present = share[share > 0]
    bw = total["bin_weight"]
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(bw > 0, total["bin_conf"] / bw, np.nan)
        acc = np.where(bw > 0, total["bin_hits"] / bw, np.nan)
    ece = float(np.nansum(bw * np.abs(conf - acc)) / weight)
    return {
        "data": store.url,
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
