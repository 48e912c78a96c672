"""The package's shape: modules that each do one job (at most 500 lines), functions short enough to read (bodies of
at most 60 lines), and step rules known to the driver only through their protocol."""

from __future__ import annotations

import ast
from pathlib import Path

import dmlr

PACKAGE = Path(dmlr.__file__).parent
MAX_MODULE_LINES = 500
MAX_BODY_LINES = 60
RULE_CLASSES = {"NewtonRule", "BoundRule", "QuasiNewtonRule"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body:
        return 0
    return int(body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_body_is_over_60_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_BODY_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = _body_lines(node)
    assert not long, long


def test_rule_classes_are_tested_for_only_in_steps():
    found = []
    for path in _modules():
        if path.parent.name == "steps":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & RULE_CLASSES:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found
