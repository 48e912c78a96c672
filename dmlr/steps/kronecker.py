"""A Kronecker approximation of the information from the class frequencies, as a quasi-Newton preconditioner.

At the optimum the intercept's score equation makes the average fitted probability equal the observed class
shares ``pi`` (shape (m,), non-base classes). Replacing every row's ``p_i`` by ``pi`` in
``sum_i (Lambda_i - p_i p_i^T) kron x_i x_i^T`` gives ``A kron G`` with ``A = diag(pi) - pi pi^T`` (``m x m``) and
``G = X^T V X``: close to the information where the classes are predicted with moderate confidence, and much
closer than Böhning's bound ``1/2 (I - 1 1^T / K) kron G`` when ``K`` is large (the bound assumes curvature 1/4 per
class, the data have ``pi_k (1 - pi_k)``). Its inverse costs one eigendecomposition of ``A`` and Cholesky factors of
``d x d`` matrices: with ``A = Q diag(mu) Q^T``, ``(A kron G + lambda I kron E)^{-1}`` applied to ``S`` (``d x m``)
is ``[ (mu_j G + lambda E)^{-1} (S Q)_j ]_j Q^T``; without a penalty one factor of ``G`` serves every ``j``.

It is not a bound, so a unit step along it may overshoot: the line search guards it, and the L-BFGS rule falls back
to the bound step when it fails. It saves L-BFGS iterations over the bound as preconditioner, more so for many
classes (``benchmarks/README.md``, "Measurements behind the code's constants").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.steps.base import Objective
from dmlr.steps.newton import shifted_cholesky

__all__ = ["FrequencySolver"]

Array = NDArray[np.float64]


@dataclass
class FrequencySolver:
    """Applies ``(A kron G + lambda I kron E)^{-1}`` to ``d x m`` matrices (see the module docstring).

    Parameters
    ----------
    gram : ndarray, shape (d, d)
        ``X^T V X``.
    class_weights : ndarray, shape (K,)
        Weighted class counts (code 0 is the base); every class must carry weight.
    objective : Objective
        Ridge strength and intercept mask.
    """

    gram: Array
    class_weights: Array
    objective: Objective
    q: Array = field(init=False, repr=False)
    mu: Array = field(init=False, repr=False)
    _factors: list[tuple[tuple[Array, bool], float]] = field(init=False, repr=False)

    saved: dict[str, Array] | None = field(default=None, repr=False)
    """Factors from :meth:`factors` (a checkpoint): used instead of factoring again."""

    def __post_init__(self) -> None:
        if self.saved is not None:
            self.q, self.mu = self.saved["q"], self.saved["mu"]
            pairs = zip(self.saved["factors"], self.saved["meta"], strict=True)
            self._factors = [((c, bool(lower)), float(tau)) for c, (lower, tau) in pairs]
            self.saved = None
            return
        share = self.class_weights / self.class_weights.sum()
        p = share[1:]
        self.mu, self.q = np.linalg.eigh(np.diag(p) - np.outer(p, p))
        self.mu = np.maximum(self.mu, 1e-12 * float(self.mu.max()))
        if self.objective.l2 == 0.0:
            self._factors = [shifted_cholesky(self.gram)]
        else:
            ridge = np.diag(self.objective.l2 * self.objective.mask)
            self._factors = [shifted_cholesky(mu * self.gram + ridge) for mu in self.mu]

    def solve(self, s: Array) -> Array:
        """``(A kron G + lambda I kron E)^{-1} S``.

        Parameters
        ----------
        s : ndarray, shape (d, m)

        Returns
        -------
        ndarray, shape (d, m)
        """
        t = s @ self.q
        if len(self._factors) == 1:
            t = scipy.linalg.cho_solve(self._factors[0][0], t) / self.mu
        else:
            t = np.column_stack([scipy.linalg.cho_solve(f[0], t[:, j]) for j, f in enumerate(self._factors)])
        out: Array = t @ self.q.T
        return out

    def factors(self) -> dict[str, Array]:
        """Eigenvectors, eigenvalues and Cholesky factors as named arrays (for a checkpoint)."""
        return {
            "q": self.q,
            "mu": self.mu,
            "factors": np.stack([c for (c, _), _ in self._factors]),
            "meta": np.array([[float(lower), tau] for (_, lower), tau in self._factors]),
        }

    @classmethod
    def from_factors(
        cls, gram: Array, class_weights: Array, objective: Objective, factors: dict[str, Array]
    ) -> FrequencySolver:
        """Rebuild a solver from :meth:`factors` without factoring again."""
        return cls(gram, class_weights, objective, saved=factors)
