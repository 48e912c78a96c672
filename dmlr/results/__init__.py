"""Results layer: the fitted model, covariance, summary table and prediction."""

from dmlr.results.results import MNLogitResults

__all__ = ["MNLogitResults"]
