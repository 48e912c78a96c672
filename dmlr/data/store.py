"""Opened Zarr stores: one chunk of the store is one row partition of every pass.

Layout of a store (a Zarr group)::

    X        float64 or float32 (n, p)   chunked by rows only
    y        int32   (n,)     class positions in the sorted labels (``metadata.classes``)
    weights  float64 (n,)     optional frequency weights
    offset   float64 (n, m)   optional offsets
    groups   int64   (n,)     optional cluster ids
    attributes["dmlr"]        :class:`~dmlr.data.metadata.StoreMetadata`, ``complete: true`` written last

Integrity: every chunk ends with a crc32c checksum (the Zarr ``crc32c`` codec) that is verified on every read; a
failing chunk raises :class:`~dmlr.errors.StoreError` naming the array, the chunk and its rows. Staging is in
:mod:`dmlr.data.staging` (tables) and :mod:`dmlr.data.arrays` (arrays), writing in :mod:`dmlr.data.writing`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import zarr
from numpy.typing import NDArray

from dmlr.data.chunks import CheckedChunks
from dmlr.data.encoding import FeatureEncoding
from dmlr.data.metadata import SCHEMA_VERSION, StoreMetadata
from dmlr.data.sources import is_local, local_path
from dmlr.errors import StoreError, warn

__all__ = ["StoreData", "is_store", "open_store"]


@dataclass(frozen=True)
class StoreData:
    """An opened store.

    Attributes
    ----------
    url : str
    X : dask.array.Array, shape (n, p)
    y : dask.array.Array, shape (n,)
        Positions of the labels in :attr:`classes`.
    weights : dask.array.Array, shape (n,), optional
    offset : dask.array.Array, shape (n, m), optional
    metadata : StoreMetadata
        What the store records about its data.
    groups : dask.array.Array, shape (n,), optional
        Cluster ids (int64: the column's integers, or positions in its sorted distinct values) when staged with
        ``groups=``.
    """

    url: str
    X: da.Array
    y: da.Array
    weights: da.Array | None
    offset: da.Array | None
    metadata: StoreMetadata
    groups: da.Array | None = None

    @property
    def classes(self) -> NDArray[Any]:
        """Class labels in code order (sorted), shape (K,)."""
        return np.asarray(self.metadata.classes)

    @property
    def feature_names(self) -> list[str]:
        """Names of the ``p`` columns of X."""
        return list(self.metadata.feature_names)

    @property
    def encoding(self) -> FeatureEncoding:
        """How source columns map to X (for encoding new data at prediction)."""
        return FeatureEncoding.from_json(self.metadata.encoding)

    @property
    def checksum(self) -> str:
        """The checksum recorded at staging."""
        return self.metadata.checksum

    def describe(self) -> str:
        """Shape, classes and their counts, chunking (what ``dmlr info`` prints)."""
        meta = self.metadata
        lines = [
            f"store:      {self.url}",
            f"rows:       {meta.n_rows:,}",
            f"features:   {len(self.feature_names)} ({', '.join(self.feature_names[:8])}"
            + (", ..." if len(self.feature_names) > 8 else "")
            + ")",
            f"chunks:     {len(self.X.chunks[0])} of up to {meta.chunk_rows:,} rows "
            f"({meta.chunk_rows * max(len(self.feature_names), 1) * self.X.dtype.itemsize / 2**20:.1f} "
            "MiB of X each)",
            f"X size:     {self.X.nbytes / 2**30:.3f} GiB ({self.X.dtype}, in memory)",
            "codecs:     " + _describe_codecs(meta.codecs),
            f"target:     {meta.target}",
            "classes:    " + ", ".join(f"{c} ({k:,})" for c, k in zip(meta.classes, meta.class_counts, strict=True)),
            f"weights:    {meta.weights or '-'}",
            f"offset:     {', '.join(meta.offset) if meta.offset else '-'}",
            f"source:     {meta.source['format']}, {len(meta.source['paths'])} file(s)",
            f"checksum:   {meta.checksum}",
            f"staged:     {meta.created} by dmlr {meta.dmlr_version} (schema {meta.schema_version})",
        ]
        if meta.versions:
            lines.append(f"version:    {meta.version} of {len(meta.versions)}")
            for i, v in enumerate(meta.versions, 1):
                files = ", ".join(str(s).rsplit("/", 1)[-1] for s in v["sources"][:3])
                more = f" +{len(v['sources']) - 3} more" if len(v["sources"]) > 3 else ""
                lines.append(
                    f"  {i}: rows {v['rows'][0]:,}-{v['rows'][1]:,} from {files or '(arrays)'}{more}, "
                    f"{v['created'][:19]}Z, checksum {v['checksum'][:12]}"
                )
        return "\n".join(lines)


def is_store(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` (a local path or fsspec URL) holds a Zarr group (a store, complete or not)."""
    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))


