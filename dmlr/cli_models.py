"""The commands of many models per pass: ``dmlr cv``, ``dmlr compare`` and ``dmlr bootstrap`` (registered on the
``dmlr`` group by :mod:`dmlr.cli`). Each writes a table (CSV) and, with matplotlib (``dmlr[report]``), a plot into
``--out``; the models fitted are saved there too."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from dmlr.cli_support import (
    client_for,
    guarded,
    parse_storage_options,
    phases_on_stderr,
    split_values,
    storage_option,
    with_cluster_options,
    with_fit_options,
)
from dmlr.errors import InputError
from dmlr.options import ClusterOptions, FitOptions, check_output

__all__ = ["bootstrap", "compare", "cv"]

PLOTS_MISSING = "dmlr: plot not written (install dmlr[report] for matplotlib)"


def _out_dir(out: str, overwrite: bool) -> Path:
    """The output directory, refused when it exists (without ``--overwrite``) as every command's output is."""
    check_output(out, overwrite, None, "output directory")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pyplot() -> Any:
    from dmlr.pipeline.report import pyplot

    plt = pyplot()
    if plt is None:
        click.echo(PLOTS_MISSING, err=True)
    return plt


def _penalties(text: str) -> list[float]:
    try:
        return [float(v) for v in split_values((text,))]
    except ValueError:
        raise InputError(f"--l2 must be comma-separated numbers, got {text!r}") from None


@click.command()
@click.argument("store")
@click.option("--folds", type=int, default=5, show_default=True, help="Number of folds (K-fold cross-validation).")
@click.option("--l2", "l2", default="0", show_default=True, help="Penalties to compare, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the folds (dmlr.fold_ids).")
@click.option(
    "--out", "out", required=True, metavar="DIR", help="Directory for scores.csv, summary.csv, cv.png, refit/."
)
@click.option("--overwrite", is_flag=True, help="Write into an existing DIR.")
@click.option(
    "--checkpoint", metavar="CKPT",
    help="Every fit of all rows writes its state into CKPT after every iteration; the same command after a crash, "
    "SIGTERM or Ctrl-C resumes them there (the fold models, started from them, take a few passes again).",
)  # fmt: skip
@storage_option
@guarded
@with_cluster_options
@with_fit_options(exclude=("l2",))
def cv(
    store: str, folds: int, l2: str, seed: int, out: str, overwrite: bool, checkpoint: str | None,
    options: FitOptions, where: ClusterOptions, verbose: bool, storage_options: str | None,
) -> None:  # fmt: skip
    """Cross-validate the penalty on STORE: every penalty's fit of all rows and every (penalty, fold) model, started
    from it, share each pass; held-out log-loss, accuracy and Brier score per fold, their means and standard errors
    per penalty, and the fit of all rows at the best penalty (saved to DIR/refit)."""
    import dmlr

    so = parse_storage_options(storage_options)
    penalties = _penalties(l2)
    path = _out_dir(out, overwrite or checkpoint is not None)  # a resumed run writes where the first one would
    from dmlr.interrupt import terminate_gracefully

    with terminate_gracefully(), client_for(where, verbose) as client, phases_on_stderr():
        result = dmlr.cross_validate(
            store, folds=folds, l2=penalties, seed=seed, storage_options=so, client=client, checkpoint=checkpoint,
            **{k: v for k, v in asdict(options).items() if k != "l2"},
        )  # fmt: skip
    result.scores.to_csv(path / "scores.csv", index=False)
    summary = result.summary_frame()
    summary.to_csv(path / "summary.csv")
    assert result.refit is not None
    dmlr.save(result.refit, str(path / "refit"), overwrite=True)
    plt = _pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        x = np.arange(len(summary))
        ax.errorbar(x, summary["log_loss"], yerr=summary["log_loss_se"], fmt="o-", capsize=3)
        ax.set(xticks=x, xticklabels=[f"{v:g}" for v in summary.index], xlabel="l2", ylabel="held-out log-loss")
        ax.set_title(f"{folds}-fold cross-validation (mean +/- SE)")
        fig.tight_layout()
        fig.savefig(path / "cv.png", dpi=110)
        plt.close(fig)
    click.echo(summary.to_string())
    click.echo(f"best l2 = {result.best_l2:g}; {result.n_passes} passes over the data", err=True)
    click.echo(f"dmlr: scores, summary and the refit written to {out}", err=True)


