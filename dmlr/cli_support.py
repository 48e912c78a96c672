"""What the ``dmlr`` commands share: exit codes and the mapping of typed errors to them, the cluster, storage and fit
options (the fit options derived from :class:`~dmlr.options.FitOptions`), and starting or connecting to a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

import click

from dmlr.errors import ClusterError, DmlrError, InputError, JobInterrupted, NumericalError
from dmlr.options import MISSING, PERSIST, ClusterOptions, FitOptions, OptionField, fit_option_fields

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INFRASTRUCTURE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CONVERGED",
    "EXIT_OK",
    "EXIT_RETRY",
    "client_for",
    "guarded",
    "missing_option",
    "parse_storage_options",
    "split_values",
    "storage_option",
    "with_cluster_options",
    "with_fit_options",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
EXIT_INFRASTRUCTURE = 4
EXIT_RETRY = 75
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError, ConnectionError]
    try:
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        errors += [CommClosedError, KilledWorker]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def fail(code: int, message: str) -> None:
    click.echo(f"dmlr: error: {message}", err=True)
    sys.exit(code)


def guarded(func: F) -> F:
    """Map dmlr's typed errors to the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(EXIT_BAD_INPUT, str(exc))
        except NumericalError as exc:
            fail(EXIT_NOT_CONVERGED, str(exc))
        except ClusterError as exc:
            fail(EXIT_INFRASTRUCTURE, str(exc))
        except JobInterrupted as exc:
            code = EXIT_INTERRUPTED if exc.signum == signal.SIGINT else EXIT_RETRY
            fail(code, f"{exc}; rerun the same command to resume")
        except DmlrError as exc:
            fail(EXIT_INTERNAL, str(exc))
        except _infrastructure_errors() as exc:
            fail(EXIT_INFRASTRUCTURE, f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _cluster_options(
    scheduler: str | None, cluster: str | None, workers: int | None, memory_limit: str | None,
    security: str | None, tls: dict[str, str | None],
) -> ClusterOptions:  # fmt: skip
    """The cluster arguments, validated (no cluster is started here)."""
    if scheduler and cluster:
        raise InputError("give --scheduler or --cluster, not both")
    files = {k: v for k, v in tls.items() if v}
    return ClusterOptions(scheduler or cluster or "local", workers, memory_limit, security, files or None)


class _Echo(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"dmlr: {record.getMessage()}", err=True)


@contextlib.contextmanager
def phases_on_stderr() -> Iterator[None]:
    """Print the fit's phases (the ``dmlr.phase`` logger: a rank check, a sample's fit, the covariance of a wide
    model) on stderr while the block runs."""
    log = logging.getLogger("dmlr.phase")
    handler, level = _Echo(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@contextlib.contextmanager
def client_for(options: ClusterOptions, verbose: bool) -> Iterator[Any]:
    """Start or connect to the cluster, saying what is happening on stderr."""
    from dmlr.cluster import connected, describe, load_spec

    kind = load_spec(options.spec).kind
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.ERROR)
    what = f"a {kind} cluster" if kind != "address" else f"the scheduler at {options.spec}"
    click.echo(f"dmlr: {'starting' if kind != 'address' else 'connecting to'} {what} ...", err=True)
    start = time.perf_counter()
    with connected(options.spec, quiet=not verbose, security=options.security_setting, **options.overrides) as client:
        click.echo(f"dmlr: cluster ready in {time.perf_counter() - start:.1f}s: {describe(client)}", err=True)
        yield client


def parse_storage_options(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--storage-options is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError('--storage-options must be a JSON object, e.g. \'{"endpoint_url": "http://..."}\'')
    return value


def split_values(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


cluster_options = [
    click.option("--scheduler", metavar="ADDRESS", help="Address of an existing Dask scheduler (tcp://host:port)."),
    click.option(
        "--cluster",
        metavar="SPEC",
        help="'local', a scheduler address, or a deployment YAML (a path or a name in cluster/).",
    ),
    click.option("--workers", type=int, help="Worker processes of a local cluster (default: one per core)."),
    click.option("--memory-limit", metavar="M", help="Memory limit per worker, e.g. 1GB (default: auto)."),
    click.option("--verbose", is_flag=True, help="Show distributed's own logs (workers, scheduler)."),
    click.option(
        "--security",
        type=click.Choice(["temporary"]),
        help="TLS for a cluster dmlr starts, with a temporary certificate (its workers are tls://).",
    ),
    click.option("--tls-ca-file", metavar="PEM", help="TLS: the certificate authority's certificate."),
    click.option("--tls-cert", metavar="PEM", help="TLS: this client's certificate (and key, if in one file)."),
    click.option("--tls-key", metavar="PEM", help="TLS: this client's private key."),
]
missing_option = click.option(
    "--missing", type=click.Choice(MISSING), default="raise", show_default=True,
    help="Rows with a missing value in a column the model reads: fail naming it, or drop them (counted).",
)  # fmt: skip
storage_option = click.option(
    "--storage-options",
    metavar="JSON",
    help="fsspec options for s3:// and other URLs, e.g. an endpoint; credentials come from the environment.",
)


def with_cluster_options(func: F) -> F:
    """Add the cluster options to a command, and give the command one validated ``where: ClusterOptions`` and
    ``verbose`` instead of the raw values (placed right above the function, under ``guarded``, so that an invalid
    value is an exit 2 before anything starts)."""

    @functools.wraps(func)
    def wrapper(
        *args: Any, scheduler: str | None, cluster: str | None, workers: int | None, memory_limit: str | None,
        verbose: bool, security: str | None, tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        tls = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
        where = _cluster_options(scheduler, cluster, workers, memory_limit, security, tls)
        return func(*args, where=where, verbose=verbose, **kwargs)

    decorated: Any = wrapper
    for option in reversed(cluster_options):
        decorated = option(decorated)
    return decorated


def _fit_option(f: OptionField) -> Any:
    """The click option of one fit option, derived from its :class:`~dmlr.options.FitOptions` field."""
    assert f.cli is not None
    if f.name == "persist":  # True / False / "auto" spelled auto|yes|no
        default = "auto" if f.default == "auto" else ("yes" if f.default else "no")
        return click.option(f.cli, type=click.Choice(PERSIST), default=default, show_default=True, help=f.cli_help)
    if f.annotation == "bool":
        flag = f.cli.removeprefix("--")
        return click.option(f"--{flag}/--no-{flag}", default=f.default, show_default=True, help=f.cli_help)
    if f.choices is not None:
        choices = [c for c in f.choices if c is not None]
        return click.option(f.cli, type=click.Choice(choices), default=f.default, show_default=True, help=f.cli_help)
    kind = {"float": float, "int": int, "int | None": int}.get(f.annotation, str)
    return click.option(f.cli, type=kind, default=f.default, show_default=True, help=f.cli_help)


@overload
def with_fit_options(func: F, *, exclude: tuple[str, ...] = ()) -> F: ...


@overload
def with_fit_options(func: None = None, *, exclude: tuple[str, ...] = ()) -> Callable[[F], F]: ...


def with_fit_options(func: F | None = None, *, exclude: tuple[str, ...] = ()) -> Any:
    """Add one option per command-line fit option (:func:`~dmlr.options.fit_option_fields`; not those named in
    ``exclude``, which the command spells its own way) to a command, and give the command one validated
    ``options: FitOptions`` instead of the raw values."""
    if func is None:
        return functools.partial(with_fit_options, exclude=exclude)
    cli_fields = [f for f in fit_option_fields() if f.cli is not None and f.name not in exclude]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {f.name: kwargs.pop(f.name) for f in cli_fields}
        if "persist" in values:
            values["persist"] = FitOptions.persist_from(values["persist"])
        return func(*args, options=FitOptions.of(values, "dmlr fit"), **kwargs)

    decorated: Any = wrapper
    for f in reversed(cli_fields):
        decorated = _fit_option(f)(decorated)
    return decorated
