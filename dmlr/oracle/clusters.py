"""Per-cluster score sums of one partition, for cluster-robust covariances (NumPy only: runs on workers).

A row's score is ``s_i = v_i (y_i - p_i) kron [1, x_i]`` (non-base classes, class-major, length ``m d``); a
cluster's is ``u_g = sum_{i in g} s_i``. Frequency weights count a row ``v_i`` times in its cluster and probability
weights weigh its score by ``v_i``: both give the same ``v_i s_i``. The meat is ``sum_g u_g u_g^T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.oracle.kernels import block_rows, linear_predictor, log_probabilities

__all__ = [
    "ClusterRecord",
    "add_records",
    "check_groups",
    "cluster_score_sums",
    "finish_record",
    "key_range",
    "local_record",
    "outer_sum",
]

Array = NDArray[np.float64]


def check_groups(groups: NDArray[Any], where: str = "groups", row_start: int = 0) -> None:
    """Refuse missing cluster ids (NaN, None), naming the first row.

    Raises
    ------
    InputError
    """
    if groups.dtype.kind == "f":
        bad = np.isnan(groups)
    elif groups.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, float) and v != v) for v in groups.tolist()], dtype=bool)
    else:
        return
    if bad.any():
        raise InputError(f"{where} has a missing cluster id at row {row_start + int(np.argmax(bad))}")


def cluster_score_sums(
    x: Array,
    codes: NDArray[np.integer],
    weights: Array | None,
    offset: Array | None,
    groups: NDArray[Any],
    coef: Array,
    intercept: bool,
    block_bytes: int = 16 * 2**20,
) -> tuple[NDArray[Any], Array]:
    """The distinct cluster ids of a partition and their summed scores.

    Parameters
    ----------
    x : ndarray, shape (r, p)
    codes : ndarray of int, shape (r,)
    weights : ndarray, shape (r,), optional
    offset : ndarray, shape (r, m), optional
    groups : ndarray, shape (r,)
        Cluster ids (any sortable dtype).
    coef : ndarray, shape (d, m)
    intercept : bool
    block_bytes : int
        Memory budget of the per-row score block.

    Returns
    -------
    keys : ndarray, shape (G_b,)
        Sorted distinct ids.
    sums : ndarray, shape (G_b, m d)
        ``u_g`` restricted to this partition's rows, class-major.
    """
    check_groups(groups)
    in_order = groups.size < 2 or bool(np.all(groups[1:] >= groups[:-1]))
    if in_order:  # rows in cluster order (a store staged sorted by its groups): no sort needed
        first = np.r_[True, groups[1:] != groups[:-1]] if groups.size else np.zeros(0, dtype=bool)
        keys, inverse = groups[first], np.cumsum(first) - 1
    else:
        keys, inverse = np.unique(groups, return_inverse=True)
    d, m = coef.shape
    sums = np.zeros((keys.size, m * d))
    step = block_rows(x.shape[0], m * d, block_bytes)
    for s in range(0, x.shape[0], step):
        e = min(s + step, x.shape[0])
        eta = linear_predictor(x[s:e], coef, intercept, None if offset is None else offset[s:e])
        prob, _ = log_probabilities(eta)
        resid = -prob
        hit = codes[s:e] > 0
        resid[np.nonzero(hit)[0], codes[s:e][hit] - 1] += 1.0
        if weights is not None:
            resid *= weights[s:e, None]
        design = np.column_stack([np.ones(e - s), x[s:e]]) if intercept else x[s:e]
        which = inverse[s:e]
        if in_order:
            rows = (resid[:, :, None] * design[:, None, :]).reshape(e - s, m * d)
        else:
            order = np.argsort(which, kind="stable")
            which = which[order]
            rows = (resid[order, :, None] * design[order, None, :]).reshape(e - s, m * d)
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        sums[which[starts]] += np.add.reduceat(rows, starts, axis=0)
    return keys, sums


def outer_sum(sums: Array) -> Array:
    """``sum_g u_g u_g^T`` of the rows of ``sums`` (shape (G, m d)), shape (m d, m d)."""
    return sums.T @ sums


def key_range(groups: NDArray[Any]) -> NDArray[Any]:
    """``[min, max]`` of a partition's cluster ids (an object array; ``[None, None]`` when empty)."""
    if groups.size == 0:
        return np.array([None, None], dtype=object)
    return np.array([groups.min(), groups.max()], dtype=object)


ClusterRecord = tuple[Array, int, dict[Any, Array]]
"""``(meat of the clusters wholly inside, their count, {id: partial sum} of the clusters at the edges)``."""


def local_record(*args: Any) -> ClusterRecord:
    """One partition of data sorted by cluster: the outer products of its interior clusters, and the partial sums
    of its first and last cluster, which may continue in the neighbouring partitions (arguments as
    :func:`cluster_score_sums`)."""
    keys, sums = cluster_score_sums(*args)
    if keys.size == 0:
        return np.zeros((sums.shape[1], sums.shape[1])), 0, {}
    edges = {keys[0].item() if hasattr(keys[0], "item") else keys[0]: sums[0]}
    last = keys[-1].item() if hasattr(keys[-1], "item") else keys[-1]
    edges[last] = sums[-1]
    inner = sums[1:-1]
    return outer_sum(inner), int(inner.shape[0]), edges


def add_records(*records: ClusterRecord) -> ClusterRecord:
    """Sum records; edge sums of the same cluster id from different partitions are added (the cluster is joined)."""
    meat = records[0][0].copy()
    count = records[0][1]
    edges = {k: v.copy() for k, v in records[0][2].items()}
    for m, n, e in records[1:]:
        meat += m
        count += n
        for k, v in e.items():
            if k in edges:
                edges[k] += v
            else:
                edges[k] = v.copy()
    return meat, count, edges


def finish_record(record: ClusterRecord) -> tuple[Array, int]:
    """The meat and ``G`` once every partition is in: the joined edge clusters' outer products added."""
    meat, count, edges = record
    if edges:
        stacked = np.array(list(edges.values()))
        meat = meat + outer_sum(stacked)
    return meat, count + len(edges)
