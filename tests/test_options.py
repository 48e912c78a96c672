"""FitOptions is the one definition of every fit option: a default changed there is the default everywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dmlr
from dmlr.options import FitOptions, fit_option_fields

_FRONT_ENDS = """
import inspect, json, sys, warnings
import numpy as np
from click.testing import CliRunner
import dmlr
from dmlr.cli import main
from dmlr.estimator import MultinomialLogit
from dmlr.pipeline.spec import load_pipeline

rng = np.random.default_rng(0)
x = rng.normal(size=(400, 2))
y = (x[:, 0] + rng.normal(size=400) > 0).astype(int) + (x[:, 1] > 0.5)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = dmlr.fit(x, y, method="bohning")  # Bohning needs dozens of iterations: it stops at max_iter
help_lines = [line for line in CliRunner().invoke(main, ["fit", "--help"]).output.splitlines()]
start = next(i for i, line in enumerate(help_lines) if "--max-iter" in line)
print(json.dumps({
    "signature": inspect.signature(dmlr.fit).parameters["max_iter"].default,
    "n_iter": res.n_iter,
    "help": " ".join(help_lines[start : start + 2]),
    "spec": load_pipeline(sys.argv[1]).fit.max_iter,
    "estimator": MultinomialLogit().max_iter,
    "estimator_signature": inspect.signature(MultinomialLogit).parameters["max_iter"].default,
}))
"""


def test_a_default_changed_in_fit_options_is_the_default_everywhere(tmp_path):
    """A copy of the package with ``max_iter``'s default changed (only in FitOptions) is imported in a fresh
    process: dmlr.fit (signature and behaviour), ``dmlr fit --help``, a pipeline spec and the estimator follow."""
    copy = tmp_path / "pkg"
    shutil.copytree(Path(dmlr.__file__).parent, copy / "dmlr", ignore=shutil.ignore_patterns("__pycache__"))
    options = copy / "dmlr" / "options.py"
    text = options.read_text()
    declaration = re.compile(r"(max_iter: int = option\(\s*)100,")
    assert len(declaration.findall(text)) == 1
    options.write_text(declaration.sub(r"\g<1>7,", text))
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nname: t\ndata: {synthetic: {rows: 1000}}\nfit: {method: newton}\n")
    run = subprocess.run(
        [sys.executable, "-c", _FRONT_ENDS, str(spec)], capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["signature"] == 7 and seen["n_iter"] == 7
    assert "[default: 7]" in seen["help"]
    assert seen["spec"] == 7
    assert seen["estimator"] == 7 and seen["estimator_signature"] == 7


def test_every_option_is_documented_and_in_dmlr_fits_signature():
    import inspect

    params = inspect.signature(dmlr.fit).parameters
    for f in fit_option_fields():
        assert f.help, f.name
        assert params[f.name].default == getattr(FitOptions(), f.name)
        assert f"    {f.name} : " in (dmlr.fit.__doc__ or ""), f.name


def test_an_unknown_option_names_the_closest_known_one():
    with pytest.raises(dmlr.InputError, match="no option 'max_iters'; did you mean 'max_iter'"):
        dmlr.fit([[0.0], [1.0]], [0, 1], max_iters=5)
