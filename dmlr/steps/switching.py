"""``method="auto"``'s watch: the chosen rule runs while it keeps to its prediction, then Newton from where it is.

``auto`` chooses by predicted time (:mod:`dmlr.steps.cost`), and the prediction of a first-order rule's passes is a
typical count: on a badly conditioned design (raw-unit features, 100+ sparse dummy columns, near-certain classes)
L-BFGS may need hundreds of iterations. :class:`SwitchingRule` watches it: after each accepted step it checks the
iterations so far against ``2 x`` the predicted passes, and, over the last :data:`WINDOW` iterations, the rate at
which ``log max |gradient|`` falls against what is left to ``tol`` within ``max_iter``. When either says the rule
will overrun, the next direction's pass also computes the exact information, and from the iterate it reaches the
fit continues with Newton (Levenberg-Marquardt damped, :mod:`dmlr.steps.newton`), which converges in a few steps
from wherever it starts. The switch is logged, the history's records name the rule of each iteration, and the
state (both rules' memories, whether and when it switched) is checkpointed, so a resumed fit switches where the
interrupted one did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.oracle.statistics import WITH_INFORMATION, Statistics
from dmlr.steps.base import Direction, Iterate, RuleContext, StepRule
from dmlr.steps.cost import NEWTON_MAX_PARAMETERS
from dmlr.steps.newton import NewtonRule

__all__ = ["WINDOW", "SwitchingRule", "watched"]

logger = logging.getLogger("dmlr")

Array = NDArray[np.float64]

WINDOW = 10
"""Iterations over which the rate of progress is measured."""


@dataclass
class SwitchingRule:
    """Runs ``first`` until it overruns its prediction, then ``then`` (Newton) from the current iterate.

    Attributes
    ----------
    first : StepRule
        The rule ``auto`` chose.
    then : NewtonRule
    budget : int
        Iterations of ``first`` before it counts as overrunning (twice its predicted passes).
    tol, max_iter : float, int
        The fit's stopping rule, for the projection of ``first``'s progress.
    """

    first: StepRule
    then: NewtonRule
    budget: int
    tol: float
    max_iter: int
    switched: bool = False
    pending: bool = False
    iterations: int = 0
    progress: list[float] = field(default_factory=list)
    reason: str = ""

    @property
    def name(self) -> str:
        """The active rule's name (each history record names the rule that made its step)."""
        return self.then.name if self.switched else self.first.name

    @property
    def active(self) -> StepRule:
        """The rule that proposes the next direction."""
        return self.then if self.switched else self.first

    @property
    def revise(self) -> Any:
        """Newton's trial judgement once switched (``None`` before: the line search globalizes ``first``)."""
        return self.then.revise if self.switched else getattr(self.first, "revise", None)

    def prepare(self, stats: Statistics) -> None:
        """Prepare both rules from the first pass."""
        self.first.prepare(stats)
        self.then.prepare(stats)

    def direction(self, it: Iterate) -> Direction:
        """The active rule's direction; while a switch is pending its pass also computes the exact information."""
        direction = self.active.direction(it)
        if self.pending and not self.switched:
            direction = replace(direction, request=WITH_INFORMATION)
        return direction

    def fallback(self, it: Iterate) -> Direction | None:
        """The active rule's fallback."""
        return self.active.fallback(it)

    def accept(self, old: Iterate, new: Iterate) -> None:
        """Tell the active rule, then decide whether ``first`` is overrunning (the switch happens once an accepted
        iterate carries the exact information)."""
        self.active.accept(old, new)
        if self.switched:
            return
        self.iterations += 1
        self.progress.append(math.log10(max(new.max_abs_gradient(), 1e-300)))
        if self.pending and new.stats.information_exact:
            self.switched, self.pending = True, False
            logger.info("auto: %s switches to newton after %d iterations: %s", self.first.name, self.iterations,
                        self.reason)  # fmt: skip
            return
        if not self.pending:
            self.reason = self._overrun()
            self.pending = bool(self.reason)

    def _overrun(self) -> str:
        """Why ``first`` will overrun (``""``: it keeps to its prediction)."""
        if self.iterations > self.budget:
            return f"{self.iterations} iterations against the {self.budget} predicted (twice its predicted passes)"
        if len(self.progress) <= WINDOW:
            return ""
        rate = (self.progress[-WINDOW - 1] - self.progress[-1]) / WINDOW
        left = self.progress[-1] - math.log10(self.tol)
        if rate <= 0 or self.iterations + left / rate > self.max_iter:
            needed = "never" if rate <= 0 else f"in about {self.iterations + left / rate:.0f} iterations"
            return (
                f"at its rate over the last {WINDOW} iterations it would reach tol {needed} (max_iter {self.max_iter})"
            )
        return ""

    def state(self) -> dict[str, Array]:
        """Both rules' memories and the watch's."""
        out = {f"first.{k}": v for k, v in self.first.state().items()}
        out.update({f"then.{k}": v for k, v in self.then.state().items()})
        out["switch"] = np.array([int(self.switched), int(self.pending), self.iterations], dtype=np.float64)
        out["progress"] = np.array(self.progress)
        return out

    def restore(self, state: dict[str, Array], gram: Array | None = None) -> None:
        """Take them back."""
        self.first.restore({k[6:]: v for k, v in state.items() if k.startswith("first.")}, gram)
        self.then.restore({k[5:]: v for k, v in state.items() if k.startswith("then.")}, gram)
        if "switch" in state:
            switched, pending, iterations = state["switch"]
            self.switched, self.pending, self.iterations = bool(switched), bool(pending), int(iterations)
            self.progress = [float(v) for v in state.get("progress", [])]


def watched(rule: StepRule, predicted_passes: int, context: RuleContext, tol: float, max_iter: int) -> StepRule:
    """``auto``'s rule: ``rule`` under a :class:`SwitchingRule` watch when it is not Newton and Newton is affordable
    (``(K - 1) d <=`` :data:`~dmlr.steps.cost.NEWTON_MAX_PARAMETERS`), else ``rule`` itself."""
    facts = context.facts
    if isinstance(rule, NewtonRule) or facts is None or facts.n_columns * facts.n_nonbase > NEWTON_MAX_PARAMETERS:
        return rule
    newton = NewtonRule.build(RuleContext(context.objective, context.n_classes, facts, {}))
    return SwitchingRule(rule, newton, max(2 * predicted_passes, WINDOW), tol, max_iter)
