"""``dmlr.fit_formula("y ~ x1 + C(region) + x2:x3", data)``: Wilkinson formulas through formulaic.

The left-hand side is one column of class labels; the right-hand side is expanded by formulaic (a well-kept
library) into the design, whose column names flow unchanged into ``params`` and the summary (formulaic's
``Intercept`` included). Text columns are typed as pandas categoricals with sorted levels (a ``category`` column
keeps its own order: its first category is the reference), so every partition of a dask DataFrame, and every table
predicted later, encodes identically. The fitted :class:`FormulaEncoding` (formulaic's model spec) travels with the
result and is re-applied by ``predict_proba`` and ``dmlr predict``, as statsmodels re-applies its formulas.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import compute
from numpy.typing import NDArray

from dmlr.api import fit
from dmlr.data.encoding import drop_missing, is_categorical, missing_rows
from dmlr.data.inputs import series_values
from dmlr.data.sources import from_partitions
from dmlr.errors import InputError
from dmlr.formula_check import check_terms, term_variables
from dmlr.options import check_missing
from dmlr.results.plain import from_plain, to_plain
from dmlr.results.results import MNLogitResults

__all__ = ["FormulaEncoding", "fit_formula"]


def _split(formula: str) -> tuple[str, str]:
    if formula.count("~") != 1:
        raise InputError(f"formula {formula!r} must have the form 'label ~ terms'")
    lhs, rhs = (part.strip() for part in formula.split("~"))
    if not lhs or not rhs:
        raise InputError(f"formula {formula!r} must have the form 'label ~ terms'")
    return lhs, rhs


@dataclass(frozen=True)
class FormulaEncoding:
    """A fitted formula's right-hand side, to encode new tables exactly as the fitted one.

    Held as data only (what a result saves as JSON: no pickle, nothing that runs code when loaded); formulaic's
    model spec is rebuilt from it on first use.

    Attributes
    ----------
    formula : str
        ``"label ~ terms"`` as given.
    variables : tuple of str
        Data columns the terms read.
    levels : dict of str to list
        Levels of each categorical variable (unseen levels in new data are reported, not silently zeroed).
    state : dict
        formulaic's model spec as JSON data: ``terms`` (the right-hand side as given), ``column_names``,
        ``ensure_full_rank``, ``transform_state`` (stateful transforms: centres, scales, knots; in
        :mod:`dmlr.results.plain` form) and ``encoder_state`` (each factor's kind and, for categoricals, its
        categories).
    """

    formula: str
    variables: tuple[str, ...]
    levels: dict[str, list[Any]]
    state: dict[str, Any]

    @classmethod
    def from_spec(
        cls, formula: str, spec: Any, variables: Sequence[str], levels: dict[str, list[Any]]
    ) -> FormulaEncoding:
        """The encoding of a model spec formulaic learnt from data.

        Raises
        ------
        InputError
            A transform of the formula keeps state that is not data (named).
        """
        encoder = {}
        for factor, (kind, factor_state) in spec.encoder_state.items():
            kept = {"categories": factor_state["categories"]} if "categories" in factor_state else {}
            encoder[str(factor)] = [getattr(kind, "value", str(kind)), to_plain(kept, f"the state of {factor}")]
        state = {
            "terms": _split(formula)[1],  # as given: formulaic expands it again (its expanded text drops "- 1")
            "column_names": [str(c) for c in spec.column_names],
            "ensure_full_rank": bool(spec.ensure_full_rank),
            "transform_state": {
                str(term): to_plain(value, f"the state of the formula's transform {term}")
                for term, value in spec.transform_state.items()
            },
            "encoder_state": encoder,
        }
        return cls(
            formula, tuple(variables), {k: to_plain(list(v), f"the levels of {k!r}") for k, v in levels.items()}, state
        )

    def to_json(self) -> dict[str, Any]:
        """The encoding as JSON data (``formula.json`` of a result)."""
        return {"formula": self.formula, "variables": list(self.variables), "levels": self.levels, "state": self.state}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FormulaEncoding:
        """The encoding :meth:`to_json` wrote."""
        from dmlr.errors import StoreError

        encoding = cls(str(doc["formula"]), tuple(doc["variables"]), dict(doc["levels"]), dict(doc["state"]))
        if encoding.state["terms"] != _split(encoding.formula)[1]:
            raise StoreError("formula.json: its terms are not those of its formula")
        try:  # nothing that could run code (checked again before first use, when formulaic is not installed here)
            check_terms(encoding.state["terms"], encoding.variables, StoreError)
        except ModuleNotFoundError:
            pass
        encoding._states()  # malformed values are refused when the result is loaded, not at its first use
        return encoding

    def _states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The encoder and transform states in formulaic's form (the kinds as text)."""
        s = self.state
        encoder = {
            factor: (kind, from_plain(value, "formula.json")) for factor, (kind, value) in s["encoder_state"].items()
        }
        transforms = {term: from_plain(value, "formula.json") for term, value in s["transform_state"].items()}
        return encoder, transforms

    @functools.cached_property
    def spec(self) -> Any:
        """formulaic's model spec, rebuilt from :attr:`state`."""
        from formulaic import ModelSpec
        from formulaic.parser.types import Factor

        from dmlr.errors import StoreError

        check_terms(self.state["terms"], self.variables, StoreError)
        encoder, transforms = self._states()
        return ModelSpec(
            formula=self.state["terms"],
            ensure_full_rank=self.state["ensure_full_rank"],
            na_action="raise",
            output="pandas",
            transform_state=transforms,
            encoder_state={factor: (Factor.Kind(kind), value) for factor, (kind, value) in encoder.items()},
        )

    @property
    def column_names(self) -> list[str]:
        """Names of the design columns formulaic makes (``Intercept`` included when the formula has one)."""
        return list(self.state["column_names"])

    def transform(
        self, frame: pd.DataFrame, where: str = "data", missing: str = "raise", unseen: str = "raise"
    ) -> tuple[NDArray[np.float64], pd.Index]:
        """Encode one table.

        Parameters
        ----------
        frame : pandas.DataFrame
        where : str
            Names the table in error messages.
        missing : {"raise", "drop"}
            Rows with a missing value in a variable of the formula.
        unseen : {"raise", "nan"}
            Rows with a categorical level the fit never saw: an error, or NaN rows.

        Returns
        -------
        x : ndarray, shape (r, len(column_names))
        index : pandas.Index
            The rows kept (all, unless ``missing="drop"``).
        """
        absent = [v for v in self.variables if v not in frame.columns]
        if absent:
            raise InputError(f"{where} lacks the columns {absent} that the formula {self.formula!r} uses")
        frame, _ = drop_missing(frame, list(self.variables), missing, where)
        unseen_rows = np.zeros(len(frame), dtype=bool)
        typed = frame
        for var, levels in self.levels.items():
            values = frame[var].astype(object)
            outside = ~values.isin(levels).to_numpy()
            if outside.any() and unseen == "raise":
                row = int(np.argmax(outside))
                raise InputError(
                    f"column {var!r} has level {values.iloc[row]!r} at row {row} of {where}, not seen when the "
                    f"model was fitted (known levels: {levels}); unseen='nan' gives such rows NaN probabilities"
                )
            unseen_rows |= outside
            if outside.any():
                values = values.where(~outside, levels[0])
            typed = typed.assign(**{var: pd.Categorical(values, categories=levels)})
        with warnings.catch_warnings():
            warnings.simplefilter("error", _data_mismatch())
            try:
                matrix = self.spec.get_model_matrix(typed, na_action="raise")
            except _data_mismatch() as exc:
                raise InputError(f"{where} does not encode as the fitted data did: {exc}") from None
            except ValueError as exc:  # formulaic's na_action="raise" and transforms of invalid values
                raise InputError(f"the formula {self.formula!r} cannot be applied to {where}: {exc}") from None
        if [str(c) for c in matrix.columns] != self.column_names:
            raise InputError(
                f"{where} encodes as the columns {[str(c) for c in matrix.columns]}, not the fitted {self.column_names}"
            )
        x = np.asarray(matrix, dtype=np.float64)
        x[unseen_rows] = np.nan
        return x, frame.index


