"""The options of a fit, each defined once with its type, default, allowed values and help text.

``dmlr.fit``'s keywords, the scikit-learn estimator's parameters, the ``dmlr fit`` options and the pipeline spec's
``fit`` section are derived from :class:`FitOptions` (:func:`fit_option_fields`), and each builds one, so an invalid
value is refused before any data is read or any cluster is started, with one message naming the option and what it
accepts. :class:`ClusterOptions` does the same for where a job runs.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from dmlr.errors import InputError

__all__ = [
    "CLUSTER_CORRECTIONS",
    "COLLINEAR",
    "COV_TYPES",
    "MISSING",
    "PERSIST",
    "SEPARATION",
    "WEIGHTS_TYPES",
    "ClusterOptions",
    "Collinear",
    "FitOptions",
    "Missing",
    "OptionField",
    "Persist",
    "Separation",
    "check_missing",
    "check_output",
    "fit_option_fields",
    "option",
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


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
    cli: str | None = None,
    cli_help: str | None = None,
    spec: bool = True,
    values: str | None = None,
    check: Callable[[Any], bool] | None = None,
) -> Any:
    """A :class:`FitOptions` field: its default and what every front end derives from it.

    Parameters
    ----------
    default : object
    help : str
        The numpydoc description (``dmlr.fit``'s and the estimator's docstrings); its first sentence is the command
        line's help unless ``cli_help`` is given.
    choices : tuple or callable, optional
        The allowed values (a callable for vocabularies that grow, such as registered step rules).
    cli : str, optional
        The ``dmlr fit`` flag (``"--max-iter"``); ``None``: not on the command line.
    cli_help : str, optional
    spec : bool
        Whether a pipeline spec's ``fit`` section may set it.
    values : str, optional
        The values it accepts, in words (``"a number >= 0"``), for messages.
    check : callable, optional
        Whether a value is one of them.
    """
    meta = {
        "help": help, "choices": choices, "cli": cli, "cli_help": cli_help, "spec": spec, "values": values,
        "check": check,
    }  # fmt: skip
    return field(default=default, metadata=meta)


def _methods() -> tuple[str, ...]:
    from dmlr.steps.registry import method_names

    return method_names()


@dataclass(frozen=True)
class FitOptions:
    """Everything about a fit except the data and where it runs: the one definition of every fit option.

    Each field carries its type, default, allowed values and help text (:func:`option`); ``dmlr.fit``'s keywords
    and docstring, the estimator's parameters, the ``dmlr fit`` options and the pipeline spec's ``fit`` section are
    all derived from them (:func:`fit_option_fields`), so a default changed here changes everywhere.

    Raises
    ------
    InputError
        At construction, naming the first invalid option and what it accepts.
    """

    method: str = option(
        "auto",
        "``\"newton\"``: exact information every iteration (one pass each), globalized by step halving."
        " ``\"bohning\"``: Böhning's fixed bound (Gram matrix gathered on the first pass, one ``d x d`` Cholesky),"
        " one score pass per iteration, monotone. ``\"lbfgs\"``: quasi-Newton preconditioned by"
        " ``(diag(pi) - pi pi^T) kron X^T V X`` (``pi`` the class shares) with the bound step as safeguard, each step"
        " one score pass, then one information pass for inference. ``\"auto\"``: the rule predicted to take least"
        " time on the data at hand"
        " (:mod:`dmlr.steps.auto`). Other rules can be registered (:func:`dmlr.steps.register_rule`).",
        choices=_methods, cli="--method", cli_help="Optimization method (auto chooses by predicted cost).",
    )  # fmt: skip
    base: Any = option(None, "Reference class (coefficients fixed at 0); default the smallest label.", spec=True)
    l2: float = option(
        0.0, "Ridge penalty ``l2/2 * ||W||^2`` (intercept not penalized).", cli="--l2",
        cli_help="Ridge penalty (intercept not penalized).", values="a number >= 0",
        check=lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
    )  # fmt: skip
    fit_intercept: bool = option(
        True, 'Prepend a constant column named ``"const"``.', cli="--fit-intercept",
        cli_help="Add a constant column named const.",
    )  # fmt: skip
    tol: float = option(
        1e-8, "Stop when ``max |score| / nobs <= tol`` or (Newton) ``sqrt(decrement / nobs) <= tol``.", cli="--tol",
        cli_help="Stop when max|score| / nobs (or Newton's sqrt(decrement / nobs)) is at most this.",
        values="a number > 0", check=lambda v: _is_number(v) and math.isfinite(v) and v > 0,
    )  # fmt: skip
    max_iter: int = option(
        100, "Maximum number of steps.", cli="--max-iter", values="an integer >= 0",
        check=lambda v: _is_int(v) and v >= 0,
    )  # fmt: skip
    split_every: int = option(
        8, "Fan-in of the tree reduction of the per-worker statistics.", cli="--split-every",
        values="an integer >= 2", check=lambda v: _is_int(v) and v >= 2,
    )  # fmt: skip
    inference: bool = option(
        True,
        "Compute the information at the optimum (an extra pass for bound-based rules). ``False`` skips it;"
        " ``bse`` and everything derived then raise :class:`~dmlr.errors.InferenceUnavailableError`.",
        cli="--inference", cli_help="Compute standard errors.",
    )  # fmt: skip
    persist: bool | Literal["auto"] = option(
        "auto",
        "Keep lazily loaded data (a store, a dask array) in the workers' memory for the whole fit instead of reading"
        " it on every pass. ``\"auto\"`` persists on a distributed client when the data take at most half of the"
        " workers' total memory limit; in-memory NumPy/pandas inputs are always shipped to the workers once.",
        choices=(True, False, "auto"), cli="--persist",
        cli_help="Keep the data in the workers' memory: auto (when it takes at most half of it), yes or no.",
    )  # fmt: skip
    separation: Separation = option(
        "raise",
        "When some classes are (quasi-)completely separated the MLE does not exist: ``\"raise\"`` a"
        " :class:`~dmlr.errors.PerfectSeparationError` naming the classes, or ``\"warn\"`` and return the (finite)"
        " coefficients where the fit stopped with ``converged=False``. With ``l2 > 0`` the optimum always exists.",
        choices=SEPARATION, cli="--separation",
        cli_help="Separated classes: fail (exit 3), or warn and write the unconverged result.",
    )  # fmt: skip
    collinear: Collinear = option(
        "raise",
        "Constant, duplicate or collinear columns (without ``l2``): ``\"raise\"`` a"
        " :class:`~dmlr.errors.CollinearityError` naming them, ``\"drop\"`` them (each is dropped after the earlier"
        " columns it depends on; the result equals the fit without them and lists them in ``dropped_features``), or"
        " ``\"keep\"`` them (their standard errors are reported as ``inf``).",
        choices=COLLINEAR, cli="--collinear",
        cli_help="Constant/duplicate/collinear columns: fail (exit 2), drop them, or keep them (inf standard errors).",
    )  # fmt: skip
    max_classes: int | None = option(
        None,
        "Most classes ``y`` may have: more (default 100) is an :class:`~dmlr.errors.InputError` naming the count (a"
        " float ``y`` with non-integral values, a continuous column, always is). A store's target was checked when it"
        " was staged (``dmlr.stage(max_classes=...)``).",
        cli="--max-classes", cli_help="Most classes the target may have (default 100).",
        values="an integer >= 2 or None",
        check=lambda v: v is None or (_is_int(v) and v >= 2),
    )  # fmt: skip
    missing: Missing = option(
        "raise",
        "A row with a missing value in ``X``, ``y``, ``weights`` or ``offset`` (NaN, None, pandas NA): an"
        " :class:`~dmlr.errors.InputError` naming the column and the row, or the row is dropped; the count dropped"
        " is ``n_missing`` of the result (and in the summary). A store has no missing values (see ``dmlr.stage``).",
        choices=MISSING, spec=False,
    )  # fmt: skip
    cov_type: CovType | None = option(
        None,
        "The coefficients' covariance (``bse``, ``pvalues``, ``conf_int``, tests follow it). ``\"nonrobust\"``: the"
        " inverse information. ``\"HC0\"``: the sandwich ``I^-1 M I^-1``, ``M`` the sum of the rows' score outer"
        " products (statsmodels' HC0); ``\"HC1\"``: times ``n/(n-1)`` (Stata's ``vce(robust)``); both come from the"
        " fit's own final pass. ``\"cluster\"``: ``M`` sums the outer products of each cluster's summed scores (one"
        " more pass; clusters may span partitions). Default: ``\"cluster\"`` with ``groups``, ``\"HC1\"`` with"
        " probability weights, else ``\"nonrobust\"``.",
        choices=(None, *COV_TYPES), cli="--cov-type",
        cli_help="Covariance: nonrobust, HC0, HC1 (Stata's robust) or cluster (by the ids the store was staged with,"
        " --groups). Default: nonrobust; HC1 with --weights-type probability.",
    )  # fmt: skip
    weights_type: WeightsType = option(
        "frequency",
        "``\"frequency\"``: a weight counts its row that many times (every covariance equals the one of repeated"
        " rows). ``\"probability\"``: inverse sampling probabilities: the same coefficients, ``nobs`` counts rows,"
        " ``llf`` is a pseudo-log-likelihood, the covariance must be robust (default ``\"HC1\"``) and"
        " likelihood-ratio tests are refused.",
        choices=WEIGHTS_TYPES, cli="--weights-type",
        cli_help="The store's weights are frequency weights (counts) or probability weights (inverse sampling "
        "probabilities: robust covariance, pseudo-likelihood).",
    )  # fmt: skip
    cluster_correction: ClusterCorrection = option(
        "statsmodels",
        "Small-sample factor of cluster-robust covariances: ``G/(G-1) (n-1)/(n-k)`` as statsmodels, or ``G/(G-1)``"
        " as Stata. p-values use the normal distribution either way (as statsmodels); for Stata's ``G - 1`` degrees"
        " of freedom use ``scipy.stats.t.sf(abs(res.tvalues), res.n_clusters - 1) * 2``.",
        choices=CLUSTER_CORRECTIONS, cli="--cluster-correction",
        cli_help="Small-sample factor of cluster-robust errors: statsmodels' G/(G-1) (n-1)/(n-k) or Stata's G/(G-1).",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for f in fit_option_fields():
            value = getattr(self, f.name)
            if f.choices is not None and f.name != "persist":
                _one_of(value, f.choices, f.name)
            if f.check is not None and not f.check(value):
                raise InputError(f"{f.name} must be {f.values}, got {value!r}")
        if not isinstance(self.fit_intercept, bool) or not isinstance(self.inference, bool):
            raise InputError("fit_intercept and inference must be True or False")
        if not (isinstance(self.persist, bool) or self.persist == "auto"):
            raise InputError(f"persist must be True, False or 'auto', got {self.persist!r}")

    @classmethod
    def of(cls, options: dict[str, Any], where: str = "dmlr.fit") -> FitOptions:
        """Options from keywords, refusing unknown names with the closest known one suggested.

        Raises
        ------
        InputError
            An unknown option or an invalid value.
        """
        names = [f.name for f in fit_option_fields()]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (options: {', '.join(names)})"
                raise InputError(f"{where} has no option {key!r}{hint}")
        return cls(**options)

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


@dataclass(frozen=True)
class OptionField:
    """What a front end needs to know of one fit option.

    Attributes
    ----------
    name : str
    annotation : str
        Its type as written (``"float"``, ``"Separation"``).
    default : object
    choices : tuple, optional
        The allowed values, resolved (registered step rules included).
    help : str
        numpydoc description.
    cli : str, optional
        The ``dmlr fit`` flag.
    cli_help : str
        One line for the command line.
    spec : bool
        Settable in a pipeline spec's ``fit`` section.
    values : str, optional
        The values it accepts, in words.
    check : callable, optional
        Whether a value is one of them.
    """

    name: str
    annotation: str
    default: Any
    choices: tuple[Any, ...] | None
    help: str
    cli: str | None
    cli_help: str
    spec: bool
    values: str | None = None
    check: Callable[[Any], bool] | None = None


def fit_option_fields() -> list[OptionField]:
    """Every :class:`FitOptions` field with its metadata, in declaration order."""
    out = []
    for f in fields(FitOptions):
        meta = f.metadata
        choices = meta.get("choices")
        resolved = tuple(choices()) if callable(choices) else choices
        help_text = str(meta.get("help", ""))
        short = meta.get("cli_help") or help_text.split(". ")[0].rstrip(".") + "."
        out.append(
            OptionField(
                f.name,
                str(f.type),
                f.default,
                resolved,
                help_text,
                meta.get("cli"),
                short,
                meta.get("spec", True),
                meta.get("values"),
                meta.get("check"),
            )
        )
    return out


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
    security : {"temporary"}, optional
        TLS with a temporary certificate for a cluster dmlr starts (:mod:`dmlr.security`).
    tls : dict of str to str, optional
        Certificate files (``tls_ca_file``, ``tls_cert``, ``tls_key``) for a TLS scheduler or a cluster dmlr starts.

    Raises
    ------
    InputError
        An unknown spec, an address that is not ``host:port``, a worker count below 1, a memory limit that is
        not a size or is below :data:`MIN_MEMORY_LIMIT`, sizes given for a cluster dmlr does not start, both a
        temporary certificate and certificate files, or a certificate file that does not exist.
    """

    spec: str = "local"
    n_workers: int | None = None
    memory_limit: str | int | None = None
    security: str | None = None
    tls: dict[str, str] | None = None

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
        self._check_security(kind)

    def _check_security(self, kind: str) -> None:
        from dmlr.security import check_cluster_security

        check_cluster_security(self.spec, kind, self.security, self.tls)

    @property
    def security_setting(self) -> str | dict[str, str] | None:
        """What :func:`dmlr.cluster.connect` takes as ``security=`` (``None``: the deployment's or Dask's)."""
        return self.security or (dict(self.tls) if self.tls else None)

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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
