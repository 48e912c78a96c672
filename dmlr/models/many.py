"""Several models of the same data in one set of passes: :func:`fit_many` and the machinery
:func:`~dmlr.models.cv.cross_validate` shares with it.

Every model is fitted as :func:`dmlr.fit` fits it (its own first pass, checks, rule, loop and final pass), but the
models' passes are shared (:mod:`dmlr.models.bank`): the data are read once per pass for all of them, so a set of
models costs the passes of its slowest model, plus one when a dask ``y``'s classes must be learnt first.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from dmlr.api import data_token, final_request, fit_passes, prepare
from dmlr.data.inputs import Inputs
from dmlr.data.labels import check_class_count
from dmlr.errors import InputError
from dmlr.fitting.evaluator import FitPasses
from dmlr.fitting.fitter import Fitter
from dmlr.fitting.refit import WarmStart
from dmlr.fitting.results import build_results
from dmlr.fitting.setup import with_classes
from dmlr.models.bank import Weighting, run_bank
from dmlr.options import FitOptions
from dmlr.oracle.statistics import Request
from dmlr.passes.engine import PassEngine
from dmlr.results.hypothesis import ChiSquareTest, lr_test
from dmlr.results.results import MNLogitResults

__all__ = [
    "Member",
    "ModelSet",
    "Shared",
    "checkpoint_under",
    "fit_many",
    "fit_members",
    "refuse_cluster_covariance",
    "shared_data",
    "with_data",
]

SHARED_OPTIONS = frozenset(
    {"base", "fit_intercept", "missing", "cov_type", "weights_type", "persist", "split_every", "max_classes"}
)
"""Options about the data, the same for every model of a bank (passed once, not per model)."""


@dataclass(frozen=True)
class Shared:
    """The data every model of a bank is fitted on.

    Attributes
    ----------
    options : FitOptions
        The shared options (each model may change its loop's: ``l2``, ``method``, ``tol``, ...).
    inputs : Inputs
    passes : FitPasses
        Over every row and column, the classes known.
    cov : str
        The covariance type every model gets.
    final : Request
        What each model's final pass computes.
    storage_options : dict, optional
        fsspec options (of the store and the checkpoints).
    """

    options: FitOptions
    inputs: Inputs
    passes: FitPasses
    cov: str
    final: Request
    storage_options: dict[str, Any] | None = None

    @functools.cached_property
    def token(self) -> str:
        """What identifies the data in the models' checkpoints (computed once: it hashes in-memory data)."""
        return data_token(self.inputs)

    @property
    def feature_names(self) -> list[str]:
        """The data's feature columns (model columns without ``const``)."""
        design = self.passes.design
        return list(design.model_names[int(design.intercept) :])


def shared_data(X: Any, y: Any, fit_args: Mapping[str, Any], options: Mapping[str, Any], where: str) -> Shared:
    """Resolve the data once for a bank of models (``fit_args``: :func:`dmlr.fit`'s data arguments, ``weights``,
    ``offset``, ``groups``, ``feature_names``, ``storage_options``, ``client``): the classes learnt by one pass when
    a dask ``y``'s are not known."""
    opts = FitOptions.of(dict(options), where)
    args = {k: fit_args.get(k) for k in ("weights", "offset", "groups", "feature_names", "storage_options", "client")}
    client, inputs, design, cov = prepare(X, y, **args, opts=opts)
    passes = with_classes(fit_passes(design, inputs, opts, client))
    assert passes.design.coding is not None
    if inputs.store is None:
        check_class_count(passes.design.coding.classes, "y", opts.max_classes)
    return Shared(opts, inputs, passes, cov, final_request(opts, cov), args["storage_options"])


def refuse_cluster_covariance(shared: Shared, where: str) -> None:
    """A bank of fits computes no cluster-robust covariance (its meat takes an exchange between workers per model)."""
    if shared.cov == "cluster":
        raise InputError(
            f"{where}: cov_type='cluster' is not available for a bank of models (its meat takes an exchange between "
            "workers per model); fit the chosen model with dmlr.fit(..., groups=...)"
        )


@dataclass(frozen=True)
class Member:
    """One model of a bank.

    Attributes
    ----------
    options : FitOptions
    features : tuple of str, optional
        The data columns the model uses (``None``: all), in the data's order.
    weighting : callable, optional
        Its row weights (``None``: every row, with the data's weights).
    checkpoint : str, optional
        Its own checkpoint directory: its fit writes its state there after every iteration and, run again, resumes
        from it (:class:`~dmlr.checkpoint.Checkpointer`).
    tag : str
        What, besides the data and options, identifies the model in its checkpoints' fingerprint (its fold).
    warm : WarmStart, optional
        Where its fit starts (``start_params``; ``None``: where :func:`dmlr.fit` starts).
    """

    options: FitOptions
    features: tuple[str, ...] | None = None
    weighting: Weighting | None = None
    checkpoint: str | None = None
    tag: str = ""
    warm: WarmStart | None = None


def fit_members(shared: Shared, members: Sequence[Member]) -> list[tuple[MNLogitResults, FitPasses]]:
    """Fit every member in lockstep over the shared passes: each result with the passes its fit ended with (its
    columns), in the members' order."""
    jobs = [lambda engine, m=m: fit_member(shared, m, engine) for m in members]
    return run_bank(shared.passes.engine, jobs, [m.weighting for m in members])


def fit_member(shared: Shared, member: Member, engine: Any) -> tuple[MNLogitResults, FitPasses]:
    """One member's fit on ``engine`` (its member engine, or what stands in for it)."""
    passes = dataclasses.replace(shared.passes, engine=cast(PassEngine, engine))  # a stand-in with its interface
    design = passes.design
    if member.features is not None:
        names = design.model_names
        passes = passes.without_columns(
            [j for j in range(int(design.intercept), len(names)) if names[j] not in member.features]
        )
    token = f"{shared.token} {member.tag} {member.features}" if member.checkpoint is not None else ""
    fitter = Fitter(
        member.options,
        None,
        member.checkpoint,
        token,
        shared.storage_options,
        shared.final,
        check_classes=False,
        warm=member.warm,
    )
    run = fitter.run(passes)
    used = passes.design.model_names[int(passes.design.intercept) :]
    # a weighted model's first pass (second-order statistics) left out the rows its weighting gives 0: its row count
    # is the model's rows (a fold's training rows), what nobs and the covariance corrections count
    n_rows = run.outcome.first_stats.n_rows if member.weighting is not None else None
    res = build_results(run, shared.inputs, member.options, shared.cov, tuple(used), n_rows)
    return res, run.passes


def checkpoint_under(directory: str | None, name: str) -> str | None:
    """A model's checkpoint subdirectory (``None`` without checkpoints)."""
    return None if directory is None else f"{str(directory).rstrip('/')}/{name}"


def member_options(shared: Shared, model: Mapping[str, Any], where: str) -> FitOptions:
    """A model's options: the shared ones with its own (never those of :data:`SHARED_OPTIONS`)."""
    fixed = sorted(SHARED_OPTIONS & set(model))
    if fixed:
        raise InputError(f"{where}: {', '.join(fixed)} must be the same for every model: pass it once, not per model")
    return FitOptions.of({**dataclasses.asdict(shared.options), **model}, where)


def check_features(shared: Shared, features: Sequence[str], where: str) -> tuple[str, ...]:
    """The model's columns in the data's order, refusing a name the data do not have."""
    known = shared.feature_names
    unknown = [f for f in features if f not in known]
    if unknown:
        raise InputError(f"{where} names columns the data do not have: {unknown} (columns: {known})")
    if not features and not shared.passes.design.intercept:
        raise InputError(f"{where} has no column and no intercept")
    return tuple(f for f in known if f in set(features))


@dataclass(frozen=True)
class ModelSet:
    """The results of :func:`fit_many`: a sequence of :class:`~dmlr.results.results.MNLogitResults`, one per model
    in the order given, each equal to :func:`dmlr.fit` with that model's options.

    Attributes
    ----------
    models : tuple of MNLogitResults
    specs : tuple of dict
        Each model's options as given.
    n_passes : int
        Passes over the data for the whole set.
    """

    models: tuple[MNLogitResults, ...]
    specs: tuple[dict[str, Any], ...]
    n_passes: int

    def __getitem__(self, i: Any) -> Any:
        return self.models[i]

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[MNLogitResults]:
        return iter(self.models)

    def table(self) -> pd.DataFrame:
        """One row per model: its columns, ``l2``, ``nobs``, ``df_model``, ``llf``, ``aic``, ``bic``, ``converged``,
        ``n_iter``, ``n_passes`` (AIC and BIC as statsmodels defines them; compare models of the same rows)."""
        columns = ("l2", "nobs", "df_model", "llf", "aic", "bic", "converged", "n_iter", "n_passes")
        rows = [
            {"features": ", ".join(r.feature_names[int(r.intercept) :])} | {c: getattr(r, c) for c in columns}
            for r in self.models
        ]
        return pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="model"))

    def lr_test(self, i: int, j: int) -> ChiSquareTest:
        """Likelihood-ratio test of model ``i`` (restricted) against model ``j`` (its columns a superset):
        :func:`dmlr.lr_test`."""
        return lr_test(self.models[i], self.models[j])


