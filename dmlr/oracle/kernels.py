"""Pure NumPy kernels on one partition: probabilities, log-likelihood, score, information, Gram.

Layout conventions are in :mod:`dmlr.oracle.statistics`. Every kernel works over row blocks whose working set is
bounded by ``block_bytes`` (the information's BLAS form builds an ``r x m d`` matrix per block of ``r`` rows), so a
partition of any size runs in bounded memory. There is no Python loop over rows; the only loops are over row blocks
and over classes around BLAS calls.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.statistics import Request, Statistics

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "block_rows",
    "check_finite",
    "linear_predictor",
    "log_probabilities",
    "partition_statistics",
]

Array = NDArray[np.float64]

DEFAULT_BLOCK_BYTES = 16 * 2**20
"""Target size of the largest per-block temporary (bytes)."""


def block_rows(n: int, width: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Rows per block so that an ``r x width`` float64 temporary stays under ``block_bytes``.

    Parameters
    ----------
    n : int
        Rows in the partition.
    width : int
        Columns of the widest per-row temporary.
    block_bytes : int
        Memory budget of that temporary.

    Returns
    -------
    int
        Between 1 and ``max(n, 1)``; at least 256 rows when the budget allows so BLAS-3 calls stay efficient.
    """
    rows = max(256, block_bytes // (8 * max(width, 1)))
    return max(1, min(max(n, 1), rows))


def linear_predictor(x: Array, coef: Array, intercept: bool, offset: Array | None = None) -> Array:
    """Linear predictor of the non-base classes.

    Parameters
    ----------
    x : ndarray, shape (r, p)
        Feature rows (without the intercept column).
    coef : ndarray, shape (d, m)
        Coefficients; row 0 is the intercept when ``intercept`` is true.
    intercept : bool
        Whether ``coef`` has an intercept row.
    offset : ndarray, shape (r, m), optional
        Added to the linear predictor.

    Returns
    -------
    ndarray, shape (r, m)
    """
    eta = x @ coef[1:] + coef[0] if intercept else x @ coef
    if offset is not None:
        eta += offset
    return eta


def log_probabilities(eta: Array) -> tuple[Array, Array]:
    """Stable probabilities of the non-base classes and the log-normalizer.

    Parameters
    ----------
    eta : ndarray, shape (r, m)
        Linear predictor of the non-base classes (the base's is 0).

    Returns
    -------
    prob : ndarray, shape (r, m)
        ``p_ik = exp(eta_ik - lse_i)``.
    lse : ndarray, shape (r,)
        ``log(1 + sum_k exp(eta_ik))`` computed with a shift that includes the base's 0.
    """
    shift = np.maximum(eta.max(axis=1, initial=0.0), 0.0)
    ex = np.exp(eta - shift[:, None])
    denom = np.exp(-shift) + ex.sum(axis=1)
    lse = shift + np.log(denom)
    ex /= denom[:, None]
    return ex, lse


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
        Global index of the partition's first row, used in error messages.
    block_bytes : int
        Memory budget of the largest per-block temporary.

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
        check_finite(x, "X", partition, row_start)
        if weights is not None:
            check_finite(weights, "weights", partition, row_start)
        if offset is not None:
            check_finite(offset, "offset", partition, row_start)
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
            sample=None if every == 1 else in_sample(row_start + start, row_start + stop, every),
        )
    return acc.finish(codes, weights)


SAMPLE_UNIT = 1024
"""Rows per unit of ``Request.information_every``'s sample: global rows ``i`` with ``(i // SAMPLE_UNIT) % every == 0``
are in it, whatever the partitioning (so every partitioning of the same data gives the same estimate)."""


