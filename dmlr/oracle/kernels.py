"""The fit's kernel: log-likelihood, score, information, Gram matrix and meat of one partition (pure NumPy).

Layout conventions are in :mod:`dmlr.oracle.statistics`. :func:`partition_statistics` walks row blocks sized by
:mod:`dmlr.oracle.blocks`, so a partition of any size runs in bounded memory; there is no Python loop over rows,
only over row blocks and over classes around BLAS calls. :class:`StatisticsKernel` is the same computation as a
kernel of the pass engine (:mod:`dmlr.passes.kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.errors import InputError
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, statistics_block_rows, statistics_memory
from dmlr.oracle.checks import check_rows
from dmlr.oracle.grams import WeightColumns, WeightedGrams
from dmlr.oracle.probabilities import softmax
from dmlr.oracle.sample import take_sample
from dmlr.oracle.statistics import Request, Statistics

__all__ = ["SAMPLE_UNIT", "StatisticsKernel", "in_sample", "partition_statistics"]

Array = NDArray[np.float64]


def partition_statistics(
    x: Array,
    codes: NDArray[np.integer],
    weights: Array | None,
    offset: Array | None,
    coef: Array,
    *,
    intercept: bool,
    request: Request,
    partition: int = 0,
    row_start: int = 0,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    row_ids: NDArray[np.int64] | None = None,
) -> Statistics:
    """Log-likelihood, score and the requested second-order statistics of one partition.

    Parameters
    ----------
    x : ndarray, shape (n_b, p)
        Feature rows of the partition (no intercept column).
    codes : ndarray of int, shape (n_b,)
        Class codes, 0 = base, 1..m = non-base classes.
    weights : ndarray, shape (n_b,), optional
        Frequency weights ``v_i >= 0``.
    offset : ndarray, shape (n_b, m), optional
        Offsets added to the linear predictor.
    coef : ndarray, shape (d, m)
        Coefficients, ``d = p + intercept``.
    intercept : bool
        Whether model column 0 is an intercept (not stored in ``x``).
    request : Request
        Which of information, Gram and column moments to accumulate.
    partition : int
        Index of this partition, used in error messages.
    row_start : int
        Global index of the partition's first row, used in error messages and (without ``row_ids``) to place the
        rows in the sample of ``Request.information_every``.
    block_bytes : int
        Memory budget of the largest per-block temporary.
    row_ids : ndarray of int, shape (n_b,), optional
        Global index of every row, when the rows are not one contiguous range (partitions joined across gaps).

    Returns
    -------
    Statistics
        ``score`` is ``(d, m)``; ``information`` ``(m d, m d)`` and ``gram`` ``(d, d)`` when requested.
    """
    n_b, p = x.shape
    d = coef.shape[0]
    if d != p + intercept:
        raise InputError(f"partition {partition}: {p} feature columns but coefficients have {d} rows")
    if request.moments:
        check_rows(x, weights, offset, partition, row_start)
    every = request.information_every
    if every > 1 and (request.moments or request.gram or request.meat):
        raise ValueError("a pass that samples the information computes no other second-order statistic")
    acc = _Accumulator(coef, intercept, request, n_b, block_bytes)
    for start in range(0, n_b, acc.rows):
        stop = min(start + acc.rows, n_b)
        acc.add(
            x[start:stop],
            codes[start:stop],
            None if weights is None else weights[start:stop],
            None if offset is None else offset[start:stop],
            sample=None if every == 1 else _sample(row_start, row_ids, start, stop, every),
        )
    return acc.finish(codes, weights)


SAMPLE_UNIT = 1024
"""Rows per unit of ``Request.information_every``'s sample: global rows ``i`` with ``(i // SAMPLE_UNIT) % every == 0``
are in it, whatever the partitioning (so every partitioning of the same data gives the same estimate)."""


def in_sample(first: int, stop: int, every: int) -> NDArray[np.bool_]:
    """Which of the global rows ``first .. stop - 1`` are in the sample of every ``every``-th unit."""
    return np.asarray((np.arange(first, stop) // SAMPLE_UNIT) % every == 0)


def _sample(row_start: int, row_ids: NDArray[np.int64] | None, start: int, stop: int, every: int) -> NDArray[np.bool_]:
    """Which rows ``start .. stop - 1`` of a partition are in the sample (by their global index)."""
    if row_ids is not None:
        return np.asarray((row_ids[start:stop] // SAMPLE_UNIT) % every == 0)
    if row_start < 0:
        raise ValueError("sampling the information needs the rows' global positions (partition sizes unknown)")
    return in_sample(row_start + start, row_start + stop, every)


class _Accumulator:
    """The running sums of one partition's statistics over its row blocks (see :func:`partition_statistics`).

    Every second-order statistic is a set of weighted Gram matrices of the design rows ``z = [1, x]``: the
    information's block ``(k, l)`` is ``sum_i v_i (delta_kl p_ik - p_ik p_il) z_i z_i^T``, the Gram matrix has weights
    ``v_i`` and the meat's block ``(k, l)`` weights ``c_i r_ik r_il`` (``r = y - p``). Only the ``m (m + 1) / 2``
    class pairs ``k <= l`` are computed, each as a symmetric matrix (:class:`WeightedGrams`), in one set of
    BLAS-3 products per row block.
    """

    def __init__(self, coef: Array, intercept: bool, request: Request, n_b: int, block_bytes: int) -> None:
        d, m = coef.shape
        self.coef, self.intercept, self.d, self.m = coef, intercept, d, m
        self.score_t = np.zeros((m, d))  # the score transposed: class-major rows, accumulated as R @ [1, x]
        self.loglik = 0.0
        self.covered = 0.0  # weight of the rows in the second-order statistics
        self.col_sum = np.zeros(d) if request.moments else None
        self.col_sumsq = np.zeros(d) if request.moments else None
        self.col_abssum = np.zeros(d) if request.moments else None
        self.probability_weights = request.probability_weights
        self.weights = WeightColumns(m, request)
        self.rows = statistics_block_rows(n_b, d, m, self.weights.total, block_bytes)
        self.grams: WeightedGrams | None = None
        if self.weights.total:
            self.grams = WeightedGrams(d, self.weights.total, self.rows, block_bytes)
            self.cbuf = np.empty(self.weights.total * self.rows)
        self.eta_buf = np.empty(m * self.rows)

    def add(
        self,
        xb: Array,
        yb: NDArray[np.integer],
        vb: Array | None,
        ob: Array | None,
        sample: NDArray[np.bool_] | None = None,
    ) -> None:
        """Add one row block: log-likelihood and score, then the requested second-order statistics (on the rows
        ``sample`` marks only, when given: ``Request.information_every``)."""
        m, r = self.m, xb.shape[0]
        # Class-major (m x r) layout: reductions over classes run along rows, vectorized over observations.
        eta = self.eta_buf[: m * r].reshape(m, r)
        np.matmul(self.coef[int(self.intercept) :].T, xb.T, out=eta)
        if self.intercept:
            eta += self.coef[0][:, None]
        if ob is not None:
            eta += ob.T
        prob, lse = softmax(eta)
        with_class = np.nonzero(yb > 0)[0]
        picked = eta[yb[with_class] - 1, with_class]
        if vb is None:
            self.loglik += picked.sum() - lse.sum()
        else:
            self.loglik += vb[with_class] @ picked - vb @ lse
        resid = np.negative(prob)
        resid[yb[with_class] - 1, with_class] += 1.0
        if self.grams is not None:
            if sample is None or sample.all():
                self._second_order(xb, vb, prob, resid)
            elif sample.any():
                self._second_order(xb[sample], None if vb is None else vb[sample], prob[:, sample], resid[:, sample])
        elif self.col_sum is not None:
            self._moments(_scaled_design(xb, None, self.intercept), vb)
        if vb is not None:
            resid *= vb
        if self.intercept:
            self.score_t[:, 0] += resid.sum(axis=1)
            self.score_t[:, 1:] += resid @ xb
        else:
            self.score_t += resid @ xb

    def _moments(self, z: Array, vb: Array | None) -> None:
        assert self.col_sum is not None and self.col_sumsq is not None and self.col_abssum is not None
        if vb is None:
            self.col_sum += z.sum(axis=0)
            self.col_sumsq += np.einsum("ij,ij->j", z, z)
            self.col_abssum += np.abs(z).sum(axis=0)
        else:
            self.col_sum += vb @ z
            self.col_sumsq += vb @ (z * z)
            self.col_abssum += vb @ np.abs(z)

    def _second_order(self, xb: Array, vb: Array | None, prob: Array, resid: Array) -> None:
        assert self.grams is not None
        self.covered += xb.shape[0] if vb is None else float(vb.sum())
        z = _scaled_design(xb, None, self.intercept)
        if self.col_sum is not None:
            self._moments(z, vb)
        if vb is None and self.weights.total == 1 and self.weights.gram is not None:
            self.grams.add(z, None)  # the Gram matrix alone (the first pass of bound-based rules)
            return
        c = self.weights.fill(self.cbuf[: self.weights.total * xb.shape[0]], prob, resid, vb, self.probability_weights)
        self.grams.add(z, c.T)

    def finish(self, codes: NDArray[np.integer], weights: Array | None) -> Statistics:
        """The partition's record (the information, Gram matrix and meat assembled from the weighted Grams)."""
        d, m = self.d, self.m
        score = np.ascontiguousarray(self.score_t.T)
        info = gram = meat = None
        if self.grams is not None:
            sums = self.grams.finish()
            info, gram, meat = self.weights.assemble(sums, m, d)
        if weights is None:
            class_weights = np.bincount(codes, minlength=m + 1).astype(np.float64)
            weight_sum = float(codes.shape[0])
        else:
            class_weights = np.bincount(codes, weights=weights, minlength=m + 1).astype(np.float64)
            weight_sum = float(weights.sum())
        return Statistics(
            n_rows=int(codes.shape[0]),
            weight_sum=weight_sum,
            loglik=float(self.loglik),
            score=score,
            class_weights=class_weights,
            information=info,
            gram=gram,
            col_sum=self.col_sum,
            col_sumsq=self.col_sumsq,
            meat=meat,
            information_weight=self.covered if info is not None else 0.0,
            col_abssum=self.col_abssum,
        )