Sequence.register(ModelSet)  # a sequence of results (registered: no inherited count/index to document)


def fit_many(
    X: Any,
    y: Any = None,
    *,
    models: Sequence[Mapping[str, Any]],
    weights: Any = None,
    offset: Any = None,
    groups: Any = None,
    feature_names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    checkpoint: str | None = None,
    **options: Any,
) -> ModelSet:
    """Fit several models of the same data, sharing every pass over it.

    Parameters
    ----------
    X, y, weights, offset, groups, feature_names, storage_options, client
        As for :func:`dmlr.fit` (a store, arrays, DataFrames or dask arrays).
    models : sequence of dict
        One dict per model: ``"features"`` (the data columns it uses, default all; kept in the data's order) and
        any loop option of :func:`dmlr.fit` (``l2``, ``method``, ``tol``, ``max_iter``, ...) overriding
        ``options``. Options about the data (``base``, ``fit_intercept``, ``missing``, ``cov_type``,
        ``weights_type``, ``persist``, ``split_every``, ``max_classes``) are shared: pass them once.
    checkpoint : str, optional
        Directory (local or fsspec URL) of checkpoints: each model writes its state into ``model-<i>`` after every
        iteration, and the same call after a crash resumes every model where it was.
    **options
        Fit options shared by every model.

    Returns
    -------
    ModelSet
        A sequence of results, each equal to ``dmlr.fit`` with that model's options, and ``.table()``,
        ``.lr_test(i, j)``, ``.n_passes``.

    Raises
    ------
    InputError
        No model, a model naming a column the data do not have, a per-model data option, or what :func:`dmlr.fit`
        refuses.

    Examples
    --------
    >>> import dmlr
    >>> from dmlr.synthetic import make_mnlogit
    >>> data = make_mnlogit(2000, 3, 3, seed=0)
    >>> ms = dmlr.fit_many(data.X, data.y, models=[{"features": ["x0"]}, {}], feature_names=["x0", "x1", "x2"])
    >>> ms.lr_test(0, 1).df
    4
    """
    if not models:
        raise InputError("fit_many needs at least one model")
    args = {"weights": weights, "offset": offset, "groups": groups, "feature_names": feature_names}
    shared = shared_data(X, y, args | {"storage_options": storage_options, "client": client}, options, "fit_many")
    refuse_cluster_covariance(shared, "fit_many")
    members = []
    for i, model in enumerate(models):
        where = f"fit_many: model {i}"
        spec = dict(model)
        features = spec.pop("features", None)
        chosen = None if features is None else check_features(shared, list(features), where)
        options_i = member_options(shared, spec, where)
        members.append(
            Member(options_i, chosen, checkpoint=checkpoint_under(checkpoint, f"model-{i}"), tag=f"model {i}")
        )
    fitted = fit_members(shared, members)
    results = tuple(with_data(shared, res, m.features is None) for (res, _), m in zip(fitted, members, strict=True))
    return ModelSet(results, tuple(dict(m) for m in models), shared.passes.engine.count)


def with_data(shared: Shared, res: MNLogitResults, every_column: bool) -> MNLogitResults:
    """In-memory data stay reachable from a result of every row and column (as :func:`dmlr.fit`'s)."""
    inputs = shared.inputs
    if inputs.store is not None or not every_column:
        return res
    return dataclasses.replace(res, fitted_data=inputs.X, fitted_labels=inputs.y)
