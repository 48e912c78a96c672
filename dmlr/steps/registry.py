"""The step rules by name: what ``method=`` accepts, what each rule's first pass computes, how each is configured.

Adding a method is a module with a class satisfying :class:`~dmlr.steps.base.StepRule` and one entry in
:data:`RULES` (or :func:`register_rule` from outside the package); the driver, the options and the command line read
the names from here, and ``"auto"`` (:mod:`dmlr.steps.auto`) chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmlr.errors import InputError
from dmlr.oracle.statistics import BOUND_SETUP, SCORE_ONLY, Request
from dmlr.steps.base import DataFacts, RuleContext, StepRule
from dmlr.steps.bohning import BoundRule
from dmlr.steps.lbfgs import QuasiNewtonRule, lbfgs_settings
from dmlr.steps.newton import NEWTON_FIRST, NewtonRule, newton_settings

__all__ = ["RULES", "RuleFactory", "RuleSpec", "make_rule", "method_names", "register_rule", "rule_spec"]

RuleFactory = Callable[[RuleContext], StepRule]
"""Builds a rule from its context (objective, classes, the data's facts, its settings)."""

Settings = Callable[[DataFacts, bool], dict[str, Any]]
"""A rule's settings for the data at hand and whether the fit ends with inference (recorded in checkpoints)."""


@dataclass(frozen=True)
class RuleSpec:
    """A registered rule.

    Attributes
    ----------
    factory : RuleFactory
    first_request : Request
        What the first pass (at ``W = 0``) must compute for the rule's ``prepare`` (the fit adds the Gram matrix
        and moments its checks need; an information at ``W = 0`` without an offset follows from the Gram matrix).
    settings : callable, optional
        The rule's settings from the data's facts (none when ``None``).
    """

    factory: RuleFactory
    first_request: Request = SCORE_ONLY
    settings: Settings | None = None


RULES: dict[str, RuleSpec] = {
    "newton": RuleSpec(NewtonRule.build, NEWTON_FIRST, newton_settings),
    "bohning": RuleSpec(BoundRule.build, BOUND_SETUP),
    "lbfgs": RuleSpec(QuasiNewtonRule.build, BOUND_SETUP, lbfgs_settings),
}
"""The registered rules; ``"auto"`` is not a rule but a choice among them (:mod:`dmlr.steps.auto`)."""


def method_names() -> tuple[str, ...]:
    """Every value ``method=`` accepts: ``"auto"`` and the registered rules."""
    return ("auto", *RULES)


def register_rule(
    name: str, factory: RuleFactory, *, first_request: Request = SCORE_ONLY, settings: Settings | None = None
) -> None:
    """Make ``method=name`` build a rule with ``factory(context)``.

    Parameters
    ----------
    name : str
    factory : callable
        ``factory(context: RuleContext) -> StepRule``.
    first_request : Request
        What the rule's ``prepare`` needs from the first pass.
    settings : callable, optional
        ``settings(facts, inference) -> dict``: the rule's configuration for the data at hand, passed to the factory
        as ``context.settings`` and recorded in checkpoints.

    Raises
    ------
    InputError
        ``name`` is ``"auto"`` or already registered.
    """
    if name == "auto" or name in RULES:
        raise InputError(f"a step rule named {name!r} exists already")
    RULES[name] = RuleSpec(factory, first_request, settings)


def rule_spec(method: str) -> RuleSpec:
    """The registered rule ``method``.

    Raises
    ------
    InputError
        An unknown method (the message lists the known ones).
    """
    if method not in RULES:
        raise InputError(f"method must be one of {method_names()}, got {method!r}")
    return RULES[method]


def make_rule(method: str, context: RuleContext) -> StepRule:
    """The rule ``method`` built from ``context``."""
    return rule_spec(method).factory(context)
