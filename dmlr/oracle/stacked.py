"""Log-likelihoods and scores of F models of the same columns at once: the F linear predictors of a row block are one
GEMM against the stacked coefficients and the F scores one GEMM back, so a pass reads each block of ``X`` once for
every model (a score pass is bound by reading ``X``: F separate kernels read it F times). NumPy only: runs on
workers. Used by the bootstrap (:mod:`dmlr.models.bootstrap`), whose replicates differ by their row weights only,
and by cross-validation's fold models (:mod:`dmlr.models.fold_models`), with their held-out scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.evaluation import class_terms
from dmlr.oracle.probabilities import softmax

__all__ = ["HELD_SUMS", "HeldOutStack", "StackedKernel", "StackedScoreKernel", "StackedScores", "block_weights"]

Array = NDArray[np.float64]

HELD_SUMS = ("rows", "weight", "nll", "hits", "brier")
"""The held-out sums of :attr:`StackedScores.held`, in its column order."""
_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))

BLOCK_BYTES = 2**20
"""Budget of a row block's largest temporary (its ``r x F x m`` predictors): small enough that a block's
temporaries stay in a core's cache (4 MiB blocks ran 1.4x slower)."""


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

    def of_keys(self, keys: NDArray[np.int64], dtype: type = np.float64) -> NDArray[Any]:
        """Each model's weight of each key, shape (r, F), of ``dtype`` (float64 or float32)."""
        ...


def block_weights(
    weighting: StackWeighting, keys: NDArray[np.int64], rows: Rows, start: int, stop: int, dtype: type = np.float64
) -> NDArray[Any]:
    """Each model's weight of rows ``start:stop`` times the data's weights, shape (r_b, F), of ``dtype``."""
    weights = weighting.of_keys(keys[start:stop], dtype)
    if rows.weights is not None:
        weights *= np.asarray(rows.weights[start:stop], dtype=weights.dtype)[:, None]
    return weights


