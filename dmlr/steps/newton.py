"""Newton's method globalized by Levenberg-Marquardt damping: solve ``(H + mu diag(H)) delta = g`` by Cholesky.

``H`` is the (penalized) information. Each trial's actual gain is compared with the quadratic model's prediction
``g^T delta - delta^T H delta / 2``: a trial that gains at least a small share of it is accepted and the damping ``mu``
shrinks as the ratio approaches 1 (to exactly 0: pure Newton, quadratic convergence, its decrement the stopping
rule); a rejected one raises ``mu`` at once (``revise``), so an iteration costs a bounded number of trial passes
instead of halving a bad step dozens of times. ``diag(H)`` makes the damping invariant to the features' scales.

An undamped step that moves the linear predictor far for almost no predicted gain is marked as diverging
(:func:`dmlr.diagnostics.diverging`); two in a row end the fit as separated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.diagnostics import column_magnitudes, diverging
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


DAMPING_START = 1e-3
"""The damping a first rejected step raises ``mu`` to from 0 (relative to ``diag(H)``)."""

DAMPING_FLOOR = 1e-7
"""Damping shrunk below this is dropped (pure Newton steps, whose decrement can stop the fit)."""

ACCEPT_RATIO = 1e-4
"""A trial is accepted when it gains at least this share of the quadratic model's predicted gain."""

BISECTIONS = 6
"""Factorizations at most spent to find the damping that shortens a rejected step to its target length."""


def _scale(info: Array) -> Array:
    """``diag(H)``, floored (a column with no curvature still gets damped)."""
    diagonal = np.diag(info)
    return np.maximum(diagonal, 1e-12 * max(float(diagonal.max()), 1e-300))


