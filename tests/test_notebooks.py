"""The notebooks of notebooks/ are kept without outputs; the documentation site executes each one top to bottom and
shows its plots (tests/test_docs.py: an error in a cell fails the build)."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_six_notebooks_with_outputs_stripped():
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        assert all(
            not c.get("outputs") and c.get("execution_count") is None for c in book.cells if c.cell_type == "code"
        )