class HeldOutStack(StackWeighting, Protocol):
    """Fold models' weights (:class:`~dmlr.models.weightings.FoldStack`): each model weighs 0 the rows of its fold
    and 1 the others."""

    @property
    def model_folds(self) -> tuple[int, ...]:
        """The fold each model holds out."""
        ...

    @property
    def folds(self) -> int:
        """The number of folds."""
        ...

    def folds_of(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The fold of each key (row), shape (r,)."""
        ...

    def mask(self, fold: NDArray[np.int64]) -> Array:
        """Each model's weight of rows in folds ``fold``, shape (r, F)."""
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


class StackedKernel:
    """What kernels of F models stacked share: the rows they read and their row blocks (a block's ``m x r x F``
    array within the block budget)."""

    coefs: Array
    weighting: StackWeighting

    @property
    def reads(self) -> tuple[str, ...]:
        """The rows, their weights and offset, and what the weighting reads (cluster ids)."""
        return weighted_reads(self.weighting)

    @property
    def _step(self) -> int:
        """Rows of a block."""
        f, _, m = self.coefs.shape
        return max(1, BLOCK_BYTES // (8 * f * max(m, 1)))


@dataclass(frozen=True)
class StackedScoreKernel(StackedKernel):
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
        The weighting is a :class:`HeldOutStack` (fold models): also each model's sums over the rows of its fold
        (:attr:`StackedScores.held`), from the same probabilities.
    """

    coefs: Array
    intercept: bool
    weighting: StackWeighting
    columns: tuple[int, ...] | None = None
    held_out: bool = False

    def _slopes(self) -> list[Array]:
        """Each class's slopes of every model, shape (p, F)."""
        first = int(self.intercept)
        return [np.ascontiguousarray(self.coefs[:, first:, c].T) for c in range(self.coefs.shape[2])]

    def __call__(self, rows: Rows) -> StackedScores:
        x = checked_columns(rows, self.columns)
        assert rows.codes is not None
        f, d, m = self.coefs.shape
        keys = self.weighting.keys(rows)
        slopes = self._slopes()
        stack = cast(HeldOutStack, self.weighting)
        holders = _holders(np.asarray(stack.model_folds), stack.folds) if self.held_out else None
        held = np.zeros((f, len(HELD_SUMS))) if self.held_out else None
        loglik = np.zeros(f)
        out = StackedScores(loglik, np.zeros((f, d, m)), np.zeros(f), held)
        for start in range(0, x.shape[0], self._step):
            stop = min(start + self._step, x.shape[0])
            data_weights = None if rows.weights is None else np.asarray(rows.weights[start:stop], dtype=np.float64)
            if holders is None:
                weights = self.weighting.of_keys(keys[start:stop])  # (r_b, F)
                models = None
            else:  # fold models: the fold of each row gives both its 0/1 weights and the models holding it out
                fold = stack.folds_of(keys[start:stop])
                weights, models = stack.mask(fold), holders[fold]
            if data_weights is not None:
                weights *= data_weights[:, None]
            out.weight_sum += weights.sum(axis=0)
            offset = None if rows.offset is None else rows.offset[start:stop]
            codes = rows.codes[start:stop]
            prob, lse, chosen, of_class = self._probabilities(x[start:stop], codes, offset, slopes)
            loglik += np.einsum("rf,rf->f", weights, chosen)
            if models is not None:
                out.held += _held_rows(prob, lse, chosen, codes, models, data_weights)  # type: ignore[operator]
            self._add_scores(x[start:stop], prob, of_class, weights, out.score)
        return out

    def _probabilities(
        self, x: Array, codes: NDArray[Any], offset: Array | None, slopes: list[Array]
    ) -> tuple[Array, Array, Array, list[NDArray[np.bool_]]]:
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
        of_class = [(codes == c + 1)[:, None] for c in range(m)]  # the rows of each non-base class, (r, 1)
        for c in range(m):
            np.copyto(chosen, eta[c], where=of_class[c])
        prob, lse = softmax(eta.reshape(m, r * f))  # the one softmax
        chosen -= lse.reshape(r, f)
        return prob.reshape(m, r, f), lse.reshape(r, f), chosen, of_class

    def _add_scores(self, x: Array, prob: Array, of_class: list[NDArray[np.bool_]], weights: Array, out: Array) -> None:
        """Add ``X^T W_f (Y - P_f)`` of each model into ``out`` (F, d, m), ``weights`` (r, F) each model's;
        ``prob`` is overwritten by the residuals."""
        first = int(self.intercept)
        resid = np.negative(prob, out=prob)
        for c in range(prob.shape[0]):
            resid[c] += of_class[c]
            resid[c] *= weights
            out[:, first:, c] += (x.T @ resid[c]).T
            if self.intercept:
                out[:, 0, c] += resid[c].sum(axis=0)

    def memory(self, rows: int, p: int) -> int:
        """The rows' keys, a block's weights, predictors, probabilities and residuals (each within the block
        budget; the held-out sums' few more), the records."""
        f, d, m = self.coefs.shape
        return 8 * rows + (7 if self.held_out else 5) * BLOCK_BYTES + 16 * f * (d * m + 5)

    def record_bytes(self) -> int:
        """The F scores (and held-out sums)."""
        f, d, m = self.coefs.shape
        return 8 * f * (d * m + 2 + (len(HELD_SUMS) if self.held_out else 0))


def _holders(model_folds: NDArray[np.int64], folds: int) -> NDArray[np.intp]:
    """The models holding out each fold, shape (folds, G), padded with -1 (G: the most models of one fold)."""
    lists = [np.flatnonzero(model_folds == g) for g in range(folds)]
    out = np.full((folds, max(1, max(len(m) for m in lists))), -1, dtype=np.intp)
    for g, models in enumerate(lists):
        out[g, : len(models)] = models
    return out


def _held_rows(
    prob: Array, lse: Array, log_true: Array, codes: NDArray[Any], models: NDArray[np.intp], weights: Array | None
) -> Array:
    """The held-out sums (:data:`HELD_SUMS`) of a block of rows, shape (F, 5): ``prob`` (m, r, F) the non-base
    probabilities, ``lse`` and ``log_true`` (r, F) the log-normalizer and the true class's log-probability,
    ``models`` (r, G) the models holding each row out (-1: none), ``weights`` (r,) the data's (``None``: 1). Only
    the (row, model) pairs held out are gathered (one per row and fold model of a penalty), scored as the
    evaluation scores rows (:func:`~dmlr.oracle.evaluation.class_terms`, classes in code order: the most probable is
    the first of equal ones, the base first) and added per model."""
    valid = models >= 0
    r, g = models.shape
    f = prob.shape[2]
    at = np.where(valid, models, 0)
    flat = (np.arange(r)[:, None] * f + at).ravel()  # each pair's position in the (r, F) arrays
    pairs = np.empty((prob.shape[0] + 1, r * g))  # class-major, the base first
    np.exp(-lse.ravel()[flat], out=pairs[0])
    np.take(prob.reshape(prob.shape[0], r * f), flat, axis=1, out=pairs[1:])
    true = np.repeat(codes, g)
    _, predicted, brier = class_terms(pairs, true)
    w = valid.ravel().astype(np.float64)
    if weights is not None:
        w *= np.repeat(weights, g)
    log_p = log_true.ravel()[flat]  # as evaluated: log max(p, tiny), without exp and log
    terms = (valid.ravel(), w, -w * np.maximum(log_p, _LOG_TINY), w * (predicted == true), w * brier)
    return np.column_stack([np.bincount(at.ravel(), weights=t, minlength=f) for t in terms])
