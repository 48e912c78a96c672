"""The held-out evaluation kernel: per partition, the sums behind log-loss, accuracy, the confusion matrix and the
calibration table (NumPy only: runs on workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.probabilities import linear_predictor, log_probabilities
from dmlr.passes.kernel import Sums

__all__ = ["EvaluationKernel", "class_terms", "evaluation_sums"]

Array = NDArray[np.float64]


def class_terms(proba: Array, codes: NDArray[np.integer[Any]]) -> tuple[Array, NDArray[np.intp], Array]:
    """Per row, from class-major probabilities ``proba`` (K, r) and ``codes`` (r,) (positions among the classes):
    the probability of its class, the most probable class (the first of equal ones in class order) and the Brier
    score ``sum_c (p_c - 1[c = y])^2 = sum_c p_c^2 - 2 p_y + 1``. A loop over the K classes, each step a vector
    operation over the rows (NumPy's argmax and sums along a short last axis run a loop per row)."""
    p_true = np.take_along_axis(proba, np.asarray(codes, dtype=np.intp)[None], axis=0)[0]
    predicted = np.zeros(proba.shape[1], dtype=np.intp)
    most = proba[0].copy()
    squares = proba[0] ** 2
    for c in range(1, proba.shape[0]):
        predicted[proba[c] > most] = c  # strictly: the first of equal ones stays
        np.maximum(most, proba[c], out=most)
        squares += proba[c] ** 2
    return p_true, predicted, squares - 2 * p_true + 1


def evaluation_sums(proba: Array, codes: NDArray[np.int32], weights: Array | None, edges: Array) -> dict[str, Array]:
    """Sums for some rows (``proba`` (r, K) in sorted label order, ``codes`` positions in it): log-loss, hits,
    confusion counts (true x predicted), calibration bins."""
    n, k = proba.shape
    w = np.ones(n) if weights is None else weights
    p_true, pred, brier = class_terms(proba.T, codes)
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
        "brier": np.array([(w * brier).sum()]),
        "confusion": confusion,
        "bin_weight": np.bincount(bins, weights=w, minlength=nb),
        "bin_conf": np.bincount(bins, weights=w * conf, minlength=nb),
        "bin_hits": np.bincount(bins, weights=w * hit, minlength=nb),
        "class_predicted": (w[:, None] * proba).sum(axis=0),
        "class_observed": observed,
    }


@dataclass(frozen=True)
class EvaluationKernel:
    """The evaluation sums of a partition of held-out rows (``labels``: positions in the sorted classes).

    Attributes
    ----------
    coef : ndarray, shape (d, m)
    intercept : bool
    order : ndarray of int, shape (K,)
        Code order to sorted label order (``MNLogitResults.code_to_sorted``).
    edges : ndarray, shape (bins + 1,)
        Calibration bins of the top-class probability.
    """

    coef: Array
    intercept: bool
    order: NDArray[np.intp]
    edges: Array
    reads: ClassVar[tuple[str, ...]] = ("x", "labels", "weights", "offset")

    def __call__(self, rows: Rows) -> Sums:
        assert rows.x is not None and rows.labels is not None
        check_finite(rows.x, "X", rows.partition, rows.row_start)
        q, lse = log_probabilities(linear_predictor(rows.x, self.coef, self.intercept, rows.offset))
        proba = np.column_stack([np.exp(-lse), q])[:, self.order]
        return Sums(evaluation_sums(proba, np.asarray(rows.labels, dtype=np.intp), rows.weights, self.edges))

    def memory(self, rows: int, p: int) -> int:
        k = self.coef.shape[1] + 1
        return 8 * rows * (4 * k + 8) + 8 * k * k
