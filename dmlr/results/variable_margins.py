"""Average marginal effects of a formula fit per variable of the data (Stata's ``margins, dydx(*)``, R's
``marginaleffects::avg_slopes``), with delta-method standard errors from the fit's covariance.

statsmodels' ``get_margeff`` differentiates with respect to each design column, so with ``dist + dist:hour`` the
"effect of dist" ignores the interaction and every ``C(carrier)[T.x]`` dummy gets its own "derivative". Here the
formula is re-applied to the raw rows: a continuous variable's effect is the average derivative of the probabilities
through every term that reads it (the design's derivative by central differences of the formula, per row, step
``1e-5 max(1, |v|)``; one-sided at the ends of the rows' range for transforms defined only on the data's range,
such as spline bases), and a factor's (or a boolean's) effect is, for each level, the average discrete change from
the reference (the factor's first level) with every other column as observed. The formulas are in
:mod:`dmlr.oracle.variable_effects`; over a dask DataFrame or table files the sums are one pass of the engine.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from dmlr.data.rows import Rows
from dmlr.errors import InputError
from dmlr.oracle.variable_effects import Layout, VariableEffectsKernel
from dmlr.passes.kernel import total
from dmlr.results.sums import row_sums

if TYPE_CHECKING:
    from dmlr.formula import FormulaEncoding
    from dmlr.results.margins import MarginalEffects
    from dmlr.results.results import MNLogitResults

__all__ = ["VariablePlan", "plan_of", "variable_margins"]

Array = NDArray[np.float64]

STEP = 1e-5
"""Relative step of the central differences of the design: ``h = STEP max(1, |v|)`` per row."""

CHUNK_BYTES = 64 * 2**20
"""In-memory tables are encoded in row chunks whose block of designs stays under this size."""


@dataclass(frozen=True)
class VariablePlan:
    """The variables of a formula and how each gets its effect.

    Attributes
    ----------
    continuous : tuple of str
        Variables differentiated through the formula.
    factors : tuple of (str, tuple)
        Categorical variables and their levels (the reference, the first, included).
    """

    continuous: tuple[str, ...]
    factors: tuple[tuple[str, tuple[Any, ...]], ...]

    def layout(self, p: int) -> Layout:
        """Where each piece sits in a block of ``p`` data columns per design."""
        return Layout(p, len(self.continuous), tuple(len(levels) for _, levels in self.factors))

    @property
    def labels(self) -> list[str]:
        """Row labels of the effects: each continuous variable, then ``factor[level vs reference]``."""
        out = list(self.continuous)
        for name, levels in self.factors:
            out += [f"{name}[{level} vs {levels[0]}]" for level in levels[1:]]
        return out


def _c_variable(factor: str) -> str | None:
    """``v`` when a factor's expression is ``C(v, ...)``."""
    try:
        node = ast.parse(factor, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "C" and node.args:
        first = node.args[0]
        return first.id if isinstance(first, ast.Name) else None
    return None


def plan_of(encoding: FormulaEncoding, booleans: tuple[str, ...] = ()) -> VariablePlan:
    """Which variables of a formula are factors (text or ``category`` columns, numeric ones inside ``C()``, and the
    ``booleans``: False -> True) with their levels, and which are continuous."""
    levels = {v: tuple(encoding.levels[v]) for v in encoding.variables if v in encoding.levels}
    levels.update({v: (False, True) for v in booleans if v in encoding.variables and v not in levels})
    for factor, (kind, state) in encoding.state["encoder_state"].items():
        var = _c_variable(factor)
        if var is not None and var not in levels and kind == "categorical" and "categories" in state:
            from dmlr.results.plain import from_plain

            levels[var] = tuple(from_plain(state, "formula.json")["categories"])
    continuous = tuple(v for v in encoding.variables if v not in levels)
    factors = tuple((v, levels[v]) for v in encoding.variables if v in levels and len(levels[v]) > 1)
    return VariablePlan(continuous, factors)


def wide_block(
    frame: pd.DataFrame, encoding: FormulaEncoding, names: list[str], plan: VariablePlan, where: str
) -> Array:
    """One table's block for :class:`~dmlr.oracle.variable_effects.VariableEffectsKernel`: the design, each
    continuous variable's derivative of the design and its values, each factor's design at every level.

    Parameters
    ----------
    frame : pandas.DataFrame
        Raw rows, missing values already dropped or refused.
    encoding : FormulaEncoding
    names : list of str
        The model's data columns.
    plan : VariablePlan
    where : str
        Names the table in errors.

    Returns
    -------
    ndarray, shape (r, plan.layout(len(names)).width)
    """
    from dmlr.results.encoding import encode_frame

    def design(table: pd.DataFrame) -> Array:
        return encode_frame(table, names, formula=encoding, where=where)[0]

    directions, values = [], []
    for v in plan.continuous:
        raw = frame[v].to_numpy(dtype=np.float64)
        h = STEP * np.maximum(1.0, np.abs(raw))
        try:
            up, down = raw + h, raw - h
            hi, lo = design(frame.assign(**{v: up})), design(frame.assign(**{v: down}))
        except (InputError, ValueError, _formula_error()):  # a transform defined only on the data's range (splines)
            up, down = _clipped(raw, h)
            hi, lo = design(frame.assign(**{v: up})), design(frame.assign(**{v: down}))
        directions.append((hi - lo) / (up - down)[:, None])
        values.append(raw[:, None])
    levels = [design(frame.assign(**{v: [level] * len(frame)})) for v, every in plan.factors for level in every]
    return np.column_stack([design(frame), *directions, *values, *levels])


def _formula_error() -> type[Exception]:
    from formulaic.errors import FormulaicError

    return FormulaicError


def _clipped(raw: Array, h: Array) -> tuple[Array, Array]:
    """``v -+ h`` clipped to the values' range (kept central where the values do not vary)."""
    low, high = float(raw.min()), float(raw.max())
    if high - low <= 2 * float(h.max()):
        return raw + h, raw - h
    return np.minimum(raw + h, high), np.maximum(raw - h, low)


def _prepared(frame: pd.DataFrame, variables: list[str], atexog: dict[str, Any], missing: str, where: str) -> Any:
    """Rows with the missing-value policy applied and the ``atexog`` variables set."""
    from dmlr.data.encoding import drop_missing

    frame, _ = drop_missing(frame, variables, missing, where)
    return frame.assign(**atexog) if atexog else frame


def _wide_partition(
    frame: pd.DataFrame, encoding: FormulaEncoding, names: list[str], plan: VariablePlan, atexog: dict[str, Any],
    missing: str, partition_info: Any = None,
) -> pd.DataFrame:  # fmt: skip
    where = "partition" if partition_info is None else f"partition {partition_info['number']}"
    frame = _prepared(frame, list(encoding.variables), atexog, missing, where)
    width = plan.layout(len(names)).width
    block = wide_block(frame, encoding, names, plan, where) if len(frame) else np.zeros((0, width))
    return pd.DataFrame(block, columns=[str(i) for i in range(block.shape[1])])


def _sums(res: MNLogitResults, X: Any, plan: VariablePlan, method: str, atexog: dict[str, Any], missing: str) -> Any:
    """The kernel's record over the rows of a pandas or dask DataFrame (the latter: one pass of the engine)."""
    encoding, names = res.formula, list(res.data_feature_names)
    layout = plan.layout(len(names))
    kernel = VariableEffectsKernel(res.coef, bool(res.intercept), method, layout)
    if isinstance(X, dd.DataFrame):
        meta = pd.DataFrame({str(i): pd.Series(dtype=np.float64) for i in range(layout.width)})
        frames = X.map_partitions(_wide_partition, encoding, names, plan, atexog, missing, meta=meta)
        return row_sums(frames.to_dask_array(), kernel)
    frame = _prepared(X, list(encoding.variables), atexog, missing, "X")
    if not len(frame):
        raise InputError("X has no rows to average the marginal effects over")
    step = max(1, CHUNK_BYTES // (8 * layout.width))
    chunks = (frame.iloc[s : s + step] for s in range(0, len(frame), step))
    return total([kernel(Rows(x=wide_block(chunk, encoding, names, plan, "X"))) for chunk in chunks])


def _atexog_variables(plan: VariablePlan, atexog: dict[Any, Any] | None) -> dict[str, Any]:
    known = list(plan.continuous) + [v for v, _ in plan.factors]
    for key in atexog or {}:
        if key not in known:
            raise InputError(
                f"atexog names {key!r}: per-variable effects fix variables of the data by name, one of {known}"
            )
    return dict(atexog or {})


def variable_margins(
    res: MNLogitResults, X: Any, method: str, atexog: dict[Any, Any] | None = None, missing: str = "raise"
) -> MarginalEffects:
    """Per-variable average marginal effects of a formula fit over the raw rows ``X`` (a pandas or dask DataFrame);
    see :meth:`~dmlr.results.results.MNLogitResults.get_margeff` with ``by="variable"``."""
    from dmlr.results.margins import effects_frame

    booleans = tuple(str(c) for c, t in X.dtypes.items() if pd.api.types.is_bool_dtype(t))
    plan = plan_of(res.formula, booleans)
    if not plan.continuous and not plan.factors:
        raise InputError(f"the formula {res.formula.formula!r} reads no variable of the data to take effects of")
    record = _sums(res, X, plan, method, _atexog_variables(plan, atexog), missing)
    d, m = res.coef.shape
    e = plan.layout(len(res.data_feature_names)).effects
    total, n = record["values"], float(record["rows"][0])
    if n == 0:
        raise InputError("X has no rows to average the marginal effects over")
    effects = total[: e * (m + 1)].reshape(e, m + 1) / n
    jac = total[e * (m + 1) :].reshape(e, m + 1, m, d) / n
    return effects_frame(res, effects, jac, plan.labels, "overall", method, by="variable")
