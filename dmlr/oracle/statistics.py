"""The additive statistics record one partition produces and the tree reduction sums.

Conventions (the only place they are written down in full; every docstring repeats the shapes)
-----------------------------------------------------------------------------------------------
- ``n`` rows, ``p`` feature columns in the data, ``d = p + intercept`` model columns (the intercept, when fitted,
  is model column 0 and is *not* stored in the data), ``K`` classes, ``m = K - 1`` non-base classes.
- Class codes: ``0`` is the base (reference) class, ``1..m`` are the non-base classes in sorted label order.
- Coefficients ``coef`` are a ``(d, m)`` array ``W``; column ``k`` belongs to non-base class ``k + 1``.
- Flat parameters are class-major: ``theta = vec(W) = [w_1; w_2; ...; w_m]`` (``W.ravel(order="F")``), length
  ``m * d``; the information is ``(m d, m d)`` in the same order, block ``(k, l)`` is ``d x d``.
- ``information`` is minus the Hessian of the log-likelihood: positive semi-definite. Consumers read it through
  :meth:`Statistics.full_information`, which takes the upper triangle and mirrors it, so an accumulation may fill
  only the upper triangle (the kernels fill the blocks ``(k, l)`` with ``k <= l``, each whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from dask.sizeof import sizeof
from numpy.typing import NDArray

__all__ = ["BOUND_SETUP", "SCORE_ONLY", "WITH_INFORMATION", "Request", "RowSample", "Statistics", "mirror_upper"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Request:
    """Which statistics a data pass must compute besides log-likelihood and score.

    Attributes
    ----------
    information : bool
        Accumulate the ``(m d, m d)`` observed information.
    gram : bool
        Accumulate the weighted Gram matrix ``X^T V X`` (``d x d``) for Böhning's bound.
    moments : bool
        Accumulate weighted column sums and sums of squares (``d``,) and check every value is finite.
    meat : bool
        Accumulate the ``(m d, m d)`` sum of per-observation score outer products (the sandwich's meat).
    probability_weights : bool
        The weights are probability (sampling) weights: the meat weighs each row's score by ``v_i`` (so
        ``v_i^2`` in the outer product) instead of counting it ``v_i`` times.
    information_every : int
        Compute the information on the rows of every ``information_every``-th unit of 1,024 global rows only
        (``oracle.kernels.in_sample``: the same sample whatever the partitioning); the pass scales it up to all rows.
        An estimate for a direction far from the optimum at a fraction of the arithmetic (Newton on streamed data,
        L-BFGS's preconditioner refresh); such a pass computes no other second-order statistic.
    sample_rate : float
        Also keep a sample of the rows, each global row ``i`` with probability ``sample_rate`` by a hash of ``i``
        (the same rows whatever the partitioning): the pass whose sample the driver fits in memory for a start
        close to the optimum (:mod:`dmlr.fitting.warm`).
    """

    information: bool = False
    gram: bool = False
    moments: bool = False
    meat: bool = False
    probability_weights: bool = False
    information_every: int = 1
    sample_rate: float = 0.0


SCORE_ONLY = Request()
"""A pass computing log-likelihood and score only."""
WITH_INFORMATION = Request(information=True)
"""A pass that also computes the information."""
BOUND_SETUP = Request(gram=True, moments=True)
"""The first pass of bound-based rules: Gram matrix and column moments."""


@dataclass
class RowSample:
    """Rows kept by a pass (``Request.sample_rate``), with their global indices: adding concatenates.

    Attributes
    ----------
    rows : ndarray of int64, shape (s,)
        Global row indices.
    x : ndarray, shape (s, p)
    codes : ndarray of int, shape (s,)
        Class codes (a sample is kept only once the classes are known).
    weights : ndarray, shape (s,), optional
    offset : ndarray, shape (s, m), optional
    """

    rows: NDArray[np.int64]
    x: Array
    codes: NDArray[np.integer]
    weights: Array | None = None
    offset: Array | None = None

    def __add__(self, other: RowSample) -> RowSample:
        def join(a: Any, b: Any) -> Any:
            return None if a is None or b is None else np.concatenate([a, b])

        return RowSample(**{f.name: join(getattr(self, f.name), getattr(other, f.name)) for f in fields(RowSample)})

    def in_row_order(self) -> RowSample:
        """The sample sorted by global row (so its fit does not depend on how the records were added)."""
        order = np.argsort(self.rows, kind="stable")
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        ordered: dict[str, Any] = {name: None if v is None else v[order] for name, v in values.items()}
        return RowSample(**ordered)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays."""
        return sum(int(v.nbytes) for f in fields(self) if isinstance(v := getattr(self, f.name), np.ndarray))


@dataclass
class Statistics:
    """Additive sufficient statistics of one or more partitions at one coefficient value.

    Attributes
    ----------
    n_rows : int
        Number of rows that contributed (unweighted), so a reduction can prove every row counted once.
    weight_sum : float
        Sum of the frequency weights ``sum_i v_i`` (``n_rows`` when unweighted).
    loglik : float
        Weighted log-likelihood ``sum_i v_i l_i`` (unpenalized).
    score : ndarray, shape (d, m)
        Gradient of ``loglik`` with respect to ``W``: ``X^T V (Y - P)``.
    class_weights : ndarray, shape (K,)
        Weighted count of each class code (code 0 is the base).
    information : ndarray, shape (m d, m d), optional
        ``sum_i v_i (Lambda_p - p p^T) kron x_i x_i^T`` (at least its upper triangle).
    gram : ndarray, shape (d, d), optional
        ``X^T V X`` (at least its upper triangle).
    col_sum, col_sumsq : ndarray, shape (d,), optional
        Weighted column sums and sums of squares (model columns, intercept included).
    meat : ndarray, shape (m d, m d), optional
        ``sum_i c_i s_i s_i^T`` with ``s_i = (y_i - p_i) kron x_i`` (non-base classes, class-major) and
        ``c_i = v_i`` for frequency weights, ``v_i^2`` for probability weights (at least its upper triangle).
    information_weight : float
        Sum of the weights of the rows the information was computed on: ``weight_sum`` when it is exact, less when
        it was estimated from a sample of the rows (and scaled up by ``weight_sum / information_weight``).
    col_abssum : ndarray, shape (d,), optional
        Weighted sums of the columns' absolute values (with ``col_sumsq``: the typical size of a column's nonzero
        entries, ``col_sumsq / col_abssum``, 1 for an indicator).
    sample : RowSample, optional
        The rows kept by ``Request.sample_rate`` (never stored in a checkpoint).
    """

    n_rows: int
    weight_sum: float
    loglik: float
    score: Array
    class_weights: Array
    information: Array | None = None
    gram: Array | None = None
    col_sum: Array | None = None
    col_sumsq: Array | None = None
    meat: Array | None = None
    information_weight: float = 0.0
    col_abssum: Array | None = None
    sample: RowSample | None = None

    def __add__(self, other: Statistics) -> Statistics:
        values: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = None if a is None or b is None else a + b
        return Statistics(**values)

    def to_arrays(self, prefix: str) -> tuple[dict[str, Array], dict[str, Any]]:
        """The record as named arrays and JSON scalars (keys ``prefix.field``; the row sample is left out): how
        checkpoints and results store it, without pickle."""
        arrays: dict[str, Array] = {}
        scalars: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sample" or value is None:
                continue
            if isinstance(value, np.ndarray):
                arrays[f"{prefix}.{f.name}"] = value
            else:
                scalars[f"{prefix}.{f.name}"] = value.item() if isinstance(value, np.generic) else value
        return arrays, scalars

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, Any], scalars: dict[str, Any]) -> Statistics:
        """The record :meth:`to_arrays` wrote."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f"{prefix}.{f.name}"
            values[f.name] = arrays.get(key, scalars.get(key, f.default))
        values["sample"] = None
        return cls(**values)

    def add_(self, other: Statistics) -> Statistics:
        """Add ``other`` into this record in place (no new arrays) and return it.

        Only for records the caller owns, such as a task's running sum. A field missing from either becomes
        ``None``, as with ``+``.
        """
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a is None or b is None:
                setattr(self, f.name, None)
            elif isinstance(a, np.ndarray):
                a += b
            else:
                setattr(self, f.name, a + b)
        return self

    def restricted(self, keep: Sequence[int]) -> Statistics:
        """The record of the same pass had the design only the model columns ``keep`` (indices into d).

        Exact for a pass at ``W = 0``, where the probabilities do not depend on the features (only on the offset):
        every statistic is then a sum over rows of products of the kept columns, i.e. a sub-block of this record.
        ``dmlr.fit`` uses it so that dropping dependent columns after the first pass costs no second pass.
        """
        d, m = self.score.shape
        cols = np.asarray(keep, dtype=np.intp)
        flat = (np.arange(m)[:, None] * d + cols[None, :]).ravel()  # class-major positions of the kept columns
        info = None if self.information is None else self.full_information()[np.ix_(flat, flat)]
        gram = None if self.gram is None else self.full_gram()[np.ix_(cols, cols)]
        return Statistics(
            n_rows=self.n_rows,
            weight_sum=self.weight_sum,
            loglik=self.loglik,
            score=self.score[cols],
            class_weights=self.class_weights,
            information=info,
            gram=gram,
            col_sum=None if self.col_sum is None else self.col_sum[cols],
            col_sumsq=None if self.col_sumsq is None else self.col_sumsq[cols],
            meat=None if self.meat is None else mirror_upper(self.meat)[np.ix_(flat, flat)],
            information_weight=self.information_weight,
            col_abssum=None if self.col_abssum is None else self.col_abssum[cols],
            sample=self.sample,  # raw data columns: the sample's fit selects the kept ones itself
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the record's arrays (what a transfer of it costs)."""
        arrays = sum(int(v.nbytes) for f in fields(self) if isinstance(v := getattr(self, f.name), np.ndarray))
        return arrays + (0 if self.sample is None else self.sample.nbytes)

    @staticmethod
    def sum(records: list[Statistics]) -> Statistics:
        """Sum a non-empty list of records (the combine step of the tree reduction); the inputs are not changed."""
        total = records[0] + records[1] if len(records) > 1 else records[0]
        for r in records[2:]:
            total.add_(r)
        return total

    def full_information(self) -> Array:
        """The symmetric ``(m d, m d)`` information, mirrored from the accumulated upper triangle.

        Mirrored in place (no copy: at ``(K - 1) d = 9,800`` the matrix is 770 MB), so the returned array is the
        record's own; callers that change it must copy it first.
        """
        if self.information is None:
            raise ValueError("this pass did not compute the information")
        return mirror_upper(self.information)

    @property
    def information_exact(self) -> bool:
        """Whether the information was computed on every row (not estimated from a sample)."""
        return self.information is not None and self.information_weight >= self.weight_sum * (1 - 1e-9)

    def full_meat(self) -> Array:
        """The symmetric ``(m d, m d)`` meat, mirrored from the accumulated upper triangle (in place)."""
        if self.meat is None:
            raise ValueError("this pass did not compute the meat")
        return mirror_upper(self.meat)

    def full_gram(self) -> Array:
        """The symmetric ``(d, d)`` Gram matrix ``X^T V X``, mirrored from the upper triangle (in place)."""
        if self.gram is None:
            raise ValueError("this pass did not compute the Gram matrix")
        return mirror_upper(self.gram)


@sizeof.register(Statistics)  # type: ignore[untyped-decorator]
def _sizeof_statistics(record: Statistics) -> int:
    # dask's scheduler and transfer accounting use this; the default (sys.getsizeof) would report ~50 bytes
    return 64 + record.nbytes


def mirror_upper(upper: Array, block: int = 512) -> Array:
    """Copy the strict upper triangle onto the lower one, in place, a block of columns at a time."""
    n = upper.shape[0]
    for j in range(0, n, block):
        stop = min(j + block, n)
        upper[j:stop, :j] = upper[:j, j:stop].T
        tile = upper[j:stop, j:stop]
        lower = np.tril_indices(stop - j, -1)
        tile[lower] = tile.T[lower]
    return upper
