"""Step rules: how the driver turns reduced statistics into a move of the coefficients."""

from dmlr.steps.base import Iterate, Objective, StepRule
from dmlr.steps.bohning import BoundRule, BoundSolver
from dmlr.steps.lbfgs import QuasiNewtonRule
from dmlr.steps.linesearch import backtrack
from dmlr.steps.newton import NewtonRule

__all__ = [
    "BoundRule",
    "BoundSolver",
    "Iterate",
    "NewtonRule",
    "Objective",
    "QuasiNewtonRule",
    "StepRule",
    "backtrack",
]
