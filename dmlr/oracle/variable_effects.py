"""Per-variable marginal effects of a formula fit: sums over rows of derivatives through the formula and of factors'
discrete changes, with their Jacobians (NumPy only: this runs on workers).

A variable ``v`` of the data enters the design through every term that reads it (``dist + dist:hour``, ``I(v**2)``,
splines). Its effect on row ``r`` is the derivative of ``p_j`` along ``D_r = d x_r / d v`` (the design's derivative,
taken by central differences of the formula on the driver's side, :mod:`dmlr.results.variable_margins`). With
``a_j = beta_j' D`` (``a_0 = 0`` for the base) and ``abar = sum_l p_l a_l``::

    dydx  G_j = p_j (a_j - abar)       d G_j / d beta_kc = x_c (e_jk G_j - p_k G_j - p_j G_k) + D_c p_j (e_jk - p_k)
    eydx  E_j = a_j - abar             d E_j / d beta_kc = -x_c G_k + D_c (e_jk - p_k)

``dyex`` and ``eyex`` multiply ``dydx`` and ``eydx`` by the variable's value on the row. A factor's level ``l``
against the reference level: ``p_j(x^l) - p_j(x^ref)`` (``log p_j`` for the ``ey`` methods), with the gradient
``p_j (e_j - q) kron x`` at each.

The block a kernel receives is laid out by :class:`Layout`: the design ``x`` (p columns), each continuous
variable's ``D`` (p each), each continuous variable's values (1 each), then for each factor the design with the
factor set to each of its levels (p each, the reference first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, block_rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.effects import gradient_weights, probabilities, probability_sums
from dmlr.passes.kernel import Sums

__all__ = ["Layout", "VariableEffectsKernel", "variable_effect_sums"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Layout:
    """Where each piece sits in a block's columns.

    Attributes
    ----------
    p : int
        Data columns of the design (``const`` excluded).
    continuous : int
        Continuous variables ``V``.
    levels : tuple of int
        Levels of each factor (the reference included).
    """

    p: int
    continuous: int
    levels: tuple[int, ...]

    @property
    def width(self) -> int:
        """Columns of a block: ``p (1 + V + sum levels) + V``."""
        return self.p * (1 + self.continuous + sum(self.levels)) + self.continuous

    @property
    def effects(self) -> int:
        """Rows of the result: ``V + sum (levels - 1)``."""
        return self.continuous + sum(n - 1 for n in self.levels)


def _continuous(
    design: Array, direction: Array, scale: Array | None, coef: Array, intercept: bool, ey: bool
) -> tuple[Array, Array]:
    """Sums over rows of one continuous variable's effect (K,) and Jacobian (K, m, d), code order."""
    p, q, full = probabilities(design, coef, intercept)
    d_full = np.column_stack([np.zeros(direction.shape[0]), direction]) if intercept else direction
    beta = np.column_stack([np.zeros(coef.shape[0]), coef])  # (d, K)
    a = d_full @ beta  # (r, K)
    abar = np.einsum("rk,rk->r", p, a)
    g = p * (a - abar[:, None])  # (r, K)
    m = q.shape[1]
    eye = np.zeros((m + 1, m))
    eye[np.arange(1, m + 1), np.arange(m)] = 1.0
    if ey:
        value = a - abar[:, None]
        m1 = np.broadcast_to(-g[:, None, 1:], (g.shape[0], m + 1, m))
        m2 = eye[None] - p[:, None, 1:]
    else:
        value = g
        m1 = eye[None] * g[:, :, None] - p[:, None, 1:] * g[:, :, None] - p[:, :, None] * g[:, None, 1:]
        m2 = gradient_weights(p, q)
    if scale is not None:
        value, m1, m2 = value * scale[:, None], m1 * scale[:, None, None], m2 * scale[:, None, None]
    jac = np.einsum("rjk,rc->jkc", m1, full) + np.einsum("rjk,rc->jkc", m2, d_full)
    return value.sum(axis=0), jac


def variable_effect_sums(block: Array, coef: Array, intercept: bool, method: str, layout: Layout) -> Array:
    """Sums over the rows of one block: effects (E, K) then Jacobians (E, K, m, d), flattened; code order.

    Parameters
    ----------
    block : ndarray, shape (r, layout.width)
    coef : ndarray, shape (d, m)
    intercept : bool
    method : {"dydx", "eydx", "dyex", "eyex"}
    layout : Layout
    """
    d, m = coef.shape
    k, pp, v = m + 1, layout.p, layout.continuous
    effects = np.zeros((layout.effects, k))
    jac = np.zeros((layout.effects, k, m, d))
    ey, ex = method.startswith("ey"), method.endswith("ex")
    step = block_rows(block.shape[0], k * m * 4 + layout.width)
    for s in range(0, block.shape[0], step):
        rows = block[s : s + step]
        x = rows[:, :pp]
        for i in range(v):
            direction = rows[:, pp * (1 + i) : pp * (2 + i)]
            scale = rows[:, pp * (1 + v) + i] if ex else None
            value, grad = _continuous(x, direction, scale, coef, intercept, ey)
            effects[i] += value
            jac[i] += grad
        at, row = pp * (1 + v) + v, v
        for n in layout.levels:
            ref = probability_sums(rows[:, at : at + pp], coef, intercept, log=ey)
            for level in range(1, n):
                start = at + pp * level
                value, grad = probability_sums(rows[:, start : start + pp], coef, intercept, log=ey)
                effects[row] += value - ref[0]
                jac[row] += grad - ref[1]
                row += 1
            at += pp * n
    return np.concatenate([effects.ravel(), jac.ravel()])


@dataclass(frozen=True)
class VariableEffectsKernel:
    """A pass's kernel: :func:`variable_effect_sums` of a partition's block, and its row count.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
    intercept : bool
    method : str
    layout : Layout
    """

    coef: Array
    intercept: bool
    method: str
    layout: Layout
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, rows: Rows) -> Sums:
        assert rows.x is not None
        check_finite(rows.x, "the margins' design", rows.partition, rows.row_start)
        values = variable_effect_sums(rows.x, self.coef, self.intercept, self.method, self.layout)
        return Sums({"values": values, "rows": np.array([float(rows.x.shape[0])])})

    def memory(self, rows: int, p: int) -> int:
        d, m = self.coef.shape
        record = 8 * self.layout.effects * (m + 1) * (1 + m * d)
        return 2 * DEFAULT_BLOCK_BYTES + 2 * record + 8 * rows * (p + 1)
