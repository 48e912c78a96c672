"""``dmlr.fit``: from user data to :class:`~dmlr.results.results.MNLogitResults`."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.checkpoint import Checkpointer, fingerprint
from dmlr.data.blocks import aligned, count_kept, kept_rows
from dmlr.data.design import Design, build_design, default_row_chunk
from dmlr.data.encoding import FeatureEncoding, drop_missing
from dmlr.data.store import StoreData, open_store
from dmlr.diagnostics import DependentColumn, constant_columns, dependent_columns
from dmlr.driver import FitOutcome, Start, begin, check_weights_total, null_loglik, optimize
from dmlr.errors import CollinearityError, DroppedColumnsWarning, InputError
from dmlr.options import ClusterCorrection, Collinear, CovType, FitOptions, Missing, Separation, WeightsType
from dmlr.oracle.clusters import check_groups
from dmlr.oracle.statistics import BOUND_SETUP, WITH_INFORMATION, Request, Statistics
from dmlr.passes import DataPasses
from dmlr.passes.clusters import cluster_meat
from dmlr.results.covariance import inverse_information
from dmlr.results.results import MNLogitResults
from dmlr.results.robust import correction, sandwich
from dmlr.steps import Objective
from dmlr.steps.cost import (
    CLUSTER_OVERHEAD,
    LOCAL_OVERHEAD,
    MIN_SAMPLE_ROWS,
    Choice,
    PassModel,
    choose_by_cost,
    gemm_rate,
)
from dmlr.steps.newton import NEWTON_FIRST
from dmlr.steps.registry import make_rule

logger = logging.getLogger("dmlr")

__all__ = ["fit", "fit_and_save", "scatter_rows"]


def _current_client() -> Any:
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _client_threads(client: Any) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def fit(
    X: Any,
    y: Any = None,
    *,
    method: str = "auto",
    base: Any = None,
    weights: Any = None,
    offset: Any = None,
    l2: float = 0.0,
    fit_intercept: bool = True,
    feature_names: Sequence[str] | None = None,
    tol: float = 1e-8,
    max_iter: int = 100,
    split_every: int = 8,
    inference: bool = True,
    client: Any = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    persist: bool | Literal["auto"] = "auto",
    storage_options: dict[str, Any] | None = None,
    separation: Separation = "raise",
    collinear: Collinear = "raise",
    checkpoint: str | os.PathLike[str] | None = None,
    missing: Missing = "raise",
    cov_type: CovType | None = None,
    groups: Any = None,
    weights_type: WeightsType = "frequency",
    cluster_correction: ClusterCorrection = "statsmodels",
) -> MNLogitResults:
    """Fit a multinomial logit by maximum likelihood, with the information at the optimum for inference.

    Parameters
    ----------
    X : ndarray, pandas.DataFrame, dask.array.Array, shape (n, p), or a store
        Features, chunked by rows when a dask array (each partition is one task of every pass). A DataFrame's
        ``category`` columns are one-hot encoded against their first category (the encoding is kept, so
        ``predict_proba`` takes the same raw DataFrame); other columns must be numeric or boolean. A path or URL of
        a Zarr store made by :func:`dmlr.stage` (or a :class:`~dmlr.data.store.StoreData`) fits the store: ``y``,
        weights, offset and feature names then come from it and chunks are streamed from it on every pass.
    y : array-like or dask.array.Array, shape (n,)
        Class labels of any sortable dtype (ints, strings); omitted when ``X`` is a store.
    method : {"auto", "newton", "bohning", "lbfgs"} or a registered rule's name
        ``"newton"``: exact information every iteration (one pass each) with step halving.
        ``"bohning"``: Böhning's fixed bound (Gram gathered on the first pass, one ``d x d`` Cholesky), one
        score pass per iteration, monotone. ``"lbfgs"``: quasi-Newton preconditioned by
        ``(diag(pi) - pi pi^T) kron X^T V X`` (``pi`` the class shares) with the bound step as safeguard, each step
        one score pass, then one information pass for inference. ``"auto"``: Newton when the information pass is
        cheap, else ``"lbfgs"``. Other rules can be registered (:func:`dmlr.steps.register_rule`).
    base : object, optional
        Reference class (coefficients fixed at 0); default the smallest label.
    weights : array-like, shape (n,), optional
        Non-negative frequency weights.
    offset : array-like, shape (n, K - 1), optional
        Added to the linear predictors of the non-base classes (columns in sorted label order, base removed).
    l2 : float
        Ridge penalty ``l2/2 * ||W||^2`` (intercept not penalized).
    fit_intercept : bool
        Prepend a constant column named ``"const"``.
    feature_names : sequence of str, optional
        Names of the ``p`` columns of ``X``.
    tol : float
        Stop when ``max |score| / nobs <= tol`` or (Newton) ``sqrt(decrement / nobs) <= tol``.
    max_iter : int
        Maximum number of steps.
    split_every : int
        Fan-in of the tree reduction of the per-partition statistics.
    inference : bool
        Compute the information at the optimum (an extra pass for bound-based rules). ``False`` skips it;
        ``bse`` and everything derived then raise :class:`~dmlr.errors.InferenceUnavailableError`.
    client : distributed.Client, optional
        Cluster to run on; default the current client if one exists, else dask's threaded scheduler.
    callback : callable, optional
        Called with every history record as the fit progresses (progress reporting).
    persist : bool or "auto"
        Keep lazily loaded data (a store, a dask array) in the workers' memory for the whole fit instead of
        reading it on every pass. ``"auto"`` persists on a distributed client when the data take at most half of
        the workers' total memory limit; in-memory NumPy/pandas inputs are always shipped to the workers once.
    storage_options : dict, optional
        fsspec options for a store on an object store (endpoint, credentials).
    separation : {"raise", "warn"}
        When some classes are (quasi-)completely separated the MLE does not exist: ``"raise"`` a
        :class:`~dmlr.errors.PerfectSeparationError` naming the classes, or ``"warn"`` and return the (finite)
        coefficients where the fit stopped with ``converged=False``. With ``l2 > 0`` the optimum always exists.
    collinear : {"raise", "drop", "keep"}
        Constant, duplicate or collinear columns (without ``l2``): ``"raise"`` a
        :class:`~dmlr.errors.CollinearityError` naming them, ``"drop"`` them (each is dropped after the earlier
        columns it depends on; the result equals the fit without them and lists them in ``dropped_features``), or
        ``"keep"`` them (their standard errors are reported as ``inf``).
    checkpoint : str or path, optional
        Directory (local or fsspec URL) for checkpoints: the loop's state is written there atomically after every
        iteration, and a fit started with the same data and options resumes from the newest valid one (a
        corrupt newest file falls back to the previous one) and ends with the coefficients an uninterrupted fit
        gives. ``callback`` also receives the checkpoint events (dicts with an ``"event"`` key: ``"resume"``,
        ``"checkpoint_invalid"``, ``"checkpoint_stale"``). The files stay after the fit; remove them with
        :meth:`dmlr.checkpoint.Checkpointer.clear` once the result is saved.
    missing : {"raise", "drop"}
        A row with a missing value in ``X``, ``y``, ``weights`` or ``offset`` (NaN, None, pandas NA): an
        :class:`~dmlr.errors.InputError` naming the column and the row, or the row is dropped; the count dropped
        is ``n_missing`` of the result (and in the summary). A store has no missing values (see ``dmlr.stage``).
    cov_type : {"nonrobust", "HC0", "HC1", "cluster"}, optional
        The coefficients' covariance (``bse``, ``pvalues``, ``conf_int``, tests follow it). ``"nonrobust"``: the
        inverse information. ``"HC0"``: the sandwich ``I^-1 M I^-1``, ``M`` the sum of the rows' score outer products
        (statsmodels' HC0); ``"HC1"``: times ``n/(n-1)`` (Stata's ``vce(robust)``); both come from the fit's own
        final pass. ``"cluster"``: ``M`` sums the outer products of each cluster's summed scores (one more pass;
        clusters may span partitions). Default: ``"cluster"`` with ``groups``, ``"HC1"`` with probability weights,
        else ``"nonrobust"``.
    groups : array-like or dask array, shape (n,), optional
        Cluster ids (integers or strings) for ``cov_type="cluster"``; for a store, default its staged ``groups``.
    weights_type : {"frequency", "probability"}
        ``"frequency"``: a weight counts its row that many times (every covariance equals the one of repeated rows).
        ``"probability"``: inverse sampling probabilities: the same coefficients, ``nobs`` counts rows, ``llf`` is
        a pseudo-log-likelihood, the covariance must be robust (default ``"HC1"``) and likelihood-ratio tests are
        refused.
    cluster_correction : {"statsmodels", "stata"}
        Small-sample factor of cluster-robust covariances: ``G/(G-1) (n-1)/(n-k)`` as statsmodels, or ``G/(G-1)``
        as Stata. p-values use the normal distribution either way (as statsmodels); for Stata's ``G - 1`` degrees
        of freedom use ``scipy.stats.t.sf(abs(res.tvalues), res.n_clusters - 1) * 2``.

    Returns
    -------
    MNLogitResults

    Raises
    ------
    InputError
        Invalid data or arguments (the message names the column, partition or class).
    NumericalError
        The fit produced non-finite values.
    """
    options = FitOptions(
        method=method, l2=l2, fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, split_every=split_every,
        inference=inference, persist=persist, separation=separation, collinear=collinear, missing=missing,
        cov_type=cov_type, weights_type=weights_type, cluster_correction=cluster_correction,
    )  # fmt: skip
    client = client if client is not None else _current_client()
    data = _Inputs.resolve(X, y, weights, offset, feature_names, storage_options, options.missing, groups,
                           options.cov_type)  # fmt: skip
    cov = options.covariance(has_weights=data.weights is not None, has_groups=data.groups is not None)
    design = data.design(base, fit_intercept, client)
    data_token = None
    if checkpoint is not None:  # before shipping: scattered blocks have run-specific keys
        from dask.base import tokenize

        data_token = (
            data.store.checksum if data.store is not None else tokenize(data.X, data.y, data.weights, data.offset)
        )
    design, reship, source = _to_cluster(design, data, options, client)
    input_features = design.model_names[int(design.intercept) :]
    probability = options.weights_type == "probability"
    final = Request(information=True, meat=cov in ("HC0", "HC1"), probability_weights=probability)
    fitter = _Fitter(options, client, reship, callback, checkpoint, str(data_token), storage_options, final, source)
    passes, objective, outcome, dropped = fitter.run(design)
    llnull = null_loglik(passes, outcome.final.stats.class_weights, has_offset=design.offset is not None)
    res = _results(passes.design, outcome, objective, llnull, data.y, data.info(), dropped, input_features)
    nobs = float(res.n_rows) if probability else res.nobs
    res = dataclasses.replace(res, n_missing=data.n_missing, nobs=nobs, weights_type=options.weights_type)
    if cov == "nonrobust" or res.covariance is None:  # without inference, the type asked for is still recorded
        return dataclasses.replace(res, cov_type=cov)
    groups_lazy = None if data.groups is None else _groups_array(data.groups, passes.design, client)
    return _robust(res, passes.design, outcome.final.stats, cov, groups_lazy, options.cluster_correction, client)


def _groups_array(groups: Any, design: Design, client: Any) -> da.Array:
    """Cluster ids as a dask array with the design's row chunks (shipped to the workers once for in-memory ids)."""
    if isinstance(groups, da.Array):
        lazy = groups.compute_chunk_sizes() if any(math.isnan(c) for c in groups.chunks[0]) else groups
        if lazy.shape[0] != design.n_rows:
            raise InputError(f"groups has {lazy.shape[0]} rows but X has {design.n_rows}")
        return lazy.rechunk((design.x.chunks[0],))
    values = np.asarray(groups)
    if values.ndim != 1 or values.shape[0] != design.n_rows:
        raise InputError(f"groups must have shape ({design.n_rows},); got {values.shape}")
    check_groups(values)
    lazy = da.from_array(values, chunks=(design.x.chunks[0],))
    return _scatter_rows(lazy, client) if client is not None and values.dtype.kind != "O" else lazy


