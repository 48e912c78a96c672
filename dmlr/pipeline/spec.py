"""The pipeline spec: a YAML file, validated field by field; an error names the field (``fit.l2``) and why.

.. code-block:: yaml

    version: 1
    name: mode-choice
    workdir: runs/mode-choice          # relative to the spec file; every output goes here
    cluster: {spec: local, workers: 2} # 'local', a scheduler address or a cluster/*.yaml; workers, memory_limit
    data:
      train: data/train/*.csv          # CSV or Parquet files or globs, local or URLs
      test: data/test/*.csv            # held-out rows for `evaluate` (staged like the training store)
      target: mode
      categorical: [region]            # optional: features, categorical, weights, offset, storage_options
      # instead of train/test, `synthetic: {rows: 200000, test_rows: 50000, seed: 2026}` draws the demo's table
      # incoming: data/incoming/*.csv  # files that arrive over time: each run appends the new ones and refits
    fit: {method: auto, l2: 0.0, tol: 1.0e-8, max_iter: 100, base: null, inference: true}  # any dmlr.fit option
    # fit: {l2_path: [0, 1, 10], folds: 5}  # the penalty chosen by cross-validation, then the fit at the best
    evaluate: {bins: 10}
    report: {format: html}             # html or markdown; bootstrap: {nrep: 200} adds bootstrap standard errors
                                       #   (steps: 1 for the one-step bootstrap: one pass)

See ``pipelines/README.md`` for every field.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

import yaml

from dmlr.errors import InputError
from dmlr.options import MISSING, FitOptions, OptionField, fit_option_fields

__all__ = ["PipelineSpec", "SpecError", "load_pipeline"]

SPEC_VERSION = 1


class SpecError(InputError):
    """A pipeline spec is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class ClusterSection:
    spec: str = "local"
    workers: int | None = None
    memory_limit: str | None = None
    security: str | dict[str, str] | None = None
    """``temporary`` or the certificate files (``tls_ca_file``, ``tls_cert``, ``tls_key``; relative to the spec)."""


@dataclass(frozen=True)
class SyntheticSection:
    rows: int = 200_000
    test_rows: int = 50_000
    seed: int = 2026
    files: int = 4


@dataclass(frozen=True)
class DataSection:
    target: str
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    weights: str | None = None
    offset: tuple[str, ...] = ()
    synthetic: SyntheticSection | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    missing: str = "raise"
    groups: str | None = None
    incoming: tuple[str, ...] = ()
    """Files (globs) that arrive over time: each run appends those not yet in the training store."""
    unseen: str = "raise"
    """Held-out rows with a class or categorical level the training data lack: an error, or left out (counted)."""


@dataclass(frozen=True)
class EvaluateSection:
    bins: int = 10


@dataclass(frozen=True)
class SelectionSection:
    """``fit.l2_path`` and ``fit.folds``: the penalty chosen by cross-validation before the final fit."""

    l2_path: tuple[float, ...] = ()
    folds: int = 5
    seed: int = 0


@dataclass(frozen=True)
class BootstrapSection:
    """``report.bootstrap``: bootstrap standard errors next to the model-based ones."""

    nrep: int = 200
    seed: int = 0
    kind: str = "poisson"
    steps: int | None = None