@click.command()
@click.argument("store")
@click.option(
    "--model", "models", multiple=True, required=True, metavar="COLS",
    help="A model's feature columns, comma-separated (repeat for each model; 'all' for every column).",
)  # fmt: skip
@click.option("--out", "out", required=True, metavar="DIR", help="Directory for table.csv and model-<i>/.")
@click.option("--overwrite", is_flag=True, help="Write into an existing DIR.")
@click.option(
    "--checkpoint", metavar="CKPT",
    help="Every model writes its state into CKPT after every iteration; the same command after a crash resumes there.",
)  # fmt: skip
@storage_option
@guarded
@with_cluster_options
@with_fit_options
def compare(
    store: str, models: tuple[str, ...], out: str, overwrite: bool, checkpoint: str | None, options: FitOptions,
    where: ClusterOptions, verbose: bool, storage_options: str | None,
) -> None:  # fmt: skip
    """Fit several specifications of STORE in one set of passes: nobs, df, log-likelihood, AIC and BIC per model,
    and likelihood-ratio tests of each model against the next when nested."""
    import dmlr

    so = parse_storage_options(storage_options)
    path = _out_dir(out, overwrite or checkpoint is not None)  # a resumed run writes where the first one would
    specs = [{} if m.strip() == "all" else {"features": split_values((m,))} for m in models]
    from dmlr.interrupt import terminate_gracefully

    with terminate_gracefully(), client_for(where, verbose) as client, phases_on_stderr():
        fitted = dmlr.fit_many(
            store, models=specs, storage_options=so, client=client, checkpoint=checkpoint, **asdict(options)
        )
    table = fitted.table()
    tests = []
    for i in range(len(fitted) - 1):
        try:
            test = fitted.lr_test(i, i + 1)
        except InputError:
            continue
        tests.append({"restricted": i, "full": i + 1, "chi2": test.statistic, "df": test.df, "pvalue": test.pvalue})
    table.to_csv(path / "table.csv")
    pd.DataFrame(tests, columns=["restricted", "full", "chi2", "df", "pvalue"]).to_csv(
        path / "lr_tests.csv", index=False
    )
    for i, res in enumerate(fitted):
        dmlr.save(res, str(path / f"model-{i}"), overwrite=True)
    click.echo(table.to_string())
    for t in tests:
        click.echo(f"model {t['restricted']} vs {t['full']}: chi2({t['df']}) = {t['chi2']:.4f}, p = {t['pvalue']:.4g}")
    click.echo(f"dmlr: {len(fitted)} models in {fitted.n_passes} passes; written to {out}", err=True)


@click.command()
@click.argument("result")
@click.argument("store")
@click.option("--nrep", type=int, default=200, show_default=True, help="Bootstrap replicates.")
@click.option("--kind", type=click.Choice(["poisson", "cluster"]), default="poisson", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None,
    help="Stop each replicate after this many steps from the fit (1: the one-step bootstrap, one pass over the "
    "data); default: iterate each replicate to convergence.",
)  # fmt: skip
@click.option(
    "--checkpoint", default=None, metavar="DIR",
    help="Write the replicates after each pass; the same command after a crash resumes from there.",
)  # fmt: skip
@click.option("--out", "out", required=True, metavar="DIR", help="Directory for bse.csv, conf_int.csv, bootstrap.png.")
@click.option("--overwrite", is_flag=True, help="Write into an existing DIR.")
@storage_option
@guarded
@with_cluster_options
def bootstrap(
    result: str, store: str, nrep: int, kind: str, seed: int, steps: int | None, checkpoint: str | None, out: str,
    overwrite: bool, where: ClusterOptions, verbose: bool, storage_options: str | None,
) -> None:  # fmt: skip
    """Bootstrap RESULT on STORE (the rows it was fitted on): NREP Poisson-weighted replicates (per cluster of the
    store's groups with --kind cluster), all evaluated in each pass; bootstrap standard errors and percentile
    intervals next to the model-based ones."""
    import dmlr

    so = parse_storage_options(storage_options)
    path = _out_dir(out, overwrite)
    res = dmlr.load(result, storage_options=so)
    with client_for(where, verbose) as client, phases_on_stderr():
        data = dmlr.open_store(store, storage_options=so)
        boot = res.bootstrap(
            data, nrep=nrep, kind=kind, seed=seed, steps=steps, client=client, checkpoint=checkpoint
        )  # fmt: skip
    table = pd.DataFrame({"coef": res.params.stack(), "bse": res.bse.stack(), "boot_bse": boot.bse.stack()})
    table.to_csv(path / "bse.csv")
    intervals = pd.concat({"model": res.conf_int(), "bootstrap": boot.conf_int()}, axis=1)
    intervals.to_csv(path / "conf_int.csv")
    np.save(path / "params.npy", boot.params)
    plt = _pyplot()
    if plt is not None:
        _interval_plot(plt, intervals, path / "bootstrap.png")
    click.echo(table.to_string())
    click.echo(f"dmlr: {nrep} replicates in {boot.n_passes} passes; written to {out}", err=True)


def _interval_plot(plt: Any, intervals: pd.DataFrame, where: Path) -> None:
    """Model-based and bootstrap 95% intervals of every coefficient, side by side."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(intervals) + 1.2))
    y = np.arange(len(intervals))
    for offset, name, color in ((-0.15, "model", "C0"), (0.15, "bootstrap", "C1")):
        low, high = intervals[(name, "lower")].to_numpy(), intervals[(name, "upper")].to_numpy()
        ax.hlines(y + offset, low, high, color=color, label=name)
    ax.set(yticks=y, yticklabels=[f"{c}: {f}" for c, f in intervals.index], xlabel="95% interval")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(where, dpi=110)
    plt.close(fig)
