"""What every step rule shares: the penalized objective, the iterate, the facts a rule is built from, and the rule
protocol.

The driver maximizes the penalized log-likelihood ``f(W) = l(W) - lambda/2 * ||P W||^2`` where ``P`` masks the
intercept row out of the penalty. An :class:`Iterate` is the coefficient value together with the statistics of the
pass evaluated there. A :class:`StepRule`, built from a :class:`RuleContext` (everything it is configured with, at
construction), turns an iterate into an ascent :class:`Direction`, which also says what the passes along it must
compute; how far to go along it is the line search's business (:mod:`dmlr.steps.linesearch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from dmlr.oracle.statistics import SCORE_ONLY, Request, Statistics

__all__ = ["DataFacts", "Direction", "Iterate", "Objective", "RuleContext", "StepRule", "flat", "unflat"]

Array = NDArray[np.float64]


def flat(w: Array) -> Array:
    """Class-major flattening ``vec(W)``: ``(d, m) -> (m d,)``."""
    return w.ravel(order="F")


def unflat(theta: Array, d: int) -> Array:
    """Inverse of :func:`flat`: ``(m d,) -> (d, m)``."""
    return theta.reshape(-1, d).T


@dataclass(frozen=True)
class Objective:
    """The penalized log-likelihood to maximize.

    Attributes
    ----------
    l2 : float
        Ridge strength ``lambda >= 0``.
    mask : ndarray, shape (d,)
        1.0 for penalized model columns, 0.0 for the intercept.
    """

    l2: float
    mask: Array

    @classmethod
    def ridge(cls, l2: float, n_columns: int, intercept: bool) -> Objective:
        """The ridge objective of ``n_columns`` model columns, column 0 (the intercept, when there is one)
        unpenalized."""
        mask = np.ones(n_columns)
        if intercept:
            mask[0] = 0.0
        return cls(float(l2), mask)

    def penalty(self, coef: Array) -> float:
        """``l2 / 2`` times the sum of the penalized coefficients' squares (``coef`` shape (d, m))."""
        if self.l2 == 0.0:
            return 0.0
        return 0.5 * self.l2 * float(np.sum(self.mask[:, None] * coef**2))

    def value(self, coef: Array, stats: Statistics) -> float:
        """Penalized log-likelihood at ``coef`` (shape (d, m))."""
        return stats.loglik - self.penalty(coef)

    def gradient(self, coef: Array, stats: Statistics) -> Array:
        """Gradient of :meth:`value` (ascent direction), shape (d, m)."""
        return self.penalized(coef, stats.score)

    def penalized(self, coef: Array, score: Array) -> Array:
        """The gradient from the log-likelihood's ``score`` at ``coef`` (both shape (d, m))."""
        if self.l2 == 0.0:
            return score
        return score - self.l2 * self.mask[:, None] * coef

    def information(self, stats: Statistics) -> Array:
        """Minus the Hessian of :meth:`value`, shape (m d, m d).

        Without a penalty this is the record's own (mirrored) matrix, not a copy: do not change it.
        """
        info = stats.full_information()
        if self.l2 != 0.0:
            m = stats.score.shape[1]
            info = info.copy()
            info[np.diag_indices_from(info)] += self.l2 * np.tile(self.mask, m)
        return info


@dataclass
class Iterate:
    """A coefficient value with the statistics of the pass evaluated there.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
    stats : Statistics
    objective : float
        Penalized log-likelihood.
    gradient : ndarray, shape (d, m)
        Its gradient.
    """

    coef: Array
    stats: Statistics
    objective: float
    gradient: Array

    @classmethod
    def at(cls, coef: Array, stats: Statistics, objective: Objective) -> Iterate:
        """Build the iterate from a pass's statistics."""
        return cls(coef, stats, objective.value(coef, stats), objective.gradient(coef, stats))

    def max_abs_gradient(self) -> float:
        """``max |gradient|`` divided by the total weight (the convergence measure)."""
        return float(np.max(np.abs(self.gradient))) / max(self.stats.weight_sum, 1e-300)

    @property
    def finite(self) -> bool:
        """Whether coefficients, objective and gradient are all finite."""
        return bool(
            np.isfinite(self.objective) and np.all(np.isfinite(self.coef)) and np.all(np.isfinite(self.gradient))
        )


