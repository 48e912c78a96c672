"""Per-group score sums, for cluster-robust covariances: the kernels and records of the meat's pass (NumPy only).

A row's score is ``s_i = v_i (y_i - p_i) kron [1, x_i]`` (non-base classes, class-major, length ``m d``); a
group's (statsmodels' "cluster") is ``u_g = sum_{i in g} s_i``. Frequency weights count a row ``v_i`` times in its
group and probability weights weigh its score by ``v_i``: both give the same ``v_i s_i``. The meat is
``sum_g u_g u_g^T``.

Two ways through the engine (:func:`dmlr.results.robust.group_meat` picks one):

- data sorted by group (:class:`GroupRanges` says so): :class:`SortedGroupsKernel`; a partition's interior groups
  are complete, only its first and last may continue next door. :class:`GroupEdges` keeps those two sums and, when
  records of adjacent rows are added, folds the groups that can no longer continue into the meat, so a task's record
  holds two sums whatever its partitions.
- otherwise: :class:`GroupSumsKernel` gives each piece's per-group sums (:class:`GroupSums`), exchanged between
  workers by key.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, block_rows
from dmlr.oracle.checks import check_groups
from dmlr.oracle.probabilities import row_scores
from dmlr.passes.kernel import total

__all__ = [
    "GroupEdges",
    "GroupRanges",
    "GroupSums",
    "GroupSumsKernel",
    "RangesKernel",
    "SortedGroupsKernel",
    "group_score_sums",
    "outer_sum",
]

Array = NDArray[np.float64]


def group_score_sums(
    rows: Rows, coef: Array, intercept: bool, columns: tuple[int, ...] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[NDArray[Any], Array]:  # fmt: skip
    """The distinct group ids of some rows and their summed scores.

    Parameters
    ----------
    rows : Rows
        ``x`` (r, p), ``codes``, ``groups`` (any sortable dtype), optional ``weights`` and ``offset``.
    coef : ndarray, shape (d, m)
    intercept : bool
    columns : tuple of int, optional
        The columns of ``x`` the model uses.
    block_bytes : int
        Memory budget of the per-row score block.

    Returns
    -------
    keys : ndarray, shape (G_b,)
        Sorted distinct ids.
    sums : ndarray, shape (G_b, m d)
        ``u_g`` restricted to these rows, class-major.
    """
    assert rows.groups is not None
    groups = rows.groups
    check_groups(groups, "groups", rows.partition, rows.row_start)
    if _in_order(groups):  # rows in group order (a store staged sorted by its groups): no sort needed
        first = np.r_[True, groups[1:] != groups[:-1]] if groups.size else np.zeros(0, dtype=bool)
        keys, inverse = groups[first], np.cumsum(first) - 1
    else:
        keys, inverse = np.unique(groups, return_inverse=True)
    return keys, _score_sums(rows, inverse, keys.size, coef, intercept, columns, block_bytes)


def _in_order(groups: NDArray[Any]) -> bool:
    return groups.size < 2 or bool(np.all(groups[1:] >= groups[:-1]))


def _score_sums(
    rows: Rows, inverse: NDArray[np.intp], n_keys: int, coef: Array, intercept: bool, columns: tuple[int, ...] | None,
    block_bytes: int,
) -> Array:  # fmt: skip
    """The rows' scores summed by ``inverse`` (each row's key index), shape (n_keys, m d)."""
    assert rows.x is not None and rows.codes is not None
    codes, weights, offset = rows.codes, rows.weights, rows.offset
    x = rows.x if columns is None else rows.x[:, list(columns)]
    d, m = coef.shape
    sums = np.zeros((n_keys, m * d))
    step = block_rows(x.shape[0], m * d, block_bytes)
    for s in range(0, x.shape[0], step):
        e = min(s + step, x.shape[0])
        scores, _ = row_scores(x[s:e], codes[s:e], coef, intercept, None if offset is None else offset[s:e])
        if weights is not None:
            scores *= weights[s:e, None]
        which = inverse[s:e]
        if not _in_order(which):
            order = np.argsort(which, kind="stable")
            which, scores = which[order], scores[order]
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        sums[which[starts]] += np.add.reduceat(scores, starts, axis=0)
    return sums


def first_empty() -> NDArray[np.bool_]:
    return np.zeros(0, dtype=bool)


def _bounds(sizes: list[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in itertools.pairwise(ends)]


def outer_sum(sums: Array) -> Array:
    """``sum_g u_g u_g^T`` of the rows of ``sums`` (shape (G, m d)), shape (m d, m d)."""
    return sums.T @ sums


def _plain(key: Any) -> Any:
    return key.item() if hasattr(key, "item") else key


@dataclass
class GroupRanges:
    """``[min, max]`` of each partition's group ids (partitions without rows left out)."""

    ranges: dict[int, tuple[Any, Any]]

    def __add__(self, other: GroupRanges) -> GroupRanges:
        return GroupRanges({**self.ranges, **other.ranges})

    @property
    def ordered(self) -> bool:
        """Whether the partitions' ranges follow each other, overlapping at most at their ends (data sorted by group:
        only a partition's first and last group can continue next door)."""
        spans = sorted(self.ranges.values())
        return all(prev[1] <= cur[0] for prev, cur in itertools.pairwise(spans))


