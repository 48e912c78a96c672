"""Synthetic problems shared by the tests."""

from __future__ import annotations

import numpy as np


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
