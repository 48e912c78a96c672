"""Writing a store: each array's codec chosen by measurement, the chunks written with crc32c checksums, the
metadata and completion flag last, atomically on local disk (a temporary sibling renamed into place), and the
store's checksum."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import uuid
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import zarr
from dask.base import compute
from numpy.typing import NDArray
from zarr.codecs import BloscCodec, Crc32cCodec

from dmlr.data.metadata import SCHEMA_VERSION, StoreMetadata
from dmlr.data.sources import is_local, local_path
from dmlr.errors import InputError

__all__ = [
    "check_target_free",
    "choose_codec",
    "new_version",
    "now",
    "replace_file",
    "run_with_progress",
    "store_checksum",
    "temporary_name",
    "write_store",
]


COMPRESSION_MIN_SAVING = 0.10
"""Arrays are stored uncompressed unless Blosc-LZ4 with byte shuffle saves at least this fraction of a sample's
bytes (random float64 features save ~0%: compressing them only slows every read; class codes save ~70%)."""

CODEC_SAMPLE_BYTES = 8 * 2**20
"""Bytes of an array's first chunk that staging compresses to choose its codec."""


def choose_codec(sample: NDArray[Any]) -> tuple[str, float]:
    """The codec an array is stored with, by measurement on ``sample`` (its first rows).

    Returns
    -------
    name : {"none", "blosc-lz4-shuffle"}
    saving : float
        The fraction of the sample's bytes Blosc-LZ4 with byte shuffle saves.
    """
    from numcodecs import Blosc  # type: ignore[import-untyped]

    raw = np.ascontiguousarray(sample).tobytes()[:CODEC_SAMPLE_BYTES]
    if not raw:
        return "none", 0.0
    packed = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE, typesize=sample.dtype.itemsize).encode(raw)
    saving = 1.0 - len(packed) / len(raw)
    return ("blosc-lz4-shuffle" if saving >= COMPRESSION_MIN_SAVING else "none"), saving


def _create(group: zarr.Group, name: str, shape: tuple[int, ...], chunk_rows: int, dtype: Any, codec: str) -> Any:
    chunks = (min(chunk_rows, max(shape[0], 1)), *shape[1:])
    compressors: list[Any] = [Crc32cCodec()]
    if codec == "blosc-lz4-shuffle":
        compressors.insert(0, BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=compressors, fill_value=0)


def write_store(
    url: str,
    arrays: dict[str, da.Array],
    metadata: StoreMetadata,
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> None:
    """Write the arrays (regular row chunks of ``metadata.chunk_rows``), then the metadata and completion flag: the
    one writer of a store.

    A local store is written under a temporary sibling name and renamed into place once complete.
    """
    local = is_local(url)
    write_url = temporary_name(url) if local else url
    group = zarr.open_group(write_url, mode="w", storage_options=None if local else storage_options)
    rows = int(metadata.chunk_rows)
    codecs: dict[str, dict[str, Any]] = {}
    try:
        # each array's first chunk chooses its codec; one compute, so the source's first partition is read once
        samples = compute(*(arr[: min(arr.shape[0], rows)] for arr in arrays.values()))
        targets: list[Any] = []
        sources = []
        for (name, arr), sample in zip(arrays.items(), samples, strict=True):
            codec, saving = choose_codec(np.asarray(sample))
            codecs[name] = {"codec": codec, "lz4_saving": round(saving, 4)}
            z = _create(group, name, arr.shape, rows, arr.dtype, codec)
            sources.append(arr.rechunk(z.chunks))
            targets.append(z)
        run_with_progress(lambda: da.store(sources, targets, lock=False), progress)
    except BaseException:
        if local:
            _remove_tree(local_path(write_url))
        raise
    created = _dt.datetime.now(_dt.timezone.utc).isoformat()
    checksum = store_checksum(write_url, None if local else storage_options)
    first = new_version(metadata.source.get("paths", []), 0, metadata.n_rows, checksum, created, metadata.class_counts)
    done = metadata.replace(
        schema_version=SCHEMA_VERSION, dmlr_version=_version(), codecs=codecs, created=created, checksum=checksum,
        complete=True, versions=[first],
    )  # fmt: skip
    group.attrs["dmlr"] = done.to_json()  # the completion flag: written last
    if local:
        _move_into_place(local_path(write_url), local_path(url))


def new_version(
    sources: list[str], start: int, stop: int, checksum: str, created: str, class_counts: list[int] | None = None
) -> dict[str, Any]:
    """One entry of a store's list of versions (see :class:`~dmlr.data.metadata.StoreMetadata`)."""
    return {
        "id": uuid.uuid4().hex,
        "rows": [int(start), int(stop)],
        "class_counts": None if class_counts is None else [int(c) for c in class_counts],
        "sources": list(sources),
        "checksum": checksum,
        "created": created,
    }


def now() -> str:
    """The current time, ISO 8601, UTC."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _version() -> str:
    from dmlr import __version__

    return __version__


def replace_file(path: str, data: bytes, tmp: str | None = None) -> None:
    """Write a local file atomically: ``data`` to ``tmp`` (default ``path + ".tmp"``), flushed to disk, renamed over
    ``path`` (a reader sees the old file or the new one, never a part)."""
    tmp = tmp or f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def temporary_name(url: str) -> str:
    """A sibling name to write a local store under before it is complete."""
    path = local_path(url).rstrip("/")
    return f"{path}.partial-{uuid.uuid4().hex[:8]}"


def check_target_free(url: str, overwrite: bool, storage_options: dict[str, Any] | None) -> None:
    """Refuse an existing ``url`` unless ``overwrite``."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(root) and not overwrite:
        raise InputError(f"{url} already exists; pass overwrite=True (--overwrite) to replace it")


def _remove_tree(path: str, settle: float = 0.2, attempts: int = 25) -> None:
    """Remove a partly written store; tasks still running when a write failed may recreate files for a moment."""
    import time

    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle)
        if not os.path.exists(path):
            return


def _move_into_place(tmp: str, final: str) -> None:
    old = None
    if os.path.exists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_with_progress(func: Any, progress: bool) -> None:
    """Run ``func`` with dask's progress bar on stderr when ``progress`` (and stderr is a terminal)."""
    import sys

    if not progress or not sys.stderr.isatty():  # a bar written to a log file is noise
        func()
        return
    try:
        from distributed import default_client

        default_client()
        on_cluster = True
    except (ImportError, ValueError):
        on_cluster = False
    if on_cluster:
        func()  # distributed shows progress on its dashboard
        return
    from dask.diagnostics.progress import ProgressBar

    with ProgressBar(out=sys.stderr):
        func()


def store_checksum(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """SHA-256 over every array's metadata and the crc32c of every chunk (the chunk files' last 4 bytes).

    Reads 4 bytes per chunk, so it is cheap on any store size. It identifies the content as written: any chunk
    rewritten with other data or any layout change alters it. Corruption of bytes inside a chunk (which leaves the
    stored crc32c alone) is caught instead by the crc32c check on every read.
    """
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    fs.invalidate_cache()  # listings cached by this process may predate another process's writes
    digest = hashlib.sha256()
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].lstrip("/")
        if rel == "zarr.json" or rel.startswith(("_append/", "zarr.json.tmp")) or rel.endswith(".partial"):
            continue  # the group's attributes hold the checksum; an unfinished append's journal; zarr's temporaries
        digest.update(rel.encode())
        if rel.endswith("zarr.json"):
            digest.update(fs.cat_file(path))
        else:
            digest.update(fs.cat_file(path, start=-4))
    return digest.hexdigest()