def _data_mismatch() -> type[Warning]:
    from formulaic.errors import DataMismatchWarning

    return DataMismatchWarning


def _categorical_levels(spec: Any, variables: Sequence[str], typed: Any) -> dict[str, list[Any]]:
    """Levels of each variable the spec encodes as categorical (a plain name, or ``C(name, ...)``)."""
    levels: dict[str, list[Any]] = {}
    for factor, (kind, state) in spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        match = re.fullmatch(r"C\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(,.*)?\)", factor)
        name = match.group(1) if match else factor
        if name in variables:
            levels[name] = list(np.asarray(state["categories"]).tolist())
    for var in variables:  # text columns typed categorical but used only through other transforms
        dtype = typed[var].dtype
        if isinstance(dtype, pd.CategoricalDtype) and var not in levels:
            levels[var] = list(np.asarray(dtype.categories).tolist())
    return levels


def _typed(data: Any, variables: Sequence[str], levels: dict[str, list[Any]]) -> Any:
    """Text variables as categoricals with the given levels (``category`` columns keep theirs)."""
    cast = {v: pd.CategoricalDtype(levels[v]) for v in levels if not isinstance(data[v].dtype, pd.CategoricalDtype)}
    return data.astype(cast) if cast else data


def _text_levels(data: Any, variables: Sequence[str]) -> dict[str, list[Any]]:
    text = [v for v in sorted(variables) if is_categorical(data[v].dtype)]
    if isinstance(data, dd.DataFrame):
        # one output partition: the levels are few, and a shuffle would start (and log) distributed's machinery
        found = dd.compute(*[data[v].dropna().unique(split_out=1) for v in text]) if text else ()
    else:
        found = tuple(data[v].dropna().unique() for v in text)
    out = {}
    for v, values in zip(text, found, strict=True):
        dtype = data[v].dtype
        if isinstance(dtype, pd.CategoricalDtype) and not isinstance(data, dd.DataFrame):
            out[v] = list(dtype.categories)
        else:
            out[v] = sorted(np.asarray(values, dtype=object).tolist(), key=lambda x: (str(type(x)), x))
    return out


