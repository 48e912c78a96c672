"""Typed exceptions and warnings raised by dmlr.

Every error dmlr raises on purpose derives from :class:`DmlrError`, so callers (and the command line, which maps
them to exit codes) can tell a problem with the user's input from a numerical outcome or an infrastructure fault.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DmlrError",
    "InferenceUnavailableError",
    "InputError",
    "NumericalError",
    "SingularInformationWarning",
    "StoreError",
]


class DmlrError(Exception):
    """Base class of every error raised on purpose by dmlr."""


class InputError(DmlrError, ValueError):
    """The data or the arguments given to dmlr are invalid; the message names the culprit."""


class StoreError(InputError):
    """A Zarr store is missing, incomplete (a staging run did not finish) or corrupt (a chunk fails its checksum)."""


class NumericalError(DmlrError, ArithmeticError):
    """The fit produced a non-finite quantity or could not make progress."""


class InferenceUnavailableError(DmlrError, RuntimeError):
    """Standard errors were asked for but the fit did not compute the information at the optimum."""


class ConvergenceWarning(UserWarning):
    """The fit stopped at ``max_iter`` before meeting its convergence criterion."""


class SingularInformationWarning(UserWarning):
    """The information matrix at the optimum is singular: some parameters are not identified."""