@dataclass(frozen=True)
class ReportSection:
    format: str = "html"
    margins: bool = False
    bootstrap: BootstrapSection | None = None


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline spec.

    Attributes
    ----------
    path : str
        The spec file.
    name : str
    workdir : str
        Absolute or URL; relative paths in the file are taken from the spec file's folder.
    cluster, data, fit, evaluate, report : sections
    """

    path: str
    name: str
    workdir: str
    cluster: ClusterSection
    data: DataSection
    fit: FitOptions
    evaluate: EvaluateSection
    report: ReportSection
    selection: SelectionSection = SelectionSection()

    def section(self, name: str) -> dict[str, Any]:
        """A section as a plain dict (what the stage input hashes cover)."""
        value: dict[str, Any] = asdict(getattr(self, name))
        return value


_Choice = TypeVar("_Choice", bound=str)


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {message}")

    def mapping(
        self, value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{where}.{key}" if where else str(key), f"unknown field (allowed: {', '.join(allowed)})"
                )
        for key in required:
            if value.get(key) is None:
                raise self.fail(f"{where}.{key}" if where else key, "required field is missing")
        return value

    def typed(self, value: Any, where: str, kind: type | tuple[type, ...], check: Callable[[Any], bool] | None = None,
              need: str = "") -> Any:  # fmt: skip
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        wrong_bool = isinstance(value, bool) and kind is not bool  # YAML's true/false are not numbers here
        if wrong_bool or not isinstance(value, kind) or (check is not None and not check(value)):
            raise self.fail(where, f"expected {need or getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def choice(self, value: Any, where: str, options: tuple[_Choice, ...]) -> _Choice:
        """A string that is one of ``options``."""
        return cast(_Choice, self.typed(value, where, str, lambda v: v in options, f"one of {options}"))

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"expected a string or a list of strings, got {value!r}")
        return tuple(value)


def _resolve(base: str, path: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def load_pipeline(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a pipeline spec.

    Raises
    ------
    SpecError
        Missing file, invalid YAML, an unknown field, a missing required field or a value of the wrong type or
        range; the message names the file and the field.
    """
    path = str(path)
    r = _Reader(path)
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such pipeline spec") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    top = r.mapping(doc, "", ("version", "name", "workdir", "cluster", "data", "fit", "evaluate", "report"),
                    ("version", "name", "data"))  # fmt: skip
    if top["version"] != SPEC_VERSION:
        raise r.fail("version", f"this dmlr reads pipeline spec version {SPEC_VERSION}, got {top['version']!r}")
    name = r.typed(top["name"], "name", str, lambda s: bool(s.strip()), "a non-empty string")
    base = os.path.dirname(os.path.abspath(path))
    workdir = _resolve(base, r.typed(top.get("workdir", f"runs/{name}"), "workdir", str))
    e = r.mapping(top.get("evaluate"), "evaluate", ("bins",))
    evaluate = EvaluateSection(bins=r.typed(e.get("bins", 10), "evaluate.bins", int, lambda v: v >= 1,
                                            "an integer >= 1"))  # fmt: skip
    rp = r.mapping(top.get("report"), "report", ("format", "margins", "bootstrap"))
    report = ReportSection(format=r.choice(rp.get("format", "html"), "report.format", ("html", "markdown")),
                           margins=r.typed(rp.get("margins", False), "report.margins", bool),
                           bootstrap=_bootstrap_section(r, rp.get("bootstrap")))  # fmt: skip
    raw_fit = dict(top.get("fit") or {}) if isinstance(top.get("fit"), dict) else top.get("fit")
    selection = _selection_section(r, raw_fit)
    data, fit = _data_section(r, top["data"], base), _fit_section(r, raw_fit)
    if fit.cov_type == "cluster" and not data.groups:
        raise r.fail("fit.cov_type", "cluster needs cluster ids: name their column in data.groups")
    return PipelineSpec(
        path, name, workdir, _cluster_section(r, top.get("cluster", {}), base), data, fit, evaluate, report, selection,
    )  # fmt: skip


def _selection_section(r: _Reader, fit: Any) -> SelectionSection:
    """``fit.l2_path`` (penalties, cross-validated), ``fit.folds`` and ``fit.cv_seed``, taken out of ``fit`` (the
    rest are fit options)."""
    if not isinstance(fit, dict):
        return SelectionSection()
    raw = fit.pop("l2_path", None)
    folds = r.typed(fit.pop("folds", 5), "fit.folds", int, lambda v: v >= 2, "an integer >= 2")
    seed = r.typed(fit.pop("cv_seed", 0), "fit.cv_seed", int)
    if raw is None:
        return SelectionSection((), folds, seed)
    if not isinstance(raw, list) or not raw:
        raise r.fail("fit.l2_path", f"must be a non-empty list of penalties, got {raw!r}")
    path = tuple(float(r.typed(v, "fit.l2_path", float, lambda x: x >= 0, "numbers >= 0")) for v in raw)
    if len(set(path)) != len(path):
        raise r.fail("fit.l2_path", f"lists a penalty twice: {list(path)}")
    if "l2" in fit:
        raise r.fail("fit.l2", "is chosen by cross-validation when fit.l2_path is given: remove one of them")
    return SelectionSection(path, folds, seed)


def _bootstrap_section(r: _Reader, raw: Any) -> BootstrapSection | None:
    if raw is None or raw is False:
        return None
    b = r.mapping({} if raw is True else raw, "report.bootstrap", ("nrep", "seed", "kind", "steps"))
    steps = b.get("steps")
    return BootstrapSection(
        nrep=r.typed(b.get("nrep", 200), "report.bootstrap.nrep", int, lambda v: v >= 2, "an integer >= 2"),
        seed=r.typed(b.get("seed", 0), "report.bootstrap.seed", int),
        kind=r.choice(b.get("kind", "poisson"), "report.bootstrap.kind", ("poisson", "cluster")),
        steps=None
        if steps is None
        else r.typed(steps, "report.bootstrap.steps", int, lambda v: v >= 1, "an integer >= 1"),
    )


def _cluster_section(r: _Reader, c: Any, base: str) -> ClusterSection:
    if isinstance(c, str):
        c = {"spec": c}
    c = r.mapping(c, "cluster", ("spec", "workers", "memory_limit", "security"))
    spec_value = r.typed(c.get("spec", "local"), "cluster.spec", str)
    if spec_value.endswith((".yaml", ".yml")) and not os.path.isabs(spec_value):
        candidate = _resolve(base, spec_value)
        spec_value = candidate if os.path.exists(candidate) else spec_value
    workers = c.get("workers")
    return ClusterSection(
        spec=spec_value,
        workers=None
        if workers is None
        else r.typed(workers, "cluster.workers", int, lambda v: v >= 1, "an integer >= 1"),
        memory_limit=None if c.get("memory_limit") is None else str(c["memory_limit"]),
        security=_security(r, c.get("security"), base),
    )


