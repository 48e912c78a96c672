"""Row weightings of the models of a bank: functions of a row's global index and a seed, never of the partitioning.

A fold of cross-validation and a bootstrap replicate's weight must be the same for a row whatever the cluster, the
chunking, a resumed run or rows appended to the store later, so they are computed where the rows are, from the
row's global index: a counter-based hash (SplitMix64's finalizer) of ``(seed, index)`` gives a uniform 64-bit value
per row, whose top bits pick the fold; a bootstrap replicate's Poisson(1) weight is a 16-bit lane of such a hash in
the replicate's stream, looked up in a quantile table. NumPy only (no SciPy, no pandas but for labelled clusters):
this module runs on workers, which import what a pass's kernel and weighting need and nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.errors import InputError

__all__ = [
    "FoldStack",
    "FoldWeighting",
    "PoissonReplicates",
    "check_folds",
    "fold_ids",
    "folds_of_rows",
    "poisson_weights",
    "positions",
    "row_hash",
]

Array = NDArray[np.float64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def row_hash(index: NDArray[np.int64], seed: int, stream: int = 0) -> NDArray[np.uint64]:
    """A uniform 64-bit hash of each global row index for ``seed`` and ``stream`` (SplitMix64's output function of
    the counter ``index + stream * 2**40``, keyed by the seed): the same on every machine and partitioning.

    Parameters
    ----------
    index : ndarray of int, shape (r,)
        Global row indices (``>= 0``).
    seed : int
    stream : int
        A second key (a bootstrap replicate), so that streams of the same seed are independent.

    Returns
    -------
    ndarray of uint64, shape (r,)
    """
    return _stream_hashes(index, seed, np.array([stream], dtype=np.int64))[:, 0]


def _finalize(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def folds_of_rows(index: NDArray[np.int64], folds: int, seed: int) -> NDArray[np.int64]:
    """The fold (``0 .. folds - 1``) of each global row index: the top 32 bits of its hash scaled to ``folds``."""
    top = row_hash(index, seed) >> np.uint64(32)
    return np.asarray((top * np.uint64(folds)) >> np.uint64(32), dtype=np.int64)


def check_folds(folds: int, n_rows: int) -> None:
    """Refuse fewer than two folds, or more folds than rows (``n_rows < 0``: not known yet, not checked)."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise InputError(f"folds must be an integer >= 2, got {folds!r}")
    if 0 <= n_rows < folds:
        raise InputError(f"folds={folds} is more than the {n_rows} rows: each fold needs at least one row")


def fold_ids(n_rows: int, folds: int = 5, seed: int = 0) -> NDArray[np.int64]:
    """The cross-validation fold of every row, as :func:`dmlr.cross_validate` assigns it.

    A fold is a function of the seed and the row's global index only, so the same store gives the same folds on any
    cluster and chunking, and rows appended later keep the earlier rows' folds. Folds are drawn independently per
    row, so their sizes vary around ``n_rows / folds`` (binomially), as with a random assignment.

    Parameters
    ----------
    n_rows : int
        Number of rows ``n``.
    folds : int
        Number of folds (``2 <= folds <= n_rows``).
    seed : int

    Returns
    -------
    ndarray of int64, shape (n,)
        Values ``0 .. folds - 1``.

    Examples
    --------
    >>> import dmlr
    >>> dmlr.fold_ids(8, folds=3, seed=0).tolist()
    [0, 2, 1, 0, 2, 0, 0, 0]
    """
    check_folds(folds, int(n_rows))
    return folds_of_rows(np.arange(int(n_rows), dtype=np.int64), int(folds), int(seed))


@dataclass(frozen=True)
class FoldWeighting:
    """A model's row weights in cross-validation: ``1`` on the rows outside ``fold`` (training), ``0`` on it, or the
    reverse (``held_out``: the rows of the fold, for its held-out scores).

    Attributes
    ----------
    fold : int
    folds : int
    seed : int
    held_out : bool
    """

    fold: int
    folds: int
    seed: int
    held_out: bool = False

    def __call__(self, rows: Rows) -> NDArray[np.float64]:
        """The weight of each of ``rows`` (shape (r,)); the rows' global positions must be known."""
        inside = folds_of_rows(positions(rows), self.folds, self.seed) == self.fold
        return np.asarray(inside if self.held_out else ~inside, dtype=np.float64)


def positions(rows: Rows) -> NDArray[np.int64]:
    """The rows' global positions, which their folds are functions of."""
    index = rows.row_ids()
    if index is None:
        raise InputError(
            f"partition {rows.partition}: cross-validation needs every partition's size (folds are functions of "
            "the rows' global positions); compute the chunk sizes first (dask: x.compute_chunk_sizes())"
        )
    return index