@dataclass(frozen=True)
class RangesKernel:
    """Each partition's range of group ids (reads the ids only)."""

    reads: ClassVar[tuple[str, ...]] = ("groups",)
    batch: ClassVar[bool] = False

    def __call__(self, rows: Rows) -> GroupRanges:
        assert rows.groups is not None
        groups = rows.groups
        check_groups(groups, "groups", rows.partition, rows.row_start)
        if groups.size == 0:
            return GroupRanges({})
        return GroupRanges({rows.partition: (_plain(groups.min()), _plain(groups.max()))})

    def memory(self, rows: int, p: int) -> int:
        return 0


@dataclass
class GroupEdges:
    """The meat of the groups known complete, and the sums of those that may continue beyond these rows.

    Attributes
    ----------
    meat : ndarray, shape (m d, m d)
    count : int
        Complete groups folded into ``meat``.
    edges : dict
        Group id -> partial sum (m d,).
    first, last : object
        Ids at the first and last of these rows.
    start, stop : int
        The global rows covered, when they are one contiguous range (``start = -1`` otherwise).
    """

    meat: Array
    count: int
    edges: dict[Any, Array] = field(default_factory=dict)
    first: Any = None
    last: Any = None
    start: int = -1
    stop: int = -1

    def __add__(self, other: GroupEdges) -> GroupEdges:
        out = GroupEdges(self.meat.copy(), self.count, {k: v.copy() for k, v in self.edges.items()}, self.first,
                         self.last, self.start, self.stop)  # fmt: skip
        return out.add_(other)

    def add_(self, other: GroupEdges) -> GroupEdges:
        """Add ``other`` in place; when its rows follow these, the groups that can no longer continue are folded."""
        adjacent = self.start >= 0 and other.start == self.stop
        self.meat += other.meat
        self.count += other.count
        for k, v in other.edges.items():
            if k in self.edges:
                self.edges[k] = self.edges[k] + v
            else:
                self.edges[k] = v.copy()
        if not adjacent:
            self.start = -1
            return self
        self.last, self.stop = other.last, other.stop
        for k in [k for k in self.edges if k != self.first and k != self.last]:
            u = self.edges.pop(k)
            self.meat += np.outer(u, u)
            self.count += 1
        return self

    def finish(self) -> tuple[Array, int]:
        """The meat and ``G`` once every row is in: the remaining groups' outer products added."""
        if not self.edges:
            return self.meat, self.count
        stacked = np.array(list(self.edges.values()))
        return self.meat + outer_sum(stacked), self.count + len(self.edges)


