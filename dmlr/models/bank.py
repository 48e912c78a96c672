"""A bank of models sharing every pass: F fits run in lockstep, each pass of the engine evaluating all of them.

Each model is an ordinary fit (:class:`~dmlr.fitting.fitter.Fitter`: its first pass, checks, rule and loop), run in
a thread of its own against a :class:`MemberEngine`, which stands in for the pass engine: a member's pass is posted
to the :class:`Bank`, and once every model still fitting has posted its next pass, one pass of the real engine runs a
:class:`BankKernel` that reads each partition once and evaluates every posted kernel on it, each on the rows
reweighted by its model's row weighting (:class:`Weighted`: a fold's training rows, a bootstrap replicate). A model
that has converged leaves the bank and stops costing arithmetic; the passes of the whole bank are those of its
slowest model. The kernels are evaluated in the order of the models, whatever the threads' timing, so a bank's
results do not depend on scheduling.
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from dask.sizeof import sizeof
from numpy.typing import NDArray

from dmlr.data.rows import FIELDS, Rows
from dmlr.errors import DmlrError, WorkerMemoryError
from dmlr.models.weightings import folds_of_rows, positions
from dmlr.oracle.checks import check_rows
from dmlr.passes.engine import PassEngine
from dmlr.passes.kernel import Kernel, Sums, add_into, record_size

__all__ = [
    "Bank",
    "BankKernel",
    "BankRecord",
    "FoldSplitKernel",
    "Idle",
    "MemberEngine",
    "Weighted",
    "largest_fitting",
    "memory_advice",
    "reduce_bank",
    "run_bank",
]

T = TypeVar("T")
Weighting = Callable[[Rows], NDArray[np.float64]]


@dataclass(frozen=True)
class Weighted:
    """``kernel`` on the rows reweighted by ``weighting`` (times the data's own weights, when it has some).

    Attributes
    ----------
    kernel : Kernel
    weighting : callable
        Rows -> each row's weight, shape (r,): a function of the rows' global positions, so the same whatever the
        partitioning.
    """

    kernel: Any
    weighting: Weighting

    @property
    def reads(self) -> tuple[str, ...]:
        """What the inner kernel reads, the data's weights, and what the weighting reads (cluster ids)."""
        extra = getattr(self.weighting, "reads", ())
        return tuple(f for f in FIELDS if f in self.kernel.reads or f == "weights" or f in extra)

    @property
    def batch(self) -> Any:
        """The inner kernel's batching."""
        return getattr(self.kernel, "batch", True)

    def __call__(self, rows: Rows) -> Any:
        w = self.weighting(rows)
        keep = w > 0  # the model's rows (a row the data weigh 0 stays one of them, as in a fit of its own)
        if rows.weights is not None:
            w = w * np.asarray(rows.weights, dtype=np.float64)
        request = getattr(self.kernel, "request", None)
        if keep.all() or request is None or not (request.information or request.meat or request.gram):
            return self.kernel(rows.with_blocks(weights=w))
        if request.information_every > 1:  # sampling places rows by their positions
            return self.kernel(rows.with_blocks(weights=w))
        # rows of weight 0 add nothing to a statistics record: a pass of second-order statistics (compute-bound)
        # leaves them out (a score pass is bound by reading its rows: copying them would cost what it saves), after
        # the checks the kernel makes, which name a row by its position, saw them all
        if request.moments and rows.x is not None:
            check_rows(rows.x, rows.weights, rows.offset, rows.partition, rows.row_start)
        return self.kernel(rows.with_blocks(weights=w).take(keep))

    def memory(self, rows: int, p: int) -> int:
        """The inner kernel's temporaries and the weights (two vectors of ``rows``)."""
        return int(self.kernel.memory(rows, p)) + 16 * rows

    def record_bytes(self) -> int | None:
        """The inner kernel's record size, when it says."""
        return record_size(self.kernel)


@dataclass(frozen=True)
class FoldSplitKernel:
    """``kernel`` on each fold's rows of a partition: one record per fold (:class:`BankRecord`). The rows are
    ordered by fold once (one copy), each fold's a slice of them, so the split costs the kernel's arithmetic and a
    copy of the rows.

    Attributes
    ----------
    kernel : Kernel
    folds, seed : int
    """

    kernel: Any
    folds: int
    seed: int

    @property
    def reads(self) -> tuple[str, ...]:
        """The inner kernel's."""
        return tuple(self.kernel.reads)

    @property
    def batch(self) -> Any:
        """The inner kernel's batching."""
        return getattr(self.kernel, "batch", True)

    def __call__(self, rows: Rows) -> BankRecord:
        fold = folds_of_rows(positions(rows), self.folds, self.seed).astype(np.int16)
        request = getattr(self.kernel, "request", None)
        if request is not None and request.moments and rows.x is not None:  # named by position before reordering
            check_rows(rows.x, rows.weights, rows.offset, rows.partition, rows.row_start)
        order = np.argsort(fold, kind="stable")
        bounds = np.searchsorted(fold[order], np.arange(self.folds + 1))
        ordered = rows.take(order)
        return BankRecord(
            tuple(self.kernel(ordered.slice(int(bounds[g]), int(bounds[g + 1]))) for g in range(self.folds))
        )

    def memory(self, rows: int, p: int) -> int:
        """The inner kernel's, the reordered copy of the rows and the order."""
        return int(self.kernel.memory(rows, p)) + 8 * rows * (p + 4)

    def record_bytes(self) -> int | None:
        """A record per fold."""
        size = record_size(self.kernel)
        return None if size is None else self.folds * size


@dataclass(frozen=True)
class Idle:
    """The kernel of a bank model with nothing to evaluate in a pass (its models not started yet): a row count.
    Here, not beside its user, because workers unpickle it: this module imports no driver code."""

    def __call__(self, rows: Rows) -> Sums:
        return Sums({"rows": np.array([float(rows.n_rows)])})

    @property
    def reads(self) -> tuple[str, ...]:
        """Nothing."""
        return ()

    def memory(self, rows: int, p: int) -> int:
        """None."""
        return 0

    def record_bytes(self) -> int:
        """One number."""
        return 8


def _batching(kernels: Sequence[Any]) -> Any:
    """The most restrictive batching of ``kernels`` (each partition alone < contiguous runs < any rows joined)."""
    modes = [getattr(k, "batch", True) for k in kernels]
    if False in modes:
        return False
    return "contiguous" if "contiguous" in modes else True


@dataclass(frozen=True)
class BankKernel:
    """Every model's kernel on the same rows: one read of each partition for all of them.

    Attributes
    ----------
    kernels : tuple of Kernel
        In the order of the models.
    """

    kernels: tuple[Any, ...]

    @property
    def reads(self) -> tuple[str, ...]:
        """What any of the kernels reads."""
        wanted = {f for k in self.kernels for f in k.reads}
        return tuple(f for f in FIELDS if f in wanted)

    @property
    def batch(self) -> Any:
        """The most restrictive batching among the kernels."""
        return _batching(self.kernels)

    def __call__(self, rows: Rows) -> BankRecord:
        return BankRecord(tuple(k(rows) for k in self.kernels))

    def memory(self, rows: int, p: int) -> int:
        """The largest kernel's temporaries (the kernels run one after the other on a batch) and every kernel's
        records, twice (a task's running sums and the batch's records being added): the memory check knows the
        bank's size. A kernel that does not say its record size counts whole."""
        temporaries, records = 0, 0
        for k in self.kernels:
            size = record_size(k)
            temporaries = max(temporaries, int(k.memory(rows, p)))
            records += 2 * size if size is not None else int(k.memory(rows, p))
        return temporaries + records

    def record_bytes(self) -> int:
        """Bytes of one bank record (kernels that do not say count 0)."""
        return sum(record_size(k) or 0 for k in self.kernels)


@dataclass
class BankRecord:
    """One record per model, added model by model.

    Attributes
    ----------
    records : tuple
    """

    records: tuple[Any, ...]

    def __add__(self, other: BankRecord) -> BankRecord:
        return BankRecord(tuple(a + b for a, b in zip(self.records, other.records, strict=True)))

    def add_(self, other: BankRecord) -> BankRecord:
        """Add ``other`` in place (each record through its own ``add_`` when it has one)."""
        self.records = tuple(add_into(a, b) for a, b in zip(self.records, other.records, strict=True))
        return self


@sizeof.register(BankRecord)  # type: ignore[untyped-decorator]
def _sizeof_bank(record: BankRecord) -> int:
    return 64 + sum(int(sizeof(r)) for r in record.records)


class BankAborted(DmlrError):
    """Another model of the bank failed: this one stops too (the other's error is the one reported)."""


class Bank:
    """Runs the passes of several models in lockstep: a pass starts once every model still fitting has posted its
    kernel, and gives each model its own record.

    Parameters
    ----------
    engine : PassEngine
        The engine over the shared data.
    n_members : int
        Models in the bank.
    """

    def __init__(self, engine: PassEngine, n_members: int) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._active = set(range(n_members))
        self._posted: dict[int, Kernel[Any]] = {}
        self._results: dict[int, Any] = {}
        self._failure: BaseException | None = None

    def reduce(self, member: int, kernel: Kernel[Any]) -> Any:
        """Post ``member``'s next pass and wait for the bank's pass; that pass's record of ``member``."""
        with self._cond:
            self._raise_if_failed()
            self._posted[member] = kernel
            self._run_when_complete()
            while member not in self._results:
                self._raise_if_failed()
                self._cond.wait()
            return self._results.pop(member)

    def leave(self, member: int) -> None:
        """``member`` has finished (or failed): the bank stops waiting for it."""
        with self._cond:
            self._active.discard(member)
            self._posted.pop(member, None)
            try:
                self._run_when_complete()
            except BaseException:  # recorded as the bank's failure: run_bank raises it
                pass

    def abort(self, error: BaseException) -> None:
        """Stop every model: their next (or pending) pass raises :class:`BankAborted`."""
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the bank (``None``: none)."""
        return self._failure

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise BankAborted(f"stopped: another model of the bank failed ({self._failure!r})")

    def _run_when_complete(self) -> None:
        """Run the pass (in the calling thread, the lock held) once every active model has posted."""
        if not self._posted or not self._active.issubset(self._posted) or self._failure is not None:
            return
        members = sorted(self._posted)
        kernels = [self._posted.pop(i) for i in members]
        if not BankKernel(tuple(kernels)).reads:  # idle models only (those with work have left): no pass to make
            self._results.update((i, k(Rows())) for i, k in zip(members, kernels, strict=True))
            self._cond.notify_all()
            return
        unique, where = _distinct(kernels)
        try:
            record = reduce_bank(self.engine, unique)
        except BaseException as error:
            self._failure = error
            self._cond.notify_all()
            raise
        handed: set[int] = set()
        for member, j in zip(members, where, strict=True):  # a record posted twice: each model gets its own copy
            self._results[member] = record.records[j] if j not in handed else copy.deepcopy(record.records[j])
            handed.add(j)
        self._cond.notify_all()


def _distinct(kernels: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """The kernels of a pass, each evaluated once when several models posted the same one (equal pickles: e.g. the
    first pass of the fits of every row at several penalties, all at the same start), and where each model's is."""
    seen: dict[bytes, int] = {}
    unique: list[Any] = []
    where: list[int] = []
    for kernel in kernels:
        try:
            key: bytes | None = pickle.dumps(kernel, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # not picklable (a local run): evaluated as it is
            key = None
        if key is not None and key in seen:
            where.append(seen[key])
            continue
        if key is not None:
            seen[key] = len(unique)
        where.append(len(unique))
        unique.append(kernel)
    return unique, where


def reduce_bank(engine: PassEngine, kernels: Sequence[Any]) -> BankRecord:
    """One engine pass of ``kernels`` on the same rows; a worker too small for them says how many fit."""
    try:
        record: BankRecord = engine.reduce(BankKernel(tuple(kernels)))
    except WorkerMemoryError as error:
        advice = memory_advice(engine, len(kernels), lambda k: BankKernel(tuple(kernels[:k])), "models")
        raise WorkerMemoryError(f"{error} {advice}") from None
    return record


def largest_fitting(engine: PassEngine, n: int, kernel_of: Callable[[int], Any]) -> int:
    """The largest ``k <= n`` whose pass of ``kernel_of(k)`` (the first ``k`` models of a bank) fits every worker
    (0: not even one)."""
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if engine.fits_memory(kernel_of(mid)) else (low, mid - 1)
    return low


def memory_advice(engine: PassEngine, n: int, kernel_of: Callable[[int], Any], what: str) -> str:
    """What a memory error of a pass over ``n`` models adds: how many of them a pass can evaluate."""
    most = largest_fitting(engine, n, kernel_of)
    if most == 0:
        return f"A pass here evaluates {n} {what}; not even one fits a worker: stage the data in smaller chunks."
    return (
        f"A pass here evaluates {n} {what}; at most {most} fit a worker: run fewer at once (fewer penalties or folds "
        "per call, a smaller nrep) or give the workers more memory."
    )


@dataclass
class MemberEngine:
    """What one model of a bank sees as its pass engine: its passes go to the bank, reweighted by its weighting.

    Attributes
    ----------
    bank : Bank
    member : int
        The model's position in the bank.
    weighting : callable, optional
        Rows -> each row's weight for this model (``None``: the data's weights as they are).
    count : int
        Passes of this model.
    """

    bank: Bank
    member: int
    weighting: Weighting | None = None
    count: int = 0

    def reduce(self, kernel: Kernel[Any]) -> Any:
        """One pass of the bank, this model's record of it."""
        posted = kernel if self.weighting is None else Weighted(kernel, self.weighting)
        record = self.bank.reduce(self.member, posted)
        self.count += 1
        return record

    def __getattr__(self, name: str) -> Any:
        if name in ("derive", "map"):
            raise DmlrError(f"a model in a bank of models cannot run the engine's {name}(): it shares the passes")
        return getattr(self.bank.engine, name)


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None


def run_bank(engine: PassEngine, jobs: Sequence[Callable[[MemberEngine], T]], weightings: Sequence[Any]) -> list[T]:
    """Run ``jobs`` (one fit each, given its member engine) in lockstep over ``engine``; their results in order.

    The first failure stops every model and is raised (the others' :class:`BankAborted` are not); a Ctrl-C in the
    calling thread stops them at their next pass.
    """
    bank = Bank(engine, len(jobs))
    outcomes: list[_Outcome[T]] = [_Outcome() for _ in jobs]

    def work(i: int) -> None:
        try:
            outcomes[i] = _Outcome(value=jobs[i](MemberEngine(bank, i, weightings[i])))
        except BaseException as error:
            outcomes[i] = _Outcome(error=error)
            if not isinstance(error, BankAborted):
                bank.abort(error)
        finally:
            bank.leave(i)

    threads = [threading.Thread(target=work, args=(i,), name=f"dmlr-model-{i}", daemon=True) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException as error:
        bank.abort(error)
        raise
    errors = [o.error for o in outcomes if o.error is not None and not isinstance(o.error, BankAborted)]
    first = errors[0] if errors else bank.failure
    if first is not None:
        raise first
    return [o.value for o in outcomes]  # type: ignore[misc]
