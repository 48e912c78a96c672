"""``method="auto"`` and every rule's settings: one chooser, run once per fit after its first pass.

:func:`choose` turns the method asked for into a :class:`Choice`: the rule (for ``"auto"``, the one predicted to take
least time on the data at hand, :mod:`dmlr.steps.cost`) and its settings (:data:`~dmlr.steps.registry.RULES`' settings
functions: Newton's information sampling, L-BFGS's preconditioner refresh). The choice depends on timings measured by
the first pass, so it is part of the fit's checkpointed state: a resumed fit repeats it instead of choosing again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from dmlr.oracle.statistics import BOUND_SETUP, Request
from dmlr.steps.base import DataFacts
from dmlr.steps.cost import choose_by_cost, pass_model
from dmlr.steps.registry import rule_spec

__all__ = ["Choice", "choose", "first_request"]


def first_request(method: str, has_offset: bool) -> Request:
    """What the first pass (at ``W = 0``) computes for ``method``: the rule's first request (for ``"auto"``, the
    Gram matrix and moments its candidates prepare from). An information at ``W = 0`` is left out without an offset:
    it follows from the Gram matrix (:func:`dmlr.fitting.setup.with_zero_information`)."""
    request = BOUND_SETUP if method == "auto" else rule_spec(method).first_request
    if request.information and not has_offset:
        request = replace(request, information=False, gram=True, moments=True)
    return request


@dataclass(frozen=True)
class Choice:
    """The rule a fit runs, its settings, and (for ``auto``) why.

    Attributes
    ----------
    method : str
        The rule (never ``"auto"``).
    settings : dict
        Passed to the rule's factory (``RuleContext.settings``).
    asked : str
        The method asked for (``"auto"`` or the rule itself).
    predicted : dict of str to float
        ``auto``'s predicted seconds per candidate (empty otherwise).
    passes : dict of str to int
        ``auto``'s predicted passes per candidate.
    streamed : bool
        Whether the data are produced anew by every pass.
    """

    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    asked: str = ""
    predicted: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)
    streamed: bool = False

    def describe(self) -> str:
        """One log line (``auto``'s choice and the predictions behind it)."""
        where = "read or computed by every pass" if self.streamed else "held in memory"
        parts = ", ".join(f"{k} {v:.3g} s ({self.passes.get(k, '?')} passes)" for k, v in self.predicted.items())
        every = int(self.settings.get("refresh_every", 0))
        if self.method == "lbfgs" and every == 1:
            parts += "; L-BFGS preconditioned after its second step by the exact information"
        elif self.method == "lbfgs" and every:
            parts += f"; L-BFGS preconditioned after its second step by the information of 1/{every} of the rows"
        return f"auto chose {self.method} (data {where}; predicted {parts})"

    def record(self) -> dict[str, Any]:
        """The fields of the history's start record: the settings, and for ``auto`` what it chose and why."""
        out: dict[str, Any] = dict(self.settings)
        if self.asked == "auto":
            out.update(method=self.method, predicted_seconds=dict(self.predicted), streamed=self.streamed)
            out["choice"] = self.describe()
        return out

    def to_state(self) -> dict[str, Any]:
        """The choice as JSON (checkpoints)."""
        return {
            "method": self.method, "settings": self.settings, "asked": self.asked, "predicted": self.predicted,
            "passes": self.passes, "streamed": self.streamed,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Choice:
        """The inverse of :meth:`to_state`."""
        return cls(
            str(state["method"]), dict(state["settings"]), str(state["asked"]), dict(state["predicted"]),
            dict(state["passes"]), bool(state["streamed"]),
        )  # fmt: skip


def choose(method: str, facts: DataFacts, *, inference: bool) -> Choice:
    """The rule and settings for ``method`` on data with ``facts``.

    Raises
    ------
    InputError
        An unknown method.
    """
    if method != "auto":
        spec = rule_spec(method)
        settings = spec.settings(facts, inference) if spec.settings is not None else {}
        return Choice(method, settings, method, streamed=facts.streamed)
    prediction = choose_by_cost(pass_model(facts), inference=inference, n_rows=facts.n_rows)
    spec = rule_spec(prediction.method)
    settings = spec.settings(facts, inference) if spec.settings is not None else {}
    return Choice(prediction.method, settings, "auto", prediction.predicted, prediction.passes, facts.streamed)
