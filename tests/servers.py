"""Real servers on loopback for tests: a Dask scheduler with workers, an S3-compatible object store."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dmlr.cluster import BLAS_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@contextlib.contextmanager
def dask_processes(n_workers: int = 2) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker`` processes, started with the same CLI a user runs; yields the address."""
    from distributed import Client

    dask_cli = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **BLAS_ENV}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [
        subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)
    ]  # type: ignore[call-overload]
    try:
        for _ in range(n_workers):
            procs.append(
                subprocess.Popen(  # type: ignore[call-overload]
                    [dask_cli, "worker", address, "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GB"], **quiet
                )
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address
    finally:
        _stop(procs)


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, object]]:
    """moto's S3-compatible server on loopback with a bucket ``dmlr-test``; yields fsspec storage options."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="dmlr-test")
        yield {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    finally:
        _stop([proc])
