"""New data as the model's columns: raw tables encoded as the fit encoded its data (a formula re-applied, a staged
or ``category`` encoding re-applied, or columns by name), and arrays checked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.errors import InputError

__all__ = [
    "encode_frame", "encoded_partitions", "feature_matrix", "fitted_labels", "fitted_rows", "resolve_rows",
]  # fmt: skip

Array = NDArray[np.float64]


def encode_frame(
    frame: pd.DataFrame,
    feature_names: Sequence[str],
    *,
    formula: Any = None,
    encoding: dict[str, Any] | None = None,
    where: str = "X",
    missing: str = "raise",
    unseen: str = "raise",
) -> tuple[Array, pd.Index]:
    """A raw table encoded as the model's data columns, the way the fitted data was.

    Parameters
    ----------
    frame : pandas.DataFrame
        Raw columns: what the formula reads (formula fits), the staged source columns (store fits, DataFrame
        fits with ``category`` columns), or the feature columns by name.
    feature_names : sequence of str, length p
        The model's data columns (``const`` excluded), the order of the result's columns.
    formula : FormulaEncoding, optional
    encoding : dict, optional
        A :class:`~dmlr.data.encoding.FeatureEncoding` in JSON form.
    where : str
        Names the table in error messages.
    missing : {"raise", "drop"}
        Rows with a missing value in a column the model reads.
    unseen : {"raise", "nan"}
        Rows with a categorical level the fit never saw.

    Returns
    -------
    x : ndarray, shape (r, p)
    index : pandas.Index
        Labels of the rows of ``x`` (``frame``'s, less dropped rows).
    """
    from dmlr.data.encoding import FeatureEncoding, drop_missing

    if formula is not None:
        x, index = formula.transform(frame, where, missing, unseen)
        names = formula.column_names  # with formulaic's Intercept when there is one: not a data column
    else:
        enc = FeatureEncoding.from_json(encoding) if encoding else FeatureEncoding(tuple(feature_names))
        absent = [c for c in enc.columns if c not in frame.columns]
        if absent:
            raise InputError(f"{where} is missing the columns {absent} the model was fitted with")
        frame, _ = drop_missing(frame, list(enc.columns), missing, where)
        x, index, names = enc.transform(frame, where, unseen), frame.index, enc.feature_names
    if list(names) != list(feature_names):  # dependent columns dropped by the fit: select the kept ones
        position = {name: j for j, name in enumerate(names)}
        x = x[:, [position[f] for f in feature_names]]
    return x, index


def feature_matrix(X: Any, p: int) -> Any:
    """An array of ``p`` data columns as float64 (a dask array with one column chunk), checked.

    Raises
    ------
    InputError
        Not two-dimensional with ``p`` columns.
    """
    if isinstance(X, da.Array):
        if X.ndim != 2 or X.shape[1] != p:
            raise InputError(f"X must have shape (n, {p}); got {X.shape}")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        return X.astype(np.float64)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != p:
        raise InputError(f"X must have shape (n, {p}); got {arr.shape}")
    return arr


def fitted_rows(res: Any) -> Any:
    """:meth:`MNLogitResults.fitted_rows <dmlr.results.results.MNLogitResults.fitted_rows>`."""
    if res.fitted_data is not None:
        return res.fitted_data
    store, rows = _fitted_store(res)
    return store.X if rows is None else store.X[:rows]


def fitted_labels(res: Any) -> Any:
    """The class labels the model was fitted on, as :func:`fitted_rows` finds the rows: the in-memory labels, or the
    store's (positions in its sorted classes)."""
    if res.fitted_labels is not None:
        return res.fitted_labels
    store, rows = _fitted_store(res)
    return store.y if rows is None else store.y[:rows]


def _fitted_store(res: Any) -> tuple[Any, int | None]:
    """The store a result was fitted on, reopened and checked, and how many of its rows were fitted (``None``: all
    of them; fewer when rows were appended since)."""
    info = res.data_info or {}
    if "store" not in info:
        raise InputError(
            "this result does not hold the data it was fitted on (a fit of in-memory data, saved and loaded): "
            "pass them, e.g. get_margeff(X)"
        )
    from dmlr.data.store import open_store

    url, checksum, rows = info["store"], info.get("store_checksum"), info.get("store_rows")
    try:
        store = open_store(url)
    except (InputError, OSError) as exc:
        raise InputError(f"the store this result was fitted on cannot be opened ({exc}): pass the rows") from None
    if store.checksum == checksum:
        return store, None
    versions = store.metadata.versions
    if rows and any(v["checksum"] == checksum and v["rows"][1] == rows for v in versions):
        return store, int(rows)  # the rows fitted, before later appends
    raise InputError(
        f"{url} is not the store this result was fitted on (its checksum changed, and no version of it has "
        f"the fitted one, {str(checksum)[:12]}): pass the rows"
    )


def resolve_rows(X: Any, storage_options: dict[str, Any] | None = None) -> Any:
    """Data given by where it lives, as what it holds: a store (path or :class:`~dmlr.data.store.StoreData`) as its
    features (a dask array), CSV/Parquet files or a directory of them as a dask DataFrame; anything else as is."""
    import os

    from dmlr.data.store import StoreData

    if isinstance(X, StoreData):
        return X.X
    if isinstance(X, (str, os.PathLike)):
        from dmlr.data.sources import expand_sources, read_table
        from dmlr.data.store import is_store, open_store

        path = os.fspath(X)
        if is_store(path, storage_options):
            return open_store(path, storage_options=storage_options).X
        return read_table(expand_sources(path), storage_options).frame
    return X


def encoded_partitions(res: Any, table: Any, missing: str = "raise", unseen: str = "raise") -> Any:
    """A dask DataFrame of raw columns as the model's data columns, encoded partition by partition as the fit encoded
    its data: a dask array of unknown row counts (the passes over it count the rows)."""
    meta = pd.DataFrame({f: pd.Series(dtype=np.float64) for f in res.data_feature_names})
    frames = table.map_partitions(_encoded_frame, res, missing, unseen, meta=meta)
    return frames.to_dask_array().astype(np.float64)


def _encoded_frame(
    frame: pd.DataFrame, res: Any, missing: str, unseen: str, partition_info: Any = None
) -> pd.DataFrame:
    where = "a partition" if partition_info is None else f"partition {partition_info['number']}"
    if not len(frame):
        return pd.DataFrame({f: pd.Series(dtype=np.float64) for f in res.data_feature_names})
    x, index = res.encode(frame, missing, unseen, where)
    return pd.DataFrame(x, index=index, columns=list(res.data_feature_names))
