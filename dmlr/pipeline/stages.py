"""The pipeline's stages: stage -> fit -> evaluate -> report, each idempotent and skippable.

Every stage has a content hash of its *inputs* (the spec section it reads, plus the hashes of the upstream outputs
or source files it consumes) and writes, last, a marker ``WORKDIR/stages/NAME.json`` with that hash and the hashes
of its *outputs*. A stage is skipped when its marker exists, the inputs hash is unchanged and every output still
hashes to what the marker recorded; otherwise it runs again (and so does everything downstream, whose inputs
changed). A skipped stage writes nothing.

Workdir layout::

    raw/{train,test}/part-*.csv      synthetic source tables (only with data.synthetic)
    data/train.zarr, data/test.zarr  stage: the staged training and held-out sets (test encoded like train)
    data/incoming.json               stage, with data.incoming (dmlr/pipeline/nightly.py): the data section the
                                     store was staged under
    fit/result/                      fit: the fitted model (dmlr.save); fit/checkpoints/ while fitting
    fit/previous/                    fit, with data.incoming: the previous run's result (the refit's start)
    evaluate/metrics.json            evaluate: held-out log-loss, accuracy, Brier, confusion, calibration
    report/                          report: summary.txt, report.html|md, convergence.png, coefficients.png
    stages/NAME.json                 completion markers (written last)

The cluster is started only when some stage has to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import fsspec

from dmlr import interrupt
from dmlr.errors import InputError, JobInterrupted, NumericalError
from dmlr.pipeline.logs import JsonLog
from dmlr.pipeline.spec import PipelineSpec

__all__ = ["STAGES", "NotConvergedError", "run_pipeline"]

STAGES = ("stage", "fit", "evaluate", "report")


class NotConvergedError(NumericalError):
    """The fit stage ended without converging; its result is written but the pipeline stops there."""


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(fs: Any, paths: Sequence[str], root: str = "") -> str:
    """SHA-256 over the names (relative to ``root``) and contents of files, streamed in 8 MiB pieces."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path[len(root) :].encode() + b"\0")
        with fs.open(path, "rb") as fh:
            while block := fh.read(8 * 2**20):
                digest.update(block)
    return digest.hexdigest()


