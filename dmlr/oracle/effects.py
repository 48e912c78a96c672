"""Per-block kernels of prediction standard errors and marginal effects (NumPy only: these run on workers, which
import only light modules). The formulas are in :mod:`dmlr.results.prediction` and :mod:`dmlr.results.margins`,
which call these on arrays, or run their sums as passes of the engine (:class:`EffectSumsKernel`,
:class:`PredictionSumsKernel`, :class:`ColumnSummaryKernel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, block_rows
from dmlr.oracle.checks import check_finite
from dmlr.oracle.probabilities import linear_predictor, log_probabilities
from dmlr.passes.kernel import Sums

__all__ = [
    "ColumnSummary",
    "ColumnSummaryKernel",
    "EffectSumsKernel",
    "PredictionSumsKernel",
    "direct_sums",
    "discrete_change",
    "effects_and_jacobian",
    "flat_effects",
    "gradient_weights",
    "moment_sums",
    "prediction_block",
    "prediction_sums",
    "probabilities",
    "probability_sums",
    "set_columns",
]

Array = NDArray[np.float64]


def set_columns(block: Array, columns: dict[int, float]) -> Array:
    """A copy of ``block`` with the given columns set to constants (``atexog``)."""
    out = block.copy()
    for j, value in columns.items():
        out[:, j] = value
    return out


def probabilities(x: Array, coef: Array, intercept: bool, offset: Array | None = None) -> tuple[Array, Array, Array]:
    """Probabilities of every class in code order (base first) ``p`` (r, K), the non-base ones ``q`` (r, m), and the
    design ``[1, x]`` (r, d) of a block of rows."""
    q, lse = log_probabilities(linear_predictor(x, coef, intercept, offset))
    p = np.column_stack([np.exp(-lse), q])
    design = np.column_stack([np.ones(x.shape[0]), x]) if intercept else x
    return p, q, design


def gradient_weights(p: Array, q: Array) -> Array:
    """``a_k = p_k (e_k - q)``, shape (r, K, m): ``d p_k / d theta = a_k kron x`` (code order, ``e_0 = 0``)."""
    m = q.shape[1]
    a = -p[:, :, None] * q[:, None, :]
    a[:, np.arange(1, m + 1), np.arange(m)] += p[:, 1:]
    return a


def probability_sums(
    x: Array, coef: Array, intercept: bool, offset: Array | None = None, log: bool = False
) -> tuple[Array, Array]:
    """Sums over rows of ``p`` (``log p`` with ``log``) of every class, shape (K,), and of its gradient in theta,
    shape (K, m, d); code order."""
    p, q, design = probabilities(x, coef, intercept, offset)
    a = gradient_weights(p, q)
    if log:
        a /= p[:, :, None]
    return (np.log(p) if log else p).sum(axis=0), np.einsum("rkl,rc->klc", a, design)


def prediction_block(
    x: Array, coef: Array, cov: Array, intercept: bool, order: NDArray[np.intp], offset: Array | None
) -> Array:
    """Probabilities and standard errors of one block: ``[p (r x K), se (r x K)]``, sorted label order."""
    d, m = coef.shape
    out = np.empty((x.shape[0], 2 * (m + 1)))
    blocks = cov.reshape(m, d, m, d).transpose(1, 0, 2, 3).reshape(d, m * m * d)
    step = block_rows(x.shape[0], m * m * d)
    for s in range(0, x.shape[0], step):
        e = min(s + step, x.shape[0])
        p, q, design = probabilities(x[s:e], coef, intercept, None if offset is None else offset[s:e])
        quad = np.einsum("rlkj,rj->rlk", (design @ blocks).reshape(e - s, m, m, d), design)  # x' V_{l l'} x
        a = gradient_weights(p, q)
        var = np.einsum("rkl,rlj,rkj->rk", a, quad, a)
        out[s:e, : m + 1] = p[:, order]
        out[s:e, m + 1 :] = np.sqrt(np.maximum(var, 0.0))[:, order]
    return out


def prediction_sums(x: Array, coef: Array, intercept: bool, order: NDArray[np.intp], offset: Array | None) -> Array:
    """Sums over the rows of one block: ``[sum p (K), sum of gradients (K x m d)]`` flattened, sorted label order."""
    total, grad = probability_sums(x, coef, intercept, offset)
    return np.concatenate([total[order], grad[order].ravel()])


def discrete_change(x: Array, coef: Array, intercept: bool, method: str, column: int, kind: str) -> tuple[Array, Array]:
    """Sums over rows of a discrete change in data column ``column``: 0 -> 1 (dummy) or (x+1) - (x-1), halved
    (count), of p (log p for eydx), and of its gradient."""
    lo, hi = x.copy(), x.copy()
    if kind == "dummy":
        lo[:, column], hi[:, column] = 0.0, 1.0
    else:
        lo[:, column] -= 1.0
        hi[:, column] += 1.0
    log = method == "eydx"
    v1, g1 = probability_sums(hi, coef, intercept, log=log)
    v0, g0 = probability_sums(lo, coef, intercept, log=log)
    scale = 1.0 if kind == "dummy" else 0.5
    return scale * (v1 - v0), scale * (g1 - g0)


def moment_sums(x: Array, coef: Array, intercept: bool, method: str) -> tuple[Array, Array]:
    """dydx and eydx sums from a few probability-weighted column sums (a GEMM of width ``K m (K + 2)``, resp.
    ``m (K + 1)``, against the design) instead of per-row ``(K, m, d)`` weights; cheaper when ``d > K + 2``.

    With ``D_jf = beta_jf - sum_i p_i beta_if``, ``a_jl = p_j (e_jl - q_l)``, ``c_jl = p_j (2 q_l - e_jl)``:
    dydx: sum_r d(p_j D_jf)/d beta_lc = beta_jf sum a_jl x_c - beta_lf sum p_j q_l x_c + sum_i beta_if
    sum c_jl p_i x_c + [f = c] sum (p_j e_jl - p_j q_l);
    eydx: sum_r d D_jf / d beta_lc = -beta_lf sum q_l x_c + sum_i beta_if sum q_l p_i x_c + [f = c] sum (e_jl - q_l)
    (``beta_l`` the coefficients of non-base class ``l``).
    """
    d, m = coef.shape
    k = m + 1
    beta = np.column_stack([np.zeros(d), coef]).T  # (K, d): beta[j, f], code order
    e = np.zeros((k, m))
    e[np.arange(1, k), np.arange(m)] = 1.0
    dy = method == "dydx"
    width = k * m * (k + 2) if dy else m * (k + 1)
    moments = np.zeros((width, d))
    psum, pp = np.zeros(k), np.zeros((k, k))
    step = block_rows(x.shape[0], width + d)
    zbuf = np.empty(width * step)
    for s in range(0, x.shape[0], step):
        xb = x[s : s + step]
        r = xb.shape[0]
        p, _, design = probabilities(xb, coef, intercept)
        pt = np.ascontiguousarray(p.T)  # (K, r): class-major, each weight row contiguous
        qt = pt[1:]
        z = zbuf[: width * r].reshape(width, r)
        if dy:
            km = k * m
            a = z[:km].reshape(k, m, r)
            np.multiply(pt[:, None, :], e[:, :, None] - qt[None, :, :], out=a)  # p_j (e_jl - q_l)
            b = z[km : 2 * km].reshape(k, m, r)
            np.multiply(pt[:, None, :], qt[None, :, :], out=b)  # p_j q_l
            c = 2.0 * b - pt[:, None, :] * e[:, :, None]  # p_j (2 q_l - e_jl)
            np.multiply(c[:, :, None, :], pt[None, None, :, :], out=z[2 * km :].reshape(k, m, k, r))
        else:
            z[:m] = qt
            np.multiply(qt[:, None, :], pt[None, :, :], out=z[m:].reshape(m, k, r))
        moments += z @ design
        psum += pt.sum(axis=1)
        pp += pt @ pt.T
    n = x.shape[0]
    grad = np.zeros((k, m, d, d))  # (j, l, f, c)
    if dy:
        ax = moments[: k * m].reshape(k, m, d)
        bx = moments[k * m : 2 * k * m].reshape(k, m, d)
        cpx = moments[2 * k * m :].reshape(k, m, k, d)
        grad += beta[:, None, :, None] * ax[:, :, None, :]
        grad -= beta[1:][None, :, :, None] * bx[:, :, None, :]
        grad += np.einsum("if,jlic->jlfc", beta, cpx)
        diag = psum[:, None] * e - pp[:, 1:]  # sum p_j e_jl - sum p_j q_l
        effects = beta * psum[:, None] - pp @ beta  # (K, d): sum p_j D_jf
    else:
        qx = moments[:m]
        qpx = moments[m:].reshape(m, k, d)
        single = -beta[1:][:, :, None] * qx[:, None, :] + np.einsum("if,lic->lfc", beta, qpx)  # (l, f, c)
        grad += single[None]
        diag = n * e - psum[None, 1:]
        effects = n * beta - (psum @ beta)[None, :]
    grad[:, :, np.arange(d), np.arange(d)] += diag[:, :, None]
    return effects.T, grad.transpose(2, 0, 1, 3)


def effects_and_jacobian(
    x: Array, coef: Array, intercept: bool, method: str, discrete: tuple[tuple[int, str], ...] = ()
) -> tuple[Array, Array]:
    """Sums over the rows of ``x`` of the effects (d, K) and of their Jacobian (d, K, m d), code order; the
    ``discrete`` data columns (index, ``"dummy"`` or ``"count"``) get discrete changes instead of derivatives."""
    d, m = coef.shape
    if method in ("dydx", "eydx") and d > m + 3:
        effects, jacobian = moment_sums(x, coef, intercept, method)
    else:
        effects, jacobian = direct_sums(x, coef, intercept, method)
    return _with_discrete(effects, jacobian, x, coef, intercept, method, discrete)


def flat_effects(
    x: Array, coef: Array, intercept: bool, method: str, discrete: tuple[tuple[int, str], ...] = ()
) -> Array:
    """:func:`effects_and_jacobian` flattened into one summable record (effects, then the Jacobian)."""
    return np.concatenate([a.ravel() for a in effects_and_jacobian(x, coef, intercept, method, discrete)])


def direct_sums(x: Array, coef: Array, intercept: bool, method: str) -> tuple[Array, Array]:
    """Effects and Jacobian sums with per-row weights ``(K, m, d)`` against the design (every method)."""
    d, m = coef.shape
    k = m + 1
    beta = np.column_stack([np.zeros(d), coef])  # (d, K), code order
    e = np.zeros((k, m))
    e[np.arange(1, k), np.arange(m)] = 1.0
    effects = np.zeros((k, d))
    dy, ex = method.startswith("dy"), method.endswith("ex")
    groups = k if dy else 1  # for ey* the weights do not depend on the class j: one GEMM serves every j
    gemm = np.zeros((groups * m * d, d))  # sum_r W[r, (j, l, f)] x[r, c]
    diag = np.zeros((k, m, d))  # added where c = f
    step = block_rows(x.shape[0], groups * m * d)
    wbuf = np.empty(step * groups * m * d)
    for s in range(0, x.shape[0], step):
        xb = x[s : s + step]
        r = xb.shape[0]
        p, q, design = probabilities(xb, coef, intercept)
        diff = beta.T[None, :, :] - (p @ beta.T)[:, None, :]  # (r, K, d): beta_jf - bbar_f
        diff_q = q[:, :, None] * diff[:, 1:, :]  # (r, m, d): q_l (beta_lf - bbar_f)
        if ex:
            diff_q *= design[:, None, :]
        # d diff_jf / d beta_lc = e_jl [f=c] - [f=c] q_l - q_l diff_lf x_c;  d p_j / d beta_lc = p_j (e_jl - q_l) x_c
        w = wbuf[: r * groups * m * d].reshape(r, groups, m, d)
        if dy:
            a = p[:, :, None] * (e[None] - q[:, None, :])  # (r, K, m): p_j (e_jl - q_l)
            value = diff * (design[:, None, :] if ex else 1.0)  # (r, K, d), times p_j below
            np.multiply(a[:, :, :, None], value[:, :, None, :], out=w)
            w -= p[:, :, None, None] * diff_q[:, None, :, :]
            diag_r = p[:, :, None] * e[None] - p[:, :, None] * q[:, None, :]  # (r, K, m)
            effects += np.einsum("rj,rjf->jf", p, value)
        else:
            np.negative(diff_q[:, None, :, :], out=w)
            diag_r = e[None] - q[:, None, :]
            effects += (diff * design[:, None, :] if ex else diff).sum(axis=0)
        gemm += w.reshape(r, groups * m * d).T @ design
        diag += np.einsum("rjl,rf->jlf", diag_r, design) if ex else diag_r.sum(axis=0)[:, :, None]
    if not dy:
        gemm = np.broadcast_to(gemm.reshape(1, m * d, d), (k, m * d, d)).reshape(k * m * d, d)
    effects = effects.T
    grad = gemm.reshape(k, m, d, d).transpose(2, 0, 1, 3).copy()  # (f, K, m, c)
    grad[np.arange(d), :, :, np.arange(d)] += diag.transpose(2, 0, 1)
    return effects, grad


def _with_discrete(
    effects: Array, jacobian: Array, x: Array, coef: Array, intercept: bool, method: str,
    discrete: tuple[tuple[int, str], ...],
) -> tuple[Array, Array]:  # fmt: skip
    """Replace the rows of ``discrete`` columns by their discrete changes."""
    for column, kind in discrete:
        value, grad = discrete_change(x, coef, intercept, method, column, kind)
        effects[column + int(intercept)] = value
        jacobian[column + int(intercept)] = grad
    return effects, jacobian


def _model_rows(rows: Rows, columns: dict[int, float]) -> Array:
    """A partition's model columns, checked finite, with ``columns`` (``atexog``) set to constants."""
    assert rows.x is not None
    check_finite(rows.x, "X", rows.partition, rows.row_start)
    return set_columns(rows.x, columns) if columns else rows.x


