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
from dmlr.oracle.kernels import block_rows, linear_predictor, log_probabilities

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["AT", "METHODS", "MarginalEffects", "marginal_effects"]

Array = NDArray[np.float64]

AT = ("overall", "mean", "median", "zero")
METHODS = ("dydx", "eydx", "dyex", "eyex")


def _effects_and_jacobian(x: Array, coef: Array, intercept: bool, method: str) -> tuple[Array, Array]:
    """Sums over the rows of ``x`` of the effects (d, K) and of their Jacobian (d, K, m d), code order."""
    d, m = coef.shape
    k = m + 1
    beta = np.column_stack([np.zeros(d), coef])  # (d, K), code order
    e = np.zeros((k, m))
    e[np.arange(1, k), np.arange(m)] = 1.0
    eye = np.eye(d)
    effects = np.zeros((d, k))
    jacobian = np.zeros((d, k, m, d))
    for s in range(0, x.shape[0], block_rows(x.shape[0], d * k * m * d)):
        xb = x[s : s + block_rows(x.shape[0], d * k * m * d)]
        q, lse = log_probabilities(linear_predictor(xb, coef, intercept))
        p = np.column_stack([np.exp(-lse), q])  # (r, K)
        design = np.column_stack([np.ones(xb.shape[0]), xb]) if intercept else xb  # (r, d)
        diff = beta[None, :, :] - (p @ beta.T)[:, :, None]  # (r, d, K): beta_jk - bbar_k
        # d diff_jk / d beta_(l+1)c = e_jl [k=c] - [k=c] q_l - q_l diff_(l+1)k x_c
        d_diff = (
            e[None, None, :, :, None] * eye[None, :, None, None, :]
            - eye[None, :, None, None, :] * q[:, None, None, :, None]
            - (q[:, None, :] * diff[:, :, 1:])[:, :, None, :, None] * design[:, None, None, None, :]
        )  # (r, d, K, m, d)
        if method in ("dydx", "dyex"):
            d_p = p[:, :, None, None] * (e[None] - q[:, None, :])[:, :, :, None] * design[:, None, None, :]
            value = p[:, None, :] * diff
            grad = d_p[:, None] * diff[:, :, :, None, None] + p[:, None, :, None, None] * d_diff
        else:
            value, grad = diff, d_diff
        if method in ("dyex", "eyex"):
            value = value * design[:, :, None]
            grad = grad * design[:, :, None, None, None]
        effects += value.sum(axis=0)
        jacobian += grad.sum(axis=0)
    return effects, jacobian


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


def marginal_effects(res: MNLogitResults, X: Any, at: str = "overall", method: str = "dydx") -> MarginalEffects:
    """See :meth:`dmlr.results.results.MNLogitResults.get_margeff`."""
    if at not in AT:
        raise InputError(f"at must be one of {AT}, got {at!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    x = res.encode(X)[0] if isinstance(X, pd.DataFrame) else res.model_columns(X)
    coef, intercept = res.coef, res.intercept
    d, m = coef.shape
    if at != "overall":
        effects, jac = _effects_and_jacobian(_point(x, at, intercept), coef, intercept, method)
    elif isinstance(x, da.Array):
        width = d * (m + 1) * (1 + m * d)
        parts = da.map_blocks(
            lambda b: np.concatenate([a.ravel() for a in _effects_and_jacobian(b, coef, intercept, method)])[None],
            x, dtype=np.float64, chunks=((1,) * x.numblocks[0], (width,)),
        )  # fmt: skip
        total = np.asarray(parts.sum(axis=0).compute()) / x.shape[0]
        effects, jac = total[: d * (m + 1)].reshape(d, m + 1), total[d * (m + 1) :].reshape(d, m + 1, m, d)
    else:
        effects, jac = _effects_and_jacobian(np.asarray(x), coef, intercept, method)
        effects, jac = effects / x.shape[0], jac / x.shape[0]
    codes_sorted = np.concatenate([[res.base], res.non_base_classes])
    order = np.argsort(np.searchsorted(res.classes, codes_sorted))  # code -> sorted label position
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
