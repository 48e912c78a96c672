"""The ``dmlr`` command line: stage, fit, summary, predict, info, and ``run`` for pipeline specs.

Thin by design: parse, build the cluster, call the library, map errors to exit codes. No numerics here.

Exit codes
----------
0  success
1  internal error (a bug in dmlr: the traceback is printed)
2  bad input: invalid arguments, data, store or result directory (the message names the culprit)
3  the fit did not converge or failed numerically (a non-converged result is still written)
4  infrastructure failure: cluster, network or file system; retrying may help
75 interrupted (SIGTERM, ``EX_TEMPFAIL``): the newest checkpoint is complete; rerun the same command to resume
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict
from typing import Any

import click

from dmlr.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_INFRASTRUCTURE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    EXIT_RETRY,
    client_for,
    fail,
    guarded,
    missing_option,
    parse_storage_options,
    phases_on_stderr,
    split_values,
    storage_option,
    with_cluster_options,
    with_fit_options,
)
from dmlr.errors import InputError
from dmlr.options import ClusterOptions, FitOptions, check_output

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INFRASTRUCTURE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CONVERGED",
    "EXIT_OK",
    "EXIT_RETRY",
    "main",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dmlr")
def main() -> None:
    """dmlr: multinomial logistic regression at scale, with full statistical inference.

    Exit codes: 0 success, 1 internal error, 2 bad input, 3 not converged, 4 infrastructure failure,
    75 interrupted by SIGTERM (checkpoint saved: rerun to resume).
    """
    warnings.showwarning = _show_warning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """dmlr's own warnings as one line on stderr (``dmlr: warning: ...``), without the source line they came from;
    other libraries' as Python shows them."""
    if category.__module__.startswith("dmlr"):
        click.echo(f"dmlr: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="SOURCE... STORE")
@click.option("--target", help="Column holding the class labels (required unless --append).")
@click.option("--features", multiple=True, help="Feature columns (comma-separated or repeated); default all others.")
@click.option("--categorical", multiple=True, help="Columns to one-hot encode (drop-first).")
@click.option(
    "--reference", multiple=True, metavar="COL=LEVEL",
    help="Reference (dropped) level of a categorical column (repeatable); default its smallest level.",
)  # fmt: skip
@click.option("--weights", help="Column of weights (frequency, or probability: see dmlr fit --weights-type).")
@click.option("--groups", metavar="COL", help="Column of cluster ids kept for cluster-robust standard errors.")
@click.option(
    "--sort-groups/--no-sort-groups", default=True, show_default=True,
    help="With --groups: store the rows sorted by it, so cluster-robust fits need no exchange between workers.",
)  # fmt: skip
@click.option("--offset", multiple=True, help="K-1 offset columns, non-base classes in sorted label order.")
@click.option("--chunk-rows", type=int, help="Rows per chunk (default: about 32 MB of X as float64 per chunk).")
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
    help="Storage type of X: float32 halves the bytes each pass reads (arithmetic stays float64).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing store (once the new one is complete).")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option(
    "--max-classes", type=int, help="Most classes the target may have (default 100).",
)  # fmt: skip
@click.option(
    "--append", is_flag=True,
    help="Add the files' rows to the existing STORE as its next version, encoded as its rows are (atomic).",
)  # fmt: skip
@click.option(
    "--unseen", type=click.Choice(["raise", "drop"]), default="raise", show_default=True,
    help="With --append: rows with a level or class the store lacks are an error, or left out.",
)  # fmt: skip
@click.option(
    "--extra-columns", type=click.Choice(["raise", "ignore"]), default="raise", show_default=True,
    help="With --append: columns the store's source did not have are an error, or left out.",
)  # fmt: skip
@missing_option
@storage_option
@guarded
def stage(
    paths: tuple[str, ...],
    target: str | None,
    features: tuple[str, ...],
    categorical: tuple[str, ...],
    reference: tuple[str, ...],
    weights: str | None,
    groups: str | None,
    sort_groups: bool,
    offset: tuple[str, ...],
    chunk_rows: int | None,
    dtype: str,
    overwrite: bool,
    progress: bool,
    max_classes: int | None,
    append: bool,
    unseen: str,
    extra_columns: str,
    missing: str,
    storage_options: str | None,
) -> None:
    """Stage CSV or Parquet files (globs allowed) into a Zarr store, or append them to one (--append)."""
    from dmlr.data.staging import stage as stage_store

    if len(paths) < 2:
        raise InputError("give at least one SOURCE and then the STORE: dmlr stage data.csv data.zarr --target y")
    if chunk_rows is not None and chunk_rows < 1:
        raise InputError(f"--chunk-rows must be >= 1, got {chunk_rows}")
    levels = {}
    for item in reference:
        col, sep, level = item.partition("=")
        if not sep or not col or not level:
            raise InputError(f"--reference takes COL=LEVEL, got {item!r}")
        levels[col] = level
    *sources, store = paths
    start = time.perf_counter()
    if append:
        given = {
            "--target": target, "--features": features, "--categorical": categorical, "--reference": reference,
            "--weights": weights, "--groups": groups, "--offset": offset, "--chunk-rows": chunk_rows,
            "--overwrite": overwrite, "--max-classes": max_classes, "--dtype": dtype != "float64" or None,
        }  # fmt: skip
        taken = [name for name, value in given.items() if value]
        if taken:
            raise InputError(f"--append encodes the rows as the store's are: {', '.join(taken)} cannot be given")
    elif target is None:
        raise InputError("dmlr stage needs --target (the column holding the class labels), or --append")
    if append:
        data = stage_store(
            sources, store, append=True, unseen=unseen, extra_columns=extra_columns, missing=missing,
            progress=progress, storage_options=parse_storage_options(storage_options),
        )  # fmt: skip
        click.echo(data.describe())
        click.echo(f"appended in {time.perf_counter() - start:.1f}s", err=True)
        return
    data = stage_store(
        sources,
        store,
        target=target,
        features=split_values(features) or None,
        weights=weights,
        offset=split_values(offset) or None,
        chunk_rows=chunk_rows,
        categorical=split_values(categorical) or None,
        overwrite=overwrite,
        progress=progress,
        storage_options=parse_storage_options(storage_options),
        reference=levels or None,
        missing=missing,
        groups=groups,
        sort_groups=sort_groups,
        dtype=dtype,
        max_classes=max_classes,
    )
    click.echo(data.describe())
    dropped = data.metadata.n_missing
    if dropped:
        click.echo(f"dropped {dropped:,} rows with a missing value (--missing drop)", err=True)
    click.echo(f"staged in {time.perf_counter() - start:.1f}s", err=True)