@dataclass(frozen=True)
class Direction:
    """What a step rule proposes.

    Attributes
    ----------
    step : ndarray, shape (d, m)
        Ascent direction; the line search tries it at unit length first.
    decrement : float, optional
        ``g^T H^{-1} g`` when the rule solved with the (penalized) information ``H`` exactly: the driver then also
        stops when ``sqrt(decrement / sum(v)) <= tol``. ``None`` for rules that do not know it.
    shift : float
        Diagonal shift the rule had to add to factor its matrix (0.0 when none); a shifted decrement is not used
        for convergence.
    request : Request
        What each pass along this direction (the line search's trials) must compute: the next direction needs it
        from the accepted one.
    predicted : float, optional
        The gain of the objective the rule's model predicts for the unit step (trust-region rules, which judge
        their trials by it).
    damping : float, optional
        The damping the direction was computed with (recorded in the history).
    diverging : int
        How many consecutive directions, this one included, looked like a divergence to infinity
        (:func:`dmlr.diagnostics.diverging`; 0: this one does not): the loop ends as separated at
        ``dmlr.diagnostics.DIVERGING_ITERATIONS``.
    """

    step: Array
    decrement: float | None = None
    shift: float = 0.0
    request: Request = SCORE_ONLY
    predicted: float | None = None
    damping: float | None = None
    diverging: int = 0


@dataclass(frozen=True)
class DataFacts:
    """What a fit knows of its data after the first pass: what rule factories and ``auto``'s choice may use.

    Attributes
    ----------
    n_rows : int
    n_columns : int
        Model columns ``d``.
    n_nonbase : int
        ``m = K - 1``.
    task_rows : int
        Rows of the largest task of a pass (a pass ends with it).
    streamed : bool
        Every pass produces the data anew (reads them from a store, or computes them from a graph).
    on_cluster : bool
        Passes run on a distributed cluster (a fixed round trip per pass).
    first_pass_seconds : float
        Wall time of the first pass (score and Gram matrix only: for streamed data, about the read time).
    """

    n_rows: int
    n_columns: int
    n_nonbase: int
    task_rows: int
    streamed: bool = False
    on_cluster: bool = False
    first_pass_seconds: float = 0.0


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule is built from (:data:`dmlr.steps.registry.RULES` factories receive it).

    Attributes
    ----------
    objective : Objective
    n_classes : int
        ``K``.
    facts : DataFacts, optional
        The data's facts (``None`` where a rule is built without data, e.g. in tests).
    settings : dict
        The rule's settings as chosen for this fit (:class:`dmlr.steps.auto.Choice`, recorded in checkpoints so that
        a resumed fit is configured as the interrupted one was), e.g. ``{"sample_every": 4}``.
    """

    objective: Objective
    n_classes: int
    facts: DataFacts | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class StepRule(Protocol):
    """A rule that proposes ascent directions: what the driver's loop needs, and all it uses.

    A new method is a module with a class satisfying this protocol plus one entry in
    :data:`dmlr.steps.registry.RULES` (or a call to :func:`dmlr.steps.registry.register_rule`); the driver does not
    change. A rule is configured when it is built (its factory receives a :class:`RuleContext`); its memory changes
    only in :meth:`prepare`, :meth:`accept` and :meth:`restore`.

    """

    @property
    def name(self) -> str:
        """The method's name, as users pass it and as results, history and logs record it."""
        ...

    def prepare(self, stats: Statistics) -> None:
        """Set up from the first pass's statistics (factor a bound, a preconditioner); may be a no-op."""
        ...

    def direction(self, it: Iterate) -> Direction:
        """Ascent direction at ``it`` (with what the passes along it must compute); changes nothing in the rule."""
        ...

    # A rule may also define ``revise(it, direction, trial) -> Direction | None``: it then judges each trial itself
    # (a trust region: ``None`` accepts ``trial``, a revised direction is tried next, at most
    # ``dmlr.steps.linesearch.MAX_TRIALS`` per iteration); rules without it are globalized by the line search.

    def fallback(self, it: Iterate) -> Direction | None:
        """A direction to try when the line search found no ascent along :meth:`direction` (``None``: give up)."""
        ...

    def accept(self, old: Iterate, new: Iterate) -> None:
        """Told the accepted move from ``old`` to ``new`` (quasi-Newton rules update their memory)."""
        ...

    def state(self) -> dict[str, Array]:
        """The rule's memory as named arrays (for a checkpoint)."""
        ...

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Take back the memory :meth:`state` returned (resuming from a checkpoint; ``gram`` is the first pass's
        Gram matrix, shape (d, d), which bound-based rules keep)."""
        ...
