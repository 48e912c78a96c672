"""How a partition is walked in row blocks: the one place where block sizes and their memory are decided.

Every kernel works over row blocks whose largest temporary stays under ``block_bytes`` (the information's BLAS form
builds an ``r x T w`` matrix per block of ``r`` rows), so a partition of any size runs in bounded memory. The kernels
and the engine's memory check both read the sizes from here, so the estimate is of the blocks the kernel uses.
"""

from __future__ import annotations

import itertools

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "PAIRS_MAX_BYTES",
    "PAIRS_MIN_WEIGHTS",
    "ROW_BLOCK_CAP",
    "block_rows",
    "gram_layout",
    "statistics_block_rows",
    "statistics_memory",
]

DEFAULT_BLOCK_BYTES = 16 * 2**20
"""Target size of the largest per-block temporary (bytes)."""

PAIRS_MIN_WEIGHTS = 24
"""The pairs form of :class:`~dmlr.oracle.grams.WeightedGrams` is used from this many weight columns on (below it
the pair-product matrix costs more to write than the blocked form's extra flops; ``benchmarks/README.md``)."""

PAIRS_MAX_BYTES = 32 * 2**20
"""Largest pair-product buffer of 128 rows the pairs form may use (so d <= ~200)."""

ROW_BLOCK_CAP = 1024
"""Rows per block at most for second-order statistics: the per-block temporaries stay near cache size."""


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


def gram_layout(d: int, n_weights: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[bool, list[int], int]:
    """How :class:`~dmlr.oracle.grams.WeightedGrams` computes ``n_weights`` weighted Gram matrices of ``d`` columns.

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


def statistics_block_rows(n: int, d: int, m: int, n_weights: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Rows per block of the statistics kernel for ``n_weights`` weighted Gram matrices (0: score only).

    Score-only blocks hold the class-major predictors, probabilities and residuals (``d + 3 m`` floats a row);
    second-order blocks also the weights and the Gram form's temporary, and stay under :data:`ROW_BLOCK_CAP` rows.
    """
    rows = block_rows(n, d + 3 * m, block_bytes)
    if n_weights:
        width = gram_layout(d, n_weights, block_bytes)[2]
        rows = min(rows, block_rows(n, width, block_bytes), ROW_BLOCK_CAP)
    return rows


def statistics_memory(
    rows: int, d: int, m: int, n_weights: int, block_bytes: int = DEFAULT_BLOCK_BYTES, squares: int = 1
) -> int:
    """Bytes the statistics kernel holds for a partition of ``rows`` rows besides its blocks: the row-block
    temporaries of :func:`statistics_block_rows`, the weighted Grams' accumulators and the records.

    The information's (and the meat's) record is ``(m d)^2``; while a task adds, sends and combines records a
    worker holds several of them, so four per such matrix (``squares``: 0 for a pass of the Gram matrix alone) are
    counted besides the accumulators and their ``(T, d, d)`` unfolding.
    """
    r = statistics_block_rows(rows, d, m, n_weights, block_bytes)
    record = 8 * (d * m + 2 * d * d)
    if not n_weights:  # predictors, probabilities and residuals (class-major), the copies made on the way
        return r * 8 * (4 * m + 2 * d) + record
    width = gram_layout(d, n_weights, block_bytes)[2] + n_weights
    kernel = r * 8 * (12 * m + 6 * d + width) + 8 * n_weights * d * d
    information = 8 * (2 * n_weights * d * d + 4 * squares * (m * d) ** 2)
    return kernel + record + information
