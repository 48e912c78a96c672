"""Deployments: real `dask scheduler`/`dask worker` processes, connect("local"), and the files under cluster/."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import yaml

import dmlr
from dmlr.cli import main as cli
from dmlr.cluster import connected, load_spec
from tests.servers import dask_processes

CLUSTER_DIR = Path(__file__).resolve().parent.parent / "cluster"

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(21)
    x = rng.normal(size=(4000, 5))
    eta = np.column_stack([np.zeros(4000), x @ rng.normal(scale=0.6, size=(5, 3))])
    y = (rng.random(4000)[:, None] > np.cumsum(np.exp(eta) / np.exp(eta).sum(1, keepdims=True), 1)).sum(1)
    path = str(tmp_path_factory.mktemp("deploy") / "s.zarr")
    return dmlr.stage_arrays(x, np.minimum(y, 3), path, chunk_rows=600)


def test_fit_through_a_scheduler_started_with_the_dask_cli(store, cluster_client, tmp_path):
    reference = dmlr.fit(store, method="newton", client=cluster_client)
    with dask_processes(n_workers=2) as address:
        done = subprocess.run(
            [sys.executable, "-m", "dmlr", "fit", store.url, "--out", str(tmp_path / "r"), "--method", "newton",
             "--scheduler", address],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with connected(address) as client:
            assert len(client.nthreads()) == 2
            from_python = dmlr.fit(store, method="newton", client=client)
            blas = client.run(_blas_threads)
    scale = np.max(np.abs(reference.coef))
    assert np.max(np.abs(dmlr.load(str(tmp_path / "r")).coef - reference.coef)) <= 1e-10 * scale
    assert np.max(np.abs(from_python.coef - reference.coef)) <= 1e-10 * scale
    assert set(blas.values()) == {1}


# A lambda is pickled by value, so worker processes (which cannot import this test module) can run it.
_blas_threads = lambda: max(  # noqa: E731
    i["num_threads"] for i in __import__("threadpoolctl").threadpool_info() if i["user_api"] == "blas"
)


def test_connect_local_gives_one_blas_thread_per_worker_process():
    with connected("local", n_workers=2) as client:
        assert list(client.nthreads().values()) == [1, 1]
        assert set(client.run(_blas_threads).values()) == {1}
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2  # processes, not threads


def test_every_deployment_file_parses_to_its_kind():
    kinds = {p.name: load_spec(str(p)).kind for p in CLUSTER_DIR.glob("*.yaml") if p.name != "dask.yaml"}
    assert kinds == {
        "local.yaml": "local",
        "manual.yaml": "address",
        "ssh.yaml": "ssh",
        "slurm.yaml": "jobqueue",
        "kubernetes.yaml": "kubernetes",
    }
    assert load_spec("local.yaml").options["n_workers"] == 2  # a bare name is looked up in cluster/
    config = yaml.safe_load((CLUSTER_DIR / "dask.yaml").read_text())
    assert config["distributed"]["nanny"]["pre-spawn-environ"]["OMP_NUM_THREADS"] == 1


def test_kubernetes_manifest_is_a_complete_daskcluster():
    doc = yaml.safe_load((CLUSTER_DIR / "kubernetes.yaml").read_text())
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == "DaskCluster"
    worker = doc["spec"]["worker"]["spec"]["containers"][0]
    scheduler = doc["spec"]["scheduler"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"] and "--nthreads" in worker["args"]
    assert scheduler["args"] == ["dask", "scheduler"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert "dmlr" in env["EXTRA_PIP_PACKAGES"] and env["OMP_NUM_THREADS"] == "1"
    ports = {p["port"] for p in doc["spec"]["scheduler"]["service"]["ports"]}
    assert ports == {8786, 8787}


def test_slurm_spec_generates_a_job_script():
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    options = dict(load_spec("slurm.yaml").options)
    options.pop("system"), options.pop("n_workers")
    script = dask_jobqueue.SLURMCluster(**options).job_script()
    assert "#SBATCH" in script and "source /opt/dmlr/.venv/bin/activate" in script
    assert "--nthreads 1" in script


def _documented_commands() -> list[list[str]]:
    text = (CLUSTER_DIR / "README.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        words = shlex.split(line)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # leading VAR=value environment assignments
        if words[:1] == ["dmlr"]:
            commands.append(words[1:])
    return commands


def test_documented_commands_are_valid_dmlr_invocations():
    commands = _documented_commands()
    assert len(commands) >= 10
    for args in commands:
        command = cli.get_command(click.Context(cli), args[0])
        assert command is not None, args
        sub = command.make_context(args[0], list(args[1:]), parent=click.Context(cli))  # UsageError if invalid
        spec = sub.params.get("cluster")
        if spec:
            assert load_spec(spec).kind, args
