"""The fit's passes: the statistics kernel run by the pass engine, as the driver's evaluator."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.data.design import Design
from dmlr.errors import DmlrError
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.statistics import Request, Statistics
from dmlr.passes.engine import PassEngine

__all__ = ["FitPasses"]

Array = NDArray[np.float64]


@dataclass
class FitPasses:
    """Evaluates the statistics of a design at given coefficients, one pass of the engine per call.

    Attributes
    ----------
    engine : PassEngine
        Runs the passes over the design's data.
    design : Design
        The model (dependent columns dropped, when some were); the engine's data keep every column and the kernel
        reads ``columns`` of them.
    columns : tuple of int, optional
        The columns of ``x`` the model uses (``None``: all).
    """

    engine: PassEngine
    design: Design
    columns: tuple[int, ...] | None = None

    @classmethod
    def over(cls, design: Design, client: Any = None, *, split_every: int = 8, hold: bool = False) -> FitPasses:
        """The passes of a design whose classes are known (its engine made here)."""
        if design.coding is None:
            raise ValueError("the design's classes are not known yet: build it with classes= or fit through dmlr.fit")
        engine = PassEngine(design.rows, client, split_every, hold=hold, transform=design.transform)
        return cls(engine, design)

    @property
    def count(self) -> int:
        """Passes made so far (the engine's; set when resuming, so that counts continue)."""
        return self.engine.count

    @count.setter
    def count(self, value: int) -> None:
        self.engine.count = value

    @property
    def seconds(self) -> float:
        """Wall time spent in passes."""
        return self.engine.seconds

    @property
    def streamed(self) -> bool:
        """Whether a pass produces (some of) the data anew."""
        return self.engine.streamed

    @property
    def client(self) -> Any:
        """The cluster's client (``None``: local threads)."""
        return self.engine.client

    def kernel(self, coef: Array, request: Request, intercept_only: bool = False) -> StatisticsKernel:
        """The statistics kernel of a pass at ``coef``."""
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        return StatisticsKernel(coef, request, self.design.intercept, self.columns, intercept_only)

    def __call__(self, coef: Array, request: Request, *, intercept_only: bool = False) -> Statistics:
        """One pass at ``coef`` (shape (d, m), or (1, m) for the intercept-only model).

        Raises
        ------
        DmlrError
            The pass computed no information though asked to (no row in its sample), or an exact one that does not
            cover every row.
        """
        stats: Statistics = self.engine.reduce(self.kernel(coef, request, intercept_only))
        if request.information:
            _scale_sampled_information(stats, request)
        return stats

    def without_columns(self, drop: list[int]) -> FitPasses:
        """Passes over the same data without some model columns (indices into ``design.model_names``)."""
        keep = [j for j in range(self.design.n_columns) if j not in set(drop)]
        data_columns = self.design.data_columns(keep)
        if self.columns is not None:
            data_columns = tuple(self.columns[j] for j in data_columns)
        return replace(self, design=self.design.without_columns(drop), columns=data_columns)


def _scale_sampled_information(result: Statistics, request: Request) -> None:
    """Scale an information computed on a sample of the rows up to all rows (in place); check an exact one covered
    every row."""
    covered, total = result.information_weight, result.weight_sum
    if result.information is None or (covered <= 0.0 and total > 0.0):
        raise DmlrError("the pass computed no information: no row was in its sample")
    if request.information_every > 1:
        if covered < total:
            result.information *= total / covered
    elif not result.information_exact:
        raise DmlrError(f"the information covers weight {covered} of {total}: a partition did not compute it")