def _model_matrix(frame: pd.DataFrame, encoding: FormulaEncoding, missing: str, where: str) -> NDArray[np.float64]:
    """One partition's design under the fixed encoding."""
    return encoding.transform(frame, where, missing)[0]


def fit_formula(
    formula: str, data: pd.DataFrame | dd.DataFrame, *, missing: str = "raise", **kwargs: Any
) -> MNLogitResults:
    """Fit a multinomial logit specified by a formula.

    Parameters
    ----------
    formula : str
        ``"label ~ terms"``; ``label`` is a column of class labels, ``terms`` any formulaic right-hand side
        (``C(x)`` for categoricals, ``a:b`` interactions, ``- 1`` or ``+ 0`` to drop the intercept).
    data : pandas.DataFrame or dask.dataframe.DataFrame
    missing : {"raise", "drop"}
        Rows with a missing value in the label or a variable of the formula: an error naming the column and
        row, or dropped (the count is the result's ``n_missing``).
    **kwargs
        Passed to :func:`dmlr.fit` (``method``, ``l2``, ``weights``, ``client``, ...).

    Returns
    -------
    MNLogitResults
        Coefficient rows named as formulaic names the design columns; ``predict_proba`` takes raw tables.
    """

    missing = check_missing(missing)
    lhs, rhs = _split(formula)
    if lhs not in data.columns:
        raise InputError(f"the label column {lhs!r} of the formula is not in the data")
    if "fit_intercept" in kwargs or "feature_names" in kwargs:
        raise InputError("the formula decides the intercept and the column names")
    variables = term_variables(rhs)
    check_terms(rhs, variables)  # what a result may hold: terms that compute arithmetic of the data only
    absent = [v for v in variables if v not in data.columns]
    if absent:
        raise InputError(f"the formula uses {absent}, which are not columns of the data")

    used = [lhs, *variables]
    if isinstance(data, dd.DataFrame):
        x, y, encoding, (data, n_missing) = _dask_design(data, formula, rhs, lhs, variables, used, missing)
    else:
        x, y, encoding, (data, n_missing), kwargs = _pandas_design(
            data, formula, rhs, lhs, variables, used, missing, kwargs
        )
    names = encoding.column_names
    if "Intercept" in names:  # dmlr's own intercept (unpenalized), named as formulaic names it
        j = names.index("Intercept")
        x = x[:, [i for i in range(len(names)) if i != j]]
        rest = names[:j] + names[j + 1 :]
        res = fit(x, y, fit_intercept=True, feature_names=rest, **kwargs)
        res = dataclasses.replace(res, feature_names=("Intercept", *res.feature_names[1:]))
    else:
        res = fit(x, y, fit_intercept=False, feature_names=names, **kwargs)
    # the raw rows fitted: margins per variable and predictions without data re-apply the formula to them
    return dataclasses.replace(res, dep_name=lhs, formula=encoding, n_missing=n_missing, fitted_data=data)