@dataclass(frozen=True)
class SortedGroupsKernel:
    """The meat's kernel for data sorted by group (see the module docstring)."""

    coef: Array
    intercept: bool
    columns: tuple[int, ...] | None = None
    reads: ClassVar[tuple[str, ...]] = ("x", "codes", "weights", "offset", "groups")

    def __call__(self, rows: Rows) -> GroupEdges:
        md = self.coef.size
        if rows.segments is not None:
            return self._segments(rows)
        keys, sums = group_score_sums(rows, self.coef, self.intercept, self.columns)
        if keys.size == 0:
            return GroupEdges(np.zeros((md, md)), 0)
        first, last = _plain(keys[0]), _plain(keys[-1])
        edges = {first: sums[0], last: sums[-1]}
        stop = rows.row_start + rows.n_rows if rows.row_start >= 0 else -1
        return GroupEdges(outer_sum(sums[1:-1]), max(keys.size - 2, 0), edges, first, last, rows.row_start, stop)

    def _segments(self, rows: Rows) -> GroupEdges:
        """Partitions joined across gaps: groups keyed by (partition, id) in one computation, each partition's
        interior groups complete, its first and last kept as edges (joined by id with other partitions')."""
        assert rows.groups is not None and rows.segments is not None
        groups = rows.groups
        check_groups(groups, "groups", rows.partition, rows.row_start)
        sizes = [n for _, n in rows.segments]
        part = np.repeat(np.arange(len(sizes)), sizes)
        if not _in_order(groups) and not all(_in_order(g) for g in np.split(groups, np.cumsum(sizes)[:-1])):
            parts = [dataclasses.replace(rows.slice(a, b), segments=None) for a, b in _bounds(sizes)]
            return total([self(p) for p in parts])
        first = np.r_[True, (groups[1:] != groups[:-1]) | (part[1:] != part[:-1])] if groups.size else first_empty()
        keys, owner, inverse = groups[first], part[first], np.cumsum(first) - 1
        sums = _score_sums(rows, inverse, keys.size, self.coef, self.intercept, self.columns, DEFAULT_BLOCK_BYTES)
        edge = np.r_[True, owner[1:] != owner[:-1]] | np.r_[owner[1:] != owner[:-1], True]
        record = GroupEdges(outer_sum(sums[~edge]), int((~edge).sum()))
        for j in np.flatnonzero(edge):
            key = _plain(keys[j])
            record.edges[key] = record.edges[key] + sums[j] if key in record.edges else sums[j].copy()
        return record

    def memory(self, rows: int, p: int) -> int:
        md = self.coef.size
        return 8 * (rows * (md + p + 4) + 4 * md * md)

    def record_bytes(self) -> int:
        return 8 * self.coef.size**2


@dataclass
class GroupSums:
    """Per-group sums of some rows: sorted ids and their ``(G_b, m d)`` sums; adding merges by id."""

    keys: NDArray[Any]
    sums: Array

    def __add__(self, other: GroupSums) -> GroupSums:
        keys = np.concatenate([self.keys, other.keys])
        sums = np.concatenate([self.sums, other.sums])
        distinct, inverse = np.unique(keys, return_inverse=True)
        out = np.zeros((distinct.size, sums.shape[1]))
        np.add.at(out, inverse, sums)
        return GroupSums(distinct, out)


@dataclass(frozen=True)
class GroupSumsKernel:
    """Each piece's per-group score sums, for the exchange between workers (data not sorted by group)."""

    coef: Array
    intercept: bool
    columns: tuple[int, ...] | None = None
    reads: ClassVar[tuple[str, ...]] = ("x", "codes", "weights", "offset", "groups")

    def __call__(self, rows: Rows) -> GroupSums:
        keys, sums = group_score_sums(rows, self.coef, self.intercept, self.columns)
        return GroupSums(keys, sums)

    def memory(self, rows: int, p: int) -> int:
        return 8 * rows * (2 * self.coef.size + p + 4)
