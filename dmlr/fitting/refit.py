"""Warm starts: a fit that begins at given coefficients, or at a previous result's, and the incremental refit.

``dmlr.fit(..., start_params=...)`` takes an array (``(d, m)``, or flat class by class as statsmodels'
``start_params``) or a previous :class:`~dmlr.results.results.MNLogitResults`, whose classes, base and columns must
be the fit's. The loop starts there (one pass at the coefficients) instead of at the intercept-only optimum.

A previous result of the same store at an earlier version (its checksum among the store's versions, its rows a
prefix of the store's) carries a :class:`~dmlr.results.refit.RefitRecord`: its first pass and its optimum's records.
The refit then reads only the rows appended since: one pass over them at ``W = 0`` and one at the previous optimum,
added to the record, are exactly the statistics of all rows there, so the checks and the first Newton step cost no
pass over the old rows; the loop then continues with full passes to the optimum of all rows.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.driver import Start
from dmlr.errors import InputError
from dmlr.fitting.evaluator import FitPasses
from dmlr.oracle.statistics import WITH_INFORMATION, Request
from dmlr.results.refit import RefitRecord

__all__ = ["WarmStart", "begin_incremental", "start_at", "warm_start_of"]

logger = logging.getLogger("dmlr")

Array = NDArray[np.float64]


@dataclass(frozen=True)
class WarmStart:
    """Where a fit starts when ``start_params`` is given.

    Attributes
    ----------
    coef : ndarray, shape (d, m) or (d m,)
        The coefficients (flat: class by class).
    names : tuple of str, optional
        The model columns ``coef``'s rows belong to (a previous result's; ``None`` for an array: the fit's own).
    classes : list, optional
        The previous result's class labels and base, checked against the fit's.
    base : Any
    record : RefitRecord, optional
        The previous fit's records, when it fitted a prefix of this store's rows.
    new_passes : FitPasses, optional
        Passes over the rows appended since (``None`` with a record: no rows were appended).
    """

    coef: Array
    names: tuple[str, ...] | None = None
    classes: list[Any] | None = None
    base: Any = None
    record: RefitRecord | None = None
    new_passes: FitPasses | None = None

    @property
    def incremental(self) -> bool:
        """Whether the fit begins from the record (reading the new rows only)."""
        return self.record is not None


def warm_start_of(start_params: Any, store: Any) -> tuple[WarmStart | None, int | None]:
    """The warm start ``start_params`` asks for, and the first appended row when its record applies to ``store``.

    Returns
    -------
    warm : WarmStart or None
    new_from : int or None
        With a previous result whose record is of an earlier version of ``store``: the rows from which the store
        grew since (``store.metadata.n_rows`` when it did not); ``None`` otherwise.
    """
    from dmlr.results.results import MNLogitResults

    if start_params is None:
        return None, None
    if not isinstance(start_params, MNLogitResults):
        coef = np.asarray(start_params, dtype=np.float64)
        if coef.ndim not in (1, 2) or coef.size == 0:
            raise InputError(f"start_params must be a (d, K - 1) array or a fitted result; got shape {coef.shape}")
        if not np.isfinite(coef).all():
            raise InputError("start_params has NaN or infinite values")
        return WarmStart(coef), None
    res = start_params
    warm = WarmStart(
        np.asarray(res.coef, dtype=np.float64), tuple(res.feature_names), list(np.asarray(res.classes).tolist()),
        res.base,
    )  # fmt: skip
    record: RefitRecord | None = res.refit
    if record is None or store is None or res.dropped_features:
        return warm, None
    versions = store.metadata.versions
    prefix = any(v["checksum"] == record.store_checksum and v["rows"][1] == record.n_rows for v in versions)
    if not prefix:
        logger.info("the start's result is of another store (or version) than %s: a plain warm start", store.url)
        return warm, None
    return replace(warm, record=record), record.n_rows


def begin_incremental(passes: FitPasses, warm: WarmStart, request: Request) -> Start:
    """The fit's start from the previous fit's record and the appended rows' statistics (two passes over those
    rows only): the first pass's record and the statistics at the previous optimum, both of all rows.

    Raises
    ------
    InputError
        The rows do not add up to the store's (the record is not of a prefix of this store).
    """
    clock = time.perf_counter()
    record = warm.record
    assert record is not None
    design = passes.design
    coef = warm.coef
    first, at_old = record.first, record.final
    if warm.new_passes is not None:
        new = warm.new_passes
        first = first + new(np.zeros((design.n_columns, design.n_nonbase)), replace(request, gram=True, moments=True))
        at_old = at_old + new(coef, WITH_INFORMATION)
        logger.info("refit: 2 passes over the %d appended rows, none over the %d fitted before", new.design.n_rows,
                    record.n_rows)  # fmt: skip
    if first.n_rows != design.n_rows or at_old.n_rows != design.n_rows:
        raise InputError(
            f"the start's record covers {first.n_rows} rows with the new ones, the store has {design.n_rows}"
        )
    at_old = dataclasses.replace(at_old, meat=None, sample=None)
    return Start(first, first, None, clock, point=(coef, at_old))


def start_at(passes: FitPasses, start: Start, warm: WarmStart, request: Request) -> Start:
    """The loop's start at the warm start's coefficients: the incremental start's statistics when they are still
    the design's, else one pass there.

    Raises
    ------
    InputError
        The coefficients do not fit the model: another shape, other classes or base, other columns (named).
    """
    design = passes.design
    assert design.coding is not None
    d, m = design.n_columns, design.n_nonbase
    if warm.classes is not None:
        classes = design.coding.classes.tolist()
        if warm.classes != classes or warm.base != design.coding.base:
            raise InputError(
                f"start_params is a result with classes {warm.classes} (base {warm.base!r}); this fit has "
                f"{classes} (base {design.coding.base!r})"
            )
    coef = warm.coef
    if warm.names is not None:
        missing = [n for n in design.model_names if n not in warm.names]
        if missing or coef.shape[1:] != (m,):
            raise InputError(
                f"start_params is a result without the columns {missing} of this fit (its columns: {list(warm.names)})"
            )
        coef = coef[[warm.names.index(n) for n in design.model_names]]
    elif coef.ndim == 1:
        if coef.size != d * m:
            raise InputError(f"start_params has {coef.size} values; this model has d x (K - 1) = {d} x {m}")
        coef = coef.reshape((d, m), order="F")
    elif coef.shape != (d, m):
        raise InputError(f"start_params has shape {coef.shape}; this model's coefficients have shape ({d}, {m})")
    if start.point is not None and start.point[0].shape == coef.shape and np.array_equal(start.point[0], coef):
        return start
    return replace(start, point=(coef, passes(coef, request)))
