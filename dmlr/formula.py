"""``dmlr.fit_formula("y ~ x1 + C(region) + x2:x3", data)``: Wilkinson formulas through formulaic.

The left-hand side is one column of class labels; the right-hand side is expanded by formulaic (a well-kept
library) into the design, whose column names flow unchanged into ``params`` and the summary (formulaic's
``Intercept`` included). A dask DataFrame is encoded partition by partition with one model spec; the levels of its
non-numeric variables are gathered over all partitions first, so every partition encodes identically.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmlr.api import fit
from dmlr.data.store import from_partitions
from dmlr.errors import InputError
from dmlr.results.results import MNLogitResults

__all__ = ["fit_formula"]


def _split(formula: str) -> tuple[str, str]:
    if formula.count("~") != 1:
        raise InputError(f"formula {formula!r} must have the form 'label ~ terms'")
    lhs, rhs = (part.strip() for part in formula.split("~"))
    if not lhs or not rhs:
        raise InputError(f"formula {formula!r} must have the form 'label ~ terms'")
    return lhs, rhs


def _model_matrix(frame: pd.DataFrame, spec: Any, where: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """One partition's design under a fixed formulaic model spec."""
    return np.asarray(spec.get_model_matrix(frame), dtype=np.float64)


def fit_formula(formula: str, data: pd.DataFrame | dd.DataFrame, **kwargs: Any) -> MNLogitResults:
    """Fit a multinomial logit specified by a formula.

    Parameters
    ----------
    formula : str
        ``"label ~ terms"``; ``label`` is a column of class labels, ``terms`` any formulaic right-hand side
        (``C(x)`` for categoricals, ``a:b`` interactions, ``- 1`` or ``+ 0`` to drop the intercept).
    data : pandas.DataFrame or dask.dataframe.DataFrame
    **kwargs
        Passed to :func:`dmlr.fit` (``method``, ``l2``, ``weights``, ``client``, ...).

    Returns
    -------
    MNLogitResults
        Coefficient rows named as formulaic names the design columns.
    """
    from formulaic import Formula, model_matrix

    lhs, rhs = _split(formula)
    if lhs not in data.columns:
        raise InputError(f"the label column {lhs!r} of the formula is not in the data")
    if "fit_intercept" in kwargs or "feature_names" in kwargs:
        raise InputError("the formula decides the intercept and the column names")
    variables = {str(v) for v in Formula(rhs).required_variables}
    missing = sorted(v for v in variables if v not in data.columns)
    if missing:
        raise InputError(f"the formula uses {missing}, which are not columns of the data")

    x: Any
    if isinstance(data, dd.DataFrame):
        text = [v for v in sorted(variables) if not pd.api.types.is_numeric_dtype(data[v].dtype)]
        levels = dict(zip(text, dd.compute(*[data[v].dropna().unique() for v in text]), strict=True))
        typed = data.astype({v: pd.CategoricalDtype(sorted(levels[v].tolist())) for v in text}) if text else data
        spec = model_matrix(rhs, typed.partitions[0].compute()).model_spec
        meta = spec.get_model_matrix(typed._meta)
        lengths = typed.map_partitions(len).compute()
        x = from_partitions(typed, lengths, _model_matrix, (meta.shape[1],), np.float64, spec)
        names = [str(c) for c in meta.columns]
        labels = typed[lhs]
        if not pd.api.types.is_numeric_dtype(labels.dtype):
            labels = labels.astype(object)
        y = labels.to_dask_array(lengths=list(map(int, lengths)))
    else:
        matrix = model_matrix(rhs, data)
        names = [str(c) for c in matrix.columns]
        x = np.asarray(matrix, dtype=np.float64)
        y = data.loc[matrix.index, lhs].to_numpy() if len(matrix) != len(data) else data[lhs].to_numpy()
    if "Intercept" in names:  # dmlr's own intercept (unpenalized), named as formulaic names it
        j = names.index("Intercept")
        x = x[:, [i for i in range(len(names)) if i != j]]
        names = names[:j] + names[j + 1 :]
        res = fit(x, y, fit_intercept=True, feature_names=names, **kwargs)
        return dataclasses.replace(res, feature_names=("Intercept", *res.feature_names[1:]), dep_name=lhs)
    res = fit(x, y, fit_intercept=False, feature_names=names, **kwargs)
    return dataclasses.replace(res, dep_name=lhs)
