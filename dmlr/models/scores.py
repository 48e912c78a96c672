"""Held-out scores of the models of a bank: log-loss, accuracy and Brier score of each model on the rows its
weighting marks (a fold), all models in one pass. NumPy only: runs on workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.effects import probabilities
from dmlr.oracle.evaluation import evaluation_sums
from dmlr.passes.kernel import Sums

__all__ = ["SCORES", "HeldOutKernel", "scores_of"]

Array = NDArray[np.float64]

_EDGES = np.array([0.0, 1.0])
SCORES = ("log_loss", "accuracy", "brier")
"""The held-out scores, each a weighted mean over the held-out rows (lower is better but for accuracy)."""


@dataclass(frozen=True)
class HeldOutKernel:
    """The sums behind a model's held-out scores, on the rows where ``weighting`` is positive.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
        The model's coefficients.
    intercept : bool
    columns : tuple of int, optional
        The data columns the model uses (all when ``None``).
    weighting : callable
        Rows -> weight of each row, shape (r,): 1 on the held-out rows, 0 elsewhere.
    """

    coef: Array
    intercept: bool
    columns: tuple[int, ...] | None
    weighting: Callable[[Rows], Array]
    reads: ClassVar[tuple[str, ...]] = ("x", "codes", "weights", "offset")

    def __call__(self, rows: Rows) -> Sums:
        assert rows.x is not None and rows.codes is not None
        held = self.weighting(rows) > 0
        w = np.ones(int(held.sum())) if rows.weights is None else np.asarray(rows.weights[held], dtype=np.float64)
        # the models' fits checked every row (their first pass): these values are finite
        x = rows.x[held] if self.columns is None else rows.x[held][:, list(self.columns)]
        offset = None if rows.offset is None else rows.offset[held]
        proba, _, _ = probabilities(x, self.coef, self.intercept, offset)  # code order: the scores do not depend on it
        sums = evaluation_sums(proba, np.asarray(rows.codes[held], dtype=np.intp), w, _EDGES)
        return Sums({k: sums[k] for k in ("rows", "weight", "nll", "hits", "brier")})

    def memory(self, rows: int, p: int) -> int:
        """The weights and mask of every row, and the held-out rows' copy and probabilities (a fold holds about
        ``rows / folds`` of them: twice that is counted)."""
        folds = int(getattr(self.weighting, "folds", 1))
        held = min(rows, -(-2 * rows // max(folds, 1)))
        return 9 * rows + 8 * held * (p + 4 * (self.coef.shape[1] + 1))

    def record_bytes(self) -> int:
        """Five numbers."""
        return 5 * 8


def scores_of(sums: Sums) -> dict[str, float]:
    """The scores from a model's held-out sums: ``n_test`` (rows), ``log_loss``, ``accuracy``, ``brier`` (weighted
    means; NaN when no row was held out)."""
    weight = float(sums["weight"][0])
    mean = (lambda v: float(v) / weight) if weight > 0 else (lambda v: float("nan"))
    return {
        "n_test": int(sums["rows"][0]),
        "log_loss": mean(sums["nll"][0]),
        "accuracy": mean(sums["hits"][0]),
        "brier": mean(sums["brier"][0]),
    }