@dataclass
class NewtonRule:
    """Newton's method on the penalized log-likelihood with Levenberg-Marquardt damping; one information pass per
    trial (accepted trials carry the next direction's information).

    Attributes
    ----------
    objective : Objective
    sample_every : int
        Far from the optimum (predicted gain above :data:`SAMPLED_GAIN`), compute the information on every
        ``sample_every``-th unit of rows only (1: always exactly; see :func:`newton_settings`).
    damping : float
        The current ``mu`` (0: pure Newton).
    diverged : int
        Consecutive accepted steps that were diverging.
    magnitudes : ndarray, shape (d,), optional
        The columns' magnitudes (:func:`~dmlr.diagnostics.column_magnitudes`) from the first pass's moments.
    """

    objective: Objective
    sample_every: int = 1
    name: str = "newton"
    damping: float = 0.0
    diverged: int = 0
    magnitudes: Array | None = None

    @classmethod
    def build(cls, context: RuleContext) -> NewtonRule:
        """The rule for a fit (its settings: :func:`newton_settings`)."""
        return cls(context.objective, int(context.settings.get("sample_every", 1)))

    def prepare(self, stats: Statistics) -> None:
        """The columns' magnitudes, to see divergence (each direction comes from the current pass's information)."""
        if stats.col_sum is not None and stats.col_sumsq is not None:
            self.magnitudes = column_magnitudes(stats.col_sum, stats.col_sumsq, stats.col_abssum, stats.weight_sum)

    def direction(self, it: Iterate) -> Direction:
        """The damped Newton direction at the current damping, with its predicted gain; its decrement (for the
        stopping rule) when undamped and unshifted; and the next pass's information: estimated far from the
        optimum (``sample_every > 1``), exact near it."""
        return self._at(it, self.objective.information(it.stats), self.damping)

    def _at(self, it: Iterate, info: Array, damping: float) -> Direction:
        d = it.coef.shape[0]
        damped = info
        if damping > 0:
            damped = info.copy()
            damped[np.diag_indices_from(damped)] += damping * _scale(info)
        factor, shift = shifted_cholesky(damped)
        g = flat(it.gradient)
        delta = scipy.linalg.cho_solve(factor, g)
        predicted = float(g @ delta - 0.5 * delta @ (info @ delta))
        sampled = self.sample_every > 1 and predicted > SAMPLED_GAIN * it.stats.weight_sum
        request = Request(information=True, information_every=self.sample_every) if sampled else WITH_INFORMATION
        decrement = float(g @ delta) if damping == 0 else None
        step = unflat(delta, d)
        mean_weight = it.stats.weight_sum / max(it.stats.n_rows, 1)
        flagged = (
            decrement is not None and shift == 0.0 and self.magnitudes is not None
            and it.stats.information_exact and diverging(step, self.magnitudes, predicted, mean_weight)
        )  # fmt: skip
        return Direction(step, decrement, shift, request, predicted, damping, self.diverged + 1 if flagged else 0)

    def revise(self, it: Iterate, direction: Direction, trial: Iterate) -> Direction | None:
        """Accept ``trial`` (``None``) and set the damping by how well the model predicted its gain, or reject it
        and return a shorter damped direction.

        On acceptance the damping falls tenfold when the gain was at least 90% of the prediction, threefold from
        25%, and doubles below. On rejection the objective along the step, fitted by a quadratic through its value
        and slope at the start and its value at the end, says what share ``t`` of the step would have been best
        (``t`` in [0.05, 0.5]); the damping is raised until the step's length (in the ``diag(H)`` norm) is ``t``
        times the rejected one's, found by bisection on the damping (factorizations only: no pass).
        """
        noise = 16.0 * float(np.finfo(np.float64).eps) * max(abs(it.objective), 1.0)
        gain = trial.objective - it.objective if trial.finite else -np.inf
        predicted = direction.predicted if direction.predicted is not None else 0.0
        if predicted <= noise:  # a refinement below the objective's rounding: judged by the gradient
            accept = gain >= -noise and trial.max_abs_gradient() <= it.max_abs_gradient()
            ratio = 1.0
        else:
            ratio = gain / predicted
            accept = ratio >= ACCEPT_RATIO
        if accept:
            self.diverged = direction.diverging
            self.damping *= 0.01 if ratio > 0.9 else 1.0 / 3.0 if ratio > 0.25 else 2.0
            if self.damping < DAMPING_FLOOR:
                self.damping = 0.0
            return None
        slope = float(np.vdot(it.gradient, direction.step))
        best = slope / (2.0 * (slope - gain)) if np.isfinite(gain) and slope > gain else 0.05
        revised = self._shorter(it, direction, min(max(best, 0.05), 0.5))
        self.damping = float(revised.damping or 0.0)
        return revised

    def _shorter(self, it: Iterate, direction: Direction, share: float) -> Direction:
        """The damped direction about ``share`` times as long as ``direction`` in the ``diag(H)`` norm."""
        info = self.objective.information(it.stats)
        scale = _scale(info)

        def length(step: Array) -> float:
            v = flat(step)
            return float(np.sqrt(v @ (scale * v)))

        target = share * length(direction.step)
        low, high = float(direction.damping or 0.0), max(4.0 * float(direction.damping or 0.0), DAMPING_START)
        candidate = self._at(it, info, high)
        while length(candidate.step) > target and high < 1e12:  # bracket: damp until short enough
            low, high = high, 8.0 * high
            candidate = self._at(it, info, high)
        for _ in range(BISECTIONS):  # then within ~20% of the target length
            if length(candidate.step) >= 0.8 * target:
                break
            middle = float(np.sqrt(max(low, DAMPING_START / 8.0) * high))
            trial = self._at(it, info, middle)
            if length(trial.step) > target:
                low = middle
            else:
                high, candidate = middle, trial
        return candidate

    def fallback(self, it: Iterate) -> Direction | None:
        """None: the damped direction ascends for a large enough damping, so a failed search is final."""
        return None

    def accept(self, old: Iterate, new: Iterate) -> None:
        """Nothing besides what :meth:`revise` updated."""

    def state(self) -> dict[str, Array]:
        """The damping, the diverging steps and the columns' magnitudes."""
        out = {"damping": np.array([self.damping]), "diverged": np.array([self.diverged])}
        if self.magnitudes is not None:
            out["magnitudes"] = self.magnitudes
        return out

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Take them back."""
        if "damping" in state:
            self.damping = float(state["damping"][0])
        if "diverged" in state:
            self.diverged = int(state["diverged"][0])
        self.magnitudes = state.get("magnitudes")
