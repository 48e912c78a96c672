"""Synthetic problems shared by the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def draw_problem(n: int, p: int, k: int, seed: int, scale: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian features, coefficients ``N(0, scale^2)`` with intercept row 0, labels drawn from the model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    coef = rng.normal(scale=scale, size=(p + 1, k - 1))
    eta = np.column_stack([np.zeros(n), coef[0] + x @ coef[1:]])
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    u = rng.random(n)
    y = (u[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)
    return x, np.minimum(y, k - 1), coef


ANES_FEATURES = ["logpopul", "selfLR", "age", "educ", "income"]
"""Numeric anes96 columns the inference tests fit PID (party identification, 7 classes) on."""


def anes96() -> pd.DataFrame:
    """statsmodels' anes96 survey (944 rows) with two text columns derived from it: ``party`` (dem/ind/rep from
    PID) and ``edu3`` (low/mid/high from educ)."""
    import statsmodels.api as sm

    d = sm.datasets.anes96.load_pandas().data
    d["party"] = np.where(d.PID > 3, "rep", np.where(d.PID < 3, "dem", "ind"))
    d["edu3"] = np.where(d.educ > 4, "high", np.where(d.educ < 3, "low", "mid"))
    return d


def anes_fits(features: list[str] = ANES_FEATURES) -> tuple[pd.DataFrame, Any, Any]:
    """PID on ``features`` of anes96, fitted by dmlr and by statsmodels' MNLogit (Newton, tight tolerances):
    ``(frame, dmlr result, statsmodels result)``."""
    import statsmodels.api as sm

    import dmlr

    d = anes96()
    y = d.PID.astype(int)
    res = dmlr.fit(d[features], y, tol=1e-12)
    ref = sm.MNLogit(y, sm.add_constant(d[features])).fit(disp=0, method="newton", maxiter=100, tol=1e-14)
    return d, res, ref