def _security(r: _Reader, value: Any, base: str) -> str | dict[str, str] | None:
    """``cluster.security``: ``temporary``, or a mapping of certificate files resolved against the spec's folder."""
    from dmlr.security import TLS_FIELDS

    if value is None or value == "temporary":
        return value
    if isinstance(value, str):
        raise r.fail("cluster.security", f"expected 'temporary' or a mapping of {list(TLS_FIELDS)}, got {value!r}")
    files = r.mapping(value, "cluster.security", TLS_FIELDS, required=("tls_ca_file", "tls_cert"))
    return {k: _resolve(base, r.typed(v, f"cluster.security.{k}", str)) for k, v in files.items() if v is not None}


def _data_section(r: _Reader, raw: Any, base: str) -> DataSection:
    d = r.mapping(raw, "data", ("train", "test", "target", "features", "categorical", "weights", "offset",
                                "synthetic", "storage_options", "missing", "groups", "incoming", "unseen"))  # fmt: skip
    synthetic = None
    if "synthetic" in d:
        s = r.mapping(d["synthetic"], "data.synthetic", ("rows", "test_rows", "seed", "files"))
        synthetic = SyntheticSection(
            **{k: r.typed(v, f"data.synthetic.{k}", int, lambda v: v >= 1, "an integer >= 1") for k, v in s.items()}
        )
        if d.get("train") or d.get("test") or d.get("incoming"):
            raise r.fail("data.synthetic", "give either synthetic or train/test/incoming sources, not both")
        target = r.typed(d.get("target", "mode"), "data.target", str)
    else:
        for key in ("train", "test", "target"):
            if not d.get(key) and not (key == "train" and d.get("incoming")):
                raise r.fail(
                    f"data.{key}",
                    "required field is missing"
                    + {"train": " (or give data.incoming or data.synthetic)", "test": " (or give data.synthetic)"}.get(
                        key, ""
                    ),
                )
        target = r.typed(d["target"], "data.target", str)
    data = DataSection(
        target=target,
        train=tuple(_resolve(base, p) for p in r.strings(d.get("train", []), "data.train")),
        test=tuple(_resolve(base, p) for p in r.strings(d.get("test", []), "data.test")),
        incoming=tuple(_resolve(base, p) for p in r.strings(d.get("incoming", []), "data.incoming")),
        features=None if d.get("features") is None else r.strings(d["features"], "data.features"),
        categorical=r.strings(d.get("categorical", []), "data.categorical"),
        weights=None if d.get("weights") is None else r.typed(d["weights"], "data.weights", str),
        offset=r.strings(d.get("offset", []), "data.offset"),
        synthetic=synthetic,
        storage_options=r.typed(d.get("storage_options") or {}, "data.storage_options", dict),
        missing=r.choice(d.get("missing", "raise"), "data.missing", MISSING),
        groups=None if d.get("groups") is None else r.typed(d["groups"], "data.groups", str),
        unseen=r.choice(d.get("unseen", "raise"), "data.unseen", ("raise", "drop")),
    )
    if synthetic is not None and (data.features or data.weights or data.offset):
        raise r.fail("data.synthetic", "the synthetic table has fixed columns: leave features, weights, offset out")
    if synthetic is not None:
        data = DataSection(**{**asdict(data), "synthetic": synthetic, "categorical": ("region",),
                              "target": "mode"})  # fmt: skip
    return data


def _fit_section(r: _Reader, raw: Any) -> FitOptions:
    """The ``fit`` section: every fit option a spec may set (:func:`~dmlr.options.fit_option_fields`), typed as
    :class:`~dmlr.options.FitOptions` declares it, with its defaults."""
    allowed = {f.name: f for f in fit_option_fields() if f.spec}
    f = r.mapping(raw, "fit", tuple(allowed))
    values = {name: _fit_value(r, allowed[name], value) for name, value in f.items()}
    try:
        return FitOptions.of(values, "the fit section")
    except InputError as exc:
        name = next((n for n in values if str(exc).startswith(n)), "")
        raise r.fail(f"fit.{name}" if name else "fit", str(exc)) from None


def _fit_value(r: _Reader, option: OptionField, value: Any) -> Any:
    """One fit option's value, type-checked (the value itself is checked by :class:`FitOptions`)."""
    where = f"fit.{option.name}"
    if option.choices is not None:
        allowed = option.choices
        return r.typed(value, where, object, lambda v: any(v is c or (v == c and type(v) is type(c)) for c in allowed),
                       f"one of {allowed}")  # fmt: skip
    kind = {"float": float, "int": int, "bool": bool}.get(option.annotation)
    return value if kind is None else r.typed(value, where, kind, option.check, option.values or "")
