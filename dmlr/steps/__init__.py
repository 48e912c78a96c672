"""Step rules: how the driver turns reduced statistics into a move of the coefficients."""

from dmlr.steps.base import DataFacts, Direction, Iterate, Objective, RuleContext, StepRule
from dmlr.steps.bohning import BoundRule, BoundSolver
from dmlr.steps.lbfgs import QuasiNewtonRule
from dmlr.steps.linesearch import backtrack
from dmlr.steps.newton import NewtonRule
from dmlr.steps.registry import RULES, RuleSpec, make_rule, method_names, register_rule, rule_spec

__all__ = [
    "RULES",
    "BoundRule",
    "BoundSolver",
    "DataFacts",
    "Direction",
    "Iterate",
    "NewtonRule",
    "Objective",
    "QuasiNewtonRule",
    "RuleContext",
    "RuleSpec",
    "StepRule",
    "backtrack",
    "make_rule",
    "method_names",
    "register_rule",
    "rule_spec",
]
