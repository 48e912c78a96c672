"""Before the loop: the first pass (which learns the classes of a dask ``y``) or the newest checkpoint, the checks
(weights, rank), and the information at ``W = 0`` for rules whose first step needs it."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from dmlr.checkpoint import Checkpointer, DriverState, fingerprint
from dmlr.data.design import Design
from dmlr.data.labels import EncodeLabels, LabelCoding
from dmlr.diagnostics import DependentColumn, dependent_columns, empty_cells, empty_cells_message
from dmlr.driver import Start, check_weights_total
from dmlr.errors import CollinearityError, DroppedColumnsWarning, InputError, warn
from dmlr.fitting.evaluator import FitPasses
from dmlr.oracle.setup import SetupKernel
from dmlr.oracle.statistics import Request, Statistics
from dmlr.steps.newton import NEWTON_FIRST

__all__ = [
    "begin_fit",
    "check_rank",
    "fit_identity",
    "from_intercept_optimum",
    "known_separation",
    "with_classes",
    "with_zero_information",
]


def fit_identity(design: Design, data_token: str, method: str, l2: float, tol: float, split_every: int) -> str:
    """The checkpoint fingerprint: the data (store checksum, or dask's content token of the arrays), the
    partitioning, the model layout and every option that changes the iterates."""
    from dmlr import __version__

    classes = None if design.coding is None else design.coding.model_order.tolist()
    return fingerprint(
        data=data_token, chunks=design.x.chunks[0], features=design.model_names, classes=classes,
        base=None if classes is not None else str(design.base), intercept=design.intercept, method=method,
        l2=float(l2), tol=float(tol), split_every=split_every, version=__version__,
    )  # fmt: skip


def begin_fit(passes: FitPasses, request: Request, checkpoint: Checkpointer | None) -> tuple[FitPasses, Start]:
    """The first pass at ``W = 0`` (``request`` plus the Gram matrix and column moments the checks need), or the
    newest valid checkpoint of this fit, which repeats no pass (the pass count continues from it).

    A design whose classes are not known yet (a dask ``y``) learns them in the same pass; the engine then encodes
    every partition's labels as class codes (held partitions once).
    """
    clock = time.perf_counter()
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        passes.count = resumed.passes
        if passes.design.coding is None:
            passes = _coded(
                passes, LabelCoding.from_labels(np.asarray(resumed.fit_state["classes"]), passes.design.base)
            )
        return passes, Start(resumed.first_stats, resumed.first_stats, resumed, clock)
    request = replace(request, gram=True, moments=True)
    design = passes.design
    if design.coding is None:
        first, coding = _learn_classes(passes, request)
        passes = _coded(passes, coding)
    else:
        first = passes(np.zeros((design.n_columns, design.n_nonbase)), request)
    return passes, Start(first, first, None, clock)


def with_classes(passes: FitPasses) -> FitPasses:
    """The passes with the classes known: one set-up pass over the raw labels when they are not (a dask ``y``),
    the engine then encoding every partition's labels as class codes."""
    if passes.design.coding is not None:
        return passes
    _, coding = _learn_classes(passes, Request(gram=True, moments=True))
    return _coded(passes, coding)


def _learn_classes(passes: FitPasses, request: Request) -> tuple[Statistics, LabelCoding]:
    """The set-up pass over raw labels: the first record and the classes it saw."""
    design = passes.design
    offset = design.offset
    m = 1 if offset is None else int(offset.shape[1])
    if offset is None:
        request = replace(request, information=False)  # at W = 0 it follows from the Gram matrix (no offset)
    record = passes.engine.reduce(SetupKernel(request, design.intercept, m))
    coding = LabelCoding.from_labels(record.distinct(), design.base)
    if offset is not None and m != coding.n_classes - 1:
        raise InputError(
            f"offset must have shape (n, K - 1) = ({design.n_rows}, {coding.n_classes - 1}); it has {m} columns"
        )
    return record.finish(coding, offset is not None), coding


def _coded(passes: FitPasses, coding: LabelCoding) -> FitPasses:
    design = passes.design.with_coding(coding)
    passes.engine.derive(EncodeLabels(coding, design.positions))
    return replace(passes, design=design)


def from_intercept_optimum(start: Start, design: Design, information: bool) -> Start:
    """Start the loop at the intercept-only optimum, the class log-shares (the null model), when the model has an
    intercept and no offset: every row's probabilities there are the class shares ``pi``, so the statistics follow
    exactly from the first pass at ``W = 0`` (no pass): ``l = sum_c n_c log pi_c``, the score
    ``S_0 + sum_i v_i z_i (1/K - pi)^T`` and the information ``(diag(pi) - pi pi^T) kron X^T V X``."""
    first = start.first
    if start.resumed is not None or not design.intercept or design.offset is not None or first.col_sum is None:
        return start
    weights = first.class_weights
    total = float(weights.sum())
    share = weights / total
    k = weights.size
    coef = np.zeros(first.score.shape)
    coef[0] = np.log(weights[1:] / weights[0])
    score = first.score + first.col_sum[:, None] * (1.0 / k - share[1:])[None, :]
    loglik = float(np.sum(weights * np.log(share)))
    info, weight = None, 0.0
    if information and first.gram is not None:
        p = share[1:]
        info = np.asarray(np.kron(np.diag(p) - np.outer(p, p), first.full_gram()), dtype=np.float64)
        weight = first.weight_sum
    stats = replace(first, loglik=loglik, score=score, information=info, information_weight=weight, meat=None)
    return replace(start, point=(coef, stats))


def known_separation(start: Start, design: Design, l2: float) -> str:
    """The message of a separation the first pass shows (:func:`~dmlr.diagnostics.empty_cells`: a class absent
    where a one-signed column is nonzero), for an unpenalized fit without an offset; ``""`` when none."""
    if l2 > 0 or design.offset is not None:
        return ""
    assert design.coding is not None
    cells = empty_cells(start.first, design.intercept)
    if not cells:
        return ""
    return empty_cells_message(cells, design.coding.model_order.tolist(), design.model_names)


def with_zero_information(passes: FitPasses, start: Start) -> Start:
    """The first record with the information at ``W = 0``, for a rule whose first step needs it.

    Without an offset every row's probabilities are ``1/K`` at ``W = 0``, so the information is exactly
    ``(I/K - 1 1^T/K^2) kron X^T V X`` (the Gram matrix the first pass computed); with an offset it takes a pass.
    """
    first, design = start.first, passes.design
    assert design.coding is not None
    if first.information is not None or start.resumed is not None or start.point is not None:
        return start
    if design.offset is None and first.gram is not None:
        k = design.coding.n_classes
        shares = np.eye(k - 1) / k - 1.0 / k**2
        info = np.asarray(np.kron(shares, first.full_gram()), dtype=np.float64)
        exact = replace(first, information=info, information_weight=first.weight_sum)
        return Start(exact, start.saved_first, start.resumed, start.clock)
    with_info = passes(np.zeros(first.score.shape), NEWTON_FIRST)
    return Start(with_info, start.saved_first, start.resumed, start.clock)


def check_rank(
    passes: FitPasses, start: Start, collinear: str, l2: float
) -> tuple[FitPasses, Start, list[DependentColumn]]:
    """The weights' total and the rank of the first pass's Gram matrix: dependent columns raised, or dropped (the
    first record restricted to the kept columns: no pass is repeated) or kept.

    Raises
    ------
    InputError
        The weights sum to zero or some class has none.
    CollinearityError
        Dependent columns with ``collinear="raise"`` (named, with what they depend on).
    """
    design = passes.design
    assert design.coding is not None
    check_weights_total(start.first, design.coding.model_order.tolist())
    dependent = _dependent_columns(design, start.first, collinear, l2)
    if not dependent or collinear != "drop":
        return passes, start, dependent
    warn("dropped dependent columns: " + "; ".join(c.describe() for c in dependent), DroppedColumnsWarning)
    drop = [c.index for c in dependent]
    keep = [j for j in range(design.n_columns) if j not in set(drop)]
    start = Start(start.first.restricted(keep), start.saved_first, start.resumed, start.clock)
    return passes.without_columns(drop), start, dependent


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


def resumed_state(start: Start) -> dict[str, Any]:
    """What a checkpoint recorded about the fit's set-up (empty for a new fit)."""
    resumed: DriverState | None = start.resumed
    return {} if resumed is None else dict(resumed.fit_state)
