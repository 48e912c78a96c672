"""Turning "local", a scheduler address or a named deployment into a ``distributed.Client``.

Specs
-----
``"local"``
    A LocalCluster sized to this machine: one worker process per core, one thread each, and BLAS limited to one
    thread inside every worker so that tasks do not oversubscribe the cores.
``"tcp://host:port"`` (or ``tls://``, ``ws://``, ``host:port``)
    An existing scheduler, e.g. started with ``dask scheduler`` and ``dask worker``.
a YAML file (a path, or a name of a file in the project's ``cluster/`` folder, with or without ``.yaml``)
    ``kind: local`` (LocalCluster options), ``kind: address`` (``address:``), ``kind: ssh`` (``hosts:`` and
    SSHCluster options; extra ``dmlr[ssh]``), ``kind: jobqueue`` (``system: slurm|pbs|sge|lsf``, the dask-jobqueue
    cluster options and ``n_workers``; extra ``dmlr[hpc]``), or a dask-kubernetes ``DaskCluster`` manifest
    (``apiVersion: kubernetes.dask.org/v1``; extra ``dmlr[kubernetes]``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dmlr.errors import InputError

__all__ = ["BLAS_ENV", "DeploymentSpec", "connect", "connected", "disconnect", "load_spec"]

BLAS_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
"""Environment of worker processes: one BLAS thread each, the worker's task threads fill the cores."""

KINDS = ("local", "address", "ssh", "jobqueue", "kubernetes")
JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
ADDRESS_PREFIXES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")


def _cluster_dir() -> Path:
    """The project's ``cluster/`` folder (next to the package in a checkout), or ``$DMLR_CLUSTER_DIR``."""
    env = os.environ.get("DMLR_CLUSTER_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "cluster"


@dataclass(frozen=True)
class DeploymentSpec:
    """A parsed deployment.

    Attributes
    ----------
    kind : str
        One of ``local``, ``address``, ``ssh``, ``jobqueue``, ``kubernetes``.
    options : dict
        Keyword arguments of the cluster class (or ``address`` for ``kind: address``).
    source : str
        Where the spec came from.
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _find_file(spec: str) -> Path | None:
    for candidate in (Path(spec), _cluster_dir() / spec, _cluster_dir() / f"{spec}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_spec(spec: str) -> DeploymentSpec:
    """Parse ``spec`` (see the module docstring) without starting anything.

    Raises
    ------
    InputError
        An unknown name, an unreadable file, an unknown ``kind``, or missing required fields (named).
    """
    if spec == "local":
        return DeploymentSpec("local", {}, "local")
    if spec.startswith(ADDRESS_PREFIXES) or (":" in spec and not spec.endswith((".yaml", ".yml"))):
        return DeploymentSpec("address", {"address": spec}, spec)
    path = _find_file(spec)
    if path is None:
        raise InputError(
            f"cluster spec {spec!r} is not 'local', a scheduler address, or a YAML file "
            f"(looked in the working directory and in {_cluster_dir()})"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} must hold a mapping")
    if str(doc.get("apiVersion", "")).startswith("kubernetes.dask.org/") and doc.get("kind") == "DaskCluster":
        return DeploymentSpec("kubernetes", {"custom_cluster_spec": str(path)}, str(path))
    kind = doc.pop("kind", None)
    if kind not in KINDS:
        raise InputError(f"{path}: field 'kind' must be one of {KINDS}, got {kind!r}")
    doc.pop("description", None)
    if kind == "address" and "address" not in doc:
        raise InputError(f"{path}: kind 'address' needs the field 'address'")
    if kind == "ssh" and not doc.get("hosts"):
        raise InputError(f"{path}: kind 'ssh' needs the field 'hosts' (scheduler first, then workers)")
    if kind == "jobqueue" and doc.get("system") not in JOBQUEUE:
        raise InputError(f"{path}: kind 'jobqueue' needs 'system' in {sorted(JOBQUEUE)}, got {doc.get('system')!r}")
    return DeploymentSpec(kind, doc, str(path))


def _local_cluster(options: dict[str, Any]) -> Any:
    from distributed import LocalCluster

    n_cores = os.cpu_count() or 1
    options = dict(options)
    threads = int(options.pop("threads_per_worker", 1))
    workers = int(options.pop("n_workers", max(1, n_cores // threads)))
    env = {**BLAS_ENV, **options.pop("env", {})}
    options.setdefault("dashboard_address", ":0")  # a free port: never clash with another cluster
    options.setdefault("memory_limit", "auto")
    return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, env=env, **options)


def _start(spec: DeploymentSpec) -> Any:
    options = dict(spec.options)
    if spec.kind == "local":
        return _local_cluster(options)
    if spec.kind == "ssh":
        from distributed import SSHCluster

        hosts = options.pop("hosts")
        worker_options = {"nthreads": 1, **options.pop("worker_options", {})}
        return SSHCluster(hosts, worker_options=worker_options, **options)
    if spec.kind == "jobqueue":
        try:
            import dask_jobqueue
        except ImportError:
            raise InputError("kind 'jobqueue' needs dask-jobqueue: pip install 'dmlr[hpc]'") from None
        cls = getattr(dask_jobqueue, JOBQUEUE[options.pop("system")])
        n_workers = int(options.pop("n_workers", 1))
        cluster = cls(**options)
        cluster.scale(n_workers)
        return cluster
    if spec.kind == "kubernetes":
        try:
            from dask_kubernetes.operator import KubeCluster
        except ImportError:
            raise InputError("a DaskCluster manifest needs dask-kubernetes: pip install 'dmlr[kubernetes]'") from None
        return KubeCluster(custom_cluster_spec=options["custom_cluster_spec"])
    raise AssertionError(spec.kind)  # pragma: no cover


def connect(spec: str = "local", **overrides: Any) -> Any:
    """A ``distributed.Client`` for ``spec``.

    Parameters
    ----------
    spec : str
        ``"local"``, a scheduler address, or a deployment YAML file (path or name under ``cluster/``).
    **overrides
        Cluster options overriding the spec's (e.g. ``n_workers``, ``memory_limit`` for ``local``).

    Returns
    -------
    distributed.Client
        For clusters started here, ``client.cluster`` is the cluster; :func:`disconnect` closes both.
    """
    from distributed import Client

    parsed = load_spec(spec)
    if parsed.kind == "address":
        if overrides:
            raise InputError(f"options {sorted(overrides)} cannot change an existing cluster at {spec}")
        return Client(parsed.options["address"])
    parsed = DeploymentSpec(parsed.kind, {**parsed.options, **overrides}, parsed.source)
    cluster = _start(parsed)
    try:
        return Client(cluster)
    except BaseException:
        cluster.close()
        raise


def disconnect(client: Any) -> None:
    """Close ``client`` and, when :func:`connect` started it, its cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def connected(spec: str = "local", **overrides: Any) -> Iterator[Any]:
    """Context manager around :func:`connect` / :func:`disconnect`."""
    client = connect(spec, **overrides)
    try:
        yield client
    finally:
        disconnect(client)
