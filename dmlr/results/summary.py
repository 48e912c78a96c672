"""The summary of a fit, laid out as statsmodels lays out ``MNLogitResults.summary()``.

Every column is as wide as its widest cell (names are never cut, numbers never run together), counts are exact
integers, the date and time are the fit's own, and one :class:`Summary` renders as text (``str()``), HTML (Jupyter
shows it) and Markdown.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["Summary", "render_summary"]

MIN_WIDTH = 78
GAP = 2
COLUMNS = ("coef", "std err", "z", "P>|z|")


def _number(v: float) -> str:
    """A coefficient-table number: 4 decimals in [1e-4, 1e6), else 4 significant digits in exponent form."""
    if not np.isfinite(v):
        return "inf" if v == np.inf else ("-inf" if v == -np.inf else "nan")
    if v == 0 or 1e-4 <= abs(v) < 1e6:
        return f"{v:.4f}"
    return f"{v:.3e}"


def _exact(v: float) -> str:
    """A fit statistic without lost figures: integers whole, others to 2 decimals (4 significant below 1)."""
    if not np.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}"


@dataclass(frozen=True)
class Summary:
    """A fit's summary: header statistics and one coefficient table per non-base class.

    Attributes
    ----------
    title : str
    left, right : list of (str, str)
        The header's key/value pairs, two columns of them.
    columns : tuple of str
        Headers of the coefficient columns (after the name column).
    tables : list of (str, list of list of str)
        Per non-base class: its heading (``dep=label``) and rows of cells (name first).
    notes : list of str
        Lines after the tables.
    """

    title: str
    left: list[tuple[str, str]]
    right: list[tuple[str, str]]
    columns: tuple[str, ...]
    tables: list[tuple[str, list[list[str]]]]
    notes: list[str] = field(default_factory=list)

    # --- text -------------------------------------------------------------------------------------------------
    def _widths(self) -> list[int]:
        """Width of the name column and of each number column: its widest cell or heading."""
        names = [len(head) for head, _ in self.tables] + [len(r[0]) for _, rows in self.tables for r in rows]
        widths = [max(names, default=4)]
        for j, heading in enumerate(self.columns, start=1):
            cells = [len(r[j]) for _, rows in self.tables for r in rows]
            widths.append(max([len(heading), *cells]))
        return widths

    def as_text(self) -> str:
        """The plain-text table (what ``str()`` gives)."""
        widths = self._widths()
        table_width = widths[0] + sum(GAP + w for w in widths[1:])
        kl = max(len(k) for k, _ in self.left)
        vl = max(len(v) for _, v in self.left)
        kr = max(len(k) for k, _ in self.right)
        vr = max(len(v) for _, v in self.right)
        width = max(MIN_WIDTH, table_width, kl + vl + kr + vr + 3 * GAP)
        # the left block takes half (less if the right block needs more), the right block the rest
        left_w = max(kl + GAP + vl, min((width - GAP) // 2, width - 2 * GAP - kr - vr))
        right_w = width - left_w - GAP
        lines = [self.title.center(width).rstrip(), "=" * width]
        for (lk, lv), (rk, rv) in zip(self.left, self.right, strict=True):
            lines.append(f"{lk:<{kl}}{lv:>{left_w - kl}}{' ' * GAP}{rk:<{kr}}{rv:>{right_w - kr}}")
        lines.append("=" * width)
        pad = width - table_width  # extra room goes to the name column
        for k, (head, rows) in enumerate(self.tables):
            cells = "".join(f"{' ' * GAP}{h:>{w}}" for h, w in zip(self.columns, widths[1:], strict=True))
            lines.append(f"{head:<{widths[0] + pad}}{cells}")
            lines.append("-" * width)
            for row in rows:
                nums = "".join(f"{' ' * GAP}{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
                lines.append(f"{row[0]:<{widths[0] + pad}}{nums}")
            lines.append("=" * width if k == len(self.tables) - 1 else "-" * width)
        lines += self.notes
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def __contains__(self, text: str) -> bool:
        return text in self.as_text()

    # --- other renderings -------------------------------------------------------------------------------------
    def as_markdown(self) -> str:
        """GitHub-flavoured Markdown: a header table, then one table per class."""
        out = [f"**{self.title}**", "", "| | | | |", "|:--|--:|:--|--:|"]
        for (lk, lv), (rk, rv) in zip(self.left, self.right, strict=True):
            out.append(f"| {lk} | {lv} | {rk} | {rv} |")
        for head, rows in self.tables:
            out += ["", f"| {head} | " + " | ".join(self.columns) + " |", "|:--|" + "--:|" * len(self.columns)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
        if self.notes:
            out += [""] + [f"{note}  " for note in self.notes]
        return "\n".join(out)

    def as_html(self) -> str:
        """HTML tables (``_repr_html_``: how Jupyter shows a summary)."""
        e = html.escape
        out = [f'<table class="dmlr-summary"><caption>{e(self.title)}</caption>']
        for (lk, lv), (rk, rv) in zip(self.left, self.right, strict=True):
            out.append(f"<tr><th>{e(lk)}</th><td>{e(lv)}</td><th>{e(rk)}</th><td>{e(rv)}</td></tr>")
        out.append("</table>")
        for head, rows in self.tables:
            out.append('<table class="dmlr-summary">')
            out.append(f"<tr><th>{e(head)}</th>" + "".join(f"<th>{e(c)}</th>" for c in self.columns) + "</tr>")
            for row in rows:
                out.append(f"<tr><th>{e(row[0])}</th>" + "".join(f"<td>{e(c)}</td>" for c in row[1:]) + "</tr>")
            out.append("</table>")
        out += [f"<p>{e(note)}</p>" for note in self.notes]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.as_html()


def _weighted(res: MNLogitResults) -> bool:
    return res.weights_type == "probability" or res.nobs != res.n_rows


def render_summary(res: MNLogitResults, alpha: float = 0.05) -> Summary:
    """The summary of ``res``: header statistics and one coefficient block per non-base class.

    Parameters
    ----------
    res : MNLogitResults
    alpha : float
        Confidence level of the intervals is ``1 - alpha``.
    """
    when = _dt.datetime.fromisoformat(res.fitted_at)
    left = [
        ("Dep. Variable:", str(res.dep_name)),
        ("Model:", "MNLogit (dmlr)"),
        ("Method:", res.method),
        ("Date:", when.strftime("%a, %d %b %Y")),
        ("Time:", when.strftime("%H:%M:%S") + (f" {when.tzname()}" if when.tzinfo else "")),
        ("converged:", str(res.converged)),
        ("Iterations:", f"{res.n_iter} ({res.n_passes} passes)"),
        ("Base class:", str(res.base)),
        ("Covariance Type:", res.cov_type),
    ]
    pseudo = res.weights_type == "probability"
    right = [
        ("No. Observations:", _exact(res.nobs)),
        ("Df Residuals:", _exact(res.df_resid)),
        ("Df Model:", _exact(res.df_model)),
        ("Pseudo R-squ.:", f"{res.prsquared:.4f}"),
        ("Log-Pseudolikelihood:" if pseudo else "Log-Likelihood:", _exact(res.llf)),
        ("LL-Null:", _exact(res.llnull)),
        ("LLR p-value:", "n/a" if pseudo else f"{res.llr_pvalue:.4g}"),
        ("AIC / BIC:", f"{_exact(res.aic)} / {_exact(res.bic)}"),
        ("Weights:", res.weights_type if _weighted(res) else "none"),
    ]
    notes = []
    if res.cov_type == "cluster":
        notes.append(
            f"Standard errors adjusted for {res.n_clusters} clusters ({res.cluster_correction} small-sample factor)."
        )
    if pseudo:
        notes.append("Probability weights: the log-likelihood is a pseudo-log-likelihood (no likelihood-ratio tests).")
    if res.n_missing:
        notes.append(f"{res.n_missing} rows with a missing value were dropped (missing='drop').")
    if res.l2 > 0:
        notes.append(f"L2 penalty: {res.l2:g} (intercept not penalized); covariance is (I + l2 P)^-1")
    lo, hi = f"[{alpha / 2:.3g}", f"{1 - alpha / 2:.3g}]"
    has_se = res.has_inference
    ci = res.conf_int(alpha).to_numpy() if has_se else None
    d = res.coef.shape[0]
    stats = [res.coef, res.bse.to_numpy(), res.tvalues.to_numpy(), res.pvalues.to_numpy()] if has_se else []
    tables = []
    for k, label in enumerate(res.params.columns):
        rows = []
        for j, name in enumerate(res.params.index):
            if has_se and ci is not None:
                coef, se, z, p = (float(t[j, k]) for t in stats)
                cells = [_number(coef), _number(se), f"{z:.3f}", f"{p:.3f}", *(_number(v) for v in ci[k * d + j])]
            else:
                cells = [_number(float(res.coef[j, k]))] + ["nan"] * 5
            rows.append([str(name), *cells])
        tables.append((f"{res.dep_name}={label}", rows))
    if not has_se:
        notes.append("Standard errors not computed (inference=False).")
    return Summary("MNLogit Regression Results", left, right, (*COLUMNS, lo, hi), tables, notes)
