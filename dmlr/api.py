"""``dmlr.fit``: from user data to :class:`~dmlr.results.results.MNLogitResults`.

The recipe: options (:class:`~dmlr.options.FitOptions`, validated before any data is read) -> inputs
(:mod:`dmlr.data.inputs`: a store opened, missing values handled) -> design (:func:`~dmlr.data.design.build_design`:
no partition read) -> the pass engine (:mod:`dmlr.passes.engine`; in-memory input shipped to the workers once,
lazy input held in their memory when ``persist``) -> the fit (:mod:`dmlr.fitting.fitter`: first pass or checkpoint,
checks, rule, loop) -> results (:mod:`dmlr.fitting.results`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from dmlr.data.design import Design
from dmlr.data.inputs import Inputs
from dmlr.fitting.evaluator import FitPasses
from dmlr.fitting.fitter import Fitter
from dmlr.fitting.refit import warm_start_of
from dmlr.fitting.results import build_results
from dmlr.options import FitOptions, fit_option_fields
from dmlr.oracle.statistics import Request
from dmlr.passes.counts import partition_counts
from dmlr.passes.engine import PassEngine
from dmlr.passes.shipping import (
    client_threads,
    current_client,
    fits_in_cluster_memory,
    scatter_rows,
    ship_in_memory,
)
from dmlr.results.results import MNLogitResults

WIDE_PARAMETERS = 2_000
"""Parameters from which inverting the information is announced as a phase (seconds at ``(K - 1) d`` in the
thousands)."""

__all__ = ["data_token", "final_request", "fit", "fit_and_save", "fit_passes", "prepare", "scatter_rows"]


def fit(
    X: Any,
    y: Any = None,
    *,
    weights: Any = None,
    offset: Any = None,
    groups: Any = None,
    feature_names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    start_params: Any = None,
    **options: Any,
) -> MNLogitResults:
    """Fit a multinomial logit by maximum likelihood, with the information at the optimum for inference.

        Parameters
        ----------
        X : ndarray, pandas.DataFrame, dask.array.Array, shape (n, p), or a store
            Features, chunked by rows when a dask array (each partition is one task's share of every pass). A
            DataFrame's ``category`` columns are one-hot encoded against their first category (the encoding is kept,
            so ``predict_proba`` takes the same raw DataFrame); other columns must be numeric or boolean. A path or URL
            of a Zarr store made by :func:`dmlr.stage` (or a :class:`~dmlr.data.store.StoreData`) fits the store:
            ``y``, weights, offset and feature names then come from it and chunks are streamed from it on every pass.
        y : array-like or dask.array.Array, shape (n,)
            Class labels of any sortable dtype (ints, strings); omitted when ``X`` is a store. The classes of a dask
            ``y`` are learnt by the fit's first pass.
        weights : array-like, shape (n,), optional
            Non-negative frequency weights (probability weights with ``weights_type="probability"``).
        offset : array-like, shape (n, K - 1), optional
            Added to the linear predictors of the non-base classes (columns in sorted label order, base removed).
        groups : array-like or dask array, shape (n,), optional
            Cluster ids (integers or strings) for ``cov_type="cluster"``; for a store, default its staged ``groups``.
        feature_names : sequence of str, optional
            Names of the ``p`` columns of ``X``.
        storage_options : dict, optional
            fsspec options for a store on an object store (endpoint, credentials).
        client : distributed.Client, optional
            Cluster to run on; default the current client if one exists, else local threads.
        callback : callable, optional
            Called with every history record as the fit progresses (progress reporting).
        checkpoint : str or path, optional
            Directory (local or fsspec URL) for checkpoints: the loop's state is written there atomically after every
            iteration, and a fit started with the same data and options resumes from the newest valid one (a
            corrupt newest file falls back to the previous one) and ends with the coefficients an uninterrupted fit
            gives. ``callback`` also receives the checkpoint events (dicts with an ``"event"`` key: ``"resume"``,
            ``"checkpoint_invalid"``, ``"checkpoint_stale"``). The files stay after the fit; remove them with
            :meth:`dmlr.checkpoint.Checkpointer.clear` once the result is saved.
        start_params : array-like or MNLogitResults, optional
            Where the fit starts: coefficients of shape ``(d, K - 1)`` (rows in model order, ``const`` first; or
            flat, class by class, as statsmodels' ``start_params``), or a previous result, whose classes, base and
            columns must be this fit's. A previous result of the same store before rows were appended to it
            (``dmlr stage --append``) refits incrementally: two passes over the appended rows only give the
            statistics of all rows at the previous optimum, then Newton's full passes reach the optimum of all rows
            (:mod:`dmlr.fitting.refit`). The result equals a fit from scratch.
    {options}
        Returns
        -------
        MNLogitResults

        Raises
        ------
        InputError
            Invalid data or arguments (the message names the column, partition or class; an unknown option is named
            with the closest known one).
        NumericalError
            The fit produced non-finite values.
    """
    opts = FitOptions.of(options)
    client, inputs, design, cov = prepare(X, y, weights, offset, groups, feature_names, storage_options, client, opts)
    token = data_token(inputs) if checkpoint is not None else ""
    final = final_request(opts, cov)
    warm, new_from = warm_start_of(start_params, inputs.store)
    if warm is not None and new_from is not None and new_from < design.n_rows:
        new = inputs.rows_from(new_from)
        new_design = new.design(opts.base, opts.fit_intercept, None if client is None else client_threads(client))
        warm = dataclasses.replace(warm, new_passes=fit_passes(new_design, new, opts, client))
    fitter = Fitter(opts, callback, checkpoint, token, storage_options, final, inputs.store is None, warm)
    run = fitter.run(fit_passes(design, inputs, opts, client))
    if run.outcome.final.stats.information is not None and run.outcome.final.coef.size >= WIDE_PARAMETERS:
        fitter.phase(f"inverting the {run.outcome.final.coef.size:,}-parameter information for the covariance")
    res = build_results(run, inputs, opts, cov, design.model_names[int(design.intercept) :])
    # in-memory data stay reachable from the result, as statsmodels' do (get_margeff() without data)
    return res if inputs.store is not None else dataclasses.replace(res, fitted_data=inputs.X, fitted_labels=inputs.y)


def prepare(
    X: Any,
    y: Any,
    weights: Any,
    offset: Any,
    groups: Any,
    feature_names: Sequence[str] | None,
    storage_options: dict[str, Any] | None,
    client: Any,
    opts: FitOptions,
) -> tuple[Any, Inputs, Design, str]:
    """What every fit starts from (arguments as :func:`dmlr.fit`'s): the client (``None``: local threads), the resolved
    inputs, the design (no partition read) and the covariance type."""
    client = client if client is not None else current_client()
    inputs = Inputs.resolve(
        X, y, weights, offset, feature_names, storage_options, opts.missing, groups, opts.cov_type,
        count=lambda rows: partition_counts(rows, client, marked=True),
    )  # fmt: skip
    cov = opts.covariance(has_weights=inputs.weights is not None, has_groups=inputs.groups is not None)
    design = inputs.design(opts.base, opts.fit_intercept, None if client is None else client_threads(client))
    return client, inputs, design, cov


def final_request(opts: FitOptions, cov: str) -> Request:
    """What a fit's pass at the optimum computes: the information, and the meat for HC0/HC1 covariances."""
    probability = opts.weights_type == "probability"
    return Request(information=True, meat=cov in ("HC0", "HC1"), probability_weights=probability)


def data_token(inputs: Inputs) -> str:
    """What identifies the data in a checkpoint (before shipping: scattered blocks have run-specific keys)."""
    if inputs.store is not None:
        return inputs.store.checksum
    from dask.base import tokenize

    return str(tokenize(inputs.X, inputs.y, inputs.weights, inputs.offset, inputs.groups))


def fit_passes(design: Design, inputs: Inputs, options: FitOptions, client: Any) -> FitPasses:
    """The fit's passes: in-memory input shipped to the workers once (with a function that ships it again if they
    die), lazy input held in the workers' memory when ``persist`` says so."""
    rows, reship = design.rows, None
    if client is not None:
        local = rows
        rows = ship_in_memory(local, client, inputs.lazy)
        if rows is not local:

            def reship() -> Any:
                return ship_in_memory(local, client, inputs.lazy)

    persist = options.persist
    hold = client is not None and (persist is True or (persist == "auto" and fits_in_cluster_memory(rows, client)))
    engine = PassEngine(
        rows, client, options.split_every, hold=hold, transform=design.transform, reship=reship,
    )  # fmt: skip
    return FitPasses(engine, design.with_rows(rows))


def fit_and_save(
    X: Any, out: str, *, overwrite: bool = False, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> MNLogitResults:
    """:func:`dmlr.fit`, then :func:`dmlr.save` the result to ``out``, for batch callers (the CLI, the pipeline) that
    report non-convergence and separation through exit codes: the result is written either way, and
    ``ConvergenceWarning``/``PerfectSeparationWarning`` are not issued (``converged`` and ``message`` say it).

    Parameters
    ----------
    X : str, StoreData or array-like
        As for :func:`dmlr.fit`.
    out : str
        Result directory (local or fsspec URL); checked before the fit starts.
    overwrite : bool
        Replace an existing ``out``; without it an existing ``out`` is refused before any work.
    storage_options : dict, optional
        fsspec options for the store and the result.
    **kwargs
        Every other argument of :func:`dmlr.fit`.
    """
    from dmlr.errors import ConvergenceWarning, PerfectSeparationWarning
    from dmlr.options import check_output
    from dmlr.results.io import save

    check_output(out, overwrite, storage_options, "result")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        res = fit(X, storage_options=storage_options, **kwargs)
    save(res, out, overwrite=overwrite, storage_options=storage_options)
    return res


def options_docstring(indent: str = "    ") -> str:
    """The numpydoc entries of every fit option (type, default, allowed values, help), for docstrings: each name at
    ``indent``, its description four spaces further."""
    import textwrap

    lines = []
    for f in fit_option_fields():
        kind = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in f.choices) if f.choices else f.annotation
        kind = "{" + kind + "}" if f.choices else kind
        lines.append(f"{indent}{f.name} : {kind}, default {f.default!r}")
        body = indent + "    "
        lines += textwrap.wrap(f.help, 120 - len(body), initial_indent=body, subsequent_indent=body)
    return "\n".join(lines) + "\n"


def options_signature(func: Callable[..., Any], *, exclude: Sequence[str] = (), **defaults: Any) -> inspect.Signature:
    """``func``'s signature with its ``**options`` replaced by one keyword per fit option (FitOptions' defaults,
    ``defaults`` overriding some), so ``help()`` and IDEs show them."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for f in fit_option_fields():
        if f.name in exclude or f.name in sig.parameters:
            continue
        default = defaults.get(f.name, f.default)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.annotation)
        )
    return sig.replace(parameters=params)


fit.__signature__ = options_signature(fit)  # type: ignore[attr-defined]
fit.__doc__ = (fit.__doc__ or "").replace("    {options}\n", options_docstring(" " * 8))
