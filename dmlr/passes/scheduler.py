"""What the pass engine does about the Dask scheduler: functions it runs there, each pickled by value (defined
inside a function) so that a scheduler without dmlr installed can run them (a scheduler that runs no functions sent
to it is asked the standard way, or left as it is)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["PASS_TASKS", "keep_tasks_in_place", "where_function"]


PASS_TASKS = ("dmlr-data", "dmlr-pass", "dmlr-piece", "dmlr-combine")
"""Key prefixes of a pass's tasks, which the scheduler must not move away from their data."""


def keep_tasks_in_place(client: Any) -> None:
    """Tell the scheduler not to steal a pass's tasks (once per scheduler).

    A pass task's only large input is its task's data, whose ``sizeof`` counts what the task owns, not the persisted
    blocks it references (they are counted under their own keys): distributed's work stealing then takes the task for
    cheap to move and, when the workers look unbalanced, runs it on another worker, which fetches every block the data
    reference. Listing the prefixes among the scheduler's "fast tasks" (never stolen) keeps a pass where its data are;
    the tasks are balanced by construction (one per thread, about equal rows). Done with a function pickled by value,
    so the scheduler needs no dmlr; a scheduler without this list is left as it is.
    """
    if getattr(client, "_dmlr_in_place", False):
        return

    def in_place(prefixes: tuple[str, ...] = PASS_TASKS) -> bool:
        try:
            from distributed import stealing
        except ImportError:  # pragma: no cover - the scheduler runs distributed
            return False
        fast = getattr(stealing, "fast_tasks", None)
        if isinstance(fast, set):
            fast.update(prefixes)
            return True
        return False

    with contextlib.suppress(Exception):  # an older or newer scheduler: stealing stays as it is
        client.run_on_scheduler(in_place)
    client._dmlr_in_place = True


def where_function(keys: Sequence[Hashable]) -> Callable[..., tuple[list[str], list[int]]]:
    """A function for ``run_on_scheduler``, pickled by value (nested) so that the scheduler needs no dmlr: the
    sorted addresses of the workers and, per key of ``keys``, the position of the first worker holding it (``-1``:
    none). Positions, not addresses, come back: ``who_has`` sends a list of addresses per key."""

    def where(dask_scheduler: Any = None, keys: Sequence[Hashable] = keys) -> tuple[list[str], list[int]]:
        addresses = sorted(dask_scheduler.workers)
        position = {a: i for i, a in enumerate(addresses)}
        out = []
        for key in keys:
            state = dask_scheduler.tasks.get(key)
            holders = [ws.address for ws in state.who_has] if state is not None and state.who_has else []
            out.append(position.get(min(holders), -1) if holders else -1)
        return addresses, out

    return where
