"""Log-likelihoods and scores of one model under F row weightings (bootstrap replicates at the fit): each row's
score is computed once, and the F weighted sums of them are one GEMM against the rows' weights. NumPy only: runs on
workers.

The score of weighting ``f`` is ``sum_i w_if z_i`` with ``z_i = (y_i - p_i) kron x_i`` the row's score at the
model's coefficients, so a block's F scores are ``Z^T W`` (``Z`` (r, m d), ``W`` (r, F)): the arithmetic of one
model's score pass plus a GEMM of width F, against F softmaxes for F different coefficients
(:class:`~dmlr.oracle.stacked.StackedScoreKernel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.probabilities import row_scores
from dmlr.oracle.stacked import BLOCK_BYTES, StackedScores, StackWeighting, checked_columns, weighted_reads

__all__ = ["ReplicateScoreKernel"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ReplicateScoreKernel:
    """The log-likelihood and score of one model under each of F row weightings.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
    intercept : bool
        Whether row 0 of ``coef`` is the intercept (not stored in the data).
    weighting : StackWeighting
        The F weightings of each row (times the data's weights).
    columns : tuple of int, optional
        The data columns the model uses (all when ``None``).
    """

    coef: Array
    intercept: bool
    weighting: StackWeighting
    columns: tuple[int, ...] | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The rows, their weights and offset, and what the weighting reads (cluster ids)."""
        return weighted_reads(self.weighting)

    def __call__(self, rows: Rows) -> StackedScores:
        x = checked_columns(rows, self.columns)
        assert rows.codes is not None
        d, m = self.coef.shape
        f = self.weighting.size
        keys = self.weighting.keys(rows)
        score = np.zeros((m * d, f))
        out = StackedScores(np.zeros(f), np.zeros((f, d, m)), np.zeros(f))
        step = max(1, BLOCK_BYTES // (8 * max(f, m * d)))
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            weights = self.weighting.of_keys(keys[start:stop])  # (r_b, F)
            if rows.weights is not None:
                weights *= np.asarray(rows.weights[start:stop], dtype=np.float64)[:, None]
            out.weight_sum += weights.sum(axis=0)
            offset = None if rows.offset is None else rows.offset[start:stop]
            z, log_true = row_scores(x[start:stop], rows.codes[start:stop], self.coef, self.intercept, offset)
            score += z.T @ weights
            out.loglik += log_true @ weights
        out.score[:] = score.reshape(m, d, f).transpose(2, 1, 0)  # class-major rows of Z: (F, d, m)
        return out

    def memory(self, rows: int, p: int) -> int:
        """The rows' keys, a block's weights, design, probabilities and row scores (each within the block budget),
        the record."""
        d, m = self.coef.shape
        return 8 * rows + 5 * BLOCK_BYTES + 16 * self.weighting.size * (d * m + 2)

    def record_bytes(self) -> int:
        """The F scores."""
        d, m = self.coef.shape
        return 8 * self.weighting.size * (d * m + 2)