def _scaled_design(xb: Array, vb: Array | None, intercept: bool) -> Array:
    """``sqrt(v) * [1, x]`` for a row block (``r x d``); no copy when unweighted without intercept."""
    if not intercept and vb is None:
        return xb
    r, p = xb.shape
    xs = np.empty((r, p + intercept))
    if intercept:
        xs[:, 0] = 1.0
        xs[:, 1:] = xb
    else:
        xs[:] = xb
    if vb is not None:
        xs *= np.sqrt(vb)[:, None]
    return xs


@dataclass(frozen=True)
class StatisticsKernel:
    """The fit's pass as a kernel of the engine: :func:`partition_statistics` of each partition.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
        Coefficients (``(1, m)`` for ``intercept_only``).
    request : Request
        The second-order statistics to compute besides log-likelihood and score.
    intercept : bool
        Whether model column 0 is an intercept (not stored in the data).
    columns : tuple of int, optional
        The data columns of ``x`` the model uses (dependent ones dropped); all when ``None``.
    intercept_only : bool
        Ignore the features (the intercept-only model, for the null log-likelihood with an offset).
    block_bytes : int
        Memory budget of the kernel's largest row-block temporary.
    """

    coef: Array
    request: Request
    intercept: bool
    columns: tuple[int, ...] | None = None
    intercept_only: bool = False
    block_bytes: int = DEFAULT_BLOCK_BYTES
    reads: ClassVar[tuple[str, ...]] = ("x", "codes", "weights", "offset")

    def __call__(self, rows: Rows) -> Statistics:
        assert rows.x is not None and rows.codes is not None
        x, intercept = rows.x, self.intercept
        if self.intercept_only:
            x, intercept = x[:, :0], True
        elif self.columns is not None:
            x = x[:, list(self.columns)]
        stats = partition_statistics(
            x, rows.codes, rows.weights, rows.offset, self.coef, intercept=intercept, request=self.request,
            partition=rows.partition, row_start=rows.row_start, block_bytes=self.block_bytes,
            row_ids=rows.row_ids() if self.request.information_every > 1 and rows.segments else None,
        )  # fmt: skip
        if self.request.sample_rate > 0:
            stats.sample = take_sample(rows, self.request.sample_rate)
        return stats

    @property
    def n_weights(self) -> int:
        """Weighted Gram matrices the pass accumulates (information and meat class pairs, the Gram matrix)."""
        m = self.coef.shape[1]
        pairs = m * (m + 1) // 2
        return pairs * (int(self.request.information) + int(self.request.meat)) + int(self.request.gram)

    def memory(self, rows: int, p: int) -> int:
        """Bytes of the row-block temporaries and records (:func:`~dmlr.oracle.blocks.statistics_memory`)."""
        d, m = self.coef.shape
        squares = int(self.request.information) + int(self.request.meat)
        return statistics_memory(rows, d, m, self.n_weights, self.block_bytes, squares)

    def record_bytes(self) -> int:
        """Bytes of one record (the information and the meat dominate)."""
        d, m = self.coef.shape
        square = (m * d) ** 2 * (int(self.request.information) + int(self.request.meat))
        return 8 * (square + d * d + d * m)