def _parse_base(base: str | None, classes: list[Any]) -> Any:
    if base is None:
        return None
    for label in classes:
        if str(label) == base:
            return label
    raise InputError(f"--base {base!r} is not one of the class labels {classes}")


@main.command()
@click.argument("store")
@click.option("--out", "out", required=True, metavar="RESULT", help="Directory to write the fitted model to.")
@click.option("--overwrite", is_flag=True, help="Replace an existing RESULT.")
@click.option("--base", metavar="LABEL", help="Reference class (default: the smallest label).")
@click.option(
    "--checkpoint", metavar="DIR",
    help="Write a checkpoint after every iteration into DIR; the same command after a crash, SIGTERM (exit 75) or "
    "Ctrl-C (exit 130) resumes there.",
)  # fmt: skip
@click.option(
    "--start", metavar="RESULT",
    help="Start at a previous result's coefficients; a result of this store before rows were appended reads only "
    "the appended rows before its first step.",
)  # fmt: skip
@storage_option
@guarded
@with_cluster_options
@with_fit_options
def fit(
    store: str,
    out: str,
    overwrite: bool,
    base: str | None,
    checkpoint: str | None,
    start: str | None,
    options: FitOptions,
    where: ClusterOptions,
    verbose: bool,
    storage_options: str | None,
) -> None:
    """Fit the store; progress on stderr, summary on stdout, model to RESULT."""
    import dmlr
    from dmlr.api import fit_and_save

    # everything is checked before a cluster starts or a file is written
    so = parse_storage_options(storage_options)
    check_output(out, overwrite, so, "result")
    data = dmlr.open_store(store, storage_options=so)
    base_label = _parse_base(base, list(data.metadata.classes))
    if options.cov_type == "cluster" and data.groups is None:
        raise InputError(f"--cov-type cluster needs cluster ids: stage {store} with --groups COL")
    options.covariance(data.weights is not None, options.cov_type == "cluster")
    previous = None if start is None else dmlr.load(start, storage_options=so)

    def report(rec: dict[str, Any]) -> None:
        if "choice" in rec:
            click.echo(f"dmlr: {rec['choice']}", err=True)
        click.echo(
            f"iter {rec['iteration']:>3} {rec['kind']:<9} loglik {rec['loglik']:.10g}  "
            f"max|score| {rec['max_abs_score']:.3e}  {rec['seconds']:.2f}s  passes {rec['passes']}",
            err=True,
        )

    from dmlr.interrupt import terminate_gracefully

    with terminate_gracefully(), client_for(where, verbose) as client, phases_on_stderr():
        click.echo(
            f"dmlr: fitting {data.metadata.n_rows:,} rows x {len(data.feature_names)} features, "
            f"{len(data.classes)} classes (method {options.method}); the first pass reads the store ...",
            err=True,
        )
        res = fit_and_save(  # non-convergence and separation are reported through the exit code
            data, out, overwrite=overwrite, storage_options=so, client=client, callback=report,
            start_params=previous, checkpoint=checkpoint, **{**asdict(options), "base": base_label},
        )  # fmt: skip
    click.echo(res.summary())
    click.echo(f"dmlr: result written to {out}", err=True)
    if not res.converged:
        fail(EXIT_NOT_CONVERGED, f"the fit did not converge ({res.message}); the result was written to {out}")


