"""Limited-memory quasi-Newton directions, preconditioned by a Kronecker approximation of the information.

The two-loop recursion with ``H_0 = gamma M^{-1}``, where ``M = A_pi kron G`` replaces every row's probabilities
by the observed class shares (:mod:`dmlr.steps.kronecker`; with ``preconditioner="bound"``, ``M`` is Böhning's
bound ``B`` and the first direction is exactly the bound step). Later directions correct ``M`` from the observed
changes of the gradient. With ``refresh_every > 0``, the pass evaluating the second step also estimates the
information from every ``refresh_every``-th row block, and ``M`` becomes that matrix from then on (a sub-sampled
Newton preconditioner; ``benchmarks/README.md`` has the passes it saves). Every evaluation costs one score-only pass,
like a bound step, but convergence is superlinear in practice instead of linear. Böhning's bound stays the safeguard:
when the line search finds no ascent along the quasi-Newton direction, the driver takes the bound step, whose unit
length always ascends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.oracle.statistics import SCORE_ONLY, Request, Statistics
from dmlr.steps.base import DataFacts, Direction, Iterate, RuleContext, flat, unflat
from dmlr.steps.bohning import BoundRule
from dmlr.steps.kronecker import FrequencySolver
from dmlr.steps.newton import shifted_cholesky

__all__ = ["REFRESH_AFTER", "InformationSolver", "Pair", "QuasiNewtonRule", "add_pair", "lbfgs_settings", "two_loop"]

REFRESH_AFTER = 2
"""The pass evaluating the second direction's step estimates the information (a later second refresh saved one pass
or none on the benchmark problems)."""


def lbfgs_settings(facts: DataFacts, inference: bool) -> dict[str, int]:
    """L-BFGS's ``refresh_every``: the sampling rate of its preconditioner refresh when the cost model says it pays
    (:func:`dmlr.steps.cost.refresh_every`), else 0."""
    from dmlr.steps.cost import pass_model, refresh_every

    return {"refresh_every": refresh_every(pass_model(facts), facts.n_rows)}


@dataclass
class InformationSolver:
    """``H_0 = I^{-1}`` for an (estimated) information ``I``, by its upper Cholesky factor."""

    factor: Array

    @classmethod
    def of(cls, information: Array) -> InformationSolver:
        """Factor ``information`` (shifted when not positive definite)."""
        (factor, _), _ = shifted_cholesky(information)
        return cls(np.triu(factor))

    @classmethod
    def exact(cls, information: Array) -> InformationSolver:
        """Factor ``information`` as it is (``numpy.linalg.LinAlgError`` when not positive definite)."""
        return cls(scipy.linalg.cholesky(information))

    def solve(self, s: Array) -> Array:
        """``I^{-1} S`` for ``S`` of shape (d, m) (class-major flattening)."""
        return unflat(scipy.linalg.cho_solve((self.factor, False), flat(s)), s.shape[0])


Array = NDArray[np.float64]
Pair = tuple[Array, Array, float]


def two_loop(gradient: Array, pairs: Iterable[Pair], solve: Callable[[Array], Array], scaled: bool) -> Array:
    """``H_k gradient`` by the L-BFGS two-loop recursion: ``H_0 = solve`` (an inverse information or
    preconditioner, on (d, m) arrays) corrected by the pairs ``(s, y, 1 / s^T y)``, oldest first; ``scaled``: ``H_0``
    times ``s^T y / y^T H_0 y`` of the newest pair (for a rough ``H_0``; an exact information needs none)."""
    pairs = list(pairs)
    q = gradient.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(np.vdot(s, q))
        q -= a * y
        alphas.append(a)
    r = solve(q)
    if scaled and pairs:
        s, y, _ = pairs[-1]
        r *= float(np.vdot(s, y)) / float(np.vdot(y, solve(y)))
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        b = rho * float(np.vdot(y, r))
        r += (a - b) * s
    return r


def add_pair(pairs: deque[Pair], s: Array, y: Array, memory: int | None = None) -> None:
    """Keep the pair ``(s, y)`` (a step and the decrease of the gradient along it) when it has curvature
    (``s^T y > 1e-12 |s| |y|``), at most ``memory`` pairs (the oldest dropped)."""
    sy = float(np.vdot(s, y))
    if sy > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y)):
        pairs.append((s, y, 1.0 / sy))
        while memory is not None and len(pairs) > memory:
            pairs.popleft()


@dataclass
class QuasiNewtonRule:
    """L-BFGS on the penalized log-likelihood, preconditioned, with the bound as safeguard.

    Parameters
    ----------
    bound : BoundRule
        Supplies ``B^{-1}`` (factored on the first pass): the safeguard step, and the preconditioner when
        ``preconditioner="bound"``.
    memory : int
        Number of correction pairs kept.
    preconditioner : {"frequency", "bound"}
        ``H_0``: the class-frequency Kronecker approximation (default) or the bound.
    refresh_every : int
        0: keep ``H_0``. Else the pass after the first direction also computes the information on every
        ``refresh_every``-th row block (``Request.information_every``), and ``H_0`` becomes its inverse.
    """

    bound: BoundRule
    memory: int = 10
    preconditioner: str = "frequency"
    precond: FrequencySolver | InformationSolver | None = None
    refresh_every: int = 0
    name: str = "lbfgs"
    _pairs: deque[tuple[Array, Array, float]] = field(default_factory=deque, repr=False)
    _accepted: int = 0

    @classmethod
    def build(cls, context: RuleContext) -> QuasiNewtonRule:
        """The rule for a fit (its settings: :func:`lbfgs_settings`)."""
        bound = BoundRule(context.objective, context.n_classes)
        return cls(bound, refresh_every=int(context.settings.get("refresh_every", 0)))

    def prepare(self, stats: Statistics) -> None:
        """Factor the bound and the preconditioner (once, from the first pass's Gram matrix and class counts)."""
        self.bound.prepare(stats)
        if self.preconditioner == "frequency" and self.precond is None and stats.gram is not None:
            self.precond = FrequencySolver(stats.full_gram(), stats.class_weights, self.bound.objective)

    def reset(self) -> None:
        """Forget the correction pairs (the next direction is the bound step)."""
        self._pairs.clear()

    def fallback(self, it: Iterate) -> Direction | None:
        """Forget the correction pairs and take the bound step, whose unit length always ascends."""
        self.reset()
        return self.bound.direction(it)

    def direction(self, it: Iterate) -> Direction:
        """Quasi-Newton ascent direction; along the :data:`REFRESH_AFTER`-th one the passes also estimate the
        information (when ``refresh_every``), which preconditions the directions after it."""
        refresh = self.refresh_every > 0 and self._accepted + 1 == REFRESH_AFTER
        request = Request(information=True, information_every=self.refresh_every) if refresh else SCORE_ONLY
        solver = self.precond or self.bound.solver
        assert solver is not None
        return Direction(two_loop(it.gradient, self._pairs, solver.solve, scaled=True), request=request)

    def state(self) -> dict[str, Array]:
        """The bound's factors and the correction pairs stacked: ``s``, ``y`` of shape (pairs, d, m)."""
        out = {f"bound.{k}": v for k, v in self.bound.state().items()}
        out["directions"] = np.array([self._accepted])
        if isinstance(self.precond, InformationSolver):
            out["refreshed.factor"] = self.precond.factor
        elif self.precond is not None:
            out.update({f"precond.{k}": v for k, v in self.precond.factors().items()})
            out["precond.class_weights"] = self.precond.class_weights
        if self._pairs:
            out["s"] = np.stack([s for s, _, _ in self._pairs])
            out["y"] = np.stack([y for _, y, _ in self._pairs])
            out["rho"] = np.array([rho for _, _, rho in self._pairs])
        return out

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Take back the factors and the correction pairs."""
        self.bound.restore({k[len("bound.") :]: v for k, v in state.items() if k.startswith("bound.")}, gram)
        pre = {k[len("precond.") :]: v for k, v in state.items() if k.startswith("precond.")}
        self._accepted = int(state["directions"][0]) if "directions" in state else 0
        if "refreshed.factor" in state:
            self.precond = InformationSolver(state["refreshed.factor"])
        elif pre and gram is not None:
            weights = pre.pop("class_weights")
            self.precond = FrequencySolver.from_factors(gram, weights, self.bound.objective, pre)
        self._pairs.clear()
        if "s" in state:
            for s, y, rho in zip(state["s"], state["y"], state["rho"], strict=True):
                self._pairs.append((s, y, float(rho)))

    def accept(self, old: Iterate, new: Iterate) -> None:
        """Store the pair ``(s, y)`` with ``y`` the decrease of the gradient (curvature of ``-f``); an accepted pass
        that estimated the information becomes the preconditioner."""
        self._accepted += 1
        if new.stats.information is not None and self.refresh_every:
            self.precond = InformationSolver.of(self.bound.objective.information(new.stats))
        add_pair(self._pairs, new.coef - old.coef, old.gradient - new.gradient, self.memory)
