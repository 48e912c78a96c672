"""Batch pipeline jobs: ``dmlr run SPEC.yaml`` runs stage -> fit -> evaluate -> report, idempotently."""

from dmlr.pipeline.spec import PipelineSpec, load_pipeline
from dmlr.pipeline.stages import STAGES, run_pipeline

__all__ = ["STAGES", "PipelineSpec", "load_pipeline", "run_pipeline"]
