"""Log-likelihoods and scores of F models of the same columns at once: the F linear predictors of a row block are one
GEMM against the stacked coefficients and the F scores one GEMM back, so a pass reads each block of ``X`` once for
every model (a score pass is bound by reading ``X``: F separate kernels read it F times). NumPy only: runs on
workers. Used by the bootstrap (:mod:`dmlr.models.bootstrap`), whose replicates differ by their row weights only,
and by cross-validation's fold models (:mod:`dmlr.models.fold_models`), with their held-out scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.probabilities import softmax

__all__ = ["HELD_SUMS", "StackedScoreKernel", "StackedScores"]

Array = NDArray[np.float64]

HELD_SUMS = ("rows", "weight", "nll", "hits", "brier")
"""The held-out sums of :attr:`StackedScores.held`, in its column order."""
_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))

BLOCK_BYTES = 4 * 2**20
"""Budget of a row block's largest temporary (its ``r x F x m`` predictors)."""


def weighted_reads(weighting: Any) -> tuple[str, ...]:
    """What a kernel of weighted scores reads: the rows, their labels, weights and offset, and what its weighting
    reads (cluster ids)."""
    return ("x", "codes", "weights", "offset", *getattr(weighting, "reads", ()))


def checked_columns(rows: Rows, columns: tuple[int, ...] | None) -> Array:
    """The model's columns of the rows' features (all when ``None``), checked finite (the partition and row of a bad
    value named)."""
    assert rows.x is not None and rows.codes is not None
    x = rows.x if columns is None else rows.x[:, list(columns)]
    check_finite(x, "X", rows.partition, rows.row_start)
    return x


