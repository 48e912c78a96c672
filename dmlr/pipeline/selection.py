"""The fit stage's penalty chosen by cross-validation (``fit.l2_path``, ``fit.folds``): every (penalty, fold) model
and every penalty's fit of all rows share the passes (:func:`dmlr.cross_validate`); the fit at the best penalty is
the stage's result, and the scores are written next to it (``fit/cv_scores.csv``, ``fit/cv_summary.csv``)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import fsspec

from dmlr.results.results import MNLogitResults

__all__ = ["cross_validated_fit"]


def cross_validated_fit(run: Any, checkpoints: str) -> MNLogitResults:
    """Cross-validate the spec's penalties on the training store (each model checkpointed under ``checkpoints``),
    write the scores and the fit at the best penalty, and log the choice; that fit."""
    import dmlr
    from dmlr.models.cv import cross_validate

    spec = run.spec
    options = {k: v for k, v in asdict(spec.fit).items() if k != "l2"} | {"separation": "warn"}
    cv = cross_validate(
        run.path("data", "train.zarr"), folds=spec.selection.folds, l2=list(spec.selection.l2_path),
        seed=spec.selection.seed, storage_options=run.so or None, client=run.client, checkpoint=checkpoints,
        **options,
    )  # fmt: skip
    res = cv.refit
    assert res is not None
    fs, scores = fsspec.core.url_to_fs(run.path("fit", "cv_scores.csv"), **run.so)
    fs.makedirs(os.path.dirname(scores), exist_ok=True)
    fs.pipe_file(scores, cv.scores.to_csv(index=False).encode())
    fs.pipe_file(scores.replace("cv_scores.csv", "cv_summary.csv"), cv.summary_frame().to_csv().encode())
    dmlr.save(res, run.path("fit", "result"), overwrite=True, storage_options=run.so or None)
    run.log.emit("cross_validation", stage="fit", best_l2=cv.best_l2, folds=cv.n_folds, passes=cv.n_passes)
    return res