def in_sample(first: int, stop: int, every: int) -> NDArray[np.bool_]:
    """Which of the global rows ``first .. stop - 1`` are in the sample of every ``every``-th unit."""
    return np.asarray((np.arange(first, stop) // SAMPLE_UNIT) % every == 0)


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
        self.probability_weights = request.probability_weights
        self.weights = _WeightColumns(m, request)
        self.rows = block_rows(n_b, d + 3 * m, block_bytes)
        self.grams: WeightedGrams | None = None
        if self.weights.total:
            _, _, width = gram_layout(d, self.weights.total, block_bytes)
            self.rows = min(self.rows, block_rows(n_b, width, block_bytes), ROW_BLOCK_CAP)
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
        prob, lse = _class_major_probabilities(eta)
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
        assert self.col_sum is not None and self.col_sumsq is not None
        if vb is None:
            self.col_sum += z.sum(axis=0)
            self.col_sumsq += np.einsum("ij,ij->j", z, z)
        else:
            self.col_sum += vb @ z
            self.col_sumsq += vb @ (z * z)

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
        )


class _WeightColumns:
    """The weight columns of one pass's weighted Gram matrices: information pairs, the Gram matrix, meat pairs."""

    def __init__(self, m: int, request: Request) -> None:
        self.pairs = np.triu_indices(m)
        n_pairs = m * (m + 1) // 2
        self.diagonal = np.flatnonzero(self.pairs[0] == self.pairs[1])
        self.info = slice(0, n_pairs if request.information else 0)
        self.gram = self.info.stop if request.gram else None
        start = self.info.stop + int(request.gram)
        self.meat = slice(start, start + (n_pairs if request.meat else 0))
        self.total = self.meat.stop

    def fill(self, buf: Array, prob: Array, resid: Array, vb: Array | None, probability_weights: bool) -> Array:
        """The weights of a row block, class-pair-major: ``(T, r)`` from class-major ``prob`` and ``resid``."""
        r = prob.shape[1]
        c = buf.reshape(self.total, r)
        k, j = self.pairs
        if self.info.stop:
            info = c[self.info]
            np.multiply(prob[k], prob[j], out=info)
            np.negative(info, out=info)
            info[self.diagonal] += prob  # p_k - p_k^2 on the diagonal pairs
            if vb is not None:
                info *= vb
        if self.gram is not None:
            c[self.gram] = 1.0 if vb is None else vb
        if self.meat.stop > self.meat.start:
            meat = c[self.meat]
            np.multiply(resid[k], resid[j], out=meat)
            if vb is not None:
                meat *= vb * vb if probability_weights else vb
        return c

    def assemble(self, sums: Array, m: int, d: int) -> tuple[Array | None, Array | None, Array | None]:
        """Information, Gram and meat (upper blocks filled, each block whole) from the ``(T, d, d)`` sums."""

        def blocks(part: slice) -> Array | None:
            if part.stop == part.start:
                return None
            out = np.zeros((m * d, m * d))
            for t, (k, j) in enumerate(zip(*self.pairs, strict=True)):
                out[k * d : (k + 1) * d, j * d : (j + 1) * d] = sums[part.start + t]
            return out

        gram = None if self.gram is None else sums[self.gram]
        return blocks(self.info), gram, blocks(self.meat)


def _class_major_probabilities(eta: Array) -> tuple[Array, Array]:
    """:func:`log_probabilities` for class-major ``eta`` of shape (m, r); ``eta`` is left unchanged.

    Returns
    -------
    prob : ndarray, shape (m, r)
    lse : ndarray, shape (r,)
    """
    shift = np.max(eta, axis=0, initial=0.0)
    ex = eta - shift
    np.exp(ex, out=ex)
    denom = ex.sum(axis=0)
    denom += np.exp(-shift)
    ex /= denom
    lse = np.log(denom)
    lse += shift
    return ex, lse


PAIRS_MIN_WEIGHTS = 24
"""The pairs form of :class:`WeightedGrams` is used from this many weight columns on (measured crossover, one core,
d = 51-101: below it the pair-product matrix costs more to write than the blocked form's extra flops)."""

PAIRS_MAX_BYTES = 32 * 2**20
"""Largest pair-product buffer of 128 rows the pairs form may use (so d <= ~200)."""

ROW_BLOCK_CAP = 1024
"""Rows per block at most: the per-block temporaries of the second-order statistics stay near cache size."""


def gram_layout(d: int, n_weights: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[bool, list[int], int]:
    """How :class:`WeightedGrams` computes ``n_weights`` weighted Gram matrices of ``d`` columns.

    Returns
    -------
    pairs : bool
        Whether the pairs form is used (one GEMM against the ``d (d + 1) / 2`` column products).
    edges : list of int
        Feature-block edges of the blocked form (``[0, d]`` for the pairs form).
    width : int
        Floats per row of the largest per-block temporary.
    """
    n_pairs = d * (d + 1) // 2
    if n_weights >= PAIRS_MIN_WEIGHTS and 8 * 128 * n_pairs <= PAIRS_MAX_BYTES:
        return True, [0, d], n_pairs
    n_blocks = max(1, min(8, round(d / 24)))
    edges = [round(i * d / n_blocks) for i in range(n_blocks + 1)]
    widest = max(b - a for a, b in itertools.pairwise(edges))
    return False, edges, n_weights * widest


class WeightedGrams:
    """Running sums ``G_t = sum_i c_it z_i z_i^T`` for ``t < T`` weight columns over row blocks of ``z``.

    The true cost of the ``T`` symmetric ``d x d`` sums is ``T d (d + 1)`` flops per row. Two BLAS-3 forms reach
    near it: the *pairs* form multiplies the row products ``z_a z_b`` (``a <= b``, ``d (d + 1) / 2`` columns) by the
    weights in one GEMM (exact flop count; the product matrix must be written first, which pays for large ``T``);
    the *blocked* form splits the features in ``B`` blocks and multiplies ``[c_t z_A]`` by ``z_{A..}``, the columns
    from block ``A`` on (``(1 + 1/B)`` times the flops, one small temporary).

    Parameters
    ----------
    d : int
        Columns of ``z``.
    n_weights : int
        Weight columns ``T``.
    rows : int
        Most rows of one block.
    block_bytes : int
        Memory budget of the per-block temporary.
    """

    def __init__(self, d: int, n_weights: int, rows: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.d, self.n_weights = d, n_weights
        self.pairs, self.edges, width = gram_layout(d, n_weights, block_bytes)
        self.buf = np.empty(rows * width)
        if self.pairs:
            self.acc = [np.zeros((d * (d + 1) // 2, n_weights))]
        else:
            self.acc = [np.zeros((n_weights * (b - a), d - a)) for a, b in itertools.pairwise(self.edges)]

    def add(self, z: Array, c: Array | None) -> None:
        """Add the rows ``z`` (``r x d``) with weights ``c`` (``r x T``, any strides; ``None`` when ``T = 1``: the
        unweighted Gram matrix, computed without a weighted copy of ``z``)."""
        r, d = z.shape
        if c is None:
            assert self.n_weights == 1 and not self.pairs
            for (a, b), acc in zip(itertools.pairwise(self.edges), self.acc, strict=True):
                acc += z[:, a:b].T @ z[:, a:]
            return
        if self.pairs:
            q = self.buf[: r * d * (d + 1) // 2].reshape(r, -1)
            start = 0
            for a in range(d):
                np.multiply(z[:, a : a + 1], z[:, a:], out=q[:, start : start + d - a])
                start += d - a
            self.acc[0] += q.T @ c
            return
        for (a, b), acc in zip(itertools.pairwise(self.edges), self.acc, strict=True):
            u = self.buf[: r * self.n_weights * (b - a)].reshape(r, self.n_weights, b - a)
            np.multiply(c[:, :, None], z[:, None, a:b], out=u)
            acc += u.reshape(r, -1).T @ z[:, a:]

    def finish(self) -> Array:
        """The sums, shape (T, d, d), each symmetric."""
        d, t = self.d, self.n_weights
        out = np.zeros((t, d, d))
        if self.pairs:
            rows, cols = np.triu_indices(d)
            out[:, rows, cols] = self.acc[0].T
        else:
            for (a, b), acc in zip(itertools.pairwise(self.edges), self.acc, strict=True):
                out[:, a:b, a:] = acc.reshape(t, b - a, d - a)
        rows, cols = np.triu_indices(d, 1)
        out[:, cols, rows] = out[:, rows, cols]
        return out


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


def check_finite(values: Array, name: str, partition: int | None = None, row_start: int = 0) -> None:
    """Raise :class:`InputError` naming the value, column and row of the first non-finite entry.

    Parameters
    ----------
    values : ndarray, shape (r,) or (r, c)
    name : str
        The array's name in the message (``"X"``, ``"weights"``, ``"offset"``).
    partition : int, optional
        When the values are one partition: its index, added to the message with the partition's row range.
    row_start : int
        Global index of the first row.
    """
    if np.isfinite(np.add.reduce(values, axis=None)):  # no NaN or infinity can hide in a finite sum
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    n = values.shape[0]
    where = f"row {row_start + bad[0]}"
    if partition is not None:
        where += f" (row {bad[0]} of partition {partition}, rows {row_start}-{row_start + n - 1})"
    if values.ndim == 2:
        where = f"column {bad[1]}, " + where
    raise InputError(f"{name} has a non-finite value ({float(values[tuple(bad)])}) at {where}")
