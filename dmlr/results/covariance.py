"""Covariance of the coefficients from the information at the optimum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from dmlr.errors import SingularInformationWarning, warn
from dmlr.oracle.statistics import mirror_upper

__all__ = ["inverse_information"]

Array = NDArray[np.float64]


def inverse_information(information: Array, names: Sequence[str]) -> Array:
    """Model-based covariance ``I(theta_hat)^{-1}``, class-major, shape (m d, m d).

    Parameters
    ----------
    information : ndarray, shape (m d, m d)
        Information (minus the Hessian of the penalized log-likelihood) at the optimum.
    names : sequence of str, length m d
        ``"class:feature"`` labels of the flat parameters, for the warning.

    Returns
    -------
    ndarray, shape (m d, m d)
        Symmetric. When the information is singular a :class:`SingularInformationWarning` names the parameters in
        its null space and their variances are reported as ``inf``, never as finite numbers that mean nothing.
    """
    q = information.shape[0]
    # One matrix beside the input: the Cholesky factor is inverted in place (LAPACK potri), then mirrored.
    factor, info = scipy.linalg.lapack.dpotrf(information, lower=0, clean=0, overwrite_a=0)
    if info == 0:
        cov, info = scipy.linalg.lapack.dpotri(factor, lower=0, overwrite_c=1)
        del factor
        if info == 0:
            cov = mirror_upper(cov)
            if np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0):
                return cov
        del cov
    vals, vecs = np.linalg.eigh(information)
    cutoff = max(vals.max(), 0.0) * q * np.finfo(np.float64).eps * 1e3
    keep = vals > cutoff
    null = vecs[:, ~keep]
    involved = np.nonzero(np.abs(null).max(axis=1) > 1e-6)[0] if null.size else np.array([], int)
    warn(
        "the information matrix at the optimum is singular (rank "
        f"{int(keep.sum())} of {q}); parameters not identified: "
        f"{[names[i] for i in involved]}. Their standard errors are reported as inf; "
        "drop collinear or constant columns, or fit with l2 > 0.",
        SingularInformationWarning,
    )
    cov = (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T
    cov[involved, :] = np.nan
    cov[:, involved] = np.nan
    cov[involved, involved] = np.inf
    return cov
