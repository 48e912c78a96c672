"""Typed exceptions and warnings raised by dmlr.

Every error dmlr raises on purpose derives from :class:`DmlrError`, so callers (and the command line, which maps
them to exit codes) can tell a problem with the user's input from a numerical outcome or an infrastructure fault.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "CollinearityError",
    "ConvergenceWarning",
    "DmlrError",
    "DroppedColumnsWarning",
    "InferenceUnavailableError",
    "InputError",
    "JobInterrupted",
    "NumericalError",
    "PerfectSeparationError",
    "PerfectSeparationWarning",
    "SingularInformationWarning",
    "StoreError",
    "WideDesignWarning",
    "WorkerMemoryError",
]


class DmlrError(Exception):
    """Base class of every error raised on purpose by dmlr."""


class InputError(DmlrError, ValueError):
    """The data or the arguments given to dmlr are invalid; the message names the culprit."""


class ClusterError(DmlrError, RuntimeError):
    """The cluster could not complete a pass (workers lost repeatedly, a partition that kills its worker)."""


class WorkerMemoryError(ClusterError):
    """A worker's memory limit is too small for one task of a pass; the message names the limit and the need."""


class JobInterrupted(DmlrError):
    """The job was asked to stop (SIGTERM, or SIGINT: Ctrl-C); the newest checkpoint is complete and a rerun resumes
    from it. ``signum`` is the signal's number (``None`` when not known)."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class StoreError(InputError):
    """A Zarr store is missing, incomplete (a staging run did not finish) or corrupt (a chunk fails its checksum)."""


class NumericalError(DmlrError, ArithmeticError):
    """The fit produced a non-finite quantity or could not make progress."""


class CollinearityError(InputError):
    """Constant, duplicate or collinear columns: some coefficients are not identified; the message names them."""


class PerfectSeparationError(NumericalError):
    """Some classes are (quasi-)completely separated: the maximum-likelihood estimate does not exist."""


class DroppedColumnsWarning(UserWarning):
    """``collinear="drop"`` removed dependent columns; the message names them and what they depend on."""


class PerfectSeparationWarning(UserWarning):
    """Issued instead of :class:`PerfectSeparationError` when the caller asked for ``separation="warn"``."""


class InferenceUnavailableError(DmlrError, RuntimeError):
    """Standard errors were asked for but the fit did not compute the information at the optimum."""


class ConvergenceWarning(UserWarning):
    """The fit stopped at ``max_iter`` before meeting its convergence criterion."""


class WideDesignWarning(UserWarning):
    """A categorical expands to more dense columns than staging considers ordinary (the message gives the size)."""


class SingularInformationWarning(UserWarning):
    """The information matrix at the optimum is singular: some parameters are not identified."""


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning attributed to the user's line: the first caller outside the dmlr package (a fixed
    ``stacklevel`` points into dmlr whenever the call path differs, e.g. ``fit_formula`` around ``fit``)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
