"""The documentation site builds as ``make docs`` builds it (nitpicky, warnings are errors, every example and notebook
executed), documents every public name, method and command, and the README's example runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dmlr
import dmlr.cli
from dmlr.results.hypothesis import ChiSquareTest
from dmlr.results.margins import MarginalEffects
from dmlr.results.prediction import PredictionResults

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.cluster  # the pages and notebooks start LocalClusters


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built by exactly ``make docs``' command (into a temporary directory)."""
    pytest.importorskip("sphinx", reason="make test installs the docs extra; a bare pytest run may lack it")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-j", "auto", "-n", "-W", "--keep-going", "-q", "-b", "html", "-d",
         str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line and "IPKernelApp" not in line]
    assert done.returncode == 0 and not warnings, done.stderr[-6000:]
    return out / "html"


def _inventory(site: Path) -> dict[str, str]:
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    return {name: entry[2] if isinstance(entry, tuple) else entry.uri for kind in inventory.values()
            for name, entry in kind.items()}  # fmt: skip


def _public_methods(cls: type) -> list[str]:
    return [name for name, _ in inspect.getmembers(cls) if not name.startswith("_")]


def test_every_public_name_method_and_command_has_a_page(site):
    documented = _inventory(site)
    missing = [f"dmlr.{name}" for name in dmlr.__all__ if name != "__version__" and f"dmlr.{name}" not in documented]
    assert not missing, missing
    for cls, path in [
        (dmlr.MNLogitResults, "dmlr.MNLogitResults"),
        (MarginalEffects, "dmlr.results.margins.MarginalEffects"),
        (PredictionResults, "dmlr.results.prediction.PredictionResults"),
        (ChiSquareTest, "dmlr.results.hypothesis.ChiSquareTest"),
    ]:
        for name in _public_methods(cls):
            uri = documented.get(f"{path}.{name}", "")
            assert uri.startswith(f"generated/{path}.{name}.html"), (path, name, uri)  # a page of its own
    for name in dmlr.cli.main.commands:
        assert (site / "cli" / f"{name}.html").is_file(), name
        assert f"dmlr {name}" in (site / "cli" / f"{name}.html").read_text()


def test_the_executed_pages_show_their_outputs_and_plots(site):
    """Every notebook and user-guide example ran in the build (an error fails it): their outputs are in the pages,
    and the plotting notebooks and the margins page show their figures."""
    for page in ["examples/02_newton_bohning_auto", "examples/03_inference", "examples/05_margins_and_robust_errors",
                 "user-guide/margins"]:  # fmt: skip
        assert re.search(r"<img[^>]+\.png", (site / f"{page}.html").read_text()), page
    fitting = (site / "user-guide" / "fitting.html").read_text()
    assert "MNLogit Regression Results" in fitting and "cell_output" in fitting
    for page in ["getting-started", "user-guide/inference", "user-guide/model-selection"]:
        assert "cell_output" in (site / f"{page}.html").read_text(), page


def test_the_readmes_example_runs(tmp_path):
    """The README's Python example, as written there, in a fresh interpreter."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python example"
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MNLogit Regression Results" in done.stdout


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    head = "\n".join(lines[:12])
    assert "make demo" in head and "make test" in head
