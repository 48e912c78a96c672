"""dmlr: multinomial logistic regression at scale on Dask, with full statistical inference.

The entry point is :func:`dmlr.fit`; it returns :class:`dmlr.MNLogitResults`. See ``docs/architecture.md`` for
the data flow and the coefficient layout convention.
"""

from dmlr.api import fit, scatter_rows
from dmlr.data.store import StoreData, open_store, stage, stage_arrays, store_checksum
from dmlr.errors import (
    ClusterError,
    CollinearityError,
    ConvergenceWarning,
    DmlrError,
    DroppedColumnsWarning,
    InferenceUnavailableError,
    InputError,
    JobInterrupted,
    NumericalError,
    PerfectSeparationError,
    PerfectSeparationWarning,
    SingularInformationWarning,
    StoreError,
    WorkerMemoryError,
)
from dmlr.results.io import load, save
from dmlr.results.results import MNLogitResults

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Optional parts, imported on first use: ``MultinomialLogit`` (extra ``dmlr[sklearn]``), ``fit_formula``
    (extra ``dmlr[formula]``)."""
    if name == "MultinomialLogit":
        from dmlr.estimator import MultinomialLogit

        return MultinomialLogit
    if name == "fit_formula":
        from dmlr.formula import fit_formula

        return fit_formula
    raise AttributeError(f"module 'dmlr' has no attribute {name!r}")


__all__ = [
    "ClusterError",
    "CollinearityError",
    "ConvergenceWarning",
    "DmlrError",
    "DroppedColumnsWarning",
    "InferenceUnavailableError",
    "InputError",
    "JobInterrupted",
    "MNLogitResults",
    "MultinomialLogit",
    "NumericalError",
    "PerfectSeparationError",
    "PerfectSeparationWarning",
    "SingularInformationWarning",
    "StoreData",
    "StoreError",
    "WorkerMemoryError",
    "__version__",
    "fit",
    "fit_formula",
    "load",
    "open_store",
    "save",
    "scatter_rows",
    "stage",
    "stage_arrays",
    "store_checksum",
]
