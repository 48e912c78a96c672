"""Weighted Gram matrices: every second-order statistic of a pass, in one set of BLAS-3 products per row block.

The information's block ``(k, l)`` is ``sum_i v_i (delta_kl p_ik - p_ik p_il) z_i z_i^T`` with ``z = [1, x]``, the
Gram matrix has weights ``v_i`` and the meat's block ``(k, l)`` weights ``c_i r_ik r_il`` (``r = y - p``): each is a
weighted Gram matrix ``sum_i c_i z_i z_i^T``. :class:`WeightColumns` lays the weights of one pass out as columns
(only the class pairs ``k <= l``); :class:`WeightedGrams` accumulates them. NumPy only (runs on workers).
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, gram_layout
from dmlr.oracle.statistics import Request

__all__ = ["WeightColumns", "WeightedGrams"]

Array = NDArray[np.float64]


class WeightColumns:
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
