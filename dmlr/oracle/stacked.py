"""Log-likelihoods and scores of F models of the same columns at once: the F linear predictors of a row block are one
GEMM against the stacked coefficients and the F scores one GEMM back, so a pass reads each block of ``X`` once for
every model (a score pass is bound by reading ``X``: F separate kernels read it F times). NumPy only: runs on
workers. Used by the bootstrap (:mod:`dmlr.models.bootstrap`), whose replicates differ by their row weights only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.probabilities import softmax

__all__ = ["StackedScoreKernel", "StackedScores"]

Array = NDArray[np.float64]

BLOCK_BYTES = 8 * 2**20
"""Budget of a row block's largest temporary (its ``r x F x m`` predictors)."""


class StackWeighting(Protocol):
    """The F models' row weights as functions of a key per row (its global index, its cluster's id) that the
    models share: the keys are found once per partition, the weights a row block at a time."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Fields of the rows the keys need besides their positions (``"groups"``)."""
        ...

    def keys(self, rows: Rows) -> NDArray[np.int64]:
        """One key per row, shape (r,)."""
        ...

    def of_keys(self, keys: NDArray[np.int64]) -> Array:
        """Each model's weight of each key, shape (r, F)."""
        ...


@dataclass
class StackedScores:
    """Each model's log-likelihood, score and weight sum over some rows.

    Attributes
    ----------
    loglik : ndarray, shape (F,)
    score : ndarray, shape (F, d, m)
        ``X^T V_f (Y - P_f)`` of each model (intercept row first when there is one).
    weight_sum : ndarray, shape (F,)
    """

    loglik: Array
    score: Array
    weight_sum: Array

    def __add__(self, other: StackedScores) -> StackedScores:
        return StackedScores(self.loglik + other.loglik, self.score + other.score, self.weight_sum + other.weight_sum)

    def add_(self, other: StackedScores) -> StackedScores:
        """Add ``other`` in place."""
        self.loglik += other.loglik
        self.score += other.score
        self.weight_sum += other.weight_sum
        return self


@dataclass(frozen=True)
class StackedScoreKernel:
    """The log-likelihood and score of F models that share their columns and differ by coefficients and row weights.

    Attributes
    ----------
    coefs : ndarray, shape (F, d, m)
    intercept : bool
        Whether row 0 of each model's coefficients is the intercept (not stored in the data).
    weighting : StackWeighting
        The models' weights of each row (times the data's weights).
    columns : tuple of int, optional
        The data columns the models use (all when ``None``).
    """

    coefs: Array
    intercept: bool
    weighting: StackWeighting
    columns: tuple[int, ...] | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The rows, their weights and offset, and what the weighting reads (cluster ids)."""
        return ("x", "codes", "weights", "offset", *getattr(self.weighting, "reads", ()))

    def __call__(self, rows: Rows) -> StackedScores:
        assert rows.x is not None and rows.codes is not None
        x = rows.x if self.columns is None else rows.x[:, list(self.columns)]
        check_finite(x, "X", rows.partition, rows.row_start)
        f, d, m = self.coefs.shape
        keys = self.weighting.keys(rows)
        first = int(self.intercept)
        slopes = [np.ascontiguousarray(self.coefs[:, first:, c].T) for c in range(m)]  # class c: (p, F)
        out = StackedScores(np.zeros(f), np.zeros((f, d, m)), np.zeros(f))
        step = max(1, BLOCK_BYTES // (8 * f * max(m, 1)))
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            weights = self.weighting.of_keys(keys[start:stop])  # (r_b, F)
            if rows.weights is not None:
                weights *= np.asarray(rows.weights[start:stop], dtype=np.float64)[:, None]
            out.weight_sum += weights.sum(axis=0)
            offset = None if rows.offset is None else rows.offset[start:stop]
            self._block(x[start:stop], rows.codes[start:stop], weights, offset, slopes, out)
        return out

    def _block(
        self,
        x: Array,
        codes: NDArray[Any],
        weights: Array,
        offset: Array | None,
        slopes: list[Array],
        out: StackedScores,
    ) -> None:
        """Add one row block's log-likelihoods and scores into ``out``; class-major throughout (the predictors of
        class c for every row and model are one GEMM, the softmax runs on them in place, no transposes)."""
        f, _, m = self.coefs.shape
        r = x.shape[0]
        eta = np.empty((m, r, f))
        for c in range(m):
            np.matmul(x, slopes[c], out=eta[c])
            if self.intercept:
                eta[c] += self.coefs[:, 0, c]
            if offset is not None:
                eta[c] += offset[:, c : c + 1]
        chosen = np.zeros((r, f))
        onehot = [(codes == c + 1).astype(np.float64)[:, None] for c in range(m)]  # (r, 1) each
        for c in range(m):
            chosen += onehot[c] * eta[c]
        prob, lse = softmax(eta.reshape(m, r * f))  # the one softmax
        chosen -= lse.reshape(r, f)
        out.loglik += np.einsum("rf,rf->f", weights, chosen)
        resid = prob.reshape(m, r, f)
        np.negative(resid, out=resid)
        first = int(self.intercept)
        for c in range(m):
            resid[c] += onehot[c]
            resid[c] *= weights
            out.score[:, first:, c] += (x.T @ resid[c]).T
            if self.intercept:
                out.score[:, 0, c] += resid[c].sum(axis=0)

    def memory(self, rows: int, p: int) -> int:
        """The rows' keys, a block's weights, predictors, probabilities and residuals (each within the block
        budget), the records."""
        f, d, m = self.coefs.shape
        return 8 * rows + 5 * BLOCK_BYTES + 16 * f * d * m

    def record_bytes(self) -> int:
        """The F scores."""
        f, d, m = self.coefs.shape
        return 8 * f * (d * m + 2)
