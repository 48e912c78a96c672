"""Marginal effects of a multinomial logit with delta-method standard errors (``res.get_margeff``).

statsmodels' definitions (``MNLogitResults.get_margeff``), for a row ``x`` with probabilities ``p`` (all K classes,
``beta_0 = 0`` for the base) and feature ``k``::

    dydx  ME_jk = p_j (beta_jk - bbar_k),   bbar_k = sum_l p_l beta_lk
    eydx  ME_jk / p_j        dyex  ME_jk x_k        eyex  ME_jk x_k / p_j

``at="overall"`` averages the rows' effects; ``"mean"``, ``"median"``, ``"zero"`` evaluate them at one point. The
Jacobian with respect to the class-major coefficients is written analytically (``p_j (e_j - q) x`` for the
probabilities, ``e_jk e_lc - [k = c] q_l - q_l (beta_lk - bbar_k) x_c`` for ``beta_jk - bbar_k``), so the
standard errors ``J V J'`` follow the fit's covariance (robust and cluster-robust ones too). Over rows everything
is an additive sum: ``at="overall"`` on a dask array is one pass of the engine, whatever its partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.options import check_missing
from dmlr.oracle.effects import (
    ColumnSummary,
    ColumnSummaryKernel,
    EffectSumsKernel,
    effects_and_jacobian,
    set_columns,
)
from dmlr.results.sums import row_sums

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["AT", "METHODS", "MarginalEffects", "marginal_effects"]

Array = NDArray[np.float64]

AT = ("overall", "mean", "median", "zero")
METHODS = ("dydx", "eydx", "dyex", "eyex")


def _discrete_columns(
    summary: ColumnSummary | None, names: list[str], dummy: bool | list[str], count: bool | list[str]
) -> tuple[tuple[int, str], ...]:
    """statsmodels' rules: dummies are 0/1 columns, counts non-negative integer columns that vary and are not
    dummies; named columns must be such columns (an error names the one that is not)."""
    if not dummy and not count:
        return ()
    assert summary is not None
    low, high, integral, var = summary.low, summary.high, summary.integral, summary.var
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


def _point(x: Any, at: str, summary: ColumnSummary | None, atexog: dict[int, float]) -> Array:
    """The row at which ``at="mean" | "median" | "zero"`` evaluates (data columns), shape (1, p)."""
    if at == "zero":
        return np.zeros((1, x.shape[1]))
    if at == "mean":
        assert summary is not None
        return summary.mean[None, :]
    if isinstance(x, da.Array):
        raise InputError("at='median' needs the data in memory; use at='mean' or 'overall' for dask input")
    return set_columns(np.atleast_2d(np.median(np.asarray(x, dtype=np.float64), axis=0)), atexog)


NAMES = {"dydx": "dy/dx", "eyex": "d(lny)/d(lnx)", "dyex": "dy/d(lnx)", "eydx": "d(lny)/dx"}
"""The effect column's name per method, as statsmodels' summary frame names it."""


def _number(v: float) -> str:
    """Four significant digits: effects of 1e-5 are not printed as 0.0000."""
    return f"{v:#.4g}" if v == v and v != 0 else ("0" if v == 0 else "nan")


@dataclass(frozen=True)
class MarginalEffects:
    """Marginal effects, statsmodels' names and shapes.

    Attributes
    ----------
    margeff : pandas.DataFrame, shape (E, K)
        Rows: the model's features (the constant excluded; ``by="column"``) or the formula's variables and factor
        levels (``by="variable"``); columns: every class (base included), sorted labels.
    margeff_se : pandas.DataFrame, shape (E, K)
    margeff_cov : pandas.DataFrame, shape (E K, E K)
        Class-major ``(class, feature)`` order.
    at, method : str
    by : {"column", "variable"}
    """

    margeff: pd.DataFrame
    margeff_se: pd.DataFrame
    margeff_cov: pd.DataFrame
    at: str
    method: str
    by: str = "column"

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

    def conf_int(self, alpha: float = 0.05) -> Array:
        """Lower and upper ``1 - alpha`` limits as statsmodels returns them: shape (E, 2, K) (labelled frames:
        :meth:`limits`)."""
        lower, upper = self.limits(alpha)
        return np.stack([lower.to_numpy(), upper.to_numpy()], axis=1)

    def limits(self, alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Lower and upper ``1 - alpha`` limits as two labelled frames, each (E, K)."""
        z = scipy.stats.norm.ppf(1 - alpha / 2)
        return self.margeff - z * self.margeff_se, self.margeff + z * self.margeff_se

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per (class, feature): effect (named by the method, as statsmodels), std err, z, P>|z|, interval."""
        lower, upper = self.limits(alpha)
        cols = {NAMES[self.method]: self.margeff, "Std. Err.": self.margeff_se, "z": self.tvalues,
                "Pr(>|z|)": self.pvalues, "Conf. Int. Low": lower, "Cont. Int. Hi.": upper}  # fmt: skip
        frame = pd.DataFrame({name: v.T.stack() for name, v in cols.items()})
        frame.index.names = ["class", "feature" if self.by == "column" else "variable"]
        return frame

    def summary(self, alpha: float = 0.05) -> str:
        """Text: the method, where the effects are evaluated, and the summary frame (four significant digits)."""
        head = f"MNLogit marginal effects: method {self.method} ({NAMES[self.method]}), at {self.at}"
        if self.by == "variable":
            head += ", per variable of the formula (factors: discrete changes from the reference level)"
        return head + "\n" + self.summary_frame(alpha).to_string(float_format=_number)


def effects_frame(
    res: MNLogitResults, effects: Array, jac: Array, labels: list[str], at: str, method: str, by: str = "column"
) -> MarginalEffects:
    """Effects (E, K) and their Jacobian (E, K, m, d), both in code order, as :class:`MarginalEffects` with the
    delta-method covariance ``J V J'`` from the fit's covariance."""
    m = res.coef.shape[1]
    order = res.code_to_sorted
    e = effects.shape[0]
    effects = effects[:, order]
    jac = jac[:, order].reshape(e, m + 1, -1)
    flat = jac.transpose(1, 0, 2).reshape(e * (m + 1), -1)  # class-major rows (class, feature)
    cov = flat @ res.cov_params().to_numpy() @ flat.T
    classes = list(res.classes.tolist())
    se = np.sqrt(np.maximum(np.diag(cov), 0.0)).reshape(m + 1, e).T
    index = pd.MultiIndex.from_product([classes, labels], names=["class", "feature"])
    return MarginalEffects(
        pd.DataFrame(effects, index=labels, columns=classes),
        pd.DataFrame(se, index=labels, columns=classes),
        pd.DataFrame(cov, index=index, columns=index),
        at,
        method,
        by,
    )


def _atexog_columns(names: list[str], atexog: dict[Any, float] | None, intercept: bool) -> dict[int, float]:
    """The data columns ``atexog`` fixes and their values: feature names, or integer positions among the model's
    columns as statsmodels counts them (the constant, when there is one, is column 0)."""
    columns: dict[int, float] = {}
    for key, value in (atexog or {}).items():
        if key in names:
            j = names.index(key)
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if intercept and key == 0:
                raise InputError(
                    "atexog key 0 is the constant (statsmodels counts it as column 0): it is not a feature"
                )
            j = int(key) - int(intercept)
            if not 0 <= j < len(names):
                last = len(names) + int(intercept) - 1
                raise InputError(
                    f"atexog key {key} is not a column position: the model's columns are 0..{last}"
                    + (" (0 is the constant)" if intercept else "")
                )
        else:
            raise InputError(f"atexog names {key!r}, which is not one of the model's features {names}")
        columns[j] = float(value)
    return columns


def _by(res: MNLogitResults, X: Any, by: str | None) -> str:
    """``"variable"`` for a formula fit given raw rows (unless ``by`` says otherwise), else ``"column"``."""
    raw = isinstance(X, (pd.DataFrame, dd.DataFrame))
    if by is None:
        return "variable" if res.formula is not None and raw else "column"
    if by not in ("column", "variable"):
        raise InputError(f"by must be 'column' or 'variable', got {by!r}")
    if by == "variable" and (res.formula is None or not raw):
        raise InputError(
            "by='variable' takes effects through a formula: it needs a fit of dmlr.fit_formula and the raw rows "
            "(a DataFrame or table files)" + ("" if res.formula is not None else "; this fit has no formula")
        )
    return by


def marginal_effects(
    res: MNLogitResults,
    X: Any,
    at: str = "overall",
    method: str = "dydx",
    atexog: dict[Any, float] | None = None,
    dummy: bool | list[str] = False,
    count: bool | list[str] = False,
    by: str | None = None,
    missing: str = "raise",
) -> MarginalEffects:
    """See :meth:`dmlr.results.results.MNLogitResults.get_margeff`."""
    from dmlr.results.encoding import resolve_rows

    if at not in AT:
        raise InputError(f"at must be one of {AT}, got {at!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    check_missing(missing)
    X = resolve_rows(X)
    if _by(res, X, by) == "variable":
        if at != "overall" or dummy or count:
            raise InputError(
                "per-variable effects of a formula fit are averages over the rows (at='overall'; factors get "
                f"discrete changes by themselves); got at={at!r}, dummy={dummy!r}, count={count!r}. For "
                "statsmodels' effects per design column pass by='column'"
            )
        from dmlr.results.variable_margins import variable_margins

        return variable_margins(res, X, method, atexog, missing)
    if (dummy or count) and (method in ("dyex", "eyex") or at in ("median", "zero")):
        raise InputError(f"discrete changes (dummy, count) are defined for dydx and eydx at overall or mean, as in "
                         f"statsmodels; got method {method!r}, at {at!r}")  # fmt: skip
    names = list(res.data_feature_names)
    x = res.model_rows(X, missing=missing)[0]
    fixed = _atexog_columns(names, atexog, bool(res.intercept))
    fixed_items = tuple(sorted(fixed.items()))
    summary = row_sums(x, ColumnSummaryKernel(fixed_items)) if (dummy or count or at == "mean") else None
    discrete = _discrete_columns(summary, names, dummy, count)
    coef, intercept = res.coef, res.intercept
    d, m = coef.shape
    if at != "overall":
        effects, jac = effects_and_jacobian(_point(x, at, summary, fixed), coef, intercept, method, discrete)
    else:  # one pass of per-block sums (one call for NumPy input)
        record = row_sums(x, EffectSumsKernel(coef, intercept, method, discrete, fixed_items))
        total, n = record["values"], float(record["rows"][0])
        effects, jac = total[: d * (m + 1)].reshape(d, m + 1) / n, total[d * (m + 1) :].reshape(d, m + 1, m, d) / n
    keep = np.arange(int(intercept), d)  # the constant's "effect" is not one
    labels = list(res.feature_names[int(intercept) :])
    return effects_frame(res, effects[keep], jac[keep], labels, at, method)
