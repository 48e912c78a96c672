"""K-fold cross-validation of the penalty in one set of passes: :func:`cross_validate`.

By default one fit of every row leads (:func:`lead_penalty`), its passes split by fold, and every (penalty, fold)
model starts from it once it is near its optimum (:mod:`dmlr.models.fold_models`); a penalty too far from the lead's
(or ``l2 = 0`` on a design with dependent columns) has a fit of every row of its own, its fold models starting from
it. All of them are models of one bank (:mod:`dmlr.models.bank`), each pass reading the data once for all, the
fold models' held-out scores from their own passes; the refit at the best penalty, when no fit was made there,
follows, warm-started at the lead's. With ``fold_inference=True`` (or an offset) every model is instead fitted from
scratch in lockstep, and the held-out scores of every fold model come from one more pass. A row's fold is a
function of the seed and its global index (:func:`~dmlr.models.weightings.fold_ids`), so the folds do not depend
on the partitioning.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.errors import ConvergenceWarning, InputError, warn
from dmlr.fitting.refit import warm_start_of
from dmlr.models.bank import reduce_bank, run_bank
from dmlr.models.fold_models import FoldRun, fold_result
from dmlr.models.fold_split import FoldSplit, StartFiles
from dmlr.models.many import (
    Member,
    Shared,
    checkpoint_under,
    fit_member,
    fit_members,
    member_options,
    refuse_cluster_covariance,
    shared_data,
    with_data,
)
from dmlr.models.scores import SCORES, HeldOutKernel, scores_of
from dmlr.models.weightings import FoldWeighting, check_folds, fold_ids
from dmlr.results.results import MNLogitResults

__all__ = ["CVResults", "cross_validate"]

FOLD_TOL = 0.1
"""A fold model stops at this fraction of ``tol``: a quasi-Newton iterate that passes it is as close to its
optimum as a Newton iterate that passes ``tol`` (whose next step is quadratically smaller)."""


@dataclass(frozen=True)
class CVResults:
    """The results of :func:`cross_validate`.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per (l2, fold): ``l2``, ``fold``, ``n_train``, ``n_test``, ``log_loss``, ``accuracy``, ``brier``
        (weighted means over the fold's held-out rows, at the model trained without them).
    l2s : tuple of float
        The penalties, in the order given.
    n_folds : int
    seed : int
    n_rows : int
    refit : MNLogitResults, optional
        The fit of every row at :attr:`best_l2` (``None`` with ``refit=False``).
    refits : dict of float to MNLogitResults
        The fits of every row made, by penalty (the lead's, those of penalties far from it, the refit).
    n_passes : int
        Passes over the data for the whole run.
    """

    scores: pd.DataFrame
    l2s: tuple[float, ...]
    n_folds: int
    seed: int
    n_rows: int
    fold_results: Mapping[tuple[float, int], MNLogitResults]
    refits: Mapping[float, MNLogitResults]
    n_passes: int

    @property
    def folds(self) -> NDArray[np.int64]:
        """The fold of every row, shape (n,): :func:`dmlr.fold_ids` of the run's rows, folds and seed."""
        return fold_ids(self.n_rows, self.n_folds, self.seed)

    def summary_frame(self) -> pd.DataFrame:
        """Per penalty: the mean of each score over the folds and its standard error (``std / sqrt(folds)``, the
        folds' sample standard deviation), as ``log_loss``, ``log_loss_se``, ``accuracy``, ...; indexed by l2."""
        grouped = self.scores.groupby("l2", sort=False)[list(SCORES)]
        mean, se = grouped.mean(), grouped.std(ddof=1) / math.sqrt(self.n_folds)
        out = pd.concat({"": mean, "se": se}, axis=1)
        out.columns = [name if kind == "" else f"{name}_se" for kind, name in out.columns]
        return out[[c for s in SCORES for c in (s, f"{s}_se")]]

    @property
    def best_l2(self) -> float:
        """The penalty with the smallest mean held-out log-loss (the first of equal ones)."""
        return _best(self.scores)

    def results(self, l2: float, fold: int) -> MNLogitResults:
        """The model of penalty ``l2`` trained without fold ``fold`` (with standard errors when the run had
        ``fold_inference=True``)."""
        try:
            return self.fold_results[(float(l2), int(fold))]
        except KeyError:
            raise InputError(
                f"no model with l2={l2} and fold={fold} (l2: {list(self.l2s)}, folds: 0..{self.n_folds - 1})"
            ) from None

    @property
    def refit(self) -> MNLogitResults | None:
        """The fit of every row at :attr:`best_l2` (``None`` when the run had ``refit=False``)."""
        return self.refits.get(self.best_l2)


def cross_validate(
    X: Any,
    y: Any = None,
    *,
    folds: int = 5,
    l2: float | Sequence[float] = (0.0,),
    seed: int = 0,
    refit: bool = True,
    fold_inference: bool = False,
    weights: Any = None,
    offset: Any = None,
    groups: Any = None,
    feature_names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    checkpoint: str | None = None,
    **fit_options: Any,
) -> CVResults:
    """K-fold cross-validation of the ridge penalty, every model sharing every pass over the data.

    Each (penalty, fold) model equals :func:`dmlr.fit` of the rows outside the fold at that penalty; its held-out
    log-loss, accuracy and Brier score are computed on the fold's rows. The folds are :func:`dmlr.fold_ids`: a
    function of ``seed`` and each row's global index, the same on any cluster or chunking.

    Parameters
    ----------
    X, y, weights, offset, groups, feature_names, storage_options, client
        As for :func:`dmlr.fit` (a store, arrays, DataFrames or dask arrays). Weights weight the training
        likelihoods and the held-out scores.
    folds : int
        Number of folds (``2 <= folds <= n``).
    l2 : float or sequence of float
        Penalties to compare.
    seed : int
        Chooses the folds.
    refit : bool
        Fit every row at the best penalty (:attr:`CVResults.refit`). By default the fold models start from the
        lead's fit of every row (and from the fits of penalties far from it), kept in :attr:`CVResults.refits`;
        when none is at the best penalty, a fit warm-started at the lead's follows the fold models (a few passes).
        ``refit=False`` keeps none (with ``fold_inference=True``, it also leaves the fits out of the passes).
    fold_inference : bool
        Fit every fold model from scratch, each with its own rule and its exact information in every Newton pass,
        in lockstep with the others, and compute its covariance (standard errors of :meth:`CVResults.results`).
        Off by default: fold models then start at the fits of every row and take quasi-Newton steps from the
        fold's information there, all in stacked passes (the scores need the coefficients only; in memory the
        informations would cost more than the fits). The refits always have their inference.
    checkpoint : str, optional
        Directory (local or fsspec URL) of checkpoints: each fit writes its state into a subdirectory of its own
        after every iteration, and the same call after a crash resumes every fit where it was (the results equal
        an uninterrupted run's to the fits' tolerance). By default the fits of every row are checkpointed, and the
        fold models' start from each when they start: a resumed run starts them there again (their few passes run
        again, to the same coefficients bit for bit). The files stay; remove the directory once the results are
        saved.
    **fit_options
        Options of :func:`dmlr.fit` shared by every model (``method``, ``tol``, ...; not ``cov_type="cluster"``).

    Returns
    -------
    CVResults

    Raises
    ------
    InputError
        ``folds < 2`` or more folds than rows, a negative penalty, partitions of unknown size, or what
        :func:`dmlr.fit` refuses.

    Examples
    --------
    >>> import dmlr
    >>> from dmlr.synthetic import make_mnlogit
    >>> data = make_mnlogit(3000, 3, 3, seed=0)
    >>> cv = dmlr.cross_validate(data.X, data.y, folds=3, l2=[0.0, 100.0])
    >>> cv.scores.shape
    (6, 7)
    """
    check_folds(folds, -1)
    penalties = tuple(float(v) for v in np.atleast_1d(np.asarray(l2, dtype=np.float64)))
    if not penalties or len(set(penalties)) != len(penalties):
        raise InputError(f"l2 must list distinct penalties, got {list(penalties)}")
    args = {"weights": weights, "offset": offset, "groups": groups, "feature_names": feature_names, "client": client}
    shared = shared_data(X, y, args | {"storage_options": storage_options}, fit_options, "cross_validate")
    refuse_cluster_covariance(shared, "cross_validate")
    n_rows = shared.passes.design.n_rows
    check_folds(folds, n_rows)
    if not fold_inference and shared.passes.design.offset is None:
        return _from_full_fits(shared, penalties, folds, seed, refit, checkpoint)
    cells = [(v, f) for v in penalties for f in range(folds)]
    members = [
        Member(
            member_options(shared, {"l2": v, "inference": fold_inference}, "cross_validate"),
            None,
            FoldWeighting(f, folds, seed),
            checkpoint_under(checkpoint, f"l2-{v:g}-fold-{f}"),
            f"fold {f} of {folds}, seed {seed}",
        )
        for v, f in cells
    ]
    if refit:
        members += _full_members(shared, penalties, checkpoint)
    fitted = fit_members(shared, members)
    scores = _held_out(shared, [(res, passes.columns) for res, passes in fitted[: len(cells)]], folds, seed, cells)
    fold_results = {cell: res for cell, (res, _) in zip(cells, fitted, strict=False)}
    refits = {v: with_data(shared, res, True) for v, (res, _) in zip(penalties, fitted[len(cells) :], strict=False)}
    count = shared.passes.engine.count
    return CVResults(scores, penalties, folds, seed, n_rows, fold_results, refits, count)


def _full_members(shared: Shared, penalties: tuple[float, ...], checkpoint: str | None) -> list[Member]:
    """The fits of every row, one per penalty."""
    return [
        Member(
            member_options(shared, {"l2": v}, "cross_validate"),
            checkpoint=checkpoint_under(checkpoint, f"l2-{v:g}-all"),
        )
        for v in penalties
    ]


def _from_full_fits(
    shared: Shared, penalties: tuple[float, ...], folds: int, seed: int, refit: bool, checkpoint: str | None
) -> CVResults:
    """The lead fit of every row (its passes split by fold) and every fold model of every penalty from it, all
    models of one bank (:mod:`dmlr.models.fold_models`); with ``refit``, the fit of every row at the best penalty
    after, warm-started at the lead's."""
    board = threading.Condition()
    lead = lead_penalty(penalties)
    splits = [FoldSplit(folds, seed, v, board, serves=(j,), lead=None if j == lead else penalties[lead]) for j, v in
              enumerate(penalties)]  # fmt: skip
    splits.insert(0, splits.pop(lead))  # the lead first; the others leave after the first pass when near it
    files = None if checkpoint is None else StartFiles(checkpoint, shared.token, folds, seed, shared.storage_options)
    lead_kept = None if files is None else files.load(splits[0])
    if lead_kept is not None:  # resumed: the backups that left then (their penalties started at the lead's) are not run
        splits = [s for s in splits if s is splits[0] or not set(s.serves) <= set(lead_kept[1])]
    kept = [] if files is None else [lead_kept, *(files.load(s) for s in splits[1:])]
    members = _full_members(shared, tuple(s.l2 for s in splits), checkpoint)
    options = members[0].options
    run = FoldRun(splits, penalties, folds, seed, options.tol * FOLD_TOL, options.max_iter, files, kept)
    jobs: list[Any] = [
        split.job(functools.partial(fit_member, shared, m)) for split, m in zip(splits, members, strict=True)
    ]
    *fitted, models = run_bank(shared.passes.engine, [*jobs, run], [None] * (len(jobs) + 1))
    n_rows = shared.passes.design.n_rows
    rows, fold_results = [], {}
    for (j, fold), model in sorted(models.items()):
        cell = (penalties[j], fold)
        fold_results[cell] = fold_result(model, fitted[run.origin[j]][0], shared.passes)
        rows.append(_score_row(cell, scores_of(model.held_sums()), n_rows, folds))
    late = sum(not m.converged for m in models.values())
    if late:
        warn(f"{late} of {len(models)} fold models did not converge in {options.max_iter} passes", ConvergenceWarning)
    scores = pd.DataFrame(rows, columns=["l2", "fold", "n_train", "n_test", *SCORES])
    full = {s.l2: done[0] for s, done in zip(splits, fitted, strict=True) if done is not None}
    refits = _refits(shared, full, _best(scores), penalties[lead], checkpoint) if refit else {}
    return CVResults(scores, penalties, folds, seed, n_rows, fold_results, refits, shared.passes.engine.count)


def lead_penalty(penalties: Sequence[float]) -> int:
    """The position of the penalty whose fit of every row leads a cross-validation: the median of the positive
    penalties (the lower one of two; a penalty identifies every coefficient, and the median is nearest the others),
    or the only one, ``0``."""
    positive = sorted(v for v in penalties if v > 0)
    if not positive:
        return list(penalties).index(min(penalties))
    return list(penalties).index(positive[(len(positive) - 1) // 2])


def _best(scores: pd.DataFrame) -> float:
    """The penalty with the smallest mean held-out log-loss (:attr:`CVResults.best_l2`'s rule)."""
    return float(scores.groupby("l2", sort=False)["log_loss"].mean().idxmin())  # type: ignore[arg-type]


def _refits(
    shared: Shared, full: dict[float, MNLogitResults], best: float, lead: float, checkpoint: str | None
) -> dict[float, MNLogitResults]:
    """The fits of every row made (the lead's, a backup's) and, when none is at ``best``, the fit at ``best`` warm
    started at the lead's (a few passes: it is near)."""
    if best not in full:  # its own checkpoints: a backup that left (at its first pass: none) must not resume them
        member = _full_members(shared, (best,), None)[0]
        warm, _ = warm_start_of(full[lead], None)
        place = checkpoint_under(checkpoint, f"l2-{best:g}-refit")
        full[best] = fit_members(shared, [dataclasses.replace(member, warm=warm, checkpoint=place)])[0][0]
    return {v: with_data(shared, res, True) for v, res in full.items()}


def _score_row(cell: tuple[float, int], got: dict[str, Any], n_rows: int, folds: int) -> dict[str, Any]:
    """A row of the scores table; a fold without rows is refused."""
    if got["n_test"] == 0:
        raise InputError(f"fold {cell[1]} has no rows (folds={folds} over {n_rows} rows): use fewer folds")
    return {"l2": cell[0], "fold": cell[1], "n_train": n_rows - got["n_test"], **got}


def _held_out(
    shared: Shared, models: list[tuple[MNLogitResults, Any]], folds: int, seed: int, cells: list[tuple[float, int]]
) -> pd.DataFrame:
    """One pass: every fold model's scores on its held-out rows."""
    intercept = shared.passes.design.intercept
    kernels = tuple(
        HeldOutKernel(res.coef, intercept, columns, FoldWeighting(fold, folds, seed, held_out=True))
        for (res, columns), (_, fold) in zip(models, cells, strict=True)
    )
    record = reduce_bank(shared.passes.engine, kernels)
    n_rows = shared.passes.design.n_rows
    rows = [_score_row(cell, scores_of(sums), n_rows, folds) for cell, sums in zip(cells, record.records, strict=True)]
    return pd.DataFrame(rows, columns=["l2", "fold", "n_train", "n_test", *SCORES])
