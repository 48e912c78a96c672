"""Prediction over stores and table files, written chunk by chunk to Zarr or Parquet (``dmlr predict``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
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

from dmlr.data.sources import expand_sources, is_local, read_table
from dmlr.data.store import is_store, open_store
from dmlr.errors import InputError
from dmlr.options import check_missing, check_output
from dmlr.results.results import MNLogitResults

__all__ = ["output_kind", "predict_to"]


def output_kind(out: str) -> str:
    """``"zarr"`` or ``"parquet"`` from the output's name; anything else is an :class:`InputError`."""
    name = out.rstrip("/")
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputError(f"--out must end with .zarr or .parquet, got {os.path.basename(name)!r}")


def _predict_frame(
    frame: pd.DataFrame,
    res: MNLogitResults,
    keep: list[str],
    missing: str,
    unseen: str,
    se: bool = False,
    partition_info: Any = None,
) -> pd.DataFrame:
    """One table partition: the kept columns, then ``p_<label>`` per class and ``label`` (and with ``se`` the
    standard errors and 95% limits of the probabilities)."""
    proba = res.proba_frame(frame, missing, unseen, partition_info=partition_info) if len(frame) else None
    index = frame.index if proba is None else proba.index
    out = frame.loc[index, keep].reset_index(drop=True) if keep else pd.DataFrame(index=range(len(index)))
    classes = np.asarray(res.classes)
    values = np.zeros((0, classes.size)) if proba is None else proba.to_numpy()
    parts = [out, _frame(values, classes)]
    if se:
        parts.append(_se_frame(res, frame.loc[index] if len(frame) else frame, classes))
    return pd.concat(parts, axis=1)


def _se_frame(res: MNLogitResults, frame: pd.DataFrame, classes: NDArray[Any]) -> pd.DataFrame:
    names = [f"{kind}_{c}" for kind in ("se", "lower", "upper") for c in classes.tolist()]
    if not len(frame):
        return pd.DataFrame({n: pd.Series(dtype=np.float64) for n in names})
    pred = res.get_prediction(frame, unseen="nan")
    lower, upper = pred.conf_int(0.05)
    return pd.DataFrame(np.column_stack([pred.se, lower, upper]), columns=names)


def _frame(proba: NDArray[np.float64], classes: NDArray[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes.tolist()])
    labels = pd.Series(classes[np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)])
    undefined = np.isnan(proba).any(axis=1)
    frame["label"] = labels.astype(object).where(~undefined, None) if undefined.any() else labels
    return frame


def predict_to(
    res: MNLogitResults,
    data: str,
    out: str,
    *,
    overwrite: bool = False,
    keep: Sequence[str] = (),
    missing: str = "raise",
    unseen: str = "raise",
    storage_options: dict[str, Any] | None = None,
    se: bool = False,
) -> tuple[int, int]:
    """Predict every row of ``data`` and write probabilities and labels to ``out``.

    Parameters
    ----------
    res : MNLogitResults
    data : str
        A Zarr store, or CSV/Parquet files (globs allowed) holding the raw columns the model was fitted from
        (encoded as at fit time: a formula re-applied, a staged encoding re-applied).
    out : str
        ``*.zarr``: arrays ``proba`` (n, K, columns in sorted label order) and ``label`` (int32 positions in
        ``attrs["classes"]``, -1 for rows without a prediction). ``*.parquet``: the ``keep`` columns, then
        ``p_<label>`` per class and ``label``.
    overwrite : bool
        Replace an existing output.
    keep : sequence of str
        Source columns carried through to a Parquet output (an id, a group) next to the predictions.
    missing : {"raise", "drop"}
        Rows of a table with a missing value in a column the model reads: an error, or left out.
    unseen : {"raise", "nan"}
        Rows with a categorical level the fit never saw: an error, or NaN probabilities and no label.
    storage_options : dict, optional
        fsspec options for ``data`` and ``out``.
    se : bool
        Add ``se_<label>``, ``lower_<label>``, ``upper_<label>`` columns: delta-method standard errors of the
        probabilities and their 95% limits (Parquet output, table input).

    Returns
    -------
    written, dropped : int
        Rows written and rows left out for missing values.
    """
    kind = output_kind(out)
    check_output(out, overwrite, storage_options, "output")
    check_missing(missing)
    try:
        return _predict_to(res, data, out, kind, overwrite, list(keep), missing, unseen, storage_options, se)
    except BaseException:  # no half-written output is left behind to be mistaken for a result
        fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
        if fs.exists(root):
            fs.rm(root, recursive=True)
        raise


