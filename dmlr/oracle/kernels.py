"""Pure NumPy kernels on one partition: probabilities, log-likelihood, score, information, Gram.

Layout conventions are in :mod:`dmlr.oracle.statistics`. Every kernel works over row blocks whose working set is
bounded by ``block_bytes`` (the information's BLAS form builds an ``r x m d`` matrix per block of ``r`` rows), so a
partition of any size runs in bounded memory. There is no Python loop over rows; the only loops are over row blocks
and over classes around BLAS calls.
"""

from __future__ import annotations

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
    acc = _Accumulator(coef, intercept, request, n_b, block_bytes)
    for start in range(0, n_b, acc.rows):
        stop = min(start + acc.rows, n_b)
        acc.add(
            x[start:stop],
            codes[start:stop],
            None if weights is None else weights[start:stop],
            None if offset is None else offset[start:stop],
        )
    return acc.finish(codes, weights)


class _Accumulator:
    """The running sums of one partition's statistics over its row blocks (see :func:`partition_statistics`)."""

    def __init__(self, coef: Array, intercept: bool, request: Request, n_b: int, block_bytes: int) -> None:
        d, m = coef.shape
        self.coef, self.intercept, self.d, self.m = coef, intercept, d, m
        self.score_t = np.zeros((m, d))  # the score transposed: class-major rows, accumulated as R @ [1, x]
        self.loglik = 0.0
        self.gram = np.zeros((d, d)) if request.gram else None
        self.col_sum = np.zeros(d) if request.moments else None
        self.col_sumsq = np.zeros(d) if request.moments else None
        self.info = None
        self.meat = np.zeros((m * d, m * d)) if request.meat else None
        self.probability_weights = request.probability_weights
        if request.information:
            # m == 1: one weighted Gram; else the upper blocks of [xs, Z]^T [xs, Z] (see _information_block)
            self.info = np.zeros((d, d)) if m == 1 else np.zeros(((m + 1) * d, (m + 1) * d))
        wide = (self.info is not None and m > 1) or self.meat is not None
        width = (m + 1) * d if wide else d + 3 * m
        self.rows = block_rows(n_b, width, block_bytes)
        self.eta_buf = np.empty(m * self.rows)
        self.zbuf = np.empty(self.rows * (m + 1) * d) if wide else None
        self.columns = _column_blocks(m + 1, d) if self.info is not None and m > 1 else []
        self.meat_columns = _column_blocks(m, d) if self.meat is not None else []

    def add(self, xb: Array, yb: NDArray[np.integer], vb: Array | None, ob: Array | None) -> None:
        """Add one row block: log-likelihood and score, then the requested second-order statistics."""
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
        if self.meat is not None:
            self._meat_block(xb, vb, resid)
        if vb is not None:
            resid *= vb
        if self.intercept:
            self.score_t[:, 0] += resid.sum(axis=1)
            self.score_t[:, 1:] += resid @ xb
        else:
            self.score_t += resid @ xb
        if self.gram is not None or self.info is not None or self.col_sum is not None:
            self._second_order(xb, vb, prob)

    def _second_order(self, xb: Array, vb: Array | None, prob: Array) -> None:
        # sqrt(v) * [1, x]: the design rows scaled for Gram and information products.
        xs = _scaled_design(xb, vb, self.intercept)
        if self.col_sum is not None and self.col_sumsq is not None:
            sv = np.ones(xb.shape[0]) if vb is None else np.sqrt(vb)
            self.col_sum += sv @ xs
            self.col_sumsq += np.einsum("ij,ij->j", xs, xs)
        if self.gram is not None and (self.info is None or self.m == 1):  # else block (0, 0) of U^T U below
            self.gram += xs.T @ xs
        if self.info is not None:
            if self.m == 1:
                # K = 2: I = X^T diag(v p (1 - p)) X, one product, no cancellation.
                z = xs * np.sqrt(prob[0] * (1.0 - prob[0]))[:, None]
                self.info += z.T @ z
            else:
                assert self.zbuf is not None
                _information_block(xs, prob, self.zbuf, self.columns, self.info)

    def _meat_block(self, xb: Array, vb: Array | None, resid: Array) -> None:
        """Accumulate the upper blocks of ``S^T S``, row ``i`` of ``S`` being ``c_i^(1/2) (y_i - p_i) kron [1, x_i]``
        (``resid`` is ``y - p`` unweighted, class-major ``m x r``)."""
        r, d, m = xb.shape[0], self.d, self.m
        assert self.zbuf is not None and self.meat is not None
        if vb is not None and self.probability_weights:
            design, factor = _scaled_design(xb, None, self.intercept), vb  # (v r) kron x: v^2 in the product
        else:
            design, factor = _scaled_design(xb, vb, self.intercept), None  # r kron sqrt(v) x: v in the product
        u3 = self.zbuf[: r * m * d].reshape(r, m, d)
        np.multiply(resid.T[:, :, None], design[:, None, :], out=u3)
        if factor is not None:
            u3 *= factor[:, None, None]
        u = u3.reshape(r, m * d)
        for a, b in self.meat_columns:
            self.meat[a:b, a:] += u[:, a:b].T @ u[:, a:]

    def finish(self, codes: NDArray[np.integer], weights: Array | None) -> Statistics:
        """The partition's record (the information assembled from the accumulated product)."""
        d, m = self.d, self.m
        score = np.ascontiguousarray(self.score_t.T)
        info, gram = self.info, self.gram
        if info is not None and m > 1:
            if gram is not None:
                gram = info[:d, :d].copy()
            info = _assemble_information(info, m, d)
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
            meat=self.meat,
        )


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


