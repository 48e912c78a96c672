"""Plain-text summary table in the spirit of statsmodels' ``MNLogitResults.summary()``."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["render_summary"]

WIDTH = 78
NAME = 18
COL = 10


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "inf" if v == np.inf else "nan"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.2e}"
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
    ci = res.conf_int(alpha).to_numpy() if has_se else None
    d = res.coef.shape[0]
    tables = [res.coef, res.bse.to_numpy(), res.tvalues.to_numpy(), res.pvalues.to_numpy()] if has_se else []
    for k, label in enumerate(res.params.columns):
        head = f"{res.dep_name}={label}"
        lines.append(
            f"{head[:NAME]:<{NAME}}" + "".join(f"{h:>{COL}}" for h in ("coef", "std err", "z", "P>|z|", lo, hi))
        )
        lines.append("-" * WIDTH)
        for j, name in enumerate(res.params.index):
            if has_se and ci is not None:
                row = [float(t[j, k]) for t in tables] + [float(v) for v in ci[k * d + j]]
            else:
                row = [float(res.coef[j, k])] + [float("nan")] * 5
            cells = [_fmt(v) for v in row]
            cells[3] = f"{row[3]:.3f}" if np.isfinite(row[3]) else "nan"
            lines.append(f"{name[:NAME]:<{NAME}}" + "".join(f"{c:>{COL}}" for c in cells))
        lines.append("=" * WIDTH if k == len(res.params.columns) - 1 else "-" * WIDTH)
    if not has_se:
        lines.append("Standard errors not computed (inference=False).")
    return "\n".join(lines)
