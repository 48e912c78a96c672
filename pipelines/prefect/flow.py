"""A Prefect flow running a dmlr pipeline spec's stages as tasks: stage -> fit -> evaluate -> report.

Each task runs one stage through :func:`dmlr.pipeline.run_pipeline`, so the flow has exactly the command line's
behaviour: complete stages are skipped (their outputs and inputs unchanged), the fit checkpoints after every
iteration and a retried fit task resumes at the next iteration. Tasks are retried only for failures a retry can
fix: a SIGTERM (``JobInterrupted``) or a cluster fault (``ClusterError``, lost connections); bad input and a fit
that does not converge fail the flow at once.

Run it once::

    pip install 'dmlr[prefect]'
    python pipelines/prefect/flow.py pipelines/example.yaml

or deploy it on a schedule (``dmlr_pipeline.serve(name=..., cron="0 3 * * *", parameters={"spec": ...})``). With a
spec naming ``data.incoming`` that is the nightly job: the stage task appends the files that arrived since the last
run, the fit task refits from the previous run's result, the report says what changed, and a night without new
files skips every task.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task

from dmlr.errors import ClusterError, JobInterrupted
from dmlr.pipeline import STAGES, load_pipeline, run_pipeline
from dmlr.pipeline.logs import JsonLog

RETRYABLE = (JobInterrupted, ClusterError, ConnectionError, TimeoutError)


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry interruptions and infrastructure faults; never bad input or non-convergence."""
    try:
        state.result()
    except RETRYABLE:
        return True
    except Exception:
        return False
    return False


class _PrefectLog(JsonLog):
    """dmlr's JSON lines, also sent to the Prefect run logger (visible in the Prefect UI)."""

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = super().emit(event, **fields)
        get_run_logger().info("%s", record)
        return record


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_retryable, task_run_name="dmlr-{stage}")
def run_stage(spec: str, stage: str, scheduler: str | None = None) -> str:
    """Run one stage of the spec; returns ``"ran"`` or ``"skipped"``."""
    parsed = load_pipeline(spec)
    return run_pipeline(parsed, stages=[stage], scheduler=scheduler, log=_PrefectLog(parsed.name))[stage]


@flow(name="dmlr-pipeline", log_prints=True)
def dmlr_pipeline(spec: str, scheduler: str | None = None) -> dict[str, str]:
    """Run every stage of a dmlr pipeline spec, in order, each as a Prefect task.

    Parameters
    ----------
    spec : str
        Path of the pipeline spec (YAML).
    scheduler : str, optional
        Address of a Dask scheduler to use instead of the spec's cluster.

    Returns
    -------
    dict
        ``{stage: "ran" | "skipped"}``.
    """
    load_pipeline(spec)  # fail fast on a bad spec, before any task runs
    return {stage: run_stage(spec, stage, scheduler) for stage in STAGES}


if __name__ == "__main__":
    print(dmlr_pipeline(sys.argv[1], *(sys.argv[2:3])))