INFO_COLUMN_BLOCK = 384
"""Target width (columns) of one GEMM of the information's upper-block product: narrower ones run at a fraction
of OpenBLAS's peak on this hardware, wider ones waste flops below the diagonal (measured: P2, (K-1)d = 1900)."""


def _column_blocks(groups: int, d: int) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` of ``[xs, Z]`` (``groups`` groups of ``d`` columns) for the upper-block GEMMs."""
    per = max(1, INFO_COLUMN_BLOCK // d)
    if groups * d <= 2 * INFO_COLUMN_BLOCK:
        per = groups  # small: one full GEMM beats several narrow ones
    return [(g * d, min(g + per, groups) * d) for g in range(0, groups, per)]


def _information_block(xs: Array, prob: Array, zbuf: Array, columns: list[tuple[int, int]], acc: Array) -> None:
    """Accumulate the upper blocks of ``U^T U``, ``U = [xs, p_1 xs, ..., p_m xs]`` (``r x (m+1) d``), into ``acc``.

    ``U^T U`` holds, in block row 0, ``X^T V P_k X`` (the ``Lambda`` part of every diagonal block) and, below,
    ``Z^T Z`` with ``Z = [p_1 xs, ..., p_m xs]`` (the ``p p^T`` part): one product gives both, and only block
    columns at or right of each block row's start are computed (the rest is the mirror image).
    """
    r, d = xs.shape
    m = prob.shape[0]
    u3 = zbuf[: r * (m + 1) * d].reshape(r, m + 1, d)
    u3[:, 0, :] = xs
    np.multiply(prob.T[:, :, None], xs[:, None, :], out=u3[:, 1:, :])
    u = u3.reshape(r, (m + 1) * d)
    for a, b in columns:
        acc[a:b, a:] += u[:, a:b].T @ u[:, a:]


def _assemble_information(acc: Array, m: int, d: int) -> Array:
    """The information's upper blocks from the accumulated ``U^T U`` (see :func:`_information_block`)."""
    info = np.negative(acc[d:, d:])
    for k in range(m):
        info[k * d : (k + 1) * d, k * d : (k + 1) * d] += acc[:d, (k + 1) * d : (k + 2) * d]
    return info


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
