"""Prediction over stores and table files, written chunk by chunk to Zarr or Parquet (``dmlr predict``)."""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import zarr
from dask.delayed import delayed
from numpy.typing import NDArray
from zarr.codecs import Crc32cCodec, ZstdCodec

from dmlr.data.encoding import FeatureEncoding
from dmlr.data.store import expand_sources, from_partitions, is_local, open_store, read_table
from dmlr.errors import InputError
from dmlr.results.results import MNLogitResults

__all__ = ["features_of", "predict_to"]


def _is_store(path: str, storage_options: dict[str, Any] | None) -> bool:
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))


def features_of(res: MNLogitResults, data: str, storage_options: dict[str, Any] | None = None) -> da.Array:
    """The feature matrix of a store or of CSV/Parquet files, encoded as at staging, as a dask array (n, p).

    Files are encoded with the feature encoding recorded when the fitted store was staged (categorical levels
    included); a result fitted from in-memory data reads its feature columns by name.
    """
    if _is_store(data, storage_options):
        store = open_store(data, storage_options=storage_options)
        if list(store.feature_names) != list(res.data_feature_names):
            raise InputError(
                f"store {data} has features {store.feature_names}, "
                f"the model was fitted on {list(res.data_feature_names)}"
            )
        return store.X
    if res.data_info and res.data_info.get("encoding"):
        encoding = FeatureEncoding.from_json(res.data_info["encoding"])
    else:
        encoding = FeatureEncoding(tuple(res.data_feature_names))
    table, _ = read_table(expand_sources(data), storage_options)
    lengths = table.map_partitions(len).compute()
    return from_partitions(table, lengths, encoding.transform, (encoding.n_features,), np.float64, source=data)


def _frame(proba: NDArray[np.float64], classes: NDArray[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes.tolist()])
    frame["label"] = classes[np.argmax(proba, axis=1)]
    return frame


def predict_to(
    res: MNLogitResults,
    data: str,
    out: str,
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Predict every row of ``data`` and write probabilities and labels to ``out``.

    Parameters
    ----------
    res : MNLogitResults
    data : str
        A Zarr store, or CSV/Parquet files (globs allowed).
    out : str
        ``*.zarr``: arrays ``proba`` (n, K, columns in sorted label order) and ``label`` (int32 positions in
        ``attrs["classes"]``). ``*.parquet``: columns ``p_<label>`` and ``label``.
    overwrite : bool
        Replace an existing output.
    storage_options : dict, optional
        fsspec options for ``data`` and ``out``.

    Returns
    -------
    int
        Number of rows written.
    """
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    if fs.exists(root) and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    x = features_of(res, data, storage_options)
    proba = res.predict_proba(x)
    classes = np.asarray(res.classes)
    if out.rstrip("/").endswith(".zarr"):
        rows = max(1, (32 * 2**20) // (8 * classes.size))
        proba = proba.rechunk((rows, -1))
        group = zarr.open_group(out, mode="w", storage_options=None if is_local(out) else storage_options)
        codecs = [ZstdCodec(level=1), Crc32cCodec()]
        zp = group.create_array("proba", shape=proba.shape, chunks=(rows, classes.size), dtype="f8", compressors=codecs)
        zl = group.create_array("label", shape=proba.shape[:1], chunks=(rows,), dtype="i4", compressors=codecs)
        labels = da.map_blocks(lambda b: np.argmax(b, axis=1).astype(np.int32), proba, drop_axis=1, dtype=np.int32)
        targets: list[Any] = [zp, zl]
        da.store([proba, labels], targets, lock=False)
        group.attrs["classes"] = classes.tolist()
    elif out.rstrip("/").endswith(".parquet"):
        meta = _frame(np.zeros((0, classes.size)), classes)
        frames = [delayed(_frame)(block, classes) for block in proba.to_delayed().ravel()]
        dd.from_delayed(frames, meta=meta).to_parquet(
            out, write_index=False, overwrite=overwrite, storage_options=storage_options
        )
    else:
        raise InputError(f"--out must end with .zarr or .parquet, got {os.path.basename(out)!r}")
    return int(proba.shape[0])
