"""Orchestrator integrations in pipelines/: the Prefect flow run for real, the Kubernetes manifests validated."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

import dmlr
from dmlr.cli import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE, EXIT_NOT_CONVERGED, EXIT_RETRY, main
from dmlr.pipeline import load_pipeline
from tests.test_pipeline import write_spec

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "pipelines" / "kubernetes"


def _load_flow():
    spec = importlib.util.spec_from_file_location("dmlr_prefect_flow", ROOT / "pipelines" / "prefect" / "flow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.cluster
@pytest.mark.slow
def test_prefect_flow_runs_the_example_pipeline_end_to_end(tmp_path):
    pytest.importorskip("prefect")
    from prefect.testing.utilities import prefect_test_harness

    flow = _load_flow()
    spec = write_spec(tmp_path)
    with prefect_test_harness(server_startup_timeout=120):
        first = flow.dmlr_pipeline(str(spec))
        again = flow.dmlr_pipeline(str(spec))
    assert first == {"stage": "ran", "fit": "ran", "evaluate": "ran", "report": "ran"}
    assert again == {"stage": "skipped", "fit": "skipped", "evaluate": "skipped", "report": "skipped"}
    work = tmp_path / "work"
    res = dmlr.load(str(work / "fit" / "result"))
    direct = dmlr.fit(str(work / "data" / "train.zarr"), method="auto")
    assert np.max(np.abs(res.coef - direct.coef)) <= 1e-10
    assert json.loads((work / "evaluate" / "metrics.json").read_text())["n_rows"] == 10_000
    assert (work / "report" / "report.html").exists()


def test_prefect_retries_only_what_a_retry_can_fix():
    pytest.importorskip("prefect")
    flow = _load_flow()

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert flow._retryable(None, None, State(dmlr.errors.JobInterrupted("SIGTERM")))
    assert flow._retryable(None, None, State(dmlr.errors.ClusterError("lost")))
    assert not flow._retryable(None, None, State(dmlr.errors.InputError("bad column")))
    assert not flow._retryable(None, None, State(dmlr.errors.NumericalError("no convergence")))


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _containers(doc: dict) -> list[dict]:
    """Every container of a DaskJob, CronJob or Job document."""
    if doc["kind"] == "DaskJob":
        return doc["spec"]["job"]["spec"]["containers"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return doc["spec"]["template"]["spec"]["containers"]


def _check_dmlr_run(container: dict, configmap: dict, tmp_path: Path) -> list[str]:
    """The container invokes a valid ``dmlr run SPEC`` whose SPEC is the ConfigMap's valid pipeline spec."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2])
    assert argv[:2] == ["dmlr", "run"], argv
    sub_ctx = main.commands["run"].make_context("run", argv[2:])  # click parses it exactly as the CLI would
    spec_path = sub_ctx.params["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    folder = str(Path(spec_path).parent)
    assert folder in mounts, f"{spec_path} is not under a mounted volume {sorted(mounts)}"
    key = Path(spec_path).name
    assert key in configmap["data"], f"ConfigMap {configmap['metadata']['name']} has no key {key}"
    local = tmp_path / key
    local.write_text(configmap["data"][key])
    load_pipeline(local)  # the shipped spec is valid
    return argv


def test_kubernetes_daskjob_runs_a_valid_dmlr_run(tmp_path, monkeypatch):
    docs = _documents("daskjob.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "DaskJob"}
    job = kinds["DaskJob"]
    assert job["apiVersion"] == "kubernetes.dask.org/v1"
    (container,) = _containers(job)
    argv = _check_dmlr_run(container, kinds["ConfigMap"], tmp_path)
    assert "--scheduler" not in argv  # the operator's DASK_SCHEDULER_ADDRESS is read from the environment:
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://dmlr-mode-choice-scheduler:8786")
    assert (
        main.commands["run"].make_context("run", argv[2:]).params["scheduler"]
        == "tcp://dmlr-mode-choice-scheduler:8786"
    )
    volumes = {v["name"]: v for v in job["spec"]["job"]["spec"]["volumes"]}
    assert volumes[container["volumeMounts"][0]["name"]]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    workers = job["spec"]["cluster"]["spec"]["worker"]
    assert workers["replicas"] >= 1
    worker_argv = workers["spec"]["containers"][0]["args"]
    assert worker_argv[0] == "dask-worker" and "--nthreads" in worker_argv
    env = {e["name"]: e["value"] for e in workers["spec"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"


def test_kubernetes_cronjob_runs_a_valid_dmlr_run_and_maps_exit_codes(tmp_path):
    docs = _documents("cronjob.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "CronJob", "PersistentVolumeClaim"}
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # two runs must not share a workdir
    (container,) = _containers(cron)
    _check_dmlr_run(container, kinds["ConfigMap"], tmp_path)
    job = cron["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail_now = next(r for r in rules if r["action"] == "FailJob")["onExitCodes"]["values"]
    assert sorted(fail_now) == sorted([EXIT_BAD_INPUT, EXIT_NOT_CONVERGED])
    retried = next(r for r in rules if r["action"] == "Count")["onExitCodes"]["values"]
    assert sorted(retried) == sorted([EXIT_INFRASTRUCTURE, EXIT_RETRY])
    assert job["backoffLimit"] >= 1 and job["template"]["spec"]["restartPolicy"] == "Never"
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    volumes = {v["name"]: v for v in job["template"]["spec"]["volumes"]}
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in volumes.values())
    nightly = load_pipeline(_spec_copy(kinds["ConfigMap"], tmp_path))
    assert nightly.data.incoming  # each night appends what arrived and refits from the previous result
    workdir = nightly.workdir
    assert any(workdir.startswith(m["mountPath"]) for m in container["volumeMounts"]
               if volumes[m["name"]].get("persistentVolumeClaim"))  # fmt: skip


def _spec_copy(configmap: dict, tmp_path: Path) -> Path:
    ((key, text),) = configmap["data"].items()
    path = tmp_path / "copy" / key
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path
