"""TLS for the Dask clusters dmlr starts or connects to: a ``distributed.Security`` from what users give.

distributed's plain ``tcp://`` comm "sends data unauthenticated and unencrypted", and a scheduler accepts pickled
control messages from anyone who reaches its port. With TLS every endpoint (client, scheduler, workers) presents a
certificate signed by one certificate authority, and talks only to endpoints that do (mutual authentication).

What users give (:func:`make_security`):

``None``
    The Dask configuration's ``distributed.comm.tls.*`` and ``distributed.comm.require-encryption`` (often nothing:
    plain TCP).
``"temporary"``
    ``distributed.Security.temporary()``: a self-signed certificate made in memory for a cluster dmlr starts (its
    workers are then ``tls://``); nothing else can join it.
a mapping ``{"tls_ca_file": ..., "tls_cert": ..., "tls_key": ...}``
    PEM files: the authority's certificate and this endpoint's certificate and key (the key may be inside the
    certificate file). The same files serve the scheduler and workers of a cluster dmlr starts.
a ``distributed.Security``
    Used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmlr.errors import InputError

__all__ = ["TLS_FIELDS", "TLS_HELP", "check_cluster_security", "make_security", "needs_certificates"]

TLS_FIELDS = ("tls_ca_file", "tls_cert", "tls_key")
"""The keys of a certificate mapping (CLI ``--tls-ca-file``, ``--tls-cert``, ``--tls-key``; deployment YAML and
pipeline spec ``security:``)."""

TLS_HELP = (
    "pass its certificates: --tls-ca-file CA.pem --tls-cert CERT.pem --tls-key KEY.pem (Python: "
    'security={"tls_ca_file": ..., "tls_cert": ..., "tls_key": ...}; or the Dask config distributed.comm.tls.*)'
)


def make_security(security: Any = None) -> Any:
    """The ``distributed.Security`` for ``security`` (see the module docstring).

    Raises
    ------
    InputError
        An unknown value, a mapping with unknown keys, a missing certificate or key file (named), or a key without
        a certificate.
    """
    from distributed import Security

    if security is None:
        return Security()
    if isinstance(security, Security):
        return security
    if security == "temporary":
        return Security.temporary()
    if not isinstance(security, Mapping):
        raise InputError(
            f"security must be 'temporary', a mapping of {list(TLS_FIELDS)} or a distributed.Security, got {security!r}"
        )
    unknown = sorted(set(security) - set(TLS_FIELDS))
    if unknown:
        raise InputError(f"unknown security key(s) {unknown}: the keys are {list(TLS_FIELDS)}")
    files = {k: str(v) for k, v in security.items() if v is not None}
    if "tls_ca_file" not in files or "tls_cert" not in files:
        raise InputError(
            "TLS needs the certificate authority's certificate and this endpoint's certificate: give tls_ca_file "
            "and tls_cert (--tls-ca-file, --tls-cert), and tls_key unless the key is inside the certificate file"
        )
    for key, path in files.items():
        if not Path(path).is_file():
            raise InputError(f"{key.replace('_', '-')} {path!r} is not a file")
    cert, key = files["tls_cert"], files.get("tls_key")
    return Security(
        tls_ca_file=files["tls_ca_file"],
        tls_client_cert=cert, tls_client_key=key,
        tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key,
        require_encryption=True,
    )  # fmt: skip


def needs_certificates(address: str, security: Any) -> bool:
    """Whether connecting to ``address`` with ``security`` cannot work: a ``tls://`` scheduler and no client
    certificate (distributed would fail deep inside its comm layer, or wait for its timeout)."""
    return address.startswith("tls://") and not (security.tls_ca_file and security.tls_client_cert)


def check_cluster_security(spec: str, kind: str, security: str | None, tls: Mapping[str, str] | None) -> None:
    """Refuse, before anything starts, a ``security`` other than ``"temporary"``, both a temporary certificate and
    certificate files, a temporary certificate for a scheduler dmlr does not start (``kind == "address"``), or a
    certificate file that is missing (:func:`make_security`)."""
    if security not in (None, "temporary"):
        raise InputError(f"--security takes 'temporary', got {security!r}")
    if security and tls:
        raise InputError("give --security temporary or certificate files (--tls-ca-file ...), not both")
    if security == "temporary" and kind == "address":
        raise InputError(
            f"--security temporary makes certificates for a cluster dmlr starts; the scheduler at {spec} has its "
            "own: pass them with --tls-ca-file, --tls-cert and --tls-key"
        )
    if tls:
        make_security(dict(tls))  # every file named and present