def hash_tree(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """SHA-256 of every file under a directory (relative names and contents); ``None`` when it does not exist."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    if not fs.exists(root):
        return None
    return hash_files(fs, fs.find(root) if fs.isdir(root) else [root], root)


def _store_hash(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    from dmlr.data.store import open_store
    from dmlr.data.writing import store_checksum

    try:
        open_store(url, storage_options=storage_options)  # complete and readable
    except InputError:
        return None
    return store_checksum(url, storage_options)


def _source_files(patterns: Sequence[str], storage_options: dict[str, Any], allow_none: bool = False) -> list[str]:
    """The files the patterns match (sorted per pattern); a pattern matching none is an error unless ``allow_none``
    (``data.incoming`` before its first file arrives)."""
    paths: list[str] = []
    for pattern in patterns:
        fs, _ = fsspec.core.url_to_fs(pattern, **storage_options)
        found = sorted(fs.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        found = [p for p in found if fs.exists(p)]
        if not found and not allow_none:
            raise InputError(f"data source {pattern!r} matches no file")
        protocol = pattern.split("://", 1)[0] + "://" if "://" in pattern else ""
        paths += [p if not protocol or p.startswith(protocol) else protocol + p for p in found]
    return paths


def _sources_hash(patterns: Sequence[str], storage_options: dict[str, Any], allow_none: bool = False) -> str:
    paths = _source_files(patterns, storage_options, allow_none)
    if not paths:
        return _sha("no files")
    fs, _ = fsspec.core.url_to_fs(paths[0], **storage_options)
    return hash_files(fs, [fsspec.core.url_to_fs(p, **storage_options)[1] for p in paths])


class _Run:
    """One ``dmlr run``: the spec, the log, the lazily started cluster."""

    def __init__(self, spec: PipelineSpec, log: JsonLog, scheduler: str | None, stack: contextlib.ExitStack) -> None:
        self.spec, self.log, self.scheduler, self.stack = spec, log, scheduler, stack
        self.work = spec.workdir.rstrip("/")
        self._client: Any = None
        self.so = dict(spec.data.storage_options)

    def path(self, *parts: str) -> str:
        return "/".join([self.work, *parts])

    @property
    def client(self) -> Any:
        if self._client is None:
            from dmlr.cluster import connected

            c = self.spec.cluster
            target = self.scheduler or c.spec
            overrides: dict[str, Any] = {}
            if not self.scheduler:
                if c.workers:
                    overrides["n_workers"] = c.workers
                if c.memory_limit:
                    overrides["memory_limit"] = c.memory_limit
            started = time.perf_counter()
            self._client = self.stack.enter_context(connected(target, security=c.security, **overrides))
            workers = len(self._client.scheduler_info()["workers"])
            self.log.emit(
                "cluster", target=target, workers=workers, seconds=time.perf_counter() - started,
                dashboard=getattr(self._client, "dashboard_link", None),
            )  # fmt: skip
        return self._client

    # --- markers ------------------------------------------------------------------------------------------
    def marker_path(self, stage: str) -> str:
        return self.path("stages", f"{stage}.json")

    def read_marker(self, stage: str) -> dict[str, Any] | None:
        fs, path = fsspec.core.url_to_fs(self.marker_path(stage), **self.so)
        if not fs.exists(path):
            return None
        try:
            value: dict[str, Any] = json.loads(fs.cat_file(path))
            return value
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_marker(self, stage: str, inputs: str, outputs: dict[str, str | None], seconds: float) -> None:
        from dmlr import __version__

        doc = {"stage": stage, "inputs": inputs, "outputs": outputs, "seconds": round(seconds, 3),
               "dmlr_version": __version__}  # fmt: skip
        fs, path = fsspec.core.url_to_fs(self.marker_path(stage), **self.so)
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        fs.pipe_file(tmp, json.dumps(doc, indent=2, sort_keys=True).encode())
        fs.mv(tmp, path)

    def invalidate(self, stage: str) -> None:
        fs, path = fsspec.core.url_to_fs(self.marker_path(stage), **self.so)
        if fs.exists(path):
            fs.rm(path)


# --- the stages: each has inputs(run) -> hash, outputs(run) -> {name: hash}, and execute(run) ---------------


def _stage_inputs(run: _Run) -> str:
    from dmlr.data.metadata import SCHEMA_VERSION

    data = run.spec.section("data")
    if run.spec.data.synthetic is not None:
        return _sha("stage", data, SCHEMA_VERSION)
    return _sha(
        "stage",
        data,
        SCHEMA_VERSION,
        _sources_hash(run.spec.data.train, run.so),
        _sources_hash(run.spec.data.test, run.so),
        _sources_hash(run.spec.data.incoming, run.so, allow_none=True),
    )


def _stage_outputs(run: _Run) -> dict[str, str | None]:
    return {"train": _store_hash(run.path("data", "train.zarr"), run.so),
            "test": _store_hash(run.path("data", "test.zarr"), run.so)}  # fmt: skip


def _synthetic_sources(run: _Run) -> tuple[list[str], list[str]]:
    from dmlr.demo import make_table, write_csv_parts

    s = run.spec.data.synthetic
    assert s is not None
    if "://" in run.work and not run.work.startswith("file://"):
        raise InputError(f"data.synthetic writes its tables to a local workdir; {run.work} is not local")
    table, _ = make_table(s.rows + s.test_rows, s.seed)
    train = write_csv_parts(table.iloc[: s.rows], run.path("raw", "train"), s.files)
    test = write_csv_parts(table.iloc[s.rows :], run.path("raw", "test"), max(1, s.files // 2))
    return [train], [test]


def _stage_execute(run: _Run) -> dict[str, Any]:
    from dmlr.data.staging import stage

    d = run.spec.data
    train, test = (list(d.train), list(d.test)) if d.synthetic is None else _synthetic_sources(run)
    _ = run.client  # stage on the cluster
    common: dict[str, Any] = dict(
        target=d.target,
        features=list(d.features) if d.features else None,
        categorical=list(d.categorical),
        weights=d.weights,
        offset=list(d.offset) or None,
        overwrite=True,
        storage_options=run.so or None,
        missing=d.missing,
        groups=d.groups,
    )
    appended: dict[str, Any] = {}
    if d.incoming:
        from dmlr.pipeline.nightly import stage_incoming

        store, appended = stage_incoming(run, train, common)
    else:
        store = stage(train, run.path("data", "train.zarr"), **common)
    held = stage(test, run.path("data", "test.zarr"), like=store, unseen=d.unseen, **common)
    dropped = {"train_missing": store.metadata.get("n_missing", 0), "test_missing": held.metadata.get("n_missing", 0)}
    return {
        "train_rows": int(store.X.shape[0]), "test_rows": int(held.X.shape[0]), "features": store.X.shape[1], **dropped,
        **appended,
    }  # fmt: skip


def _fit_inputs(run: _Run) -> str:
    return _sha(
        "fit",
        run.spec.section("fit"),
        run.spec.section("selection"),
        _store_hash(run.path("data", "train.zarr"), run.so),
    )


def _fit_outputs(run: _Run) -> dict[str, str | None]:
    return {"result": hash_tree(run.path("fit", "result"), run.so)}


def _fit_execute(run: _Run) -> dict[str, Any]:
    from dmlr.api import fit_and_save
    from dmlr.checkpoint import Checkpointer
    from dmlr.passes.progress import quiet as quiet_progress

    f = run.spec.fit
    client = run.client

    def progress(rec: dict[str, Any]) -> None:
        if "event" in rec:
            run.log.emit(rec.pop("event"), stage="fit", **rec)
            return
        run.log.emit("iteration", stage="fit", **rec)

    checkpoints = run.path("fit", "checkpoints")
    from dmlr.pipeline.nightly import previous_result

    start = previous_result(run) if run.spec.data.incoming else None
    try:
        # Non-convergence and separation are reported through the exit code (3) with the result written, so a
        # separated fit runs to its stopping point; `fit.separation: warn` logs it and lets the pipeline go on.
        with quiet_progress():  # the JSON log owns stderr
            if run.spec.selection.l2_path:
                from dmlr.pipeline.selection import cross_validated_fit

                res = cross_validated_fit(run, checkpoints)
            else:
                res = fit_and_save(
                    run.path("data", "train.zarr"), run.path("fit", "result"), storage_options=run.so or None,
                    overwrite=True, client=client, callback=progress, checkpoint=checkpoints, start_params=start,
                    **{**asdict(f), "separation": "warn"},
                )  # fmt: skip
    except JobInterrupted:
        # the newest file, not the last logged iteration: a SIGTERM held during a write stops after that write
        newest = Checkpointer(checkpoints, "", storage_options=run.so or None).newest()
        if newest is not None:
            run.log.emit("checkpoint", stage="fit", iteration=newest, path=checkpoints)
        raise
    separated = res.message.startswith("separation")
    if separated and f.separation == "warn":
        run.log.emit("warning", stage="fit", message=res.message)
    elif not res.converged:
        raise NotConvergedError(
            f"the fit did not converge ({res.message}); the result was written to {run.path('fit', 'result')} "
            "and the pipeline stops before evaluate"
        )
    Checkpointer(checkpoints, "", storage_options=run.so or None).clear()
    return {"iterations": res.n_iter, "passes": res.history[-1]["passes"], "loglik": res.llf, "method": res.method}


def _evaluate_inputs(run: _Run) -> str:
    return _sha(
        "evaluate",
        run.spec.section("evaluate"),
        hash_tree(run.path("fit", "result"), run.so),
        _store_hash(run.path("data", "test.zarr"), run.so),
    )


def _evaluate_outputs(run: _Run) -> dict[str, str | None]:
    return {"metrics": hash_tree(run.path("evaluate", "metrics.json"), run.so)}


def _evaluate_execute(run: _Run) -> dict[str, Any]:
    import dmlr
    from dmlr.results.evaluate import evaluate

    _ = run.client
    res = dmlr.load(run.path("fit", "result"), storage_options=run.so or None)
    metrics = evaluate(res, run.path("data", "test.zarr"), bins=run.spec.evaluate.bins, storage_options=run.so or None)
    fs, path = fsspec.core.url_to_fs(run.path("evaluate", "metrics.json"), **run.so)
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, (json.dumps(metrics, indent=2) + "\n").encode())
    return {"log_loss": metrics["log_loss"], "accuracy": metrics["accuracy"], "n_rows": metrics["n_rows"]}


def _report_inputs(run: _Run) -> str:
    return _sha(
        "report",
        run.spec.section("report"),
        hash_tree(run.path("fit", "result"), run.so),
        hash_tree(run.path("evaluate", "metrics.json"), run.so),
        hash_tree(run.path("fit", "previous"), run.so),
    )


def _report_outputs(run: _Run) -> dict[str, str | None]:
    return {"report": hash_tree(run.path("report"), run.so)}


def _report_execute(run: _Run) -> dict[str, Any]:
    import dmlr
    from dmlr.pipeline.report import write_report

    res = dmlr.load(run.path("fit", "result"), storage_options=run.so or None)
    fs, path = fsspec.core.url_to_fs(run.path("evaluate", "metrics.json"), **run.so)
    metrics = json.loads(fs.cat_file(path))
    margins = None
    if run.spec.report.margins:  # average marginal effects over the training store: one pass on the cluster
        with run.client.as_current():
            margins = res.get_margeff(dmlr.open_store(run.path("data", "train.zarr"), storage_options=run.so or None).X)
    boot = None
    if run.spec.report.bootstrap is not None:  # replicates of the fit on the training store, all in each pass
        b = run.spec.report.bootstrap
        train = dmlr.open_store(run.path("data", "train.zarr"), storage_options=run.so or None)
        boot = res.bootstrap(train, nrep=b.nrep, kind=b.kind, seed=b.seed, steps=b.steps, client=run.client)
    changes = None
    fs_prev, previous = fsspec.core.url_to_fs(run.path("fit", "previous"), **run.so)
    if fs_prev.exists(f"{previous}/COMPLETE"):
        from dmlr.pipeline.changes import what_changed

        before = dmlr.load(run.path("fit", "previous"), storage_options=run.so or None)
        store = dmlr.open_store(run.path("data", "train.zarr"), storage_options=run.so or None)
        changes = what_changed(before, res, store.metadata.versions)
    files = write_report(
        res, metrics, run.path("report"), title=run.spec.name, fmt=run.spec.report.format, margins=margins,
        changes=changes, bootstrap=boot,
    )  # fmt: skip
    return {"files": files}


_DEFINITIONS: dict[str, tuple[Callable[[_Run], str], Callable[[_Run], dict[str, str | None]],
                              Callable[[_Run], dict[str, Any]]]] = {
    "stage": (_stage_inputs, _stage_outputs, _stage_execute),
    "fit": (_fit_inputs, _fit_outputs, _fit_execute),
    "evaluate": (_evaluate_inputs, _evaluate_outputs, _evaluate_execute),
    "report": (_report_inputs, _report_outputs, _report_execute),
}  # fmt: skip


def run_pipeline(
    spec: PipelineSpec,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
    scheduler: str | None = None,
    log: JsonLog | None = None,
) -> dict[str, str]:
    """Run the pipeline's stages in order, skipping those already complete with unchanged inputs.

    Parameters
    ----------
    spec : PipelineSpec
    stages : sequence of str, optional
        Run only these (each still needs its upstream outputs); default all four.
    force : bool
        Run the selected stages even when complete.
    scheduler : str, optional
        A Dask scheduler address overriding the spec's cluster (e.g. the one a Kubernetes DaskJob provides).
    log : JsonLog, optional
        Where the structured log goes (default: JSON lines on stderr).

    Returns
    -------
    dict
        ``{stage: "ran" | "skipped"}``.

    Raises
    ------
    InputError
        Bad spec values or data (the message names the column, file or field).
    NotConvergedError
        The fit did not converge (its result is written; evaluate and report are not run).
    JobInterrupted
        SIGTERM during the run (the fit's newest checkpoint is complete; rerunning resumes it).
    """
    selected = list(stages or STAGES)
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {unknown}: the stages are {list(STAGES)}")
    log = log or JsonLog(spec.name)
    status: dict[str, str] = {}
    begin = time.perf_counter()
    log.emit("pipeline", status="started", spec=spec.path, workdir=spec.workdir, stages=selected)
    with contextlib.ExitStack() as stack:
        run = _Run(spec, log, scheduler, stack)
        for name in STAGES:
            if name not in selected:
                continue
            interrupt.check()
            inputs_of, outputs_of, execute = _DEFINITIONS[name]
            start = time.perf_counter()
            inputs = inputs_of(run)
            marker = run.read_marker(name)
            if not force and marker is not None and marker.get("inputs") == inputs:
                outputs = outputs_of(run)
                if all(outputs.values()) and outputs == marker.get("outputs"):
                    status[name] = "skipped"
                    log.emit("stage", stage=name, status="skipped", seconds=time.perf_counter() - start)
                    continue
            run.invalidate(name)
            log.emit("stage", stage=name, status="started")
            with _stage_status(log, name, start):
                details = execute(run)
            outputs = outputs_of(run)
            missing = [k for k, v in outputs.items() if v is None]
            if missing:  # pragma: no cover - a stage that returned normally wrote its outputs
                raise AssertionError(f"stage {name} did not write {missing}")
            run.write_marker(name, inputs, outputs, time.perf_counter() - start)
            status[name] = "ran"
            log.emit("stage", stage=name, status="done", seconds=time.perf_counter() - start, **details)
    log.emit("pipeline", status="done", seconds=time.perf_counter() - begin, stages=status)
    return status


@contextlib.contextmanager
def _stage_status(log: JsonLog, name: str, start: float) -> Iterator[None]:
    try:
        yield
    except JobInterrupted as exc:
        log.emit("stage", stage=name, status="interrupted", seconds=time.perf_counter() - start, reason=str(exc))
        raise
    except Exception as exc:
        log.emit("stage", stage=name, status="failed", seconds=time.perf_counter() - start,
                 error=type(exc).__name__, message=str(exc))  # fmt: skip
        raise
