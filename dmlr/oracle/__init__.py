"""Per-partition oracle: pure NumPy statistics of one row partition and their additive record."""

from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.statistics import Request, Statistics

__all__ = ["Request", "Statistics", "partition_statistics"]
