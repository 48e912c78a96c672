"""The cluster-robust meat ``sum_g u_g u_g^T``: one pass over the data at the optimum.

Each partition sums its rows' scores by cluster (:func:`dmlr.oracle.clusters.cluster_score_sums`). Two paths:

- *local*: when the partitions' cluster-id ranges follow each other, overlapping at most at their ends (a store
  staged sorted by the groups column, or data given in cluster order), only a partition's first and last cluster
  can continue in its neighbours; each task turns its interior clusters' sums into ``u_g u_g^T`` and keeps the two
  edge sums, and the records go up a tree that joins edge sums of the same id (at most two per partition travel).
- *exchange*: otherwise the per-partition sums become a dask DataFrame keyed by cluster, summed by key across
  partitions with dask's groupby-aggregate (``split_out`` output partitions, shuffled between workers), and each
  output partition's outer products go up the tree. No process holds all ``G x m d`` sums; the driver receives one
  ``(m d)^2`` record.

Which path ran is reported (``ClusterMeat.path``); both give the same matrix (to rounding).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from dask.base import compute as compute_all
from dask.delayed import Delayed, delayed
from numpy.typing import NDArray

from dmlr.data.design import Design
from dmlr.oracle.clusters import (
    ClusterRecord,
    add_records,
    cluster_score_sums,
    finish_record,
    key_range,
    local_record,
    outer_sum,
)
from dmlr.passes.memory import bound_shuffle_buffers

__all__ = ["ClusterMeat", "cluster_meat"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ClusterMeat:
    """The meat of a cluster-robust covariance.

    Attributes
    ----------
    meat : ndarray, shape (m d, m d)
    n_clusters : int
        ``G``, the number of distinct cluster ids.
    path : str
        ``"local"`` (no cluster spans partitions) or ``"exchange"`` (summed by key across partitions).
    """

    meat: Array
    n_clusters: int
    path: str


PIECE_BYTES = 8 * 2**20
"""Largest frame of per-cluster sums one task hands to the exchange: a partition's rows are summed in pieces of at
most this many bytes of scores, so a shuffle task's memory stays small whatever the partition or G."""


def _frame(*args: Any, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    x, codes, w, o, g, coef, intercept = args
    rows = slice(start, stop)
    keys, sums = cluster_score_sums(
        x[rows], codes[rows], None if w is None else w[rows], None if o is None else o[rows], g[rows], coef, intercept
    )
    frame = pd.DataFrame(sums, columns=[f"s{j}" for j in range(sums.shape[1])])
    frame.insert(0, "g", keys)
    return frame


def _frame_record(frame: pd.DataFrame) -> ClusterRecord:
    return outer_sum(frame.to_numpy(dtype=np.float64)), len(frame), {}


def _tree(records: list[Delayed], fan_in: int) -> Delayed:
    while len(records) > 1:
        records = [delayed(add_records)(*records[i : i + fan_in]) for i in range(0, len(records), fan_in)]
    return delayed(finish_record)(records[0])


def _block_args(design: Design, groups: da.Array, coef: Array) -> list[tuple[Any, ...]]:
    """Per partition: the delayed blocks of x, codes, weights, offset, groups, then coef and the intercept flag."""
    chunks = design.x.chunks[0]
    g = groups.rechunk((chunks,))
    x = design.x.to_delayed().ravel()
    codes = design.codes.to_delayed().ravel()
    w = design.weights.to_delayed().ravel() if design.weights is not None else [None] * len(chunks)
    o = design.offset.to_delayed().ravel() if design.offset is not None else [None] * len(chunks)
    gb = g.to_delayed().ravel()
    return [(x[i], codes[i], w[i], o[i], gb[i], coef, design.intercept) for i in range(len(chunks))]


def _ranges_ordered(groups: da.Array, chunks: tuple[int, ...], compute: Any) -> bool:
    """Whether the partitions' cluster-id ranges follow each other, overlapping at most at their ends (data sorted
    by cluster: only a partition's first and last cluster can continue next door). A read of the ids only."""
    if len(chunks) == 1:
        return True
    g = groups.rechunk((chunks,))
    ranges = compute(*[delayed(key_range)(b) for b in g.to_delayed().ravel()])
    spans = sorted((lo, hi) for lo, hi in ranges if lo is not None)
    return all(prev[1] <= cur[0] for prev, cur in itertools.pairwise(spans))


def cluster_meat(design: Design, coef: Array, groups: da.Array, client: Any = None, fan_in: int = 8) -> ClusterMeat:
    """The cluster-robust meat at ``coef``.

    Parameters
    ----------
    design : Design
        The fitted design (dependent columns already dropped).
    coef : ndarray, shape (d, m)
    groups : dask.array.Array, shape (n,)
        Cluster ids aligned with the design's rows.
    client : distributed.Client, optional
        Where to run (default: dask's current scheduler).
    fan_in : int
        Fan-in of the tree reduction of the ``(m d)^2`` records.

    Returns
    -------
    ClusterMeat
    """

    def compute(*values: Any) -> Any:
        if client is not None:
            return client.compute(list(values), sync=True)
        return compute_all(*values)

    chunks = design.x.chunks[0]
    args = _block_args(design, groups, np.asarray(coef))
    if _ranges_ordered(groups, chunks, compute):
        (meat, n_clusters) = compute(_tree([delayed(local_record)(*a) for a in args], fan_in))[0]
        return ClusterMeat(meat, int(n_clusters), "local")
    import dask.dataframe as dd

    if client is not None:
        client.run(bound_shuffle_buffers, on_error="ignore")  # a worker lost meanwhile has no buffers to bound

    m_d = coef.size
    meta = pd.DataFrame(
        {"g": pd.Series(dtype=_key_dtype(groups)), **{f"s{j}": pd.Series(dtype=float) for j in range(m_d)}}
    )
    piece = max(1, PIECE_BYTES // (8 * m_d))
    pieces = [
        delayed(_frame)(*a, start=s, stop=s + piece) for a, rows in zip(args, chunks, strict=True)
        for s in range(0, rows, piece)
    ]  # fmt: skip
    frames = dd.from_delayed(pieces, meta=meta, verify_meta=False)
    # output partitions of about PIECE_BYTES of sums each (at most one per piece)
    split_out = max(1, min(len(pieces), math.ceil(sum(chunks) * 8 * m_d / PIECE_BYTES)))
    summed = frames.groupby("g").sum(split_out=split_out, shuffle_method="p2p" if client is not None else "tasks")
    records = [delayed(_frame_record)(part) for part in summed.to_delayed()]
    (meat, n_clusters) = compute(_tree(records, fan_in))[0]
    return ClusterMeat(meat, int(n_clusters), "exchange")


def _key_dtype(groups: da.Array) -> Any:
    return object if groups.dtype.kind in "OUS" else groups.dtype
