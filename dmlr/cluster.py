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

Any kind but ``kubernetes`` may carry ``security:`` (``temporary``, or ``tls_ca_file``/``tls_cert``/``tls_key``:
:mod:`dmlr.security`), and :func:`connect` takes ``security=``: the cluster then talks TLS only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dmlr.errors import InputError
from dmlr.security import TLS_HELP, make_security, needs_certificates

__all__ = ["BLAS_ENV", "DeploymentSpec", "connect", "connected", "describe", "disconnect", "load_spec"]

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


def _check_address(address: str) -> None:
    """Refuse an address that is not ``[protocol://]host:port`` with a numeric port."""
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest.startswith("["):  # [ipv6]:port
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = rest.rpartition(":")
    if address.startswith("inproc://"):
        return
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"scheduler address {address!r} is not host:port (e.g. tcp://10.0.0.5:8786); "
            "the port must be a number from 1 to 65535"
        )


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
        _check_address(spec)
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


def _local_cluster(options: dict[str, Any], quiet: bool = True, security: Any = None) -> Any:
    from distributed import LocalCluster

    n_cores = os.cpu_count() or 1
    options = dict(options)
    threads = int(options.pop("threads_per_worker", 1))
    workers = int(options.pop("n_workers", max(1, n_cores // threads)))
    env = {**BLAS_ENV, **options.pop("env", {})}
    options.setdefault("dashboard_address", ":0")  # a free port: never clash with another cluster
    options.setdefault("memory_limit", "auto")
    # quiet: the workers' own logs (task failures dmlr reports itself, memory warnings) stay off the terminal
    options.setdefault("silence_logs", logging.CRITICAL if quiet else logging.INFO)
    if security is not None:  # scheduler and workers listen on tls:// with the given certificates
        options.update(security=security, protocol="tls://")
    return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, env=env, **options)


def _start(spec: DeploymentSpec, quiet: bool, security: Any = None) -> Any:
    """Start the deployment (``security``: a ``distributed.Security`` when it must use TLS)."""
    options = dict(spec.options)
    if spec.kind == "local":
        return _local_cluster(options, quiet, security)
    if security is not None and spec.kind in ("ssh", "jobqueue"):
        options["security"] = security
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


def _timeout(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise InputError(f"${name} must be a number of seconds, got {os.environ[name]!r}") from None


def connect(spec: str = "local", *, quiet: bool = True, security: Any = None, **overrides: Any) -> Any:
    """A ``distributed.Client`` for ``spec``, with at least one worker.

    Parameters
    ----------
    spec : str
        ``"local"``, a scheduler address, or a deployment YAML file (path or name under ``cluster/``).
    quiet : bool
        Keep the logs of a local cluster's workers and of distributed in this process to critical messages
        (dmlr reports task failures itself); ``False`` shows them at INFO.
    security : str, mapping or distributed.Security, optional
        TLS (:func:`dmlr.security.make_security`): ``"temporary"`` for a cluster started here, or the certificate
        files ``{"tls_ca_file": ..., "tls_cert": ..., "tls_key": ...}``; default the deployment YAML's
        ``security:``, else the Dask config's ``distributed.comm.tls.*``.
    **overrides
        Cluster options overriding the spec's (e.g. ``n_workers``, ``memory_limit`` for ``local``).

    Returns
    -------
    distributed.Client
        For clusters started here, ``client.cluster`` is the cluster; :func:`disconnect` closes both.

    Raises
    ------
    InputError
        An invalid spec, override or security setting (see :class:`~dmlr.options.ClusterOptions`), or a
        ``tls://`` scheduler without certificates.
    ClusterError
        No scheduler answers at the address within ``$DMLR_CONNECT_TIMEOUT`` seconds (30), or it has no worker
        after ``$DMLR_WORKERS_TIMEOUT`` seconds (120); the message names the address and what was waited for.
    """
    from distributed import Client

    from dmlr.errors import ClusterError
    from dmlr.options import CONNECT_TIMEOUT, WORKERS_TIMEOUT, ClusterOptions

    ClusterOptions(spec, overrides.get("n_workers"), overrides.get("memory_limit"))  # validated before anything starts
    parsed = load_spec(spec)
    options = dict(parsed.options)
    given = options.pop("security", None) if security is None else security
    secured = make_security(given)
    connect_timeout = _timeout("DMLR_CONNECT_TIMEOUT", CONNECT_TIMEOUT)
    workers_timeout = _timeout("DMLR_WORKERS_TIMEOUT", WORKERS_TIMEOUT)
    if parsed.kind == "address":
        address = options["address"]
        if given == "temporary":
            raise InputError(f"temporary certificates serve a cluster dmlr starts; the scheduler at {address} has "
                             f"its own: {TLS_HELP}")  # fmt: skip
        if needs_certificates(address, secured):
            raise InputError(f"the scheduler at {address} uses TLS: {TLS_HELP}")
        try:
            client = Client(address, timeout=connect_timeout, security=secured)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"no Dask scheduler answered at {address} within {connect_timeout:g} s ({exc}); "
                "check the address (and, for a TLS scheduler, the certificates), or start one with `dask scheduler`"
            ) from None
        _wait_for_workers(client, workers_timeout, f"the scheduler at {address}")
        return client
    parsed = DeploymentSpec(parsed.kind, {**options, **overrides}, parsed.source)
    cluster = _start(parsed, quiet, secured if secured.require_encryption else None)
    try:
        client = Client(cluster, timeout=connect_timeout, security=secured)
        _wait_for_workers(client, workers_timeout, f"the {parsed.kind} cluster from {parsed.source}")
        return client
    except BaseException:
        cluster.close()
        raise


def _wait_for_workers(client: Any, timeout: float, what: str) -> None:
    from dmlr.errors import ClusterError

    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise ClusterError(
            f"{what} has no worker after {timeout:g} s; start workers (`dask worker ADDRESS`) or check that "
            "its queue/pods can run them ($DMLR_WORKERS_TIMEOUT sets the wait)"
        ) from None


def describe(client: Any) -> str:
    """One line about a connected cluster: workers, threads, memory limit, dashboard address."""
    from dask.utils import format_bytes

    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(w.get("nthreads", 0) for w in workers)
    limits = {w.get("memory_limit") or 0 for w in workers}
    memory = "no memory limit" if limits == {0} else "/".join(format_bytes(m) for m in sorted(limits)) + " each"
    line = f"{len(workers)} workers, {threads} threads, {memory}"
    link = getattr(client, "dashboard_link", None)
    return f"{line}; dashboard {link}" if link else line


def disconnect(client: Any) -> None:
    """Close ``client`` and, when :func:`connect` started it, its cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def connected(spec: str = "local", *, quiet: bool = True, security: Any = None, **overrides: Any) -> Iterator[Any]:
    """Context manager around :func:`connect` / :func:`disconnect`."""
    client = connect(spec, quiet=quiet, security=security, **overrides)
    try:
        yield client
    finally:
        disconnect(client)