def _robust(
    res: MNLogitResults,
    design: Design,
    stats: Statistics,
    cov: str,
    groups: da.Array | None,
    cluster_correction: str,
    client: Any,
) -> MNLogitResults:
    """The results with a robust covariance: the sandwich of the inverse information (the model-based covariance)
    and the meat of the final pass (HC0, HC1) or of one cluster pass."""
    bread = res.covariance
    assert bread is not None
    n_clusters = None
    if cov == "cluster":
        assert groups is not None
        cm = cluster_meat(design, res.coef, groups, client)
        if cm.n_clusters < 2:
            raise InputError(
                f"groups has {cm.n_clusters} distinct cluster id(s): cluster-robust errors need at least 2"
            )
        meat, n_clusters = cm.meat, cm.n_clusters
    else:
        meat = stats.full_meat()
    factor = correction(cov, res.nobs, res.n_params, n_clusters or 0, cluster_correction)
    return dataclasses.replace(
        res, covariance=sandwich(bread, meat, factor), cov_type=cov, n_clusters=n_clusters,
        cluster_correction=cluster_correction if cov == "cluster" else None,
    )  # fmt: skip


def fit_and_save(
    X: Any, out: str, *, overwrite: bool = False, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> MNLogitResults:
    """:func:`fit`, then :func:`dmlr.save` the result to ``out``, for batch callers (the CLI, the pipeline) that
    report non-convergence and separation through exit codes: the result is written either way, and
    ``ConvergenceWarning``/``PerfectSeparationWarning`` are not issued (``converged`` and ``message`` say it).

    Parameters
    ----------
    X : str, StoreData or array-like
        As for :func:`fit`.
    out : str
        Result directory (local or fsspec URL); checked before the fit starts.
    overwrite : bool
        Replace an existing ``out``; without it an existing ``out`` is refused before any work.
    storage_options : dict, optional
        fsspec options for the store and the result.
    **kwargs
        Every other argument of :func:`fit`.
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


@dataclass
class _Inputs:
    """The user's data, with a store opened into its arrays."""

    X: Any
    y: Any
    weights: Any
    offset: Any
    feature_names: Sequence[str] | None
    store: StoreData | None = None
    encoding: FeatureEncoding | None = None
    n_missing: int = 0
    groups: Any = None

    @classmethod
    def resolve(
        cls,
        X: Any,
        y: Any,
        weights: Any,
        offset: Any,
        feature_names: Sequence[str] | None,
        storage_options: dict[str, Any] | None,
        missing: str = "raise",
        groups: Any = None,
        cov_type: str | None = None,
    ) -> _Inputs:
        if not isinstance(X, (str, os.PathLike, StoreData)):
            if y is None:
                raise InputError("y is required unless X is a store")
            return _in_memory(X, y, weights, offset, feature_names, missing, groups)
        store = open_store(X if isinstance(X, StoreData) else str(X), storage_options=storage_options)
        if y is not None:
            raise InputError("y must not be given when X is a store: the store holds the labels")
        if feature_names is not None:
            raise InputError("feature_names must not be given when X is a store: the store names its columns")
        weights = store.weights if weights is None else weights
        offset = store.offset if offset is None else offset
        if groups is None and cov_type == "cluster":
            if store.groups is None:
                raise InputError(
                    f"{store.url} has no cluster ids: stage it with --groups COL (groups='COL'), or pass groups="
                )
            groups = store.groups
        return cls(store.X, store.y, weights, offset, store.feature_names, store, groups=groups)

    def design(self, base: Any, fit_intercept: bool, client: Any) -> Design:
        row_chunk = None
        if client is not None and not isinstance(self.X, da.Array):
            shape = np.shape(self.X)
            if len(shape) == 2:
                row_chunk = default_row_chunk(shape[0], shape[1], _client_threads(client))
        return build_design(
            self.X, self.y, base=base, weights=self.weights, offset=self.offset, fit_intercept=fit_intercept,
            feature_names=self.feature_names, row_chunk=row_chunk,
            y_classes=None if self.store is None else self.store.classes,
        )  # fmt: skip

    def info(self) -> dict[str, Any] | None:
        """What the results record about a store or a DataFrame's encoding (``None`` for arrays)."""
        if self.store is None:
            return None if self.encoding is None else {"encoding": self.encoding.to_json()}
        meta = self.store.metadata
        return {
            "store": self.store.url,
            "store_checksum": self.store.checksum,
            "target": meta["target"],
            "encoding": meta["encoding"],
        }


def _in_memory(
    X: Any, y: Any, weights: Any, offset: Any, feature_names: Sequence[str] | None, missing: str, groups: Any = None
) -> _Inputs:
    """Arrays and DataFrames: the missing-value policy applied to all inputs, a DataFrame encoded by name."""
    if isinstance(X, dd.DataFrame):
        raise InputError(
            "X is a dask DataFrame: use dmlr.fit_formula('label ~ ...', ddf) for dask DataFrames, or pass "
            "ddf.to_dask_array(lengths=True)"
        )
    arrays = [X, y, weights, offset, groups]
    if any(isinstance(a, da.Array) for a in arrays):
        if groups is not None and missing == "drop":
            raise InputError("missing='drop' with dask inputs and groups: drop the rows before fitting")
        lazy = _lazy_missing(X, y, weights, offset, feature_names, missing)
        return dataclasses.replace(lazy, groups=groups)
    bad = np.zeros(len(X) if hasattr(X, "__len__") else 0, dtype=bool)
    names = ("X", "y", "weights", "offset", "groups")
    for name, values in zip(names, arrays, strict=True):
        if values is None or len(values) != len(bad):
            continue  # lengths are checked (with a message) when the design is built
        rows = _missing_mask(values)
        if rows.any() and missing == "raise":
            _raise_missing(name, values, rows)
        bad |= rows
    if bad.any():
        keep = ~bad
        X, y, weights, offset, groups = (None if a is None else _take(a, keep) for a in arrays)
    encoding = None
    if isinstance(X, pd.DataFrame):
        encoding = FeatureEncoding.from_frame(X)
        if encoding.levels and feature_names is not None:
            raise InputError("feature_names cannot be given with category columns: their encoded names are made")
        frame = X
        X = encoding.transform(frame, "X")
        feature_names = feature_names or encoding.feature_names
    return _Inputs(X, y, weights, offset, feature_names, encoding=encoding, n_missing=int(bad.sum()), groups=groups)


def _raise_missing(name: str, values: Any, rows: NDArray[np.bool_]) -> None:
    if isinstance(values, pd.DataFrame):
        drop_missing(values, list(values.columns), "raise", name)  # names the column
    row = int(np.argmax(rows))
    where = f"row {row}"
    if np.ndim(values) == 2:
        where += f", column {int(np.argmax(_missing_cells(values)[row]))}"
    raise InputError(
        f"{name} has a missing value at {where} ({int(rows.sum())} rows have one); "
        "pass missing='drop' to drop such rows"
    )


def _missing_cells(values: Any) -> NDArray[np.bool_]:
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return np.asarray(values.isna().to_numpy(), dtype=bool)
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        return np.asarray(np.isnan(arr), dtype=bool)
    if arr.dtype.kind == "O":
        return np.asarray(pd.isna(arr), dtype=bool)
    return np.zeros(arr.shape, dtype=bool)


def _missing_mask(values: Any) -> NDArray[np.bool_]:
    cells = _missing_cells(values)
    return np.asarray(cells.any(axis=1) if cells.ndim == 2 else cells, dtype=bool)


def _take(values: Any, keep: NDArray[np.bool_]) -> Any:
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return values.loc[keep]
    return np.asarray(values)[keep]


def _lazy_missing(
    X: Any, y: Any, weights: Any, offset: Any, feature_names: Sequence[str] | None, missing: str
) -> _Inputs:
    """Dask inputs: ``missing="drop"`` masks the rows with a NaN lazily (one pass to learn the new chunk sizes);
    ``"raise"`` leaves the check to the passes, which name the partition, row and column."""
    if missing == "raise":
        return _Inputs(X, y, weights, offset, feature_names)
    x = X if isinstance(X, da.Array) else da.from_array(np.asarray(X, dtype=np.float64))
    keep = ~da.isnan(x).any(axis=1)
    others: list[da.Array | None] = []
    for values in (y, weights, offset):
        if values is None:
            others.append(None)
            continue
        lazy = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
        lazy = lazy.rechunk((x.chunks[0], *lazy.chunks[1:]))
        if lazy.dtype.kind in "fc":
            nan = da.isnan(lazy)
            keep &= ~(nan.any(axis=1) if lazy.ndim == 2 else nan)
        others.append(lazy)
    counts = da.map_blocks(count_kept, keep, chunks=((1,) * keep.numblocks[0],), dtype=np.int64).compute()
    rows = tuple(int(c) for c in counts)

    def kept(values: da.Array) -> da.Array:
        mask = keep if values.ndim == 1 else keep[:, None]  # blockwise alignment with the rows
        return da.map_blocks(kept_rows, values, mask, chunks=(rows, *values.chunks[1:]), dtype=values.dtype)

    n_dropped = int(x.shape[0] - sum(rows))
    kept_others = [None if v is None else kept(v) for v in others]
    return _Inputs(kept(x), kept_others[0], kept_others[1], kept_others[2], feature_names, n_missing=n_dropped)


def _to_cluster(
    design: Design, data: _Inputs, options: FitOptions, client: Any
) -> tuple[Design, Callable[[], Design] | None, Design | None]:
    """Ship in-memory input to the workers once (with a function that ships it again), persist when asked; the
    third value is the design before persisting (to name a partition that kills its worker), else ``None``."""
    if client is None:
        return design, None, None
    # The shipped blocks live as long as the design's arrays (their graphs hold the futures): this fit.
    local = design
    design = _ship_in_memory(local, client, data.X, data.y, data.weights, data.offset)
    reship = None
    if design is not local:  # in-memory input went to the workers: ship it again if they die

        def reship() -> Design:
            return _ship_in_memory(local, client, data.X, data.y, data.weights, data.offset)

    persist = options.persist
    if persist is True or (persist == "auto" and _fits_in_cluster_memory(design, client)):
        return design.with_arrays(client.persist(design.arrays())), reship, design
    return design, reship, None


@dataclass
class _Fitter:
    """Runs the loop on a design (optionally without some columns)."""

    options: FitOptions
    client: Any
    reship: Callable[[], Design] | None
    callback: Callable[[dict[str, Any]], None] | None
    checkpoint: str | os.PathLike[str] | None
    data_token: str
    storage_options: dict[str, Any] | None
    final: Request = WITH_INFORMATION
    source: Design | None = None

    def run(self, design: Design) -> tuple[DataPasses, Objective, FitOutcome, tuple[str, ...]]:
        """First pass or checkpoint, the checks (weights, rank: dependent columns dropped here), then the loop."""
        o = self.options
        passes = DataPasses(design, self.client, o.split_every, self.reship, source=self.source)
        checkpointer = None
        if self.checkpoint is not None:
            identity = _fit_identity(design, self.data_token, o.method, o.l2, o.tol, o.split_every)
            checkpointer = Checkpointer(
                str(self.checkpoint), identity, storage_options=self.storage_options, on_event=self.callback
            )
        n_classes, d = design.labels.n_classes, design.n_features
        labels = design.labels.model_order.tolist()
        request = _first_request(o.method, design, n_classes)
        start = begin(passes, request, d, n_classes - 1, checkpointer)
        check_weights_total(start.first, labels)
        dependent = _dependent_columns(design, start.first, o.collinear, o.l2)
        dropped: tuple[str, ...] = ()
        if dependent and o.collinear == "drop":
            warnings.warn(
                "dropped dependent columns: " + "; ".join(c.describe() for c in dependent),
                DroppedColumnsWarning,
                stacklevel=3,
            )
            drop = [c.index for c in dependent]
            passes = passes.without_columns(drop)
            keep = [j for j in range(d) if j not in set(drop)]
            start = Start(start.first.restricted(keep), start.saved_first, start.resumed, start.clock)
            design, dropped = passes.design, tuple(c.name for c in dependent)
        objective = _objective(design, o.l2)
        # the cost model picks auto's rule and L-BFGS's preconditioner refresh; both go in the start record
        choice = _choose(passes, start, o.inference) if o.method in ("auto", "lbfgs") else None
        method = choice.method if choice is not None and o.method == "auto" else o.method
        refresh = choice.refresh_every if choice is not None and method == "lbfgs" else 0
        fields: dict[str, Any] = {"refresh_every": refresh}
        if o.method == "auto" and choice is not None:
            logger.info(choice.describe())
            fields.update(choice.record())
        if method == "newton" and start.first.information is None and start.resumed is None:
            start = _with_zero_information(passes, start, design)
        outcome = optimize(
            passes, n_classes=n_classes, n_features=design.n_features, method=method, objective=objective,
            tol=o.tol, max_iter=o.max_iter, inference=o.inference, callback=self.callback, separation=o.separation,
            class_labels=labels, feature_names=design.model_names, checkpoint=checkpointer, start=start,
            full_rank=not dependent, final=self.final, refresh_every=refresh, start_fields=fields,
            sample_information=_newton_sampling(passes),
        )  # fmt: skip
        return passes, objective, outcome, dropped


SAMPLE_EVERY = 4
"""Newton on streamed data estimates the information from every fourth row block while far from the optimum."""


SAMPLE_MIN_ROWS = 1_000_000
"""... when the data have at least this many rows (smaller data are cheap to pass over: exact Newton, whose iterates
do not depend on where the data live)."""


def _newton_sampling(passes: DataPasses) -> int:
    """Newton's ``sample_every``: :data:`SAMPLE_EVERY` for streamed data of at least :data:`SAMPLE_MIN_ROWS` rows
    whose sample has at least :data:`~dmlr.steps.cost.MIN_SAMPLE_ROWS` rows per parameter, else 1."""
    design = passes.design
    params = design.n_features * design.n_nonbase
    enough = design.n_rows >= SAMPLE_MIN_ROWS and design.n_rows / SAMPLE_EVERY >= MIN_SAMPLE_ROWS * params
    return SAMPLE_EVERY if passes.streamed and enough else 1


def _first_request(method: str, design: Design, n_classes: int) -> Request:
    """What the first pass computes: the chosen rule's first request, or for ``auto`` (chosen after the first pass)
    and for Newton without an offset only the Gram matrix and moments (at ``W = 0`` the information follows from the
    Gram matrix, :func:`_with_zero_information`)."""
    if method == "auto" or (method == "newton" and design.offset is None):
        return BOUND_SETUP
    return make_rule(method, _objective(design, 0.0), n_classes, design.n_features).first_request


def _choose(passes: DataPasses, start: Start, inference: bool) -> Choice:
    """``auto``'s choice (:mod:`dmlr.steps.cost`): the one a checkpoint recorded, else by predicted cost, with the
    pass's fixed overhead known and the read time measured by the first pass."""
    streamed = passes.streamed
    if start.resumed is not None and start.resumed.history and "refresh_every" in start.resumed.history[0]:
        rec = start.resumed.history[0]  # the choices the interrupted run made (they depend on its timing)
        predicted = dict(rec.get("predicted_seconds", {}))
        method = rec.get("method", "lbfgs")
        return Choice(method, predicted, {}, bool(rec.get("streamed", streamed)), int(rec["refresh_every"]))
    d, m = passes.design.n_features, passes.design.n_nonbase
    rows = max(g.rows for g in passes.groups)
    rate = gemm_rate()
    overhead = CLUSTER_OVERHEAD if passes.client is not None else LOCAL_OVERHEAD
    model = PassModel(rows, d, m, 0.0, overhead, rate)
    if streamed:  # the first pass computes only the score and the Gram matrix: it is bound by reading
        model = dataclasses.replace(model, read=max(0.0, passes.seconds - overhead - model.compute(n_weights=1)))
    return choose_by_cost(model, inference=inference, streamed=streamed, n_rows=passes.design.n_rows)


def _with_zero_information(passes: DataPasses, start: Start, design: Design) -> Start:
    """The first record with the information at ``W = 0`` for Newton's first step.

    Without an offset every row's probabilities are ``1/K`` at ``W = 0``, so the information is exactly
    ``(I/K - 1 1^T/K^2) kron X^T V X`` (the Gram matrix the first pass computed); with an offset it takes a pass.
    """
    first = start.first
    if design.offset is None and first.gram is not None:
        k = design.labels.n_classes
        m = k - 1
        shares = np.eye(m) / k - 1.0 / k**2
        info = np.asarray(np.kron(shares, first.full_gram()), dtype=np.float64)
        exact = dataclasses.replace(first, information=info, information_weight=first.weight_sum)
        return Start(exact, start.saved_first, start.resumed, start.clock)
    with_info = passes(np.zeros(first.score.shape), NEWTON_FIRST)
    return Start(with_info, start.saved_first, start.resumed, start.clock)


def _objective(design: Design, l2: float) -> Objective:
    """The ridge objective of a design (the intercept, model column 0, unpenalized)."""
    mask = np.ones(design.n_features)
    if design.intercept:
        mask[0] = 0.0
    return Objective(float(l2), mask)


def _fit_identity(design: Design, data_token: str, method: str, l2: float, tol: float, split_every: int) -> str:
    """The checkpoint fingerprint: the data (store checksum, or dask's content token of the arrays), the
    partitioning, the model layout and every option that changes the iterates."""
    from dmlr import __version__

    return fingerprint(
        data=data_token,
        chunks=design.x.chunks[0],
        features=design.model_names,
        classes=design.labels.model_order.tolist(),
        intercept=design.intercept,
        method=method,
        l2=float(l2),
        tol=float(tol),
        split_every=split_every,
        version=__version__,
    )


def _dependent_columns(design: Design, first: Statistics, collinear: str, l2: float) -> list[DependentColumn]:
    """Dependent columns found in the first pass's Gram matrix: raised for ``collinear="raise"``, returned for
    ``"drop"`` and ``"keep"`` (and never looked for with a penalty, which identifies every coefficient)."""
    if first.gram is None or l2 > 0:
        return []
    dependent = dependent_columns(first.full_gram(), design.model_names)
    if dependent and collinear == "raise":
        raise CollinearityError(
            "the design is rank deficient: "
            + "; ".join(c.describe() for c in dependent)
            + ". Remove these columns, pass collinear='drop' to drop them, or fit with l2 > 0."
        )
    return dependent


def _ship_in_memory(design: Design, client: Any, X: Any, y: Any, weights: Any, offset: Any) -> Design:
    """Ship in-memory inputs to the workers once, instead of embedding them in every pass's graph."""
    given_lazy = {
        "x": isinstance(X, da.Array),
        "codes": isinstance(y, da.Array),
        "weights": isinstance(weights, da.Array),
        "offset": isinstance(offset, da.Array),
    }
    names = ["x", "codes"] + [n for n, a in (("weights", design.weights), ("offset", design.offset)) if a is not None]
    arrays = design.arrays()
    shipped = [i for i, name in enumerate(names) if not given_lazy[name]]
    if not shipped:
        return design
    for i in shipped:
        arrays[i] = _scatter_rows(arrays[i], client)
    return design.with_arrays(arrays)


def scatter_rows(array: Any, client: Any, *, chunk_rows: int | None = None) -> da.Array:
    """Put an in-memory array on the workers of ``client`` once, as a persisted dask array of row blocks.

    ``dmlr.fit`` ships NumPy/pandas input itself on every call; for several fits of the same data
    (cross-validation, methods, penalties) ship it once with this and pass the result instead.

    Parameters
    ----------
    array : ndarray or array-like, shape (n,) or (n, p)
    client : distributed.Client
    chunk_rows : int, optional
        Rows per block; default so that every worker thread gets about the same share.

    Returns
    -------
    dask.array.Array
        Same shape and dtype, one aligned, persisted block per row chunk (spread over the workers).
    """
    values = np.asarray(array)
    if chunk_rows is None:
        p = values.shape[1] if values.ndim == 2 else 1
        chunk_rows = default_row_chunk(values.shape[0], p, _client_threads(client))
    chunks = (chunk_rows,) + ((-1,) if values.ndim == 2 else ())
    return _scatter_rows(da.from_array(values, chunks=chunks), client)


def _scatter_rows(arr: da.Array, client: Any) -> da.Array:
    """Scatter the row blocks of an in-memory-backed dask array to the workers (once, spread evenly).

    ``client.persist`` would embed every block in the task graph and push it through the scheduler.
    """
    index = (lambda i: (i, 0)) if arr.ndim == 2 else (lambda i: (i,))
    blocks = [np.asarray(arr.blocks[index(i)].compute(scheduler="sync")) for i in range(arr.numblocks[0])]
    futures = client.scatter(blocks, hash=False)
    parts = [da.from_delayed(f, shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks, strict=True)]
    # Deserialized blocks sit at arbitrary offsets of the received frames (measured: 4 bytes off 8-byte
    # alignment), which slows every kernel on them ~1.3-2x; one aligned copy per block, made where it lives.
    # Persisting also leaves one key per block, so a pass's graph holds no alias tasks.
    # (the scheduler keeps each scattered block until its aligned copy exists, then forgets it)
    return client.persist(da.concatenate(parts, axis=0).map_blocks(aligned, dtype=arr.dtype))


def _has_constant(outcome: FitOutcome, intercept: bool) -> bool:
    if intercept:
        return True
    stats = outcome.first_stats
    if stats.col_sum is None or stats.col_sumsq is None:
        return False
    constant = constant_columns(stats.col_sum, stats.col_sumsq, stats.weight_sum)
    return bool(np.any(constant & (stats.col_sum != 0)))  # a nonzero constant column acts as an intercept


def _dep_name(y: Any) -> str:
    name = getattr(y, "name", None)
    return str(name) if isinstance(y, pd.Series) and name is not None else "y"


def _fits_in_cluster_memory(design: Design, client: Any, fraction: float = 0.5) -> bool:
    """Whether the design's arrays take at most ``fraction`` of the workers' total memory limit."""
    workers = client.scheduler_info()["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    if not limits:
        return False
    if any(limit == 0 for limit in limits):  # unlimited workers: compare with the machine's memory
        import psutil

        total = float(psutil.virtual_memory().total)
    else:
        total = float(sum(limits))
    return sum(a.nbytes for a in design.arrays()) <= fraction * total


def _results(
    design: Design,
    outcome: FitOutcome,
    objective: Objective,
    llnull: float,
    y: Any,
    data_info: dict[str, Any] | None = None,
    dropped: tuple[str, ...] = (),
    input_features: tuple[str, ...] = (),
) -> MNLogitResults:
    final = outcome.final
    cov = None
    if final.stats.information is not None:
        names = [f"{c}:{f}" for c in design.labels.non_base for f in design.model_names]
        cov = inverse_information(objective.information(final.stats), names)
    return MNLogitResults(
        coef=final.coef,
        covariance=cov,
        feature_names=design.model_names,
        classes=design.labels.classes,
        base=design.labels.base,
        intercept=design.intercept,
        llf=final.stats.loglik,
        llnull=llnull,
        nobs=final.stats.weight_sum,
        n_rows=design.n_rows,
        has_constant=_has_constant(outcome, design.intercept),
        converged=outcome.converged,
        n_iter=outcome.n_iter,
        method=outcome.method,
        history=outcome.history,
        l2=objective.l2,
        dep_name=data_info["target"] if data_info and "target" in data_info else _dep_name(y),
        message=outcome.message,
        data_info=data_info,
        dropped_features=dropped,
        input_features=input_features if dropped else (),
    )
