"""Marginal effects of a multinomial logit with delta-method standard errors (``res.get_margeff``).

statsmodels' definitions (``MNLogitResults.get_margeff``), for a row ``x`` with probabilities ``p`` (all K classes,
``beta_0 = 0`` for the base) and feature ``k``::

    dydx  ME_jk = p_j (beta_jk - bbar_k),   bbar_k = sum_l p_l beta_lk
    eydx  ME_jk / p_j        dyex  ME_jk x_k        eyex  ME_jk x_k / p_j

``at="overall"`` averages the rows' effects; ``"mean"``, ``"median"``, ``"zero"`` evaluate them at one point. The
Jacobian with respect to the class-major coefficients is written analytically (``p_j (e_j - q) x`` for the
probabilities, ``e_jk e_lc - [k = c] q_l - q_l (beta_lk - bbar_k) x_c`` for ``beta_jk - bbar_k``), so the
standard errors ``J V J'`` follow the fit's covariance (robust and cluster-robust ones too). Over rows everything
is an additive sum: ``at="overall"`` on a dask array is one pass of per-block sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.kernels import block_rows
from dmlr.results.prediction import block_sums, probabilities, probability_sums

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["AT", "METHODS", "MarginalEffects", "marginal_effects"]

Array = NDArray[np.float64]

AT = ("overall", "mean", "median", "zero")
METHODS = ("dydx", "eydx", "dyex", "eyex")


def _discrete(x: Array, coef: Array, intercept: bool, method: str, column: int, kind: str) -> tuple[Array, Array]:
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


def _moment_sums(x: Array, coef: Array, intercept: bool, method: str) -> tuple[Array, Array]:
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


def _effects_and_jacobian(
    x: Array, coef: Array, intercept: bool, method: str, discrete: tuple[tuple[int, str], ...] = ()
) -> tuple[Array, Array]:
    """Sums over the rows of ``x`` of the effects (d, K) and of their Jacobian (d, K, m d), code order; the
    ``discrete`` data columns (index, ``"dummy"`` or ``"count"``) get discrete changes instead of derivatives."""
    d, m = coef.shape
    if method in ("dydx", "eydx") and d > m + 3:
        effects, jacobian = _moment_sums(x, coef, intercept, method)
    else:
        effects, jacobian = _direct_sums(x, coef, intercept, method)
    return _with_discrete(effects, jacobian, x, coef, intercept, method, discrete)


def _direct_sums(x: Array, coef: Array, intercept: bool, method: str) -> tuple[Array, Array]:
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
        value, grad = _discrete(x, coef, intercept, method, column, kind)
        effects[column + int(intercept)] = value
        jacobian[column + int(intercept)] = grad
    return effects, jacobian


def _discrete_columns(
    x: Any, names: list[str], dummy: bool | list[str], count: bool | list[str]
) -> tuple[tuple[int, str], ...]:
    """statsmodels' rules: dummies are 0/1 columns, counts non-negative integer columns that vary and are not
    dummies; named columns must be such columns (an error names the one that is not)."""
    if not dummy and not count:
        return ()
    if isinstance(x, da.Array):
        low, high, integral, var = da.compute(x.min(0), x.max(0), (x % 1.0 == 0).all(0), x.var(0))
    else:
        low, high, integral, var = x.min(0), x.max(0), np.all(x % 1.0 == 0, axis=0), x.var(0)
    is_dummy = (low == 0) & (high == 1) & integral
    is_count = integral & (var != 0) & (low >= 0) & ~is_dummy
    out: list[tuple[int, str]] = []
    for kind, asked, ok in (("dummy", dummy, is_dummy), ("count", count, is_count)):
        if asked is True:
            out += [(int(j), kind) for j in np.nonzero(ok)[0]]
        elif asked:
            for name in asked:
                if name not in names:
                    raise InputError(f"{kind} feature {name!r} is not one of the model's features {names}")
                j = names.index(name)
                if not ok[j]:
                    what = "0/1" if kind == "dummy" else "non-negative integer (and not 0/1)"
                    raise InputError(f"{kind} feature {name!r} is not a {what} column")
                out.append((j, kind))
    return tuple(out)


def _point(x: Any, at: str, intercept: bool) -> Array:
    """The row at which ``at="mean" | "median" | "zero"`` evaluates (data columns), shape (1, p)."""
    if at == "zero":
        return np.zeros((1, x.shape[1]))
    if isinstance(x, da.Array):
        if at == "median":
            raise InputError("at='median' needs the data in memory; use at='mean' or 'overall' for dask input")
        return np.asarray(x.mean(axis=0).compute())[None, :]
    return np.atleast_2d(np.mean(x, axis=0) if at == "mean" else np.median(x, axis=0))


@dataclass(frozen=True)
class MarginalEffects:
    """Marginal effects, statsmodels' names and shapes.

    Attributes
    ----------
    margeff : pandas.DataFrame, shape (p, K)
        Rows: the model's features (the constant excluded); columns: every class (base included), sorted labels.
    margeff_se : pandas.DataFrame, shape (p, K)
    margeff_cov : pandas.DataFrame, shape (p K, p K)
        Class-major ``(class, feature)`` order.
    at, method : str
    """

    margeff: pd.DataFrame
    margeff_se: pd.DataFrame
    margeff_cov: pd.DataFrame
    at: str
    method: str

    @property
    def tvalues(self) -> pd.DataFrame:
        """``margeff / margeff_se``."""
        return self.margeff / self.margeff_se

    @property
    def pvalues(self) -> pd.DataFrame:
        """Two-sided normal p-values."""
        return pd.DataFrame(
            2 * scipy.stats.norm.sf(np.abs(self.tvalues.to_numpy())), self.margeff.index, self.margeff.columns
        )

    def conf_int(self, alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Lower and upper ``1 - alpha`` limits, each (p, K)."""
        z = scipy.stats.norm.ppf(1 - alpha / 2)
        return self.margeff - z * self.margeff_se, self.margeff + z * self.margeff_se

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per (class, feature): effect, std err, z, P>|z|, interval."""
        lower, upper = self.conf_int(alpha)
        cols = {"dy/dx": self.margeff, "Std. Err.": self.margeff_se, "z": self.tvalues, "Pr(>|z|)": self.pvalues,
                "Conf. Int. Low": lower, "Cont. Int. Hi.": upper}  # fmt: skip
        frame = pd.DataFrame({name: v.T.stack() for name, v in cols.items()})
        frame.index.names = ["class", "feature"]
        return frame

    def summary(self, alpha: float = 0.05) -> str:
        """Text: the method, where the effects are evaluated, and the summary frame."""
        head = f"MNLogit marginal effects: method {self.method}, at {self.at}"
        return head + "\n" + self.summary_frame(alpha).to_string(float_format=lambda v: f"{v:.4f}")


def _with_atexog(x: Any, names: list[str], atexog: dict[Any, float] | None) -> Any:
    """``x`` with the columns of ``atexog`` (feature names, or data column positions) set to the given values."""
    if not atexog:
        return x
    columns = {}
    for key, value in atexog.items():
        j = names.index(key) if key in names else key if isinstance(key, int) and 0 <= key < len(names) else None
        if j is None:
            raise InputError(f"atexog names {key!r}, which is not one of the model's features {names}")
        columns[j] = float(value)
    if isinstance(x, da.Array):
        return da.map_blocks(_set_columns, x, columns, dtype=np.float64)
    return _set_columns(np.array(x, dtype=np.float64), columns)


def _set_columns(block: Array, columns: dict[int, float]) -> Array:
    out = block.copy()
    for j, value in columns.items():
        out[:, j] = value
    return out


def marginal_effects(
    res: MNLogitResults,
    X: Any,
    at: str = "overall",
    method: str = "dydx",
    atexog: dict[Any, float] | None = None,
    dummy: bool | list[str] = False,
    count: bool | list[str] = False,
) -> MarginalEffects:
    """See :meth:`dmlr.results.results.MNLogitResults.get_margeff`."""
    if at not in AT:
        raise InputError(f"at must be one of {AT}, got {at!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if (dummy or count) and (method in ("dyex", "eyex") or at in ("median", "zero")):
        raise InputError(f"discrete changes (dummy, count) are defined for dydx and eydx at overall or mean, as in "
                         f"statsmodels; got method {method!r}, at {at!r}")  # fmt: skip
    names = list(res.data_feature_names)
    x = res.model_rows(X)[0]
    x = _with_atexog(x, names, atexog)
    discrete = _discrete_columns(x, names, dummy, count)
    coef, intercept = res.coef, res.intercept
    d, m = coef.shape
    if at != "overall":
        effects, jac = _effects_and_jacobian(_point(x, at, intercept), coef, intercept, method, discrete)
    else:  # one pass of per-block sums (one call for NumPy input)

        def sums(block: Array) -> Array:
            return np.concatenate([a.ravel() for a in _effects_and_jacobian(block, coef, intercept, method, discrete)])

        total, n = block_sums(x, sums, d * (m + 1) * (1 + m * d))
        effects, jac = total[: d * (m + 1)].reshape(d, m + 1) / n, total[d * (m + 1) :].reshape(d, m + 1, m, d) / n
    order = res.code_to_sorted
    keep = np.arange(int(intercept), d)  # the constant's "effect" is not one
    effects = effects[keep][:, order]
    jac = jac[keep][:, order].reshape(len(keep), m + 1, m * d)
    flat = jac.transpose(1, 0, 2).reshape(-1, m * d)  # class-major rows (class, feature)
    cov = flat @ res.cov_params().to_numpy() @ flat.T
    names = list(res.feature_names[int(intercept) :])
    classes = list(res.classes.tolist())
    se = np.sqrt(np.maximum(np.diag(cov), 0.0)).reshape(m + 1, len(keep)).T
    index = pd.MultiIndex.from_product([classes, names], names=["class", "feature"])
    return MarginalEffects(
        pd.DataFrame(effects, index=names, columns=classes),
        pd.DataFrame(se, index=names, columns=classes),
        pd.DataFrame(cov, index=index, columns=index),
        at,
        method,
    )
