"""dmlr: multinomial logistic regression at scale on Dask, with full statistical inference.

The entry point is :func:`dmlr.fit`; it returns :class:`dmlr.MNLogitResults`. See ``docs/architecture.md`` for
the data flow and the coefficient layout convention.
"""

from typing import TYPE_CHECKING

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
    WideDesignWarning,
    WorkerMemoryError,
)

if TYPE_CHECKING:
    from dmlr.api import fit
    from dmlr.data.arrays import stage_arrays
    from dmlr.data.staging import stage
    from dmlr.data.store import StoreData, open_store
    from dmlr.data.writing import store_checksum
    from dmlr.estimator import MultinomialLogit
    from dmlr.formula import fit_formula
    from dmlr.models.cv import CVResults, cross_validate
    from dmlr.models.many import ModelSet, fit_many
    from dmlr.models.weightings import fold_ids
    from dmlr.passes.shipping import scatter_rows
    from dmlr.results.evaluate import evaluate
    from dmlr.results.hypothesis import lr_test
    from dmlr.results.io import load, save
    from dmlr.results.results import MNLogitResults

__version__ = "0.1.0"

# Imported on first use: a worker process that unpickles a pass task imports ``dmlr`` but needs none of these
# (pandas, the results layer), which would add ~150 MiB to every worker's resident memory.
_LAZY = {
    "fit": "dmlr.api",
    "scatter_rows": "dmlr.passes.shipping",
    "StoreData": "dmlr.data.store",
    "open_store": "dmlr.data.store",
    "stage": "dmlr.data.staging",
    "stage_arrays": "dmlr.data.arrays",
    "store_checksum": "dmlr.data.writing",
    "evaluate": "dmlr.results.evaluate",
    "cross_validate": "dmlr.models.cv",
    "CVResults": "dmlr.models.cv",
    "fit_many": "dmlr.models.many",
    "ModelSet": "dmlr.models.many",
    "fold_ids": "dmlr.models.weightings",
    "load": "dmlr.results.io",
    "lr_test": "dmlr.results.hypothesis",
    "save": "dmlr.results.io",
    "MNLogitResults": "dmlr.results.results",
    "MultinomialLogit": "dmlr.estimator",  # extra dmlr[sklearn]
    "fit_formula": "dmlr.formula",  # extra dmlr[formula]
}


def __getattr__(name: str) -> object:
    """The public API, imported on first use (see ``_LAZY``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmlr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CVResults",
    "ClusterError",
    "CollinearityError",
    "ConvergenceWarning",
    "DmlrError",
    "DroppedColumnsWarning",
    "InferenceUnavailableError",
    "InputError",
    "JobInterrupted",
    "MNLogitResults",
    "ModelSet",
    "MultinomialLogit",
    "NumericalError",
    "PerfectSeparationError",
    "PerfectSeparationWarning",
    "SingularInformationWarning",
    "StoreData",
    "StoreError",
    "WideDesignWarning",
    "WorkerMemoryError",
    "__version__",
    "cross_validate",
    "evaluate",
    "fit",
    "fit_formula",
    "fit_many",
    "fold_ids",
    "load",
    "lr_test",
    "open_store",
    "save",
    "scatter_rows",
    "stage",
    "stage_arrays",
    "store_checksum",
]
