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
    "AUTO_NEWTON_MAX_INFO_FLOPS",
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

AUTO_NEWTON_MAX_INFO_FLOPS = 4e4
"""``auto`` uses exact Newton throughout when one row's share of the information pass costs at most this many flops
(``2 d^2`` for ``K = 2``, ``2 (K d)^2`` otherwise: the kernel's GEMM); above it, Newton's four or five
information passes cost more than the 10-20 score passes of preconditioned L-BFGS plus one information pass
for inference (crossover measured on a 2-worker LocalCluster at K = 3, d = 25-50; ``benchmarks/README.md``)."""


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
    """The rule ``method`` means for ``K = n_classes`` and ``d = n_features`` (resolves ``"auto"``).

    Raises
    ------
    InputError
        An unknown method (the message lists the known ones).
    """
    if method not in method_names():
        raise InputError(f"method must be one of {method_names()}, got {method!r}")
    if method != "auto":
        return method
    d = n_features
    flops = 2.0 * d * d if n_classes == 2 else 2.0 * (n_classes * d) ** 2
    return "newton" if flops <= AUTO_NEWTON_MAX_INFO_FLOPS else "lbfgs"


def make_rule(method: str, objective: Objective, n_classes: int, n_features: int) -> StepRule:
    """The step rule for ``method`` (``"auto"`` resolved by :func:`choose_method`)."""
    return RULES[choose_method(method, n_classes, n_features)](objective, n_classes)