def _finish_abandoned_append(url: str, options: dict[str, Any] | None) -> None:
    """Undo an append that a process of this host left unfinished (killed); one that may still run is left alone
    (its rows are not committed, so the store reads as its previous version)."""
    from dmlr.data.appending import abandoned, journal_state, recover

    try:
        journal = journal_state(url, options)
    except (OSError, ValueError):
        return
    if journal is not None and abandoned(journal):
        try:
            recover(url, options)
        except OSError as exc:  # a read-only store: read its committed version
            warn(f"{url} holds an unfinished append that could not be undone here: {exc}")


def _describe_codecs(codecs: dict[str, dict[str, Any]] | None) -> str:
    if not codecs:
        return "zstd level 1 (staged before codecs were chosen by measurement)"
    return ", ".join(f"{name} {c['codec']} (lz4 saves {100 * c['lz4_saving']:.0f}%)" for name, c in codecs.items())


def open_store(store: str | StoreData, *, storage_options: dict[str, Any] | None = None) -> StoreData:
    """Open a complete store as aligned row-chunked dask arrays (one chunk of the store = one partition).

    Parameters
    ----------
    store : str
        Path or fsspec URL.
    storage_options : dict, optional
        fsspec options (endpoint, credentials).

    Raises
    ------
    StoreError
        No store there, a store whose staging did not complete, or one of another schema version.
    """
    if isinstance(store, StoreData):
        return store
    url = str(store)
    options = None if is_local(url) else storage_options
    _finish_abandoned_append(url, options)
    try:
        group = zarr.open_group(url, mode="r", storage_options=options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as exc:
        hint = ""
        if is_local(url):
            partial = glob.glob(local_path(url).rstrip("/") + ".partial-*")
            if partial:
                hint = (
                    f"; {partial[0]} is left from a staging run that did not finish: stage again "
                    "(and remove the partial directory)"
                )
            elif os.path.isfile(local_path(url)):
                hint = (
                    f": {url} is a file; fits and predictions of tables read a staged store: "
                    f"dmlr stage {url} STORE.zarr --target LABEL_COLUMN, then use STORE.zarr"
                )
            elif not os.path.exists(local_path(url)):
                hint = f" ({url} does not exist)"
        raise StoreError(f"no dmlr store at {url}{hint}") from exc
    raw: Any = group.attrs.get("dmlr")
    found: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    if not found.get("complete"):
        raise StoreError(
            f"{url} is not a complete dmlr store (its staging did not finish, or it was not made by dmlr); "
            "stage it again"
        )
    if found.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{url} has store schema {found.get('schema_version')}, this dmlr reads {SCHEMA_VERSION}")
    meta = StoreMetadata.from_json(found)
    token = meta.checksum[:16]

    def lazy(name: str) -> da.Array | None:
        if name not in group:
            return None
        z = group[name]
        assert isinstance(z, zarr.Array)
        arr = da.from_array(CheckedChunks(z, name, url), chunks=z.chunks, name=f"dmlr-store-{name}-{token}")
        return arr if arr.shape[0] == meta.n_rows else arr[: meta.n_rows]  # an append running: its committed rows

    x, y = lazy("X"), lazy("y")
    if x is None or y is None:
        raise StoreError(f"{url} lacks the X or y array")
    return StoreData(url, x, y, lazy("weights"), lazy("offset"), meta, lazy("groups"))
