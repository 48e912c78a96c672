"""Robust covariances: the sandwich ``A I^-1 M I^-1`` and its small-sample factors.

Conventions (the README's "Robust and cluster-robust standard errors" gives the statsmodels and Stata names):

- ``HC0``: factor 1; equals statsmodels' ``MNLogit.fit(cov_type="HC0")``.
- ``HC1``: ``n / (n - 1)``, Stata's ``vce(robust)`` for maximum-likelihood commands (statsmodels' HC1 for
  likelihood models uses ``n / (n - k)`` instead).
- ``cluster``: ``G/(G-1) (n-1)/(n-k)`` (statsmodels' ``cov_type="cluster"``, the default) or ``G/(G-1)``
  (``cluster_correction="stata"``, Stata's ``vce(cluster id)``).

``n`` is the number of observations (the sum of frequency weights; the number of rows with probability weights),
``k = m d`` the number of parameters, ``G`` the number of clusters.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["correction", "sandwich"]

Array = NDArray[np.float64]


def correction(cov_type: str, nobs: float, n_params: int, n_clusters: int = 0, cluster: str = "statsmodels") -> float:
    """The small-sample factor of a robust covariance (see the module docstring)."""
    if cov_type == "HC0":
        return 1.0
    if cov_type == "HC1":
        return nobs / (nobs - 1.0)
    if cov_type == "cluster":
        factor = n_clusters / (n_clusters - 1.0)
        return factor * (nobs - 1.0) / (nobs - n_params) if cluster == "statsmodels" else factor
    raise ValueError(cov_type)


def sandwich(bread: Array, meat: Array, factor: float) -> Array:
    """``factor * bread @ meat @ bread``, symmetric, shape (m d, m d).

    Parameters are not identified where the bread (the inverse information) has infinite variances: those rows and
    columns keep the bread's ``inf``/``nan``.
    """
    bad = ~np.isfinite(np.diag(bread))
    b = np.where(np.isfinite(bread), bread, 0.0)
    cov = factor * (b @ meat @ b)
    cov = 0.5 * (cov + cov.T)
    if bad.any():
        cov[bad, :] = bread[bad, :]
        cov[:, bad] = bread[:, bad]
    return cov
