"""Staging arrays (NumPy or dask, possibly larger than memory) into a Zarr store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.base import compute

from dmlr.data.encoding import FeatureEncoding
from dmlr.data.labels import check_class_count, check_label_values, label_positions
from dmlr.data.metadata import StoreMetadata
from dmlr.data.staging import check_dtype, default_chunk_rows
from dmlr.data.store import StoreData, open_store
from dmlr.data.writing import check_target_free, write_store
from dmlr.errors import InputError

__all__ = ["stage_arrays"]


def stage_arrays(
    X: Any,
    y: Any,
    store: str,
    *,
    feature_names: Sequence[str] | None = None,
    weights: Any = None,
    offset: Any = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    source: str = "arrays",
    progress: bool = False,
    groups: Any = None,
    dtype: str = "float64",
    max_classes: int | None = None,
    append: bool = False,
) -> StoreData:
    """Stage arrays (NumPy or dask, possibly larger than memory) into a Zarr store.

    Parameters
    ----------
    X : array-like or dask.array.Array, shape (n, p)
    y : array-like or dask.array.Array, shape (n,)
        Class labels (any sortable dtype); a dask ``y`` costs one extra pass to find the classes.
    store : str
        Path or URL of the store to create.
    feature_names : sequence of str, optional
    weights : array-like, shape (n,), optional
    offset : array-like, shape (n, K - 1), optional
    chunk_rows : int, optional
        Rows per chunk; default about 32 MB of X per chunk.
    overwrite : bool
    storage_options : dict, optional
    source : str
        Description recorded in the metadata.
    progress : bool
    groups : array-like of int, shape (n,), optional
        Integer cluster ids, stored as the ``groups`` array (for ``cov_type="cluster"``).
    dtype : {"float64", "float32"}
        Storage type of X (see :func:`stage`).
    max_classes : int, optional
        Most classes the target may have (default 100; a float target with non-integral values, a continuous
        column, is always refused). The message names the count.
    append : bool
        Add the rows to the existing store ``store`` as its next version (atomic, see :func:`dmlr.stage`): X must
        have its columns (and names, when given), y only its classes, and weights, offset and groups exactly when
        the store has them.

    Returns
    -------
    StoreData
    """
    from dmlr.data.design import as_feature_array

    url = str(store)
    check_dtype(dtype)
    if append:
        extra = {"weights": weights, "offset": offset, "groups": groups}
        return _append_arrays(X, y, url, feature_names, extra, source, storage_options, progress)
    check_target_free(url, overwrite, storage_options)
    x, names = as_feature_array(X)
    n, p = x.shape
    names = list(feature_names) if feature_names is not None else names or [f"x{j + 1}" for j in range(p)]
    if len(names) != p:
        raise InputError(f"feature_names has {len(names)} names but X has {p} columns")
    y_arr = y if isinstance(y, da.Array) else da.from_array(np.asarray(y), chunks=(x.chunks[0],))
    if y_arr.shape != (n,):
        raise InputError(f"y must have shape ({n},); got {y_arr.shape}")
    labels, counts = compute(*da.unique(y_arr, return_counts=True))
    check_label_values(np.asarray(labels))
    classes = np.asarray(labels)
    if classes.size < 2:
        raise InputError(f"y has a single class ({classes.tolist()!r})")
    check_class_count(classes, "y", max_classes)
    arrays: dict[str, da.Array] = {
        "X": x.astype(dtype),
        "y": da.map_blocks(label_positions, y_arr, classes, "y", dtype=np.int32),
    }
    if weights is not None:
        arrays["weights"] = da.asarray(weights).astype(np.float64)
    if offset is not None:
        arrays["offset"] = da.asarray(offset).astype(np.float64)
    if groups is not None:
        g = da.asarray(groups)
        if g.shape != (n,) or g.dtype.kind not in "iu":
            raise InputError(f"groups must be integer cluster ids of shape ({n},); got {g.dtype} {g.shape}")
        arrays["groups"] = g.astype(np.int64)
    metadata = StoreMetadata(
        n_rows=int(n), feature_names=names, classes=classes.tolist(), class_counts=[int(c) for c in counts],
        target="y", weights="weights" if weights is not None else None,
        offset=[f"offset{k + 1}" for k in range(classes.size - 1)] if offset is not None else None,
        encoding=FeatureEncoding(tuple(names)).to_json(), source={"format": source, "paths": [], "sorted_by": None},
        chunk_rows=chunk_rows or default_chunk_rows(p), groups="groups" if groups is not None else None,
        x_dtype=dtype,
    )  # fmt: skip
    write_store(url, arrays, metadata, storage_options, progress)
    return open_store(url, storage_options=storage_options)


def _append_arrays(
    X: Any,
    y: Any,
    url: str,
    feature_names: Sequence[str] | None,
    extra: dict[str, Any],
    source: str,
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> StoreData:
    """``stage_arrays(..., append=True)``: the rows checked against the store, then appended."""
    from dmlr.data.appending import append_store
    from dmlr.data.design import as_feature_array

    store = open_store(url, storage_options=storage_options)
    x, names = as_feature_array(X)
    n, p = x.shape
    if p != len(store.feature_names):
        raise InputError(f"X has {p} columns; {url} has {len(store.feature_names)}; the store is unchanged")
    given = list(feature_names) if feature_names is not None else names
    if given and list(given) != store.feature_names:
        raise InputError(f"X's columns {list(given)} are not the store's {store.feature_names}; the store is unchanged")
    y_arr = y if isinstance(y, da.Array) else da.from_array(np.asarray(y), chunks=(x.chunks[0],))
    if y_arr.shape != (n,):
        raise InputError(f"y must have shape ({n},); got {y_arr.shape}")
    labels, counts = compute(*da.unique(y_arr, return_counts=True))
    unknown = sorted(set(np.asarray(labels).tolist()) - set(store.classes.tolist()), key=str)
    if unknown:
        raise InputError(
            f"y has the classes {unknown}, which {url} does not have (its classes: {store.classes.tolist()}); "
            "the store is unchanged"
        )
    arrays: dict[str, da.Array] = {
        "X": x.astype(store.X.dtype),
        "y": da.map_blocks(label_positions, y_arr, store.classes, "y", dtype=np.int32),
    }
    has = {"weights": store.weights, "offset": store.offset, "groups": store.groups}
    for name, value in extra.items():
        if (value is None) != (has[name] is None):
            state = "has" if has[name] is not None else "has no"
            raise InputError(f"{url} {state} {name}: pass {name}= exactly when it does; the store is unchanged")
        if value is not None:
            arrays[name] = da.asarray(value).astype(np.int64 if name == "groups" else np.float64)
    by_label = dict(zip(np.asarray(labels).tolist(), (int(c) for c in counts), strict=True))
    return append_store(
        store, arrays, sources=[] if source == "arrays" else [source],
        class_counts=[by_label.get(c, 0) for c in store.classes.tolist()], n_missing=0,
        storage_options=storage_options, progress=progress,
    )  # fmt: skip
