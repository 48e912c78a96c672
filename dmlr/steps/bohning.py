"""Böhning's fixed bound ``B = 1/2 (I_m - 1 1^T / K) kron X^T V X`` and its exact inverse.

``(I_m - 1 1^T/K)`` has eigenvalue ``1/K`` on the all-ones direction and 1 on its complement, so with the ridge
term ``lambda (I_m kron E)`` (``E`` masks the intercept) the bound splits into two ``d x d`` systems,
``A_mu = mu/2 G + lambda E`` for ``mu in {1/K, 1}``. A matrix ``S`` (``d x m``) is split into its component along
the ones direction, ``S_par = (S 1 / m) 1^T``, and the rest; ``B^{-1} S = A_{1/K}^{-1} S_par + A_1^{-1} S_perp``.
Without a penalty ``A_{1/K} = A_1 / K`` and this is ``2 G^{-1} (S + (S 1) 1^T)``. ``G`` is factored once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.oracle.statistics import SCORE_ONLY, Statistics
from dmlr.steps.base import Direction, Iterate, Objective, RuleContext
from dmlr.steps.newton import shifted_cholesky

__all__ = ["BoundRule", "BoundSolver"]

Array = NDArray[np.float64]


@dataclass
class BoundSolver:
    """Applies ``(B + lambda I kron E)^{-1}`` to ``d x m`` matrices; built from the Gram matrix once.

    Parameters
    ----------
    gram : ndarray, shape (d, d)
        ``X^T V X`` (full, symmetric).
    n_classes : int
        ``K``.
    objective : Objective
        Supplies the ridge strength and intercept mask.
    """

    gram: Array
    n_classes: int
    objective: Objective
    shift: float = 0.0
    _par: tuple[tuple[Array, bool], float] = field(init=False, repr=False)
    _perp: tuple[tuple[Array, bool], float] = field(init=False, repr=False)

    saved: dict[str, Array] | None = field(default=None, repr=False)
    """Factors from :meth:`factors` (a checkpoint): used instead of factoring again."""

    def __post_init__(self) -> None:
        if self.saved is not None:
            parts = []
            for name in ("perp", "par"):
                lower, tau = self.saved[f"{name}_meta"]
                parts.append(((self.saved[f"{name}_factor"], bool(lower)), float(tau)))
            self._perp, self._par = parts
            self.shift = max(self._perp[1], self._par[1])
            self.saved = None
            return
        ridge = np.diag(self.objective.l2 * self.objective.mask)
        k = self.n_classes
        self._perp = shifted_cholesky(0.5 * self.gram + ridge)
        if self.objective.l2 == 0.0:
            self._par = ((self._perp[0][0] / np.sqrt(k), self._perp[0][1]), self._perp[1] / k)
        else:
            self._par = shifted_cholesky(0.5 / k * self.gram + ridge)
        self.shift = max(self._perp[1], self._par[1])

    def factors(self) -> dict[str, Array]:
        """The two Cholesky factors and their shifts, as named arrays (for a checkpoint)."""
        out: dict[str, Array] = {}
        for name, ((c, lower), tau) in (("perp", self._perp), ("par", self._par)):
            out[f"{name}_factor"] = c
            out[f"{name}_meta"] = np.array([float(lower), tau])
        return out

    @classmethod
    def from_factors(cls, gram: Array, n_classes: int, objective: Objective, factors: dict[str, Array]) -> BoundSolver:
        """Rebuild a solver from :meth:`factors` without factoring again."""
        return cls(gram, n_classes, objective, saved=factors)

    def solve(self, s: Array) -> Array:
        """``(B + lambda I kron E)^{-1} S``.

        Parameters
        ----------
        s : ndarray, shape (d, m)

        Returns
        -------
        ndarray, shape (d, m)
        """
        par = np.broadcast_to(s.mean(axis=1, keepdims=True), s.shape)
        perp = s - par
        out: Array = scipy.linalg.cho_solve(self._perp[0], perp)
        out += scipy.linalg.cho_solve(self._par[0], np.ascontiguousarray(par))
        return out


@dataclass
class BoundRule:
    """Böhning's MM step ``delta = B^{-1} g``; a unit step never decreases the objective.

    The first pass must gather the Gram matrix (``first_request``); afterwards each pass computes only the score.
    """

    objective: Objective
    n_classes: int
    name: str = "bohning"
    solver: BoundSolver | None = None

    @classmethod
    def build(cls, context: RuleContext) -> BoundRule:
        """The rule for a fit (no settings)."""
        return cls(context.objective, context.n_classes)

    def prepare(self, stats: Statistics) -> None:
        """Factor the bound from the first pass's Gram matrix (once)."""
        if self.solver is None:
            self.solver = BoundSolver(stats.full_gram(), self.n_classes, self.objective)

    def direction(self, it: Iterate) -> Direction:
        """Bound step ``B^{-1} g`` (its trials compute the score only)."""
        if self.solver is None:
            raise ValueError("the bound rule is prepared from the first pass's Gram matrix before its first direction")
        return Direction(self.solver.solve(it.gradient), request=SCORE_ONLY)

    def fallback(self, it: Iterate) -> Direction | None:
        """None: a unit bound step always ascends, so a failed line search is final."""
        return None

    def accept(self, old: Iterate, new: Iterate) -> None:
        """The bound keeps no memory."""

    def state(self) -> dict[str, Array]:
        """The bound's factors (empty before the first pass)."""
        return {} if self.solver is None else self.solver.factors()

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Take back the factors; ``gram`` is the first pass's Gram matrix."""
        if state and gram is not None:
            self.solver = BoundSolver.from_factors(gram, self.n_classes, self.objective, state)
