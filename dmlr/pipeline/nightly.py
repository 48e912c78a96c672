"""The pipeline's nightly mode (``data.incoming``): the files that arrived appended to the training store, the fit
started from the previous run's result (see ``pipelines/README.md``, "Nightly refits")."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from dmlr.errors import InputError
from dmlr.pipeline.stages import _Run, _sha, _source_files, _store_hash

__all__ = ["previous_result", "stage_incoming"]


def stage_incoming(run: _Run, train: list[str], common: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The training store of a spec with ``data.incoming``: the files not yet in it appended (each file once: the
    store's versions record their sources), or, the first time or when the data section changed, all staged.

    ``WORKDIR/data/incoming.json`` records the data section the store was staged under."""
    from dmlr.data.staging import stage
    from dmlr.data.store import open_store

    url = run.path("data", "train.zarr")
    config = _sha("data", run.spec.section("data"))
    record_path = run.path("data", "incoming.json")
    fs, record_file = fsspec.core.url_to_fs(record_path, **run.so)
    recorded = json.loads(fs.cat_file(record_file)) if fs.exists(record_file) else {}
    files = [*_source_files(train, run.so), *_source_files(run.spec.data.incoming, run.so, allow_none=True)]
    if not files:
        raise InputError("data.train and data.incoming match no file yet: nothing to stage")
    if recorded.get("config") == config and _store_hash(url, run.so) is not None:
        store = open_store(url, storage_options=run.so or None)
        known = {src for v in store.metadata.versions for src in v["sources"]}
        new = [f for f in files if f not in known]
        if not new:
            return store, {"appended_files": 0}
        store = stage(new, url, append=True, missing=common["missing"], storage_options=common["storage_options"])
        run.log.emit("appended", stage="stage", files=new, rows=store.metadata.versions[-1]["rows"],
                     version=store.metadata.version)  # fmt: skip
        return store, {"appended_files": len(new), "version": store.metadata.version}
    store = stage(files, url, **common)
    fs.makedirs(record_file.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(record_file, json.dumps({"config": config}).encode())
    return store, {"staged_files": len(files)}


def previous_result(run: _Run) -> Any:
    """The previous run's result, copied to ``fit/previous`` (the report's "what changed" compares with it) and
    returned as the refit's start; ``None`` the first time, or when it cannot start this fit (other columns)."""
    import dmlr
    from dmlr.results.io import save

    result = run.path("fit", "result")
    fs, path = fsspec.core.url_to_fs(result, **run.so)
    if not fs.exists(f"{path}/COMPLETE"):
        return None
    previous = dmlr.load(result, storage_options=run.so or None)
    save(previous, run.path("fit", "previous"), overwrite=True, storage_options=run.so or None)
    names = previous.feature_names
    if previous.formula is not None or previous.dropped_features or "store_rows" not in (previous.data_info or {}):
        return None
    rows = (previous.data_info or {})["store_rows"]
    run.log.emit("warm_start", stage="fit", previous_rows=rows, features=len(names))
    return previous
