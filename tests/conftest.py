"""Shared fixtures: a real LocalCluster with worker processes, and small synthetic problems."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

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