@main.command()
@click.argument("result")
@storage_option
@guarded
def summary(result: str, storage_options: str | None) -> None:
    """Print the summary of a fitted model."""
    import dmlr

    click.echo(dmlr.load(result, storage_options=parse_storage_options(storage_options)).summary())


@main.command()
@click.argument("result")
@click.argument("data", metavar="STORE_OR_FILE")
@click.option("--at", type=click.Choice(["overall", "mean", "median", "zero"]), default="overall", show_default=True)
@click.option("--method", type=click.Choice(["dydx", "eydx", "dyex", "eyex"]), default="dydx", show_default=True)
@click.option("--dummy", is_flag=True, help="Discrete changes 0 -> 1 for 0/1 features.")
@click.option("--count", is_flag=True, help="Discrete changes (x+1 vs x-1)/2 for non-negative integer features.")
@click.option(
    "--by",
    type=click.Choice(["column", "variable"]),
    help="Effects per design column (statsmodels) or per variable through the formula (Stata's margins; the "
    "default for formula fits over table files).",
)
@click.option("--out", "out", help="Also write the table to this CSV file.")
@missing_option
@storage_option
@guarded
@with_cluster_options
def margins(
    result: str,
    data: str,
    at: str,
    method: str,
    dummy: bool,
    count: bool,
    by: str | None,
    out: str | None,
    missing: str,
    where: ClusterOptions,
    verbose: bool,
    storage_options: str | None,
) -> None:
    """Marginal effects with standard errors over a store or CSV/Parquet files (one pass for --at overall)."""
    import dmlr
    from dmlr.results.encoding import resolve_rows

    options = parse_storage_options(storage_options)
    if out is not None:
        check_output(out, False, options, "output")
    res = dmlr.load(result, storage_options=options)
    with client_for(where, verbose):
        click.echo(f"dmlr: marginal effects of {result} over {data} ...", err=True)
        rows = resolve_rows(data, options)
        me = res.get_margeff(rows, at, method, dummy=dummy, count=count, by=by, missing=missing)
    click.echo(me.summary())
    if out is not None:
        me.summary_frame().to_csv(out)


@main.command(name="test")
@click.argument("result")
@click.argument("features", nargs=-1, required=True)
@storage_option
@guarded
def test_features(result: str, features: tuple[str, ...], storage_options: str | None) -> None:
    """Joint Wald test that FEATURES are zero in every equation (Stata's `test a b` after `mlogit`)."""
    import dmlr

    res = dmlr.load(result, storage_options=parse_storage_options(storage_options))
    click.echo(res.test_features(split_values(features)).summary())


