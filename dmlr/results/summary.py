"""Plain-text summary table in the spirit of statsmodels' ``MNLogitResults.summary()``."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["render_summary"]

WIDTH = 78


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "inf" if v == np.inf else "nan"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.3e}"
    return f"{v:.4f}"


def _pair(left: tuple[str, str], right: tuple[str, str]) -> str:
    half = WIDTH // 2
    lk, lv = left
    rk, rv = right
    return f"{lk:<18}{lv:>{half - 19}} {rk:<18}{rv:>{WIDTH - half - 18}}"


def render_summary(res: MNLogitResults, alpha: float = 0.05) -> str:
    """Render the header statistics and one coefficient block per non-base class.

    Parameters
    ----------
    res : MNLogitResults
    alpha : float
        Confidence level of the intervals is ``1 - alpha``.
    """
    now = _dt.datetime.now()
    left = [
        ("Dep. Variable:", res.dep_name),
        ("Model:", "MNLogit (dmlr)"),
        ("Method:", res.method),
        ("Date:", now.strftime("%a, %d %b %Y")),
        ("Time:", now.strftime("%H:%M:%S")),
        ("converged:", str(res.converged)),
        ("Iterations:", f"{res.n_iter} ({res.n_passes} passes)"),
        ("Base class:", str(res.base)),
    ]
    right = [
        ("No. Observations:", f"{res.nobs:g}"),
        ("Df Residuals:", f"{res.df_resid:g}"),
        ("Df Model:", f"{res.df_model:g}"),
        ("Pseudo R-squ.:", f"{res.prsquared:.4f}"),
        ("Log-Likelihood:", f"{res.llf:.6g}"),
        ("LL-Null:", f"{res.llnull:.6g}"),
        ("LLR p-value:", f"{res.llr_pvalue:.4g}"),
        ("AIC / BIC:", f"{res.aic:.6g} / {res.bic:.6g}"),
    ]
    lines = ["MNLogit Regression Results".center(WIDTH), "=" * WIDTH]
    lines += [_pair(a, b) for a, b in zip(left, right, strict=True)]
    if res.l2 > 0:
        lines.append(f"L2 penalty: {res.l2:g} (intercept not penalized); covariance is (I + l2 P)^-1")
    lines.append("=" * WIDTH)
    lo, hi = f"[{alpha / 2:.3g}", f"{1 - alpha / 2:.3g}]"
    has_se = res.has_inference
    ci = res.conf_int(alpha) if has_se else None
    for k, label in enumerate(res.params.columns):
        head = f"{res.dep_name}={label}"
        lines.append(
            f"{head[:18]:<18}{'coef':>10}{'std err':>10}{'z':>10}{'P>|z|':>10}{lo:>10}{hi:>10}"
        )
        lines.append("-" * WIDTH)
        for j, name in enumerate(res.params.index):
            coef = float(res.params.iat[j, k])
            if has_se and ci is not None:
                row = [
                    coef,
                    float(res.bse.iat[j, k]),
                    float(res.tvalues.iat[j, k]),
                    float(res.pvalues.iat[j, k]),
                    float(ci.iat[k * len(res.params.index) + j, 0]),
                    float(ci.iat[k * len(res.params.index) + j, 1]),
                ]
            else:
                row = [coef] + [float("nan")] * 5
            lines.append(f"{name[:18]:<18}" + "".join(f"{_fmt(v):>10}" for v in row))
        lines.append("=" * WIDTH if k == len(res.params.columns) - 1 else "-" * WIDTH)
    if not has_se:
        lines.append("Standard errors not computed (inference=False).")
    return "\n".join(lines)