@dataclass(frozen=True)
class FoldStack:
    """The training weights of several fold models at once (a weighting of
    :class:`~dmlr.oracle.stacked.StackedScoreKernel`): ``1`` on the rows outside each model's fold, ``0`` on it.

    Attributes
    ----------
    model_folds : tuple of int
        The fold each model leaves out.
    folds : int
    seed : int
    """

    model_folds: tuple[int, ...]
    folds: int
    seed: int

    @property
    def reads(self) -> tuple[str, ...]:
        """Nothing besides the rows' positions."""
        return ()

    @property
    def size(self) -> int:
        """The models weighted."""
        return len(self.model_folds)

    def keys(self, rows: Rows) -> NDArray[np.int64]:
        """The rows' global positions."""
        return positions(rows)

    def folds_of(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The fold of each row, shape (r,)."""
        return folds_of_rows(keys, self.folds, self.seed)

    def mask(self, fold: NDArray[np.int64]) -> NDArray[np.float64]:
        """Each model's weight of rows in folds ``fold`` (r,), shape (r, F): 0 where the row is in the model's
        fold."""
        return np.asarray(fold[:, None] != np.asarray(self.model_folds)[None, :], dtype=np.float64)

    def of_keys(self, keys: NDArray[np.int64], dtype: type = np.float64) -> NDArray[Any]:
        """Each model's weight of each row, shape (r, F)."""
        return self.mask(self.folds_of(keys)).astype(dtype, copy=False)


_LANES = 4
"""Replicates per 64-bit hash: each takes 16 of its bits."""
_POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(30)])
"""P(N <= k) for N ~ Poisson(1), k = 0 .. 29."""
_POISSON_TABLE = np.searchsorted(_POISSON_CDF, (np.arange(2**16) + 0.5) / 2**16, side="right").astype(np.float64)
"""Poisson(1) quantile of each 16-bit uniform (u + 1/2) / 2^16: the distribution to within 2^-16 in every cell."""
_POISSON_TABLES: dict[np.dtype[Any], NDArray[Any]] = {
    np.dtype(t): _POISSON_TABLE.astype(t) for t in (np.float64, np.float32)
}
"""The table in each precision the weights are asked for."""


def poisson_weights(
    keys: NDArray[np.int64], seed: int, replicates: NDArray[np.int64], dtype: type = np.float64
) -> NDArray[Any]:
    """Poisson(1) weights of each key (rows) for each replicate (columns), shape (r, F): replicate ``j`` takes the
    16-bit lane ``j % 4`` of the hash of ``(seed, key)`` in stream ``j // 4 + 1``, looked up in a table (one hash
    for four replicates, no search)."""
    streams, where = np.unique(replicates // _LANES, return_inverse=True)
    hashes = _stream_hashes(keys, seed, streams + 1)
    lanes = hashes.astype("<u8", copy=False).view("<u2").reshape(keys.shape[0], _LANES * streams.size)  # bits 16k..
    columns = where * _LANES + replicates % _LANES
    table = _POISSON_TABLES[np.dtype(dtype)]
    if np.array_equal(columns, np.arange(columns.size)):  # consecutive replicates from a stream's first: a view
        return np.take(table, lanes[:, : columns.size])
    return np.take(table, lanes[:, columns])


def _stream_hashes(index: NDArray[np.int64], seed: int, streams: NDArray[np.int64]) -> NDArray[np.uint64]:
    """:func:`row_hash` of every index in each of ``streams`` at once, shape (r, S): the counter ``index + stream *
    2**40`` times the golden ratio plus the key (the finalizer of ``seed * golden + stream``), finalized."""
    with np.errstate(over="ignore"):
        seeds = np.full(streams.size, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        key = _finalize(seeds * _GOLDEN + streams.astype(np.uint64))
        # the row's part plus the stream's (wrapping arithmetic distributes): one operation per (row, stream)
        offsets = (streams.astype(np.uint64) << np.uint64(40)) * _GOLDEN + key
        z = (index.astype(np.uint64) * _GOLDEN)[:, None] + offsets[None, :]
        return _finalize(z)


def _group_keys(groups: NDArray[Any]) -> NDArray[np.int64]:
    """A 63-bit key per cluster id: the id itself for integers, pandas' stable hash for anything else."""
    if groups.dtype.kind in "iu":
        return groups.astype(np.int64) & np.int64(0x7FFFFFFFFFFFFFFF)
    import pandas as pd  # on first use: workers of the cluster bootstrap of labelled clusters only

    hashed = pd.util.hash_array(np.asarray(groups, dtype=object))
    return (hashed >> np.uint64(1)).astype(np.int64)


@dataclass(frozen=True)
class PoissonReplicates:
    """The Poisson(1) weights of some replicates, each row's (or each cluster's, with ``groups``) a function of
    ``(seed, replicate, its global index or cluster id)`` only: the stacked scores' weighting
    (:mod:`dmlr.oracle.stacked`).

    Attributes
    ----------
    seed : int
    replicates : tuple of int
    groups : bool
        Draw per cluster id (the rows' ``groups``) instead of per row.
    """

    seed: int
    replicates: tuple[int, ...]
    groups: bool = False

    @property
    def reads(self) -> tuple[str, ...]:
        """The cluster ids, for the cluster bootstrap."""
        return ("groups",) if self.groups else ()

    @property
    def size(self) -> int:
        """The replicates weighted."""
        return len(self.replicates)

    def keys(self, rows: Rows) -> NDArray[np.int64]:
        """What the weight of each of ``rows`` is a function of: its global index, or its cluster's key."""
        index = _group_keys(rows.groups) if self.groups and rows.groups is not None else rows.row_ids()
        if index is None:
            raise InputError(f"partition {rows.partition}: the bootstrap needs every partition's size")
        return index

    def of_keys(self, keys: NDArray[np.int64], dtype: type = np.float64) -> NDArray[Any]:
        """Each replicate's weight of each key, shape (r, F), of ``dtype`` (float64 or float32;
        :func:`poisson_weights`)."""
        return poisson_weights(keys, self.seed, np.asarray(self.replicates, dtype=np.int64), dtype)

    def __call__(self, rows: Rows) -> Array:
        return self.of_keys(self.keys(rows))