CHECKED_ROWS = 1_000
"""Rows re-encoded from the saved form of a formula's encoding at fit time, and compared with formulaic's own."""


def _learnt(
    formula: str, spec: Any, variables: list[str], typed: pd.DataFrame, matrix: NDArray[np.float64]
) -> FormulaEncoding:
    """The encoding formulaic learnt, as data, checked: its first rows re-encoded from the saved form equal
    formulaic's (a transform whose state is not plain data would otherwise predict differently once loaded).

    Raises
    ------
    InputError
        The saved form encodes differently (the columns named).
    """
    encoding = FormulaEncoding.from_spec(formula, spec, variables, _categorical_levels(spec, variables, typed))
    rows = typed.iloc[:CHECKED_ROWS]
    again = encoding.transform(rows, "the fitted data")[0]
    differ = ~np.all((again == matrix[: len(rows)]) | (np.isnan(again) & np.isnan(matrix[: len(rows)])), axis=0)
    if differ.any():
        names = [n for n, d in zip(encoding.column_names, differ, strict=True) if d]
        raise InputError(
            f"the formula {formula!r} keeps a state that dmlr cannot save as data: re-encoding the fitted rows from "
            f"it differs in the columns {names}; write those terms as columns of the data instead"
        )
    return encoding


def _dask_design(
    data: dd.DataFrame, formula: str, rhs: str, lhs: str, variables: list[str], used: list[str], missing: str
) -> tuple[Any, Any, FormulaEncoding, tuple[dd.DataFrame, int]]:
    """A dask DataFrame's design (lazy, per partition under one encoding learnt from the first), labels, encoding, and
    the rows kept with the count dropped for a missing value."""
    from formulaic import model_matrix

    n_missing = 0
    if missing == "drop":
        before = data.map_partitions(len).sum()
        kept: Any = data.dropna(subset=used)
        before_total, lengths = compute(before, kept.map_partitions(len))
        data = kept
        n_missing = int(before_total) - int(np.sum(np.asarray(lengths)))
    else:
        lengths = data.map_partitions(len).compute()
    levels = _text_levels(data, variables)
    typed = _typed(data, variables, levels)
    sample = typed.partitions[0].compute()
    sample, _ = drop_missing(sample, used, missing, "partition 0")
    matrix = model_matrix(rhs, sample, na_action="raise")
    spec = matrix.model_spec
    encoding = _learnt(formula, spec, variables, sample, np.asarray(matrix, dtype=np.float64))
    parts = typed.to_delayed()  # once: the design and the labels read the same partitions (one graph)
    width = (len(spec.column_names),)
    x = from_partitions(typed, lengths, _model_matrix, width, np.float64, encoding, "raise", parts=parts)
    dtype = typed[lhs].dtype
    kind = dtype if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype) else object
    labels = from_partitions(typed, lengths, series_values, (), kind, lhs, parts=parts)
    return x, labels, encoding, (data, n_missing)


def _pandas_design(
    data: pd.DataFrame, formula: str, rhs: str, lhs: str, variables: list[str], used: list[str], missing: str,
    kwargs: dict[str, Any],
) -> tuple[Any, Any, FormulaEncoding, tuple[pd.DataFrame, int], dict[str, Any]]:  # fmt: skip
    """A pandas DataFrame's design, labels, encoding, the rows kept with the count dropped for a missing value, and
    ``kwargs`` with the same rows dropped from the weights and offset."""
    from formulaic import model_matrix

    bad = missing_rows(data, used)
    frame, n_missing = data, 0
    if bad.any():
        drop_missing(data, used, missing, "data")  # raises for missing="raise", naming the column and row
        frame, n_missing = data.loc[~bad], int(bad.sum())
        kwargs = dict(kwargs)
        for key in ("weights", "offset"):
            if kwargs.get(key) is not None:
                kwargs[key] = np.asarray(kwargs[key])[~bad]
    levels = _text_levels(frame, variables)
    typed = _typed(frame, variables, levels)
    matrix = model_matrix(rhs, typed, na_action="raise")
    spec = matrix.model_spec
    encoding = _learnt(formula, spec, variables, typed, np.asarray(matrix, dtype=np.float64))
    return np.asarray(matrix, dtype=np.float64), frame[lhs].to_numpy(), encoding, (frame, n_missing), kwargs
