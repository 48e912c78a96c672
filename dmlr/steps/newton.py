"""Exact Newton direction: solve ``(I + lambda P) delta = g`` by Cholesky, with a shift when not positive definite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.oracle.statistics import WITH_INFORMATION, Request, Statistics
from dmlr.steps.base import DataFacts, Direction, Iterate, Objective, RuleContext, flat, unflat

__all__ = ["NEWTON_FIRST", "NewtonRule", "newton_settings", "shifted_cholesky"]

Array = NDArray[np.float64]

NEWTON_FIRST = Request(information=True, gram=True, moments=True)
"""Newton's first pass: the information, and the Gram matrix and moments for the rank and separation checks."""


def shifted_cholesky(matrix: Array) -> tuple[tuple[Array, bool], float]:
    """Cholesky factor of ``matrix + tau I`` for the smallest ``tau`` in ``{0, 1e-10 s, 1e-8 s, ...}``.

    ``s`` is the mean of the diagonal. A positive definite matrix is factored unshifted; a singular or indefinite
    one (collinear columns, separation) gets the Levenberg-style shift that makes it factorable.

    Parameters
    ----------
    matrix : ndarray, shape (q, q)
        Symmetric.

    Returns
    -------
    factor : tuple
        ``scipy.linalg.cho_factor`` output.
    tau : float
        The shift that was used (0.0 when none).
    """
    scale = float(np.mean(np.abs(np.diag(matrix)))) or 1.0
    tau = 0.0
    for exponent in (None, -10, -8, -6, -4, -2, 0):
        if exponent is not None:
            tau = scale * 10.0**exponent
        try:
            shifted = matrix if tau == 0.0 else matrix + tau * np.eye(matrix.shape[0])
            return scipy.linalg.cho_factor(shifted, lower=False, check_finite=True), tau
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("information not factorable even with a large shift")


SAMPLED_GAIN = 1e-3
"""With ``sample_every > 1``, the next pass estimates the information from a sample of the row blocks while the
step it evaluates is predicted to raise the log-likelihood by more than this per unit weight (half the Newton
decrement ``g^T I^{-1} g / 2 sum(v)``, invariant to the scale of the features): far from the optimum an estimate from
a quarter of millions of rows gives nearly Newton's direction at a fraction of the arithmetic. Closer, every pass
computes it exactly: the iterate Newton's quadratic finish starts from needs the exact matrix, and so does the last
pass, whose information serves inference."""

SAMPLE_EVERY = 4
"""Newton on streamed data estimates the information from every fourth unit of rows while far from the optimum."""

SAMPLE_MIN_ROWS = 1_000_000
"""... when the data have at least this many rows (smaller data are cheap to pass over: exact Newton, whose iterates
do not depend on where the data live)."""

MIN_SAMPLE_ROWS = 20
"""An estimated information needs at least this many sampled rows per parameter ``(K - 1) d``."""


def newton_settings(facts: DataFacts, inference: bool) -> dict[str, int]:
    """Newton's ``sample_every``: :data:`SAMPLE_EVERY` for streamed data of at least :data:`SAMPLE_MIN_ROWS` rows
    whose sample has at least :data:`MIN_SAMPLE_ROWS` rows per parameter, else 1."""
    params = facts.n_columns * facts.n_nonbase
    enough = facts.n_rows >= SAMPLE_MIN_ROWS and facts.n_rows / SAMPLE_EVERY >= MIN_SAMPLE_ROWS * params
    return {"sample_every": SAMPLE_EVERY if facts.streamed and enough else 1}


@dataclass
class NewtonRule:
    """Newton's method on the penalized log-likelihood; one information pass per iteration.

    Attributes
    ----------
    objective : Objective
    sample_every : int
        Far from the optimum (predicted gain above :data:`SAMPLED_GAIN`), compute the information on every
        ``sample_every``-th unit of rows only (1: always exactly; see :func:`newton_settings`).
    """

    objective: Objective
    sample_every: int = 1
    name: str = "newton"

    @classmethod
    def build(cls, context: RuleContext) -> NewtonRule:
        """The rule for a fit (its settings: :func:`newton_settings`)."""
        return cls(context.objective, int(context.settings.get("sample_every", 1)))

    def prepare(self, stats: Statistics) -> None:
        """Nothing to set up: each direction comes from the current pass's information."""

    def direction(self, it: Iterate) -> Direction:
        """Newton direction, with its decrement ``g^T delta``, the shift the factorization needed, and the next
        pass's information: estimated far from the optimum (``sample_every > 1``), exact near it."""
        d = it.coef.shape[0]
        info = self.objective.information(it.stats)
        factor, shift = shifted_cholesky(info)
        g = flat(it.gradient)
        delta = scipy.linalg.cho_solve(factor, g)
        decrement = float(g @ delta)
        sampled = self.sample_every > 1 and decrement / 2 > SAMPLED_GAIN * it.stats.weight_sum
        request = Request(information=True, information_every=self.sample_every) if sampled else WITH_INFORMATION
        return Direction(unflat(delta, d), decrement=decrement, shift=shift, request=request)

    def fallback(self, it: Iterate) -> Direction | None:
        """None: the Newton direction ascends for a small enough step, so a failed line search is final."""
        return None

    def accept(self, old: Iterate, new: Iterate) -> None:
        """Newton keeps no memory."""

    def state(self) -> dict[str, Array]:
        """Nothing to keep."""
        return {}

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Nothing to restore."""
