"""The step rules by name: what ``method=`` accepts, and how ``"auto"`` chooses among them.

Adding a method is a module with a class satisfying :class:`~dmlr.steps.base.StepRule` and one line in
:data:`RULES` (or :func:`register_rule` from outside the package); the driver, the options and the command line
read the names from here.
"""

from __future__ import annotations

from collections.abc import Callable

from dmlr.errors import InputError
from dmlr.steps.base import Objective, StepRule
from dmlr.steps.bohning import BoundRule
from dmlr.steps.lbfgs import QuasiNewtonRule
from dmlr.steps.newton import NewtonRule

__all__ = [
    "RULES",
    "RuleFactory",
    "choose_method",
    "make_rule",
    "method_names",
    "register_rule",
]

RuleFactory = Callable[[Objective, int], StepRule]
"""Builds a rule from the objective and the number of classes ``K``."""

RULES: dict[str, RuleFactory] = {
    "newton": lambda objective, n_classes: NewtonRule(objective),
    "bohning": lambda objective, n_classes: BoundRule(objective, n_classes),
    "lbfgs": lambda objective, n_classes: QuasiNewtonRule(BoundRule(objective, n_classes)),
}
"""The registered rules; ``"auto"`` is not a rule but a choice among them (:func:`choose_method`)."""


def method_names() -> tuple[str, ...]:
    """Every value ``method=`` accepts: ``"auto"`` and the registered rules."""
    return ("auto", *RULES)


def register_rule(name: str, factory: RuleFactory) -> None:
    """Make ``method=name`` build a rule with ``factory(objective, n_classes)``.

    Raises
    ------
    InputError
        ``name`` is ``"auto"`` or already registered.
    """
    if name == "auto" or name in RULES:
        raise InputError(f"a step rule named {name!r} exists already")
    RULES[name] = factory


def choose_method(method: str, n_classes: int, n_features: int) -> str:
    """The rule ``method`` means for ``K = n_classes`` and ``d = n_features``.

    ``"auto"`` is resolved by :func:`dmlr.steps.cost.choose_by_cost` on the default pass model (no measurement:
    ``dmlr.fit`` itself chooses after the first pass, from the data at hand).

    Raises
    ------
    InputError
        An unknown method (the message lists the known ones).
    """
    if method not in method_names():
        raise InputError(f"method must be one of {method_names()}, got {method!r}")
    if method != "auto":
        return method
    from dmlr.steps.cost import choose_by_cost, default_model

    return choose_by_cost(default_model(n_features, n_classes - 1), inference=True, streamed=False).method


def make_rule(method: str, objective: Objective, n_classes: int, n_features: int) -> StepRule:
    """The step rule for ``method`` (``"auto"`` resolved by :func:`choose_method`)."""
    return RULES[choose_method(method, n_classes, n_features)](objective, n_classes)