def _predict_to(
    res: MNLogitResults,
    data: str,
    out: str,
    kind: str,
    overwrite: bool,
    keep: list[str],
    missing: str,
    unseen: str,
    storage_options: dict[str, Any] | None,
    se: bool = False,
) -> tuple[int, int]:
    classes = np.asarray(res.classes)
    table = check_prediction_inputs(res, data, kind, keep, se, storage_options)
    if table is None:
        store = open_store(data, storage_options=storage_options)
        proba = res.predict_proba(store.X)
        _write_zarr(proba, classes, out, storage_options) if kind == "zarr" else _write_parquet_array(
            proba, classes, out, storage_options
        )
        return int(proba.shape[0]), 0
    meta = pd.concat(
        [table._meta[keep].reset_index(drop=True), _frame(np.zeros((0, classes.size)), classes)]
        + ([_se_frame(res, table._meta.iloc[:0], classes)] if se else []),
        axis=1,
    )
    frames = table.map_partitions(_predict_frame, res, keep, missing, unseen, se, meta=meta)
    if kind == "parquet":
        write = frames.to_parquet(
            out, write_index=False, overwrite=overwrite, storage_options=storage_options, compute=False
        )
        _, n_in, n_out = dd.compute(write, table.map_partitions(len).sum(), frames.map_partitions(len).sum())
        return int(n_out), int(n_in - n_out)
    proba = frames[[f"p_{c}" for c in classes.tolist()]].to_dask_array(lengths=True)
    n_in = int(table.map_partitions(len).sum().compute()) if missing == "drop" else int(proba.shape[0])
    _write_zarr(proba, classes, out, storage_options)
    return int(proba.shape[0]), n_in - int(proba.shape[0])


def check_prediction_inputs(
    res: MNLogitResults, data: str, kind: str, keep: Sequence[str], se: bool, storage_options: dict[str, Any] | None
) -> dd.DataFrame | None:
    """What ``dmlr predict`` checks before any cluster starts: a store's features, the ``--keep`` columns of a
    table (read lazily: its header), the output kind for ``--keep``/``--se``. Returns the table (``None`` for a
    store).

    Raises
    ------
    InputError
        Naming the culprit.
    """
    if is_store(data, storage_options):
        if keep or se:
            raise InputError("--keep and --se need CSV/Parquet input (a store holds only the encoded features)")
        store = open_store(data, storage_options=storage_options)
        if list(store.feature_names) != list(res.data_feature_names):
            raise InputError(
                f"store {data} has features {store.feature_names}, "
                f"the model was fitted on {list(res.data_feature_names)}"
            )
        return None
    table = read_table(expand_sources(data), storage_options).frame
    absent = [c for c in keep if c not in table.columns]
    if absent:
        raise InputError(f"--keep columns {absent} are not in {data} (it has {list(table.columns)})")
    if (keep or se) and kind == "zarr":
        raise InputError("--keep and --se write columns next to the predictions: give a .parquet output")
    return table


def _write_zarr(proba: da.Array, classes: NDArray[Any], out: str, storage_options: dict[str, Any] | None) -> None:
    rows = max(1, (32 * 2**20) // (8 * classes.size))
    proba = proba.astype(np.float64).rechunk((rows, -1))
    group = zarr.open_group(out, mode="w", storage_options=None if is_local(out) else storage_options)
    codecs = [ZstdCodec(level=1), Crc32cCodec()]
    zp = group.create_array("proba", shape=proba.shape, chunks=(rows, classes.size), dtype="f8", compressors=codecs)
    zl = group.create_array("label", shape=proba.shape[:1], chunks=(rows,), dtype="i4", compressors=codecs)
    labels = da.map_blocks(_label_positions, proba, drop_axis=1, dtype=np.int32)
    targets: list[Any] = [zp, zl]
    da.store([proba, labels], targets, lock=False)
    group.attrs["classes"] = classes.tolist()


def _label_positions(block: NDArray[np.float64]) -> NDArray[np.int32]:
    labels = np.argmax(np.nan_to_num(block, nan=-1.0), axis=1).astype(np.int32)
    labels[np.isnan(block).any(axis=1)] = -1
    return labels


def _write_parquet_array(
    proba: da.Array, classes: NDArray[Any], out: str, storage_options: dict[str, Any] | None
) -> None:
    meta = _frame(np.zeros((0, classes.size)), classes)
    frames = [delayed(_frame)(block, classes) for block in proba.to_delayed().ravel()]
    dd.from_delayed(frames, meta=meta).to_parquet(out, write_index=False, storage_options=storage_options)
