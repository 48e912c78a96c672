"""What a formula's terms may compute: data columns, numbers and text, arithmetic, formulaic's transforms and
numpy's ufuncs, and nothing else.

formulaic evaluates a factor such as ``I(x ** 2)`` or ``{np.log(x)}`` as Python, with Python's builtins in reach:
a formula is code. A saved result carries its formula's text, so a result edited by someone else could otherwise run
code (``I(open(...))``) the first time it encodes a table. :func:`check_terms` reads every factor's expression with
:mod:`ast` (nothing is evaluated) and admits only the forms below; it runs when a formula is fitted (so a fitted
formula can always be loaded again) and when a result is loaded.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

import numpy as np

from dmlr.errors import DmlrError, InputError

__all__ = ["check_terms", "term_variables"]

TRANSFORMS = frozenset(
    {"C", "Q", "I", "bs", "cc", "cr", "cs", "center", "scale", "standardize", "poly", "hashed", "lag"}
    | {"log", "log2", "log10", "exp", "exp2", "exp10"}
    | {"Treatment", "Sum", "Helmert", "Diff", "Poly"}
)
"""formulaic's transforms and contrast classes that a term may call by name."""

NUMPY = frozenset({"clip", "where", "round"})
"""numpy functions a term may call besides its ufuncs (``np.log``, ``np.maximum``, ...), all pure arithmetic."""

_NODES = (
    ast.Expression, ast.Constant, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.operator,
    ast.unaryop, ast.boolop, ast.cmpop, ast.List, ast.Tuple, ast.Dict, ast.keyword, ast.Name, ast.Attribute,
    ast.Call,
)  # fmt: skip


def check_terms(rhs: str, variables: Iterable[str], error: type[DmlrError] = InputError) -> None:
    """Refuse a right-hand side whose terms compute anything but arithmetic of the data.

    Parameters
    ----------
    rhs : str
        The terms of the formula (right of ``~``).
    variables : iterable of str
        The data columns the terms may read.
    error : type
        Raised for a term outside the allowed forms (:class:`InputError` when fitting, :class:`StoreError` when a
        result is loaded).

    Raises
    ------
    DmlrError
        Of type ``error``, naming the term and what in it is not allowed.
    """
    from formulaic import Formula
    from formulaic.parser.types import Factor

    columns = set(variables)
    for term in Formula(rhs):
        for factor in term.factors:
            if factor.eval_method is Factor.EvalMethod.LITERAL:
                continue
            if factor.eval_method is Factor.EvalMethod.LOOKUP:
                if factor.expr not in columns:
                    raise error(f"the formula term {factor.expr!r} is not a column of the data ({sorted(columns)})")
                continue
            problem = _problem(ast.parse(factor.expr, mode="eval"), columns)
            if problem:
                raise error(
                    f"the formula term {factor.expr!r} {problem}: terms may use data columns, numbers, arithmetic, "
                    "formulaic's transforms (C, I, center, scale, bs, poly, ...) and numpy's ufuncs (np.log, ...), "
                    "so that a saved result can run no other code; compute it as a column of the data instead"
                )


def term_variables(rhs: str) -> list[str]:
    """The data columns a right-hand side reads, sorted.

    formulaic's ``Formula.required_variables`` leaves out the arguments of its stateful transforms (``center(x)``,
    ``bs(z, df=4)``); this reads every factor's expression: names that are neither called nor a namespace, and the
    text of ``Q("...")``.
    """
    from formulaic import Formula
    from formulaic.parser.types import Factor

    found: set[str] = set()
    for term in Formula(rhs):
        for factor in term.factors:
            if factor.eval_method is Factor.EvalMethod.LOOKUP:
                found.add(factor.expr)
            elif factor.eval_method is Factor.EvalMethod.PYTHON:
                found |= _names(ast.parse(factor.expr, mode="eval"))
    return sorted(found)


def _names(tree: ast.AST) -> set[str]:
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called and node.id not in ("np", "contr"):
            names.add(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Q"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names - TRANSFORMS


def _problem(tree: ast.AST, columns: set[str]) -> str | None:
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            return f"uses Python's {type(node).__name__}"
        if isinstance(node, ast.Call):
            if not _callable(node.func):
                return f"calls {ast.unparse(node.func)}"
        elif isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("np", "contr")):
                return f"reads the attribute {ast.unparse(node)}"
            if node.attr.startswith("_"):
                return f"reads {ast.unparse(node)}"
        elif isinstance(node, ast.Name):
            if node.id not in columns and node.id not in TRANSFORMS and node.id not in ("np", "contr"):
                return f"names {node.id!r}, which is no column of the data"
    return None


def _callable(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in TRANSFORMS
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and not func.attr.startswith("_"):
        if func.value.id == "np":
            return func.attr in NUMPY or isinstance(getattr(np, func.attr, None), np.ufunc)
        return func.value.id == "contr"
    return False
