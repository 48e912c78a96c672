"""Scores of bootstrap replicates: of one model under F row weightings (the replicates at the fit), and the
departures from it of F models near it (the replicates after their first step). NumPy only: runs on workers.

The score of weighting ``f`` is ``sum_i w_if z_i`` with ``z_i = (y_i - p_i) kron x_i`` the row's score at the
model's coefficients, so a block's F scores are ``Z^T W`` (``Z`` (r, m d), ``W`` (r, F)): the arithmetic of one
model's score pass plus a GEMM of width F, against F softmaxes for F different coefficients
(:class:`~dmlr.oracle.stacked.StackedScoreKernel`).

Near the fit, replicate ``f``'s score is its score at the fit (the first pass's) minus its departure ``sum_i w_if
(p_if - p_i) kron x_i``. With ``z_ifc = x_i^T (b_fc - b_c)`` (small: the replicates differ from the fit by
``O(1/sqrt(n))``) and ``e = expm1(z)``, ``p_ifc - p_ic = p_ic (e_ifc - E_if) / (1 + E_if)``, ``E_if = sum_k p_ik
e_ifk`` (the base's ``z`` is 0): no softmax, maximum or logarithm per model. The departures are as small as the
``z``, so single precision keeps their digits relative to their size (:data:`SINGLE_ERROR`), where the score itself
would lose them against its ``O(n)`` terms: :class:`DepartureKernel` sums them in float32 (``z`` from the columns
centered at the partition's means, ``e`` from its Taylor series, float32 GEMMs summed in double every 64 rows)
where a block's ``|z|`` stays under ~0.2, in double precision
from the fit's probabilities reweighted by ``exp(z)`` farther, and by the stacked softmax past :data:`NEAR`. On a
416k-row partition with 200 replicates: 0.62-0.68 s single, 0.94-0.97 s double, 1.47-1.58 s stacked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.probabilities import linear_predictor, row_scores, softmax
from dmlr.oracle.stacked import (
    BLOCK_BYTES,
    StackedKernel,
    StackedScoreKernel,
    StackWeighting,
    block_weights,
    checked_columns,
    weighted_reads,
)

__all__ = ["NEAR", "DepartureKernel", "Departures", "ReplicateScoreKernel", "WeightedScores", "series_degree"]

Array = NDArray[np.float64]


@dataclass
class WeightedScores:
    """One model's score and weight sum under each of F row weightings.

    Attributes
    ----------
    score : ndarray, shape (F, d, m)
    weight_sum : ndarray, shape (F,)
    """

    score: Array
    weight_sum: Array

    def __add__(self, other: WeightedScores) -> WeightedScores:
        return WeightedScores(self.score + other.score, self.weight_sum + other.weight_sum)

    def add_(self, other: WeightedScores) -> WeightedScores:
        """Add ``other`` in place."""
        self.score += other.score
        self.weight_sum += other.weight_sum
        return self


@dataclass(frozen=True)
class ReplicateScoreKernel:
    """The score of one model under each of F row weightings (:class:`WeightedScores`).

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

    def __call__(self, rows: Rows) -> WeightedScores:
        x = checked_columns(rows, self.columns)
        assert rows.codes is not None
        d, m = self.coef.shape
        f = self.weighting.size
        keys = self.weighting.keys(rows)
        score = np.zeros((m * d, f))
        out = WeightedScores(np.zeros((f, d, m)), np.zeros(f))
        step = max(1, BLOCK_BYTES // (8 * max(f, m * d)))
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            weights = block_weights(self.weighting, keys, rows, start, stop)  # (r_b, F)
            out.weight_sum += weights.sum(axis=0)
            offset = None if rows.offset is None else rows.offset[start:stop]
            z, _ = row_scores(x[start:stop], rows.codes[start:stop], self.coef, self.intercept, offset)
            score += z.T @ weights
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


NEAR = 30.0
"""The largest ``|z|`` (a model's linear predictor minus the center's) a block of :class:`DepartureKernel` takes
as near: ``exp(30)`` times a probability neither overflows nor loses the others' digits."""

SINGLE_ERROR = 1e-6
"""Bound on the rounding of :class:`DepartureKernel`'s single precision, relative to the departures' size (measured
3-8e-8, with columns centered or around 2000): the bootstrap takes it where that stays under a tenth of its
``tol``."""

SUM_ROWS = 64
"""Rows a single-precision sum runs over before it is added in double precision."""

MAX_DEGREE = 6
"""The highest degree of the series of ``expm1`` a single-precision block uses (``|z|`` up to about 0.2)."""


@dataclass
class Departures:
    """Each model's departure from the center, ``sums`` (F, d, m) ``= sum_i w_if (p_if - p_i) kron x_i``: a model's
    score under its weights is the center's score under the same weights minus it."""

    sums: Array

    def __add__(self, other: Departures) -> Departures:
        return Departures(self.sums + other.sums)

    def add_(self, other: Departures) -> Departures:
        """Add ``other`` in place."""
        self.sums += other.sums
        return self


def series_degree(bound: float) -> int | None:
    """The degree of the Taylor series of ``expm1`` whose truncation, relative to ``expm1(z)`` for ``|z| <= bound``
    (at most ``|z|^k e^(2|z|) / (k + 1)!``), is under single precision's unit roundoff; ``None`` above
    :data:`MAX_DEGREE`."""
    for k in range(2, MAX_DEGREE + 1):
        if bound**k * math.exp(2 * bound) / math.factorial(k + 1) <= 2.0**-24:
            return k
    return None


@dataclass(frozen=True)
class DepartureKernel(StackedKernel):
    """The departures of F models near a center model (the bootstrap's replicates after their first step), each
    under its own row weights: :class:`Departures`, from which the bootstrap takes each model's score.

    With ``z_fc = x^T (b_fc - b_c)`` and ``e = expm1(z)``, ``p_fc - p_c = p_c (e_fc - E_f) / (1 + E_f)``, ``E_f =
    sum_k p_k e_fk``: no softmax per model. Near (every ``|z|`` of a block below ~0.2) the departures are computed
    in single precision with ``e`` from its series (``single``; their rounding is relative to their size, which
    shrinks with ``1/sqrt(n)``, :data:`SINGLE_ERROR`), else in double precision from the center's probabilities
    reweighted by ``exp(z)``; a block where some ``|z|`` exceeds :data:`NEAR` takes the stacked softmax.

    Attributes
    ----------
    center : ndarray, shape (d, m)
        The model the others are near (the fit).
    coefs : ndarray, shape (F, d, m)
    intercept : bool
        Whether row 0 of the coefficients is the intercept (not stored in the data).
    weighting : StackWeighting
        The F models' weights of each row (times the data's weights).
    columns : tuple of int, optional
        The data columns the models use (all when ``None``).
    single : bool
        Whether blocks near enough use single precision.
    """

    center: Array
    coefs: Array
    intercept: bool
    weighting: StackWeighting
    columns: tuple[int, ...] | None = None
    single: bool = True

    def __call__(self, rows: Rows) -> Departures:
        x = checked_columns(rows, self.columns)
        assert rows.codes is not None
        f, d, m = self.coefs.shape
        keys = self.weighting.keys(rows)
        shifts = self.coefs - self.center
        near = _Near.of(x, shifts, self.intercept)
        # double precision: each class's shifts (d, F) over a row of ones that adds the center's log-probability
        shifted = [np.vstack([shifts[:, :, c].T, np.ones((1, f))]) for c in range(m)]
        out = Departures(np.zeros((f, d, m)))
        step = max(SUM_ROWS, self._step - self._step % SUM_ROWS)  # whole runs of single-precision sums
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            centered = x[start:stop] - near.mid
            bound = float((np.abs(centered).max(axis=0, initial=0.0) @ near.spans + near.reach).max())
            if bound > NEAR and self._far(x[start:stop], shifts):
                out.add_(self._stacked(rows.slice(start, stop)))
                continue
            degree = series_degree(bound) if self.single else None
            precision = np.float64 if degree is None else np.float32
            weights = block_weights(self.weighting, keys, rows, start, stop, precision)
            offset = None if rows.offset is None else rows.offset[start:stop]
            eta = linear_predictor(x[start:stop], self.center, self.intercept, offset)
            prob, lse = softmax(np.ascontiguousarray(eta.T))  # the center's (m, r)
            if degree is not None:
                block = near.departures(centered, prob, weights, degree)
                out.sums[:, int(self.intercept) :] += block[:, 1:]
                if self.intercept:
                    out.sums[:, 0] += block[:, 0]
            else:
                design = np.column_stack([np.ones(stop - start), x[start:stop]]) if self.intercept else x[start:stop]
                out.sums += _double_departures(design, eta, lse, prob, weights, shifted)
        return out

    def _far(self, x: Array, shifts: Array) -> bool:
        """Whether some model's ``|z|`` exceeds :data:`NEAR` on these rows."""
        design = np.column_stack([np.ones(x.shape[0]), x]) if self.intercept else x
        return any(np.abs(design @ shifts[:, :, c].T).max() > NEAR for c in range(shifts.shape[2]))

    def _stacked(self, rows: Rows) -> Departures:
        """The departures of rows where some model is far: the center's scores under the models' weights minus the
        models' own, each from its softmax."""
        models = StackedScoreKernel(self.coefs, self.intercept, self.weighting, self.columns)(rows)
        center = ReplicateScoreKernel(self.center, self.intercept, self.weighting, self.columns)(rows)
        return Departures(center.score - models.score)

    def memory(self, rows: int, p: int) -> int:
        """The rows' keys, a block's weights and work arrays (within ``m + 3`` block budgets), the records."""
        f, d, m = self.coefs.shape
        return 8 * rows + (m + 4) * BLOCK_BYTES + 16 * f * (d * m + 2)

    def record_bytes(self) -> int:
        """The F departures."""
        f, d, m = self.coefs.shape
        return 8 * f * d * m


@dataclass(frozen=True)
class _Near:
    """A partition's models as single-precision departures take them: ``z = kappa + (x - mid) slopes``, with the
    columns centered at the partition's means ``mid`` (p,), so that no digits are lost to the columns' location.

    Attributes
    ----------
    mid : ndarray, shape (p,)
    spans : ndarray, shape (p, F m)
        ``|slopes|``: a block's ``|z|`` is at most its centered columns' maxima times these plus ``reach``.
    reach : ndarray, shape (F m,)
        ``|kappa|``.
    shifts : list of ndarray, shape (p + 1, F), float32
        Each class's ``kappa`` (the models' ``z`` at ``mid``) over its ``slopes``.
    """

    mid: Array
    spans: Array
    reach: Array
    shifts: list[NDArray[np.float32]]

    @staticmethod
    def of(x: Array, shifts: Array, intercept: bool) -> _Near:
        f, _, m = shifts.shape
        slopes = shifts[:, int(intercept) :, :]  # (F, p, m)
        mid = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
        kappa = np.einsum("p,fpm->fm", mid, slopes) + (shifts[:, 0, :] if intercept else 0.0)  # (F, m)
        spans = np.abs(slopes).transpose(1, 0, 2).reshape(-1, f * m)
        stacked = [np.vstack([kappa[:, c], slopes[:, :, c].T]).astype(np.float32) for c in range(m)]
        return _Near(mid, spans, np.abs(kappa).ravel(), stacked)

    def departures(self, centered: Array, prob: Array, weights: NDArray[Any], degree: int) -> Array:
        """A block's departures in single precision, shape (F, p + 1, m): the sums of ``w (p_f - p)`` (the
        intercept's row, whether or not the model has one) and of ``w (p_f - p) x``, from the block's ``centered``
        columns (r, p), ``expm1(z)`` from its series of ``degree``; GEMMs and arithmetic on (r, F) arrays of
        float32, sums added in double every :data:`SUM_ROWS` rows."""
        m = len(self.shifts)
        (p1, f), r = self.shifts[0].shape, centered.shape[0]
        x32 = np.empty((r, p1), dtype=np.float32)
        x32[:, 0], x32[:, 1:] = 1.0, centered
        p32 = prob.T.astype(np.float32)  # (r, m)
        e = np.empty((m, r, f), dtype=np.float32)
        total, scale = np.empty((r, f), dtype=np.float32), np.empty((r, f), dtype=np.float32)
        for c in range(m):
            z = np.matmul(x32, self.shifts[c], out=scale)
            np.multiply(z, np.float32(1 / math.factorial(degree)), out=e[c])  # Horner: e = z (1 + z (1/2 + ...))
            for k in range(degree - 1, 0, -1):
                e[c] += np.float32(1 / math.factorial(k))
                e[c] *= z
            if c == 0:
                np.multiply(e[c], p32[:, :1], out=total)
            else:
                np.multiply(e[c], p32[:, c : c + 1], out=scale)
                total += scale  # E = sum_k p_k e_k
        np.add(total, np.float32(1.0), out=scale)
        np.divide(weights, scale, out=scale)  # w / (1 + E)
        out = np.empty((f, p1, m))
        for c in range(m):
            e[c] -= total
            e[c] *= scale  # w (p_fc - p_c) / p_c
            sums = _row_sums(x32 * p32[:, c : c + 1], e[c])  # of w (p_fc - p_c), and times x - mid: (p + 1, F)
            sums[1:] += self.mid[:, None] * sums[0]
            out[:, :, c] = sums.T
        return out


def _row_sums(a: NDArray[np.float32], b: NDArray[np.float32]) -> Array:
    """``a^T b`` (a (r, d), b (r, F)) summed in float32 over runs of :data:`SUM_ROWS` rows and in double across
    them (one batched GEMM): the rounding of a single-precision sum grows with its terms."""
    r = a.shape[0]
    full = r - r % SUM_ROWS
    runs = np.matmul(
        a[:full].reshape(-1, SUM_ROWS, a.shape[1]).transpose(0, 2, 1), b[:full].reshape(-1, SUM_ROWS, b.shape[1])
    )
    out = runs.astype(np.float64).sum(axis=0)
    if full < r:
        out += a[full:].T @ b[full:]
    return out


def _double_departures(
    design: Array, eta: Array, lse: Array, prob: Array, weights: Array, shifted: list[Array]
) -> Array:
    """A block's departures (F, d, m) in double precision: each model's probabilities the center's reweighted,
    ``p_fc = p_c exp(z_fc) / s_f``, ``s_f = sum_k p_k exp(z_fk)`` (``log p_c`` folded into the GEMM that makes
    ``z``: ``shifted`` each class's (d + 1, F)), minus the center's."""
    m, (r, d), f = len(shifted), design.shape, shifted[0].shape[1]
    terms = np.empty((m, r, f))
    total = np.exp(-lse)[:, None] + np.zeros((1, f))  # the base's probability, whose z is 0
    for c in range(m):
        np.matmul(np.column_stack([design, eta[:, c] - lse]), shifted[c], out=terms[c])
        np.exp(terms[c], out=terms[c])  # p_c exp(z_c)
        total += terms[c]
    np.divide(weights, total, out=total)
    out = np.empty((f, d, m))
    for c in range(m):
        terms[c] *= total  # w p_fc
        out[:, :, c] = (design.T @ terms[c] - (design * prob[c][:, None]).T @ weights).T
    return out