@dataclass(frozen=True)
class EffectSumsKernel:
    """Sums over rows of the marginal effects and their Jacobian (:func:`flat_effects`), and the row count.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
    intercept : bool
    method : str
    discrete : tuple of (int, str)
        Data columns with discrete changes.
    atexog : dict of int to float
        Data columns fixed at a value.
    """

    coef: Array
    intercept: bool
    method: str
    discrete: tuple[tuple[int, str], ...] = ()
    atexog: tuple[tuple[int, float], ...] = ()
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, rows: Rows) -> Sums:
        x = _model_rows(rows, dict(self.atexog))
        values = flat_effects(x, self.coef, self.intercept, self.method, self.discrete)
        return Sums({"values": values, "rows": np.array([float(x.shape[0])])})

    def memory(self, rows: int, p: int) -> int:
        d, m = self.coef.shape
        return 2 * DEFAULT_BLOCK_BYTES + 16 * d * (m + 1) * (1 + m * d) + 8 * rows * (p + 1)


@dataclass(frozen=True)
class PredictionSumsKernel:
    """Sums over rows of the probabilities and their gradient (:func:`prediction_sums`), and the row count."""

    coef: Array
    intercept: bool
    order: NDArray[np.intp]
    atexog: tuple[tuple[int, float], ...] = ()
    reads: ClassVar[tuple[str, ...]] = ("x", "offset")

    def __call__(self, rows: Rows) -> Sums:
        x = _model_rows(rows, dict(self.atexog))
        values = prediction_sums(x, self.coef, self.intercept, self.order, rows.offset)
        return Sums({"values": values, "rows": np.array([float(x.shape[0])])})

    def memory(self, rows: int, p: int) -> int:
        d, m = self.coef.shape
        return 8 * rows * (m + 1) * (m + d + 2) + 16 * (m + 1) * m * d