class StackWeighting(Protocol):
    """The F models' row weights as functions of a key per row (its global index, its cluster's id) that the
    models share: the keys are found once per partition, the weights a row block at a time."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Fields of the rows the keys need besides their positions (``"groups"``)."""
        ...

    @property
    def size(self) -> int:
        """F, the models weighted."""
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
    held : ndarray, shape (F, 5), optional
        With ``held_out``: each model's sums over the rows it weighs 0 (its held-out fold), columns
        :data:`HELD_SUMS` (rows, the data's weight, negative log-likelihood, hits of the most probable class,
        Brier score), as :func:`dmlr.oracle.evaluation.evaluation_sums` adds them.
    """

    loglik: Array
    score: Array
    weight_sum: Array
    held: Array | None = None

    def __add__(self, other: StackedScores) -> StackedScores:
        held = None if self.held is None or other.held is None else self.held + other.held
        return StackedScores(
            self.loglik + other.loglik, self.score + other.score, self.weight_sum + other.weight_sum, held
        )

    def add_(self, other: StackedScores) -> StackedScores:
        """Add ``other`` in place."""
        self.loglik += other.loglik
        self.score += other.score
        self.weight_sum += other.weight_sum
        if self.held is not None and other.held is not None:
            self.held += other.held
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
    held_out : bool
        The weighting is a stack of fold models (:class:`~dmlr.models.weightings.FoldStack`: each model weighs 0
        the rows of its fold, ``model_folds``, and 1 the others; ``folds_of`` gives each row's fold): also each
        model's sums over the rows of its fold (:attr:`StackedScores.held`), from the same probabilities.
    """

    coefs: Array
    intercept: bool
    weighting: StackWeighting
    columns: tuple[int, ...] | None = None
    held_out: bool = False

    @property
    def reads(self) -> tuple[str, ...]:
        """The rows, their weights and offset, and what the weighting reads (cluster ids)."""
        return weighted_reads(self.weighting)

    @property
    def _step(self) -> int:
        """Rows of a block."""
        f, _, m = self.coefs.shape
        return max(1, BLOCK_BYTES // (8 * f * max(m, 1)))

    def _slopes(self) -> list[Array]:
        """Each class's slopes of every model, shape (p, F)."""
        first = int(self.intercept)
        return [np.ascontiguousarray(self.coefs[:, first:, c].T) for c in range(self.coefs.shape[2])]

    def __call__(self, rows: Rows) -> StackedScores:
        x = checked_columns(rows, self.columns)
        if self.held_out:
            return self._by_fold(rows, x)
        assert rows.codes is not None
        f, d, m = self.coefs.shape
        keys = self.weighting.keys(rows)
        slopes = self._slopes()
        out = StackedScores(np.zeros(f), np.zeros((f, d, m)), np.zeros(f))
        for start in range(0, x.shape[0], self._step):
            stop = min(start + self._step, x.shape[0])
            weights = self.weighting.of_keys(keys[start:stop])  # (r_b, F)
            if rows.weights is not None:
                weights *= np.asarray(rows.weights[start:stop], dtype=np.float64)[:, None]
            out.weight_sum += weights.sum(axis=0)
            offset = None if rows.offset is None else rows.offset[start:stop]
            self._block(x[start:stop], rows.codes[start:stop], weights, offset, slopes, out)
        return out

    def _by_fold(self, rows: Rows, x: Array) -> StackedScores:
        """The held-out form (fold models, 0/1 weights): the rows of each fold a block at a time, which the models
        holding that fold out score and the others train on, so that neither an (r, F) weight matrix nor a gather
        of each model's held-out rows is needed."""
        assert rows.codes is not None
        f, d, m = self.coefs.shape
        stack: Any = self.weighting
        fold = stack.folds_of(stack.keys(rows))
        order = np.argsort(fold, kind="stable")
        bounds = np.searchsorted(fold[order], np.arange(stack.folds + 1))
        model_folds = np.asarray(stack.model_folds)
        slopes = self._slopes()
        out = StackedScores(np.zeros(f), np.zeros((f, d, m)), np.zeros(f), np.zeros((f, len(HELD_SUMS))))
        for g in range(stack.folds):
            held = np.flatnonzero(model_folds == g)
            for start in range(int(bounds[g]), int(bounds[g + 1]), self._step):
                at = order[start : min(start + self._step, int(bounds[g + 1]))]
                weights = None if rows.weights is None else np.asarray(rows.weights[at], dtype=np.float64)
                offset = None if rows.offset is None else rows.offset[at]
                self._fold_block(x[at], rows.codes[at], weights, offset, slopes, held, out)
        return out

    def _probabilities(
        self, x: Array, codes: NDArray[Any], offset: Array | None, slopes: list[Array]
    ) -> tuple[Array, Array, Array, list[NDArray[np.intp]]]:
        """A row block's probabilities (m, r, F), log-normalizers and true-class log-probabilities (r, F), and the
        rows of each non-base class; class-major throughout (the predictors of class c for every row and model are
        one GEMM, the one softmax runs on all of them, no transposes)."""
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
        of_class = [np.flatnonzero(codes == c + 1) for c in range(m)]  # the rows of each non-base class
        for c in range(m):
            chosen[of_class[c]] = eta[c, of_class[c]]
        prob, lse = softmax(eta.reshape(m, r * f))  # the one softmax
        chosen -= lse.reshape(r, f)
        return prob.reshape(m, r, f), lse.reshape(r, f), chosen, of_class

    def _add_scores(
        self, x: Array, prob: Array, of_class: list[NDArray[np.intp]], weights: Array | None, held: Any, out: Array
    ) -> None:
        """Add ``X^T W (Y - P)`` of each model into ``out`` (F, d, m), ``prob`` overwritten by the residuals;
        ``weights`` (r, F) or (r, 1), ``held`` the models that take no part (their residuals zeroed)."""
        first = int(self.intercept)
        resid = np.negative(prob, out=prob)
        for c in range(prob.shape[0]):
            resid[c, of_class[c]] += 1.0
            if weights is not None:
                resid[c] *= weights
            if held is not None:
                resid[c][:, held] = 0.0
            out[:, first:, c] += (x.T @ resid[c]).T
            if self.intercept:
                out[:, 0, c] += resid[c].sum(axis=0)

    def _block(
        self,
        x: Array,
        codes: NDArray[Any],
        weights: Array,
        offset: Array | None,
        slopes: list[Array],
        out: StackedScores,
    ) -> None:
        """Add one row block's log-likelihoods and scores into ``out``, ``weights`` (r, F) each model's."""
        prob, _, chosen, of_class = self._probabilities(x, codes, offset, slopes)
        out.loglik += np.einsum("rf,rf->f", weights, chosen)
        self._add_scores(x, prob, of_class, weights, None, out.score)

    def _fold_block(
        self,
        x: Array,
        codes: NDArray[Any],
        weights: Array | None,
        offset: Array | None,
        slopes: list[Array],
        held: NDArray[np.intp],
        out: StackedScores,
    ) -> None:
        """Add a block of one fold's rows: the held-out sums of the models ``held`` (which hold the fold out), the
        log-likelihoods, scores and weight sums of the others; ``weights`` the data's (``None``: 1)."""
        prob, lse, chosen, of_class = self._probabilities(x, codes, offset, slopes)
        total = float(x.shape[0]) if weights is None else float(weights.sum())
        assert out.held is not None
        out.held[held] += _held_block(prob[:, :, held], lse[:, held], chosen[:, held], codes, weights)
        chosen[:, held] = 0.0
        out.loglik += chosen.sum(axis=0) if weights is None else weights @ chosen
        out.weight_sum += total
        out.weight_sum[held] -= total
        self._add_scores(x, prob, of_class, None if weights is None else weights[:, None], held, out.score)

    def memory(self, rows: int, p: int) -> int:
        """The rows' keys (held out: and their folds and order), a block's weights, predictors, probabilities and
        residuals (each within the block budget; the held-out sums' few more), the records."""
        f, d, m = self.coefs.shape
        return (24 if self.held_out else 8) * rows + 6 * BLOCK_BYTES + 16 * f * (d * m + 5)

    def record_bytes(self) -> int:
        """The F scores (and held-out sums)."""
        f, d, m = self.coefs.shape
        return 8 * f * (d * m + 2 + (len(HELD_SUMS) if self.held_out else 0))


def _held_block(prob: Array, lse: Array, log_true: Array, codes: NDArray[Any], weights: Array | None) -> Array:
    """The held-out sums (:data:`HELD_SUMS`) of G models over a block of rows they all hold out, shape (G, 5):
    ``prob`` (m, r, G) the non-base probabilities, ``lse`` and ``log_true`` (r, G) the log-normalizer and the true
    class's log-probability, ``weights`` (r,) the data's (``None``: 1). As
    :func:`dmlr.oracle.evaluation.evaluation_sums`: the most probable class is the first of equal ones in code
    order (the base first)."""
    r, g = lse.shape
    base, p_true = np.exp(-lse), np.exp(log_true)
    best, predicted, squares = base.copy(), np.zeros(base.shape, dtype=np.intp), base * base
    for c in range(prob.shape[0]):
        predicted[prob[c] > best] = c + 1
        np.maximum(best, prob[c], out=best)
        squares += prob[c] * prob[c]
    terms = np.stack(
        [np.maximum(log_true, _LOG_TINY), predicted == codes[:, None], squares - 2 * p_true + 1], axis=1
    )  # (r, 3, G)
    sums = terms.sum(axis=0) if weights is None else np.einsum("r,rkg->kg", weights, terms)
    out = np.empty((g, len(HELD_SUMS)))
    out[:, 0] = r
    out[:, 1] = r if weights is None else weights.sum()
    out[:, 2] = -sums[0]
    out[:, 3:] = sums[1:].T
    return out
