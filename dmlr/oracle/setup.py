"""The fit's first pass when the class labels are not known yet (a dask ``y``): one pass learns them too.

At ``W = 0`` only the score, the log-likelihood and the class counts depend on the labels, and each is a sum over the
rows of one label: with ``z = [1, x]``, weights ``v`` and probabilities ``p`` (``1/K`` without an offset)::

    score[:, k] = sum_{y = k} v z  -  sum v p_k z        loglik = sum_{y = k} v offset_k  -  sum v lse

So the pass computes the label-free statistics (Gram matrix, moments, information; with every row coded as the base,
the accumulator's score is ``-sum v p z`` and its log-likelihood ``-sum v lse``) and, per distinct label, its weight,
the weighted column sums of ``z`` and of the offset. Once every partition is in, the labels give the classes and
:meth:`LabelledStatistics.finish` the first record exactly as a pass with known codes would have computed it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from dmlr.data.labels import LabelCoding, check_label_kinds, check_label_values
from dmlr.data.rows import Rows
from dmlr.oracle.blocks import DEFAULT_BLOCK_BYTES, statistics_memory
from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.statistics import Request, Statistics

__all__ = ["LabelledStatistics", "SetupKernel"]

Array = NDArray[np.float64]


@dataclass
class LabelledStatistics:
    """The label-free statistics of a set-up pass and, per label, ``(weight, sum v z (d,), sum v offset (m,))``."""

    stats: Statistics
    labels: dict[Any, tuple[float, Array, Array | None]]

    def __add__(self, other: LabelledStatistics) -> LabelledStatistics:
        out = LabelledStatistics(self.stats + other.stats, dict(self.labels))
        out._merge(other.labels)
        return out

    def add_(self, other: LabelledStatistics) -> LabelledStatistics:
        """Add ``other`` in place."""
        self.stats.add_(other.stats)
        self._merge(other.labels)
        return self

    def _merge(self, labels: dict[Any, tuple[float, Array, Array | None]]) -> None:
        for label, (w, z, o) in labels.items():
            if label in self.labels:
                w0, z0, o0 = self.labels[label]
                self.labels[label] = (w0 + w, z0 + z, None if o0 is None or o is None else o0 + o)
            else:
                self.labels[label] = (w, z, o)

    def distinct(self) -> NDArray[Any]:
        """The distinct labels seen, shape (K,) (checked to be all text or all numbers)."""
        values = list(self.labels)
        check_label_kinds(values)
        return np.asarray(values)

    def finish(self, coding: LabelCoding, has_offset: bool) -> Statistics:
        """The first pass's record under ``coding`` (the information and Gram matrix as computed)."""
        k, s = coding.n_classes, self.stats
        codes = coding.encode(np.asarray(list(self.labels)))
        d = s.col_sum.shape[0] if s.col_sum is not None else s.score.shape[0]
        m = k - 1
        class_weights = np.zeros(k)
        score = np.zeros((d, m)) if not has_offset else s.score.copy()
        loglik = s.loglik if has_offset else -s.weight_sum * float(np.log(k))
        if not has_offset:  # p = 1/K at W = 0: sum v p_k z = col_sum / K
            assert s.col_sum is not None
            score -= (s.col_sum / k)[:, None]
        for code, (w, z, o) in zip(codes, self.labels.values(), strict=True):
            class_weights[code] += w
            if code > 0:
                score[:, code - 1] += z
                if has_offset and o is not None:
                    loglik += float(o[code - 1])
        return replace(s, score=score, loglik=loglik, class_weights=class_weights)


@dataclass(frozen=True)
class SetupKernel:
    """The first pass (at ``W = 0``) over rows whose labels are not coded yet.

    Attributes
    ----------
    request : Request
        The second-order statistics (Gram matrix and moments; the information only with an offset, which fixes
        ``m``).
    intercept : bool
    m : int
        Non-base classes when there is an offset (its columns), else 1 (a placeholder: nothing computed then depends
        on it).
    """

    request: Request
    intercept: bool
    m: int = 1
    block_bytes: int = DEFAULT_BLOCK_BYTES
    reads: ClassVar[tuple[str, ...]] = ("x", "labels", "weights", "offset")

    def __call__(self, rows: Rows) -> LabelledStatistics:
        assert rows.x is not None and rows.labels is not None
        labels = rows.labels
        check_label_values(labels, rows.where("y"))
        d = rows.x.shape[1] + int(self.intercept)
        stats = partition_statistics(
            rows.x, np.zeros(labels.shape[0], dtype=np.int32), rows.weights, rows.offset, np.zeros((d, self.m)),
            intercept=self.intercept, request=self.request, partition=rows.partition, row_start=rows.row_start,
            block_bytes=self.block_bytes,
        )  # fmt: skip
        distinct, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(distinct.size))
        v = np.ones(labels.shape[0]) if rows.weights is None else rows.weights
        z = np.column_stack([np.ones(labels.shape[0]), rows.x]) if self.intercept else rows.x
        weight = np.add.reduceat(v[order], starts)
        zsums = np.add.reduceat(z[order] * v[order, None], starts, axis=0)
        osums = None if rows.offset is None else np.add.reduceat(rows.offset[order] * v[order, None], starts, axis=0)
        sums = {
            _plain(label): (float(weight[j]), zsums[j], None if osums is None else osums[j])
            for j, label in enumerate(distinct.tolist())
        }
        return LabelledStatistics(stats, sums)

    def memory(self, rows: int, p: int) -> int:
        """The statistics kernel's bytes, and a weighted, label-sorted copy of the partition's rows."""
        squares = int(self.request.information)
        return statistics_memory(rows, p + 1, self.m, 1, self.block_bytes, squares) + 16 * rows * (p + 2)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