@dataclass
class ColumnSummary:
    """Per column: minimum, maximum, whether every value is an integer, sum and sum of squares; and the rows."""

    low: Array
    high: Array
    integral: NDArray[np.bool_]
    total: Array
    squares: Array
    rows: int

    def __add__(self, other: ColumnSummary) -> ColumnSummary:
        return ColumnSummary(
            np.minimum(self.low, other.low), np.maximum(self.high, other.high), self.integral & other.integral,
            self.total + other.total, self.squares + other.squares, self.rows + other.rows,
        )  # fmt: skip

    @property
    def mean(self) -> Array:
        """Column means, shape (p,)."""
        return self.total / max(self.rows, 1)

    @property
    def var(self) -> Array:
        """Column variances (population), shape (p,)."""
        mean = self.mean
        return np.maximum(self.squares / max(self.rows, 1) - mean**2, 0.0)


@dataclass(frozen=True)
class ColumnSummaryKernel:
    """A partition's :class:`ColumnSummary` (with ``atexog`` columns set first)."""

    atexog: tuple[tuple[int, float], ...] = ()
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, rows: Rows) -> ColumnSummary:
        x = _model_rows(rows, dict(self.atexog))
        if x.shape[0] == 0:
            inf = np.full(x.shape[1], np.inf)
            return ColumnSummary(inf, -inf, np.ones(x.shape[1], bool), np.zeros(x.shape[1]), np.zeros(x.shape[1]), 0)
        integral = np.all(x % 1.0 == 0, axis=0)
        return ColumnSummary(x.min(0), x.max(0), integral, x.sum(0), np.einsum("ij,ij->j", x, x), x.shape[0])

    def memory(self, rows: int, p: int) -> int:
        return 8 * rows * p
