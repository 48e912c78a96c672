"""Shared fixtures: a real LocalCluster with worker processes, and small synthetic problems."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from distributed import Client, LocalCluster

# distributed installs its log handler at import, bound to whatever sys.stderr is then (pytest's capture stream,
# closed before the session-scoped cluster shuts down): bind it to the real stderr instead.
for _handler in logging.getLogger("distributed").handlers:
    if isinstance(_handler, logging.StreamHandler):
        _handler.setStream(sys.__stderr__)


@pytest.fixture(scope="session")
def cluster_client() -> Iterator[Client]:
    """A real ``distributed.LocalCluster`` with 2 worker processes (1 thread each).

    The client is not set as the default, so tests that pass ``client=None`` still use the threaded scheduler.
    """
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


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
