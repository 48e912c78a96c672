"""Robust covariances: the sandwich ``A I^-1 M I^-1`` and its small-sample factors.

Conventions (the user guide's inference page, ``docs/user-guide/inference.md``, gives the statsmodels and Stata names):

- ``HC0``: factor 1; equals statsmodels' ``MNLogit.fit(cov_type="HC0")``.
- ``HC1``: ``n / (n - 1)``, Stata's ``vce(robust)`` for maximum-likelihood commands (statsmodels' HC1 for
  likelihood models uses ``n / (n - k)`` instead).
- ``cluster``: ``G/(G-1) (n-1)/(n-k)`` (statsmodels' ``cov_type="cluster"``, the default) or ``G/(G-1)``
  (``cluster_correction="stata"``, Stata's ``vce(cluster id)``).

``n`` is the number of observations (the sum of frequency weights; the number of rows with probability weights),
``k = m d`` the number of parameters, ``G`` the number of groups (statsmodels' and Stata's "clusters").

The cluster-robust meat ``sum_g u_g u_g^T`` is one pass of the engine (:func:`group_meat`; kernels in
:mod:`dmlr.oracle.groups`): local to each task for data sorted by group, else the per-group sums of pieces of
bounded size are summed by key across workers with dask's groupby-aggregate (a shuffle: no process holds all
``G x m d`` sums) and each output partition's outer products go up a tree. Both give the same matrix (to rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.groups import GroupEdges, GroupSums, GroupSumsKernel, RangesKernel, SortedGroupsKernel, outer_sum
from dmlr.passes.engine import PassEngine
from dmlr.passes.kernel import total
from dmlr.passes.memory import bound_shuffle_buffers

__all__ = ["GroupMeat", "correction", "group_meat", "sandwich"]

Array = NDArray[np.float64]

PIECE_BYTES = 8 * 2**20
"""Largest per-group sums one piece hands to the exchange: pieces of at most this many bytes of scores, so a
shuffle task's memory stays small whatever the partition or G (and their number does not depend on the
partitioning)."""


@dataclass(frozen=True)
class GroupMeat:
    """The meat of a cluster-robust covariance.

    Attributes
    ----------
    meat : ndarray, shape (m d, m d)
    n_groups : int
        ``G``, the number of distinct group ids.
    path : str
        ``"local"`` (data sorted by group) or ``"exchange"`` (summed by key across workers).
    """

    meat: Array
    n_groups: int
    path: str


def group_meat(engine: PassEngine, coef: Array, intercept: bool, columns: tuple[int, ...] | None = None) -> GroupMeat:
    """The cluster-robust meat at ``coef`` (shape (d, m)) over the engine's data (which hold the group ids).

    Raises
    ------
    InputError
        Fewer than 2 distinct groups.
    """
    ranges = engine.reduce(RangesKernel())
    if ranges.ordered:
        record: GroupEdges = engine.reduce(SortedGroupsKernel(coef, intercept, columns))
        meat, g = record.finish()
        path = "local"
    else:
        meat, g = _exchange(engine, GroupSumsKernel(coef, intercept, columns), coef.size)
        path = "exchange"
    if g < 2:
        raise InputError(f"groups has {g} distinct cluster id(s): cluster-robust errors need at least 2")
    return GroupMeat(meat, int(g), path)


def _exchange(engine: PassEngine, kernel: GroupSumsKernel, md: int) -> tuple[Array, int]:
    """The meat from per-piece group sums summed by key across workers (dask's groupby-aggregate)."""
    pieces = engine.map(kernel, max_rows=max(1, PIECE_BYTES // (8 * md)))
    if engine.client is None:
        summed: GroupSums = total(pieces)
        return outer_sum(summed.sums), int(summed.keys.size)
    import dask.dataframe as dd
    from dask.delayed import delayed

    engine.client.run(bound_shuffle_buffers, on_error="ignore")  # a worker lost meanwhile has no buffers to bound
    key_dtype = object if engine.data.groups is not None and engine.data.groups.dtype.kind in "OUS" else np.int64
    meta = pd.DataFrame({"g": pd.Series(dtype=key_dtype), **{f"s{j}": pd.Series(dtype=float) for j in range(md)}})
    frames = dd.from_delayed([delayed(_frame)(p, md) for p in pieces], meta=meta, verify_meta=False)
    n_rows = max(engine.data.n_rows, 1)
    split_out = max(1, min(len(pieces), math.ceil(n_rows * 8 * md / PIECE_BYTES)))
    summed_frames = frames.groupby("g").sum(split_out=split_out, shuffle_method="p2p")
    records = [delayed(_outer)(part) for part in summed_frames.to_delayed()]
    while len(records) > 1:
        step = engine.split_every
        records = [delayed(_add_pairs)(*records[i : i + step]) for i in range(0, len(records), step)]
    meat, g = engine.client.compute(records[0], sync=True)
    return meat, int(g)


def _frame(piece: GroupSums, md: int) -> pd.DataFrame:
    frame = pd.DataFrame(piece.sums.reshape(-1, md), columns=[f"s{j}" for j in range(md)])
    frame.insert(0, "g", piece.keys)
    return frame


def _outer(frame: pd.DataFrame) -> tuple[Array, int]:
    return outer_sum(frame.to_numpy(dtype=np.float64)), len(frame)


def _add_pairs(*records: tuple[Array, int]) -> tuple[Array, int]:
    return sum((r[0] for r in records[1:]), records[0][0].copy()), sum(r[1] for r in records)


def correction(cov_type: str, nobs: float, n_params: int, n_clusters: int = 0, cluster: str = "statsmodels") -> float:
    """The small-sample factor of a robust covariance (see the module docstring)."""
    if cov_type == "HC0":
        return 1.0
    if cov_type == "HC1":
        return nobs / (nobs - 1.0)
    if cov_type == "cluster":
        factor = n_clusters / (n_clusters - 1.0)
        return factor * (nobs - 1.0) / (nobs - n_params) if cluster == "statsmodels" else factor
    raise ValueError(cov_type)


def sandwich(bread: Array, meat: Array, factor: float) -> Array:
    """``factor * bread @ meat @ bread``, symmetric, shape (m d, m d).

    Parameters are not identified where the bread (the inverse information) has infinite variances: those rows and
    columns keep the bread's ``inf``/``nan``.
    """
    bad = ~np.isfinite(np.diag(bread))
    b = np.where(np.isfinite(bread), bread, 0.0)
    cov = factor * (b @ meat @ b)
    cov = 0.5 * (cov + cov.T)
    if bad.any():
        cov[bad, :] = bread[bad, :]
        cov[:, bad] = bread[:, bad]
    return cov
