"""The options of a fit, each vocabulary defined once, validated when the options are made.

``dmlr.fit``, the scikit-learn estimator, the command line (``click.Choice`` over the same tuples) and the pipeline
spec all build a :class:`FitOptions`, so an invalid value is refused before any data is read or any cluster is
started, with one message naming the option and what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from dmlr.errors import InputError

__all__ = [
    "COLLINEAR",
    "MISSING",
    "PERSIST",
    "SEPARATION",
    "ClusterOptions",
    "Collinear",
    "FitOptions",
    "Missing",
    "Persist",
    "Separation",
    "check_missing",
    "check_output",
]

Separation = Literal["raise", "warn"]
"""What a detected (quasi-)separation does: raise ``PerfectSeparationError``, or warn and return unconverged."""
Collinear = Literal["raise", "drop", "keep"]
"""What dependent columns do: raise ``CollinearityError``, drop them, or keep them (infinite standard errors)."""
Persist = Literal["auto", "yes", "no"]
"""The command line's and the pipeline's spelling of ``persist`` (``"auto"``, ``True``, ``False`` in Python)."""

CovType = Literal["nonrobust", "HC0", "HC1", "cluster"]
"""The covariance of the coefficients: model-based ``I^-1``, the sandwich ``I^-1 M I^-1`` without (HC0) or with
(HC1, Stata's ``vce(robust)``) the ``n/(n-1)`` factor, or cluster-robust."""
WeightsType = Literal["frequency", "probability"]
"""Frequency weights count a row that many times; probability weights are inverse sampling probabilities."""
ClusterCorrection = Literal["statsmodels", "stata"]
"""The small-sample factor of cluster-robust covariances: ``G/(G-1) (n-1)/(n-k)`` (statsmodels) or ``G/(G-1)``."""
Missing = Literal["raise", "drop"]
"""What a row with a missing value (NaN, None, an empty CSV field) does: raise naming its column and row, or be
dropped (and counted: the number dropped is reported)."""

SEPARATION: tuple[Separation, ...] = get_args(Separation)
COLLINEAR: tuple[Collinear, ...] = get_args(Collinear)
PERSIST: tuple[Persist, ...] = get_args(Persist)
MISSING: tuple[Missing, ...] = get_args(Missing)
COV_TYPES: tuple[CovType, ...] = get_args(CovType)
WEIGHTS_TYPES: tuple[WeightsType, ...] = get_args(WeightsType)
CLUSTER_CORRECTIONS: tuple[ClusterCorrection, ...] = get_args(ClusterCorrection)

MiB = 2**20
MIN_MEMORY_LIMIT = 256 * MiB
"""The smallest per-worker memory limit accepted: a worker process takes ~110-150 MiB before any data and
distributed pauses it at 80% of its limit (below this a local cluster restarts its workers forever)."""
CONNECT_TIMEOUT = 30.0
"""Seconds to wait for a scheduler to answer (``$DMLR_CONNECT_TIMEOUT``)."""
WORKERS_TIMEOUT = 120.0
"""Seconds to wait for a scheduler to have at least one worker (``$DMLR_WORKERS_TIMEOUT``)."""


def _one_of(value: object, allowed: tuple[object, ...], name: str) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class FitOptions:
    """Everything about a fit except the data and where it runs. See :func:`dmlr.fit` for each option.

    Raises
    ------
    InputError
        At construction, naming the first invalid option and what it accepts.
    """

    method: str = "auto"
    l2: float = 0.0
    fit_intercept: bool = True
    tol: float = 1e-8
    max_iter: int = 100
    split_every: int = 8
    inference: bool = True
    persist: bool | Literal["auto"] = "auto"
    separation: Separation = "raise"
    collinear: Collinear = "raise"
    missing: Missing = "raise"
    cov_type: CovType | None = None
    weights_type: WeightsType = "frequency"
    cluster_correction: ClusterCorrection = "statsmodels"

    def __post_init__(self) -> None:
        from dmlr.steps.registry import method_names

        _one_of(self.method, method_names(), "method")
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise InputError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise InputError(f"tol must be > 0, got {self.tol!r}")
        if not _is_int(self.max_iter) or self.max_iter < 0:
            raise InputError(f"max_iter must be a non-negative integer, got {self.max_iter!r}")
        if not _is_int(self.split_every) or self.split_every < 2:
            raise InputError(f"split_every must be an integer >= 2, got {self.split_every!r}")
        _one_of(self.persist, (True, False, "auto"), "persist")
        _one_of(self.separation, SEPARATION, "separation")
        _one_of(self.collinear, COLLINEAR, "collinear")
        _one_of(self.missing, MISSING, "missing")
        if self.cov_type is not None:
            _one_of(self.cov_type, COV_TYPES, "cov_type")
        _one_of(self.weights_type, WEIGHTS_TYPES, "weights_type")
        _one_of(self.cluster_correction, CLUSTER_CORRECTIONS, "cluster_correction")

    def covariance(self, has_weights: bool, has_groups: bool) -> CovType:
        """The covariance type to compute, checked against the data.

        Default: ``"cluster"`` with groups, ``"HC1"`` with probability weights, else ``"nonrobust"``.

        Raises
        ------
        InputError
            Groups without ``cov_type="cluster"`` or the reverse, probability weights without weights, or a
            model-based covariance with probability weights (it would be wrong: saying why).
        """
        if self.weights_type == "probability" and not has_weights:
            raise InputError("weights_type='probability' needs weights")
        probability = self.weights_type == "probability"
        cov = self.cov_type or ("cluster" if has_groups else "HC1" if probability else "nonrobust")
        if cov == "cluster" and not has_groups:
            raise InputError("cov_type='cluster' needs groups: an array of cluster ids aligned with the rows")
        if has_groups and cov != "cluster":
            raise InputError(f"groups were given but cov_type is {cov!r}; use cov_type='cluster' (or leave groups out)")
        if probability and cov == "nonrobust":
            raise InputError(
                "probability weights need a robust covariance: the inverse information treats them as counts and "
                "understates the standard errors; use cov_type='HC1' (the default, Stata's) or 'HC0' or 'cluster'"
            )
        return cov

    @staticmethod
    def persist_from(choice: Persist) -> bool | Literal["auto"]:
        """``persist`` from the command line's ``auto|yes|no``."""
        _one_of(choice, PERSIST, "persist")
        return "auto" if choice == "auto" else choice == "yes"


def check_missing(missing: object) -> Missing:
    """``missing`` validated (``"raise"`` or ``"drop"``)."""
    _one_of(missing, MISSING, "missing")
    return missing  # type: ignore[return-value]


def check_output(path: str, overwrite: bool, storage_options: dict[str, Any] | None = None, what: str = "") -> None:
    """Refuse to replace an existing ``path`` unless ``overwrite`` (checked before any work starts).

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false; the message names it and the flag.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    if fs.exists(root) and not overwrite:
        kind = f"the {what} " if what else ""
        raise InputError(f"{kind}{path!r} already exists; pass --overwrite (overwrite=True) to replace it")


@dataclass(frozen=True)
class ClusterOptions:
    """Where a job runs, validated before anything starts.

    Attributes
    ----------
    spec : str
        ``"local"``, a scheduler address (``tcp://host:port`` or ``host:port``), or a deployment YAML.
    n_workers : int, optional
        Worker processes (local and jobqueue deployments only).
    memory_limit : str or int, optional
        Per-worker memory limit (``"2GB"``, bytes, ``"auto"``; local and jobqueue deployments only).

    Raises
    ------
    InputError
        An unknown spec, an address that is not ``host:port``, a worker count below 1, a memory limit that is
        not a size or is below :data:`MIN_MEMORY_LIMIT`, or sizes given for a cluster dmlr does not start.
    """

    spec: str = "local"
    n_workers: int | None = None
    memory_limit: str | int | None = None

    def __post_init__(self) -> None:
        from dmlr.cluster import load_spec

        kind = load_spec(self.spec).kind
        if self.n_workers is not None and (not _is_int(self.n_workers) or int(self.n_workers) < 1):
            raise InputError(f"the number of workers must be an integer >= 1, got {self.n_workers!r}")
        if self.memory_limit is not None:
            _memory_limit_bytes(self.memory_limit)
        if (self.n_workers is not None or self.memory_limit is not None) and kind not in ("local", "jobqueue"):
            raise InputError(
                f"workers and memory limit size a cluster dmlr starts; {self.spec!r} is an existing {kind} "
                "cluster: size it where it is started"
            )

    @property
    def overrides(self) -> dict[str, Any]:
        """Keyword arguments overriding the deployment's (``n_workers``, ``memory_limit``)."""
        out: dict[str, Any] = {}
        if self.n_workers is not None:
            out["n_workers"] = int(self.n_workers)
        if self.memory_limit is not None:
            out["memory_limit"] = self.memory_limit
        return out


def _memory_limit_bytes(value: str | int) -> int | None:
    """Bytes of a memory limit (``None`` for ``"auto"`` and for 0, no limit)."""
    from dask.utils import parse_bytes

    if isinstance(value, str) and value.strip().lower() in ("auto", "0", "none"):
        return None
    try:
        limit = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise InputError(f"memory limit {value!r} is not a size: write it like 2GB, 512MiB or 'auto'") from None
    if 0 < limit < MIN_MEMORY_LIMIT:
        raise InputError(
            f"memory limit {value!r} ({limit / MiB:.0f} MiB) is below the {MIN_MEMORY_LIMIT // MiB} MiB a dmlr "
            "worker needs (a worker process takes ~150 MiB before any data); give at least 256MiB"
        )
    if limit < 0:
        raise InputError(f"memory limit {value!r} is negative")
    return limit or None


def _is_int(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
