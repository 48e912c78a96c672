"""Naming the partition that kills its worker, for any pass of the engine.

When distributed gives up on a task that killed its worker ``allowed-failures`` times (``KilledWorker``), the task
is one of the engine's (making a task's data, a pass's task) or one of the input's own (a persisted block's
computation). For the engine's, the task's partitions are run one task each with the same kernel to find the one that
kills; the one found is then confirmed alone (a task queued beside the culprit on the dying worker is counted as
suspicious too and may be the one distributed names), and when it does not kill alone the others are tried one at a
time. The message names the partition and its rows.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from dmlr.passes.plan import TaskPlan
from dmlr.passes.task import make_task_data, run_task

if TYPE_CHECKING:
    from dmlr.passes.engine import PassEngine

__all__ = ["describe_killed", "killed_worker_errors", "partition_kills"]


def killed_worker_errors() -> tuple[type[BaseException], ...]:
    from distributed.scheduler import KilledWorker

    return (KilledWorker,)


def describe_killed(engine: PassEngine, exc: BaseException) -> str:
    """The message of a pass that ended with ``KilledWorker``: the partition and its rows when they can be found."""
    key = getattr(exc, "task", None)
    failures = getattr(exc, "allowed_failures", "several")
    text = str(key)
    if text.startswith(("dmlr-pass-", "dmlr-data-", "dmlr-derive-")):
        plan = engine.plans[int(text.rsplit("-", 1)[1])]
        index = _isolate(engine, plan)
        if index is not None:
            return _message(engine, index, failures, key)
        return f"task {key} (a run of partitions) killed its worker {failures} times"
    layers = {str(name) for a in engine.data.arrays().values() for name in a.dask.layers}
    # a task producing row chunk i of the input (reading, decoding, ...): match its layer by containment
    if isinstance(key, tuple) and len(key) > 1 and any(n in str(key[0]) for n in layers):
        return _message(engine, int(key[1]), failures, key)
    return f"task {key} killed its worker {failures} times (distributed.scheduler.allowed-failures)"


def _message(engine: PassEngine, index: int, failures: Any, key: Any) -> str:
    chunks = engine.data.row_chunks
    rows = ""
    if all(c == c for c in chunks[: index + 1]):
        bounds = np.cumsum((0, *chunks[: index + 1])).astype(int)
        rows = f" (rows {bounds[index]}-{bounds[index + 1] - 1})"
    return (
        f"partition {index}{rows} killed the worker running it {failures} times "
        f"(distributed.scheduler.allowed-failures); giving up on it. Task: {key}"
    )


def partition_kills(engine: PassEngine, plan: TaskPlan, position: int) -> bool:
    """Whether the ``position``-th partition of ``plan``, made and evaluated alone in one task, kills its worker."""
    from distributed import wait

    client = engine.client
    token = uuid.uuid4().hex[:12]
    spec = plan.partitions[position]
    single, leaves = plan.bare([spec])
    data = client.submit(make_task_data, single, leaves, True, engine.transform, key=f"dmlr-alone-{token}")
    future = client.submit(run_task, data, _Probe(), key=f"dmlr-probe-{token}", pure=False)
    with client.as_current():
        wait([future])
    return future.status == "error" and isinstance(future.exception(), killed_worker_errors())


def _isolate(engine: PassEngine, plan: TaskPlan) -> int | None:
    """The partition of a failed task that kills its worker: found by running each in its own task, then
    confirmed alone (else the others tried one at a time)."""
    from distributed import wait

    client = engine.client
    token = uuid.uuid4().hex[:12]
    futures = []
    for j, spec in enumerate(plan.partitions):
        single, leaves = plan.bare([spec])
        data = client.submit(make_task_data, single, leaves, True, engine.transform, key=f"dmlr-iso-{token}-d{j}")
        futures.append(client.submit(run_task, data, _Probe(), key=f"dmlr-iso-{token}-{j}", pure=False))
    with client.as_current():
        wait(futures)
    named = [
        j for j, f in enumerate(futures) if f.status == "error" and isinstance(f.exception(), killed_worker_errors())
    ]
    if not named:
        return None
    if len(plan.partitions) == 1 or partition_kills(engine, plan, named[0]):
        return plan.partitions[named[0]].number
    for j in range(len(plan.partitions)):
        if j != named[0] and partition_kills(engine, plan, j):
            return plan.partitions[j].number
    return plan.partitions[named[0]].number


class _Probe:
    """A kernel that only produces every field of the rows (what every pass does first)."""

    reads = ("x", "labels", "codes", "weights", "offset", "groups")

    def __call__(self, rows: Any) -> _Nothing:
        return _Nothing()

    def memory(self, rows: int, p: int) -> int:
        return 0


class _Nothing:
    def __add__(self, other: _Nothing) -> _Nothing:
        return self
