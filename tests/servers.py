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
from typing import Any

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


def make_certificates(folder: Path) -> dict[str, str]:
    """A certificate authority and one certificate it signs for 127.0.0.1 / localhost (PEM files in ``folder``),
    made with ``cryptography`` as an operator would with openssl: ``{"tls_ca_file", "tls_cert", "tls_key"}``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    week = datetime.timedelta(days=7)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + week)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("dmlr test CA", "dmlr test CA", ca_key, ca_key, True)
    cert = build("localhost", "dmlr test CA", key, ca_key, False)
    pem = serialization.Encoding.PEM
    files = {
        "tls_ca_file": ca.public_bytes(pem),
        "tls_cert": cert.public_bytes(pem),
        "tls_key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }
    out = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        out[name] = str(path)
    return out


@contextlib.contextmanager
def dask_processes(n_workers: int = 2, tls: dict[str, str] | None = None) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker`` processes, started with the same CLI a user runs; yields the address.
    With ``tls`` (:func:`make_certificates`) every process listens on ``tls://`` with those certificates."""
    from distributed import Client

    from dmlr.security import make_security

    dask_cli = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{port}"
    env = {**os.environ, **BLAS_ENV}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    certs = []
    if tls:
        certs = ["--tls-ca-file", tls["tls_ca_file"], "--tls-cert", tls["tls_cert"], "--tls-key", tls["tls_key"]]
    host = ["--host", "127.0.0.1", "--port", str(port)] if not tls else ["--host", f"tls://127.0.0.1:{port}"]
    procs = [subprocess.Popen([dask_cli, "scheduler", *host, "--no-dashboard", *certs], **quiet)]  # type: ignore[call-overload]
    try:
        for _ in range(n_workers):
            procs.append(
                subprocess.Popen(  # type: ignore[call-overload]
                    [dask_cli, "worker", address, "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GB", *certs],
                    **quiet,
                )
            )
        with Client(address, timeout="60s", security=make_security(tls)) as client:
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


@contextlib.contextmanager
def flaky_proxy(upstream: str, fail_every: int = 3) -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP proxy on loopback in front of ``upstream`` that answers every ``fail_every``-th GET of a Zarr chunk
    with ``503 SlowDown`` (as S3 does under load). Yields the proxy's endpoint and its counters."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(upstream)
    counts = {"chunk_gets": 0, "failed": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.command == "GET" and "/c/" in self.path:
                with lock:
                    counts["chunk_gets"] += 1
                    fail = counts["chunk_gets"] % fail_every == 0
                    counts["failed"] += fail
                if fail:
                    message = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = target.netloc
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            self.send_response(reply.status, reply.reason)
            for k, v in reply.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()
