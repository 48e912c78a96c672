"""Step rules: how the driver turns reduced statistics into a move of the coefficients."""

from dmlr.steps.base import Direction, Iterate, Objective, StepRule
from dmlr.steps.bohning import BoundRule, BoundSolver
from dmlr.steps.lbfgs import QuasiNewtonRule
from dmlr.steps.linesearch import backtrack
from dmlr.steps.newton import NewtonRule
from dmlr.steps.registry import RULES, choose_method, make_rule, method_names, register_rule

__all__ = [
    "RULES",
    "BoundRule",
    "BoundSolver",
    "Direction",
    "Iterate",
    "NewtonRule",
    "Objective",
    "QuasiNewtonRule",
    "StepRule",
    "backtrack",
    "choose_method",
    "make_rule",
    "method_names",
    "register_rule",
]
