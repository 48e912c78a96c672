"""The report stage: summary text, a Markdown or HTML page with a convergence plot and a coefficient plot.

Plots need matplotlib (``pip install 'dmlr[report]'``); without it the report is written without them and says so.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from dmlr.pipeline.changes import Section
from dmlr.results.margins import MarginalEffects
from dmlr.results.results import MNLogitResults

if TYPE_CHECKING:
    from dmlr.models.bootstrap import BootstrapResults

__all__ = ["write_report"]

MAX_COEF_ROWS = 40


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or ``None`` without matplotlib (``dmlr[report]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plots(res: MNLogitResults) -> dict[str, bytes]:
    """PNG bytes of the convergence and coefficient plots ({} without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return {}
    steps = [h for h in res.history if h["kind"] != "inference"]
    it = np.array([h["iteration"] for h in steps])
    ll = np.array([h["loglik"] for h in steps])
    score = np.array([h["max_abs_score"] for h in steps]) / max(res.nobs, 1.0)
    gap = np.maximum(res.llf - ll, 1e-16 * max(abs(res.llf), 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].semilogy(it, gap, "o-", ms=3)
    axes[0].set(xlabel="iteration", ylabel="loglik* - loglik", title="log-likelihood gap")
    axes[1].semilogy(it, score, "o-", ms=3, color="C1")
    axes[1].set(xlabel="iteration", ylabel="max |score| / n", title="score")
    fig.suptitle(f"{res.method}: {res.n_iter} iterations, {steps[-1]['passes'] if steps else 0} passes")
    fig.tight_layout()
    out = {"convergence.png": _png(fig, plt)}
    params = res.params
    bse = res.bse if res.covariance is not None else None
    rows = [f for f in params.index if f != "const"] or list(params.index)
    if len(rows) > MAX_COEF_ROWS:
        strength = (params.loc[rows].abs() / (bse.loc[rows] if bse is not None else 1.0)).max(axis=1)
        rows = list(strength.sort_values(ascending=False).index[:MAX_COEF_ROWS])
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.28 * len(rows) * max(1, min(len(params.columns), 4)) / 2))
    width = 0.8 / len(params.columns)
    y = np.arange(len(rows))
    for j, cls in enumerate(params.columns):
        offset = (j - (len(params.columns) - 1) / 2) * width
        err = None if bse is None else 1.96 * bse.loc[rows, cls].to_numpy()
        ax.errorbar(params.loc[rows, cls].to_numpy(), y + offset, xerr=err, fmt="o", ms=3, capsize=2, label=str(cls))
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(y, [str(r) for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel=f"coefficient (vs base {res.base!r})" + (", 95% interval" if bse is not None else ""))
    ax.legend(title="class", fontsize="small", loc="best")
    fig.tight_layout()
    out["coefficients.png"] = _png(fig, plt)
    return out


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _facts(res: MNLogitResults, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    passes = res.history[-1]["passes"] if res.history else 0
    rows = [
        ("observations (fit)", f"{res.nobs:,.0f}"),
        ("classes", f"{len(res.classes)} (base {res.base!r})"),
        ("parameters", f"{res.coef.size}"),
        ("method", f"{res.method}, {res.n_iter} iterations, {passes} data passes"),
        ("converged", str(res.converged)),
        ("log-likelihood", f"{res.llf:.6f}"),
        ("null log-likelihood", f"{res.llnull:.6f}"),
        ("McFadden pseudo-R²", f"{res.prsquared:.4f}"),
        ("AIC / BIC", f"{res.aic:.2f} / {res.bic:.2f}"),
        ("held-out rows", f"{metrics['n_rows']:,}"),
        ("held-out log-loss", f"{metrics['log_loss']:.5f} (class frequencies alone: {metrics['null_log_loss']:.5f})"),
        ("held-out accuracy", f"{metrics['accuracy']:.4f}"),
        ("held-out Brier score", f"{metrics['brier']:.5f}"),
        ("expected calibration error", f"{metrics['calibration']['expected_calibration_error']:.4f}"),
    ]
    return rows


def _tables(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    classes = [str(c) for c in metrics["classes"]]
    confusion = [[cls] + [f"{v:,.0f}" for v in row] for cls, row in zip(classes, metrics["confusion_matrix"],
                                                                          strict=True)]  # fmt: skip
    calib = [
        [f"{b['lower']:.2f}–{b['upper']:.2f}", f"{b['weight']:,.0f}",
         "" if b["mean_confidence"] is None else f"{b['mean_confidence']:.3f}",
         "" if b["accuracy"] is None else f"{b['accuracy']:.3f}"]
        for b in metrics["calibration"]["bins"]
    ]  # fmt: skip
    return ["true \\ predicted", *classes], confusion, ["top-class probability", "rows", "mean confidence",
                                                         "accuracy"], calib  # fmt: skip


def _markdown(
    title: str,
    res: MNLogitResults,
    metrics: dict[str, Any],
    images: list[str],
    margins: tuple[list[str], list[list[str]]] | None = None,
    sections: Sequence[Section] = (),
) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

    ch, crows, kh, krows = _tables(metrics)
    parts = [f"# {title}", "", table(["", ""], [list(r) for r in _facts(res, metrics)]), ""]
    for heading, head, rows in sections:
        parts += [f"## {heading}", "", table(head, rows), ""]
    parts += [f"![{name}]({name})" for name in images] or ["*(plots omitted: install `dmlr[report]` for matplotlib)*"]
    parts += ["", "## Confusion matrix (held out)", "", table(ch, crows), "", "## Calibration (held out)", "",
              table(kh, krows), "", "## Summary", "", "```", str(res.summary()), "```", ""]  # fmt: skip
    if margins is not None:
        parts += ["## Average marginal effects (standard error)", "", table(*margins), ""]
    return "\n".join(parts)


def _html(
    title: str,
    res: MNLogitResults,
    metrics: dict[str, Any],
    images: list[str],
    margins: tuple[list[str], list[list[str]]] | None = None,
    sections: Sequence[Section] = (),
) -> str:
    e = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        out = "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
        return out + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"

    ch, crows, kh, krows = _tables(metrics)
    figs = "".join(f'<img src="{e(n)}" alt="{e(n)}">' for n in images) or (
        "<p><em>plots omitted: install dmlr[report] for matplotlib</em></p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "img{max-width:100%}pre{font-size:.8em;overflow-x:auto}</style></head><body>"
        f"<h1>{e(title)}</h1>{table(['', ''], [list(r) for r in _facts(res, metrics)])}"
        + "".join(f"<h2>{e(heading)}</h2>{table(head, rows)}" for heading, head, rows in sections)
        + f"{figs}"
        f"<h2>Confusion matrix (held out)</h2>{table(ch, crows)}"
        f"<h2>Calibration (held out)</h2>{table(kh, krows)}"
        f"<h2>Summary</h2>{res.summary().as_html()}"
        + ("" if margins is None else f"<h2>Average marginal effects (standard error)</h2>{table(*margins)}")
        + "</body></html>\n"
    )


def _margins_plot(margins: MarginalEffects) -> dict[str, bytes]:
    """PNG of the average marginal effects with 95% intervals, one panel row per feature ({} without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return {}
    me, lower, upper = margins.margeff, *margins.limits(0.05)
    rows = list(me.index)[:MAX_COEF_ROWS]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.28 * len(rows) * max(1, min(len(me.columns), 4)) / 2))
    width = 0.8 / len(me.columns)
    y = np.arange(len(rows))
    for j, cls in enumerate(me.columns):
        offset = (j - (len(me.columns) - 1) / 2) * width
        value = me.loc[rows, cls].to_numpy()
        err = [value - lower.loc[rows, cls].to_numpy(), upper.loc[rows, cls].to_numpy() - value]
        ax.errorbar(value, y + offset, xerr=err, fmt="o", ms=3, capsize=2, label=str(cls))
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(y, [str(r) for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="average marginal effect on P(class), 95% interval")
    ax.legend(fontsize=7, title="class")
    fig.tight_layout()
    return {"margins.png": _png(fig, plt)}


def _margins_rows(margins: MarginalEffects) -> tuple[list[str], list[list[str]]]:
    me, se = margins.margeff, margins.margeff_se
    head = ["feature", *[f"P({c})" for c in me.columns]]
    rows = [[str(f), *[f"{me.loc[f, c]:.4f} ({se.loc[f, c]:.4f})" for c in me.columns]] for f in me.index]
    return head, rows


def _bootstrap_section(res: MNLogitResults, bootstrap: BootstrapResults) -> tuple[bytes, Section]:
    """``bootstrap.csv`` and the report's table: per coefficient the estimate, its model-based and bootstrap
    standard errors and their ratio."""
    import pandas as pd

    frame = pd.DataFrame({"coef": res.params.unstack(), "bse": res.bse.unstack(), "boot_bse": bootstrap.bse.unstack()})
    frame["ratio"] = frame["boot_bse"] / frame["bse"]
    frame.index.names = ["class", "feature"]
    head = ["class", "feature", "coef", "bse", "bootstrap bse", "ratio"]
    values = frame.to_numpy()
    rows = [[str(c), str(f), *(f"{v:.4g}" for v in row)] for (c, f), row in zip(frame.index, values, strict=True)]
    heading = f"Bootstrap standard errors ({bootstrap.params.shape[0]} replicates, {bootstrap.kind})"
    return frame.to_csv().encode(), (heading, head, rows)


def write_report(
    res: MNLogitResults,
    metrics: dict[str, Any],
    folder: str,
    *,
    title: str,
    fmt: str = "html",
    storage_options: dict[str, Any] | None = None,
    margins: MarginalEffects | None = None,
    changes: dict[str, Any] | None = None,
    bootstrap: BootstrapResults | None = None,
) -> list[str]:
    """Write ``summary.txt``, ``report.html`` (or ``report.md``) and the plots into ``folder``.

    Parameters
    ----------
    res : MNLogitResults
    metrics : dict
        :func:`dmlr.evaluate`'s output.
    folder : str
        Local directory or fsspec URL (its previous contents are replaced).
    title : str
    fmt : {"html", "markdown"}
    margins : MarginalEffects, optional
        Average marginal effects to add as a table (effect and standard error per feature and class), a plot
        with 95% intervals and ``margins.csv``.
    changes : dict, optional
        :func:`dmlr.pipeline.changes.what_changed`'s output: its tables open the report ("what changed"), and
        ``changes.json`` holds it.
    bootstrap : BootstrapResults, optional
        Bootstrap replicates of the fit: their standard errors next to the model-based ones (a table and
        ``bootstrap.csv``).

    Returns
    -------
    list of str
        The file names written.
    """
    fs, root = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    root = root.rstrip("/")
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    files = {"summary.txt": (str(res.summary()) + "\n").encode()}
    plots = _plots(res)
    if margins is not None:
        plots.update(_margins_plot(margins))
        files["margins.csv"] = margins.summary_frame().to_csv().encode()
    files.update(plots)
    page = _html if fmt == "html" else _markdown
    sections = [] if changes is None else list(changes["sections"])
    if bootstrap is not None:
        files["bootstrap.csv"], section = _bootstrap_section(res, bootstrap)
        sections.append(section)
    if changes is not None:
        files["changes.json"] = (json.dumps({k: v for k, v in changes.items() if k != "sections"}, indent=2)).encode()
    text = page(title, res, metrics, sorted(plots), None if margins is None else _margins_rows(margins), sections)
    files["report.html" if fmt == "html" else "report.md"] = text.encode()
    for name, data in files.items():
        fs.pipe_file(f"{root}/{name}", data)
    return sorted(files)