@main.command()
@click.argument("store")
@storage_option
@guarded
def info(store: str, storage_options: str | None) -> None:
    """Shape, classes and class counts, chunking of a store."""
    import dmlr

    click.echo(dmlr.open_store(store, storage_options=parse_storage_options(storage_options)).describe())


@main.command()
@click.argument("result")
@click.argument("data", metavar="STORE_OR_FILE")
@click.option("--out", "out", required=True, help="Output path, a name ending .zarr or .parquet.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--keep", multiple=True, metavar="COL", help="Source columns to carry through (an id; repeatable).")
@click.option("--se", is_flag=True, help="Add se_<class>, lower_<class>, upper_<class> (95%) columns (Parquet).")
@missing_option
@click.option(
    "--unseen", type=click.Choice(["raise", "nan"]), default="raise", show_default=True,
    help="A categorical level the fit never saw: fail naming it, or give the row NaN probabilities.",
)  # fmt: skip
@storage_option
@guarded
@with_cluster_options
def predict(
    result: str,
    data: str,
    out: str,
    overwrite: bool,
    keep: tuple[str, ...],
    se: bool,
    missing: str,
    unseen: str,
    where: ClusterOptions,
    verbose: bool,
    storage_options: str | None,
) -> None:
    """Class probabilities and labels for a store or CSV/Parquet files of raw columns, written chunk by chunk."""
    import dmlr
    from dmlr.results.prediction_files import check_prediction_inputs, output_kind, predict_to

    options = parse_storage_options(storage_options)
    kind = output_kind(out)  # checked here too: before a cluster starts
    check_output(out, overwrite, options, "output")
    res = dmlr.load(result, storage_options=options)
    check_prediction_inputs(res, data, kind, split_values(keep), se, options)
    with client_for(where, verbose):
        click.echo(f"dmlr: predicting {data} with the model in {result} ...", err=True)
        n, dropped = predict_to(
            res, data, out, overwrite=overwrite, keep=split_values(keep), missing=missing, unseen=unseen,
            storage_options=options, se=se,
        )  # fmt: skip
    if dropped:
        click.echo(f"dropped {dropped:,} rows with a missing value (--missing drop)", err=True)
    click.echo(f"wrote probabilities and labels of {n:,} rows to {out}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--stage", "stages", multiple=True, type=click.Choice(["stage", "fit", "evaluate", "report"]),
              help="Run only this stage (repeatable); default all four, in order.")  # fmt: skip
@click.option("--force", is_flag=True, help="Run the selected stages even when their outputs are complete.")
@click.option(
    "--scheduler", metavar="ADDRESS", envvar=["DMLR_SCHEDULER", "DASK_SCHEDULER_ADDRESS"],
    help="Dask scheduler address overriding the spec's cluster (env DMLR_SCHEDULER, or DASK_SCHEDULER_ADDRESS "
    "as a Kubernetes DaskJob sets it).",
)  # fmt: skip
@click.option("--log-file", metavar="PATH", help="Also append the JSON log lines to this file.")
@guarded
def run(spec: str, stages: tuple[str, ...], force: bool, scheduler: str | None, log_file: str | None) -> None:
    """Run a pipeline spec: stage -> fit -> evaluate -> report, skipping complete stages.

    One JSON log line per stage and per fit iteration goes to stderr. The fit checkpoints after every iteration:
    after a crash or SIGKILL, rerun the same command and it resumes; SIGTERM saves and exits 75, Ctrl-C (SIGINT)
    saves and exits 130.
    """
    from dmlr.interrupt import terminate_gracefully
    from dmlr.pipeline import load_pipeline, run_pipeline
    from dmlr.pipeline.logs import JsonLog

    parsed = load_pipeline(spec)
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # keep stderr to the JSON lines
    with terminate_gracefully():
        status = run_pipeline(
            parsed,
            stages=list(stages) or None,
            force=force,
            scheduler=scheduler or None,
            log=JsonLog(parsed.name, path=log_file),
        )
    click.echo(" ".join(f"{name}:{state}" for name, state in status.items()))


# many models per pass: dmlr cv, dmlr compare, dmlr bootstrap (dmlr/cli_models.py)
from dmlr.cli_models import bootstrap, compare, cv  # noqa: E402

for _command in (cv, compare, bootstrap):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
