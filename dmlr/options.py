"""The options of a fit, each vocabulary defined once, validated when the options are made.

``dmlr.fit``, the scikit-learn estimator, the command line (``click.Choice`` over the same tuples) and the pipeline
spec all build a :class:`FitOptions`, so an invalid value is refused before any data is read or any cluster is
started, with one message naming the option and what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from dmlr.errors import InputError

__all__ = ["COLLINEAR", "PERSIST", "SEPARATION", "Collinear", "FitOptions", "Persist", "Separation"]

Separation = Literal["raise", "warn"]
"""What a detected (quasi-)separation does: raise ``PerfectSeparationError``, or warn and return unconverged."""
Collinear = Literal["raise", "drop", "keep"]
"""What dependent columns do: raise ``CollinearityError``, drop them, or keep them (infinite standard errors)."""
Persist = Literal["auto", "yes", "no"]
"""The command line's and the pipeline's spelling of ``persist`` (``"auto"``, ``True``, ``False`` in Python)."""

SEPARATION: tuple[Separation, ...] = get_args(Separation)
COLLINEAR: tuple[Collinear, ...] = get_args(Collinear)
PERSIST: tuple[Persist, ...] = get_args(Persist)


def _one_of(value: object, allowed: tuple[object, ...], name: str) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class FitOptions:
    """Everything about a fit except the data and where it runs. See :func:`dmlr.fit` for each option.

    Raises
    ------
    InputError
        At construction, naming the first invalid option and what it accepts.
    """

    method: str = "auto"
    l2: float = 0.0
    fit_intercept: bool = True
    tol: float = 1e-8
    max_iter: int = 100
    split_every: int = 8
    inference: bool = True
    persist: bool | Literal["auto"] = "auto"
    separation: Separation = "raise"
    collinear: Collinear = "raise"

    def __post_init__(self) -> None:
        from dmlr.steps.registry import method_names

        _one_of(self.method, method_names(), "method")
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise InputError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise InputError(f"tol must be > 0, got {self.tol!r}")
        if not _is_int(self.max_iter) or self.max_iter < 0:
            raise InputError(f"max_iter must be a non-negative integer, got {self.max_iter!r}")
        if not _is_int(self.split_every) or self.split_every < 2:
            raise InputError(f"split_every must be an integer >= 2, got {self.split_every!r}")
        _one_of(self.persist, (True, False, "auto"), "persist")
        _one_of(self.separation, SEPARATION, "separation")
        _one_of(self.collinear, COLLINEAR, "collinear")

    @staticmethod
    def persist_from(choice: Persist) -> bool | Literal["auto"]:
        """``persist`` from the command line's ``auto|yes|no``."""
        _one_of(choice, PERSIST, "persist")
        return "auto" if choice == "auto" else choice == "yes"


def _is_int(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
