"""The everyday mistakes of a new user: each one is a clear, typed error (exit 2 on the command line) that names what
is wrong and what to do, within seconds, before any cluster starts or any file is written.

The user guide's errors page (docs/user-guide/errors.md) lists these cases; the data are statsmodels' anes96 survey.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import dmlr
from dmlr.cli import main
from dmlr.errors import InputError, PerfectSeparationError
from tests.problems import anes96

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """anes96 as CSV files (clean, with mistakes), a staged store and a fitted result."""
    root = tmp_path_factory.mktemp("mistakes")
    d = anes96()
    d["id"] = [f"r{i:04d}" for i in range(len(d))]
    d.to_csv(root / "anes.csv", index=False)
    bad = d.copy()
    bad.loc[42, "party"] = np.nan
    bad.to_csv(root / "na_target.csv", index=False)
    bad = d.copy()
    bad.loc[500, "age"] = np.nan
    bad.to_csv(root / "na_age.csv", index=False)
    bad = d.copy()
    bad.loc[5, "edu3"] = "phd"
    bad.to_csv(root / "unseen.csv", index=False)
    d.iloc[d.party.eq("dem").to_numpy()].to_csv(root / "one_class.csv", index=False)
    (root / "empty.csv").write_text("")
    (root / "no_tables").mkdir()
    d.drop(columns=["age"]).to_csv(root / "short.csv", index=False)
    d.iloc[:0].to_csv(root / "header.csv", index=False)
    store = dmlr.stage(
        str(root / "anes.csv"), str(root / "s.zarr"), target="party", features=["age", "income", "edu3"],
        categorical=["edu3"],
    )  # fmt: skip
    assert store.X.shape[0] == len(d)
    res = dmlr.fit(str(root / "s.zarr"))
    dmlr.save(res, str(root / "r"))
    (root / "bad_spec.yaml").write_text("version: 1\nname: x\ndata: {synthetic: {rows: 100}}\nfit: {l2: strong}\n")
    return root


@dataclass(frozen=True)
class Cli:
    """A command line mistake: the exit code and the words its message must contain."""

    args: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    seconds: float = 15.0


CLI_CASES = {
    # dmlr stage
    "stage an empty CSV": Cli(("stage", "{r}/empty.csv", "{t}/x.zarr", "--target", "party"), 2, ("empty",)),
    "stage a header-only CSV": Cli(("stage", "{r}/header.csv", "{t}/x.zarr", "--target", "party"), 2, ("0 rows",)),
    "stage a missing label": Cli(
        ("stage", "{r}/na_target.csv", "{t}/x.zarr", "--target", "party", "--features", "age"),
        2,
        ("column 'party' has a missing value at data row 43 of", "na_target.csv", "--missing drop"),
    ),
    "stage with the two paths swapped": Cli(
        ("stage", "{r}/s.zarr", "{t}/anes.csv", "--target", "party"), 2, ("swapped", "the store comes last")
    ),
    "stage a store as source": Cli(("stage", "{r}/s.zarr", "{t}/x.zarr", "--target", "party"), 2, ("Zarr store",)),
    "stage an absent target": Cli(
        ("stage", "{r}/anes.csv", "{t}/x.zarr", "--target", "vote2"), 2, ("['vote2']", "not in the source")
    ),
    "stage a text column not declared categorical": Cli(
        ("stage", "{r}/anes.csv", "{t}/x.zarr", "--target", "party", "--features", "age,edu3"),
        2,
        ("['edu3']", "not numeric", "--categorical"),
    ),
    "stage a categorical that is not a feature": Cli(
        ("stage", "{r}/anes.csv", "{t}/x.zarr", "--target", "party", "--features", "age", "--categorical", "edu3"),
        2,
        ("['edu3']", "not among the features"),
    ),
    "stage over an existing store": Cli(
        ("stage", "{r}/anes.csv", "{r}/s.zarr", "--target", "party", "--features", "age"),
        2,
        ("already exists", "--overwrite"),
    ),
    "stage with an unknown reference level": Cli(
        (
            "stage",
            "{r}/anes.csv",
            "{t}/x.zarr",
            "--target",
            "party",
            "--features",
            "age,edu3",
            "--categorical",
            "edu3",
            "--reference",
            "edu3=phd",
        ),
        2,
        ("'phd'", "not one of its levels"),
    ),
    "stage with a malformed reference": Cli(
        ("stage", "{r}/anes.csv", "{t}/x.zarr", "--target", "party", "--reference", "edu3"), 2, ("COL=LEVEL",)
    ),
    "stage a glob that matches nothing": Cli(
        ("stage", "{r}/nothing*.csv", "{t}/x.zarr", "--target", "party"), 2, ("no file matches",)
    ),
    "stage a single class": Cli(
        ("stage", "{r}/one_class.csv", "{t}/x.zarr", "--target", "party", "--features", "age"), 2, ("single class",)
    ),
    "stage without a store": Cli(("stage", "{r}/anes.csv", "--target", "party"), 2, ("SOURCE", "STORE")),
    "stage a directory holding no CSV or Parquet file": Cli(
        ("stage", "{r}/no_tables", "{t}/x.zarr", "--target", "party"), 2, ("no_tables", "holding no CSV or Parquet")
    ),
    "stage files whose columns differ": Cli(
        ("stage", "{r}/anes.csv", "{r}/short.csv", "{t}/x.zarr", "--target", "party"),
        2,
        ("short.csv has other columns", "missing ['age']"),
    ),
    "append a new level, class or column to a store": Cli(
        ("stage", "{r}/unseen.csv", "{r}/s.zarr", "--append"), 2, ("the levels ['phd'] of 'edu3'", "--unseen drop")
    ),
    # dmlr fit
    "summary of a store": Cli(("summary", "{r}/s.zarr"), 2, ("Zarr store, not a fitted result", "dmlr info")),
    "fit with 0 workers": Cli(("fit", "{r}/s.zarr", "--out", "{t}/r", "--workers", "0"), 2, ("workers", ">= 1")),
    "fit with -1 workers": Cli(("fit", "{r}/s.zarr", "--out", "{t}/r", "--workers", "-1"), 2, ("workers", ">= 1")),
    "fit with a memory limit that is not a size": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--memory-limit", "1XB"), 2, ("'1XB'", "not a size")
    ),
    "fit with a 10MB memory limit": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--memory-limit", "10MB"), 2, ("10MB", "below", "256")
    ),
    "fit with a malformed scheduler address": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--scheduler", "localhost:8786x"), 2, ("'localhost:8786x'", "host:port")
    ),
    "fit with a scheduler and a cluster": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--scheduler", "tcp://127.0.0.1:8786", "--cluster", "local"),
        2,
        ("--scheduler or --cluster",),
    ),
    "size a cluster dmlr does not start": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"),
        2,
        ("existing address cluster",),
    ),
    "fit over an existing result": Cli(("fit", "{r}/s.zarr", "--out", "{r}/r"), 2, ("already exists", "--overwrite")),
    "fit a CSV instead of a store": Cli(("fit", "{r}/anes.csv", "--out", "{t}/r"), 2, ("is a file", "dmlr stage")),
    "fit a store that does not exist": Cli(("fit", "{t}/none.zarr", "--out", "{t}/r"), 2, ("does not exist",)),
    "fit with a base that is not a class": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--base", "green"), 2, ("'green'", "not one of the class labels")
    ),
    "fit with a negative penalty": Cli(("fit", "{r}/s.zarr", "--out", "{t}/r", "--l2", "-1"), 2, ("l2", ">= 0")),
    "fit against a scheduler that is down": Cli(
        ("fit", "{r}/s.zarr", "--out", "{t}/r", "--scheduler", "tcp://127.0.0.1:9"),
        4,
        ("no Dask scheduler answered at tcp://127.0.0.1:9", "within 2 s"),
        env=(("DMLR_CONNECT_TIMEOUT", "2"),),
    ),
    # dmlr predict
    "predict to a CSV": Cli(("predict", "{r}/r", "{r}/anes.csv", "--out", "{t}/p.csv"), 2, (".zarr or .parquet",)),
    "predict over an existing output": Cli(
        ("predict", "{r}/r", "{r}/anes.csv", "--out", "{r}/s.zarr"), 2, ("already exists", "--overwrite")
    ),
    "predict an unseen level": Cli(
        ("predict", "{r}/r", "{r}/unseen.csv", "--out", "{t}/p.parquet", "--workers", "1"),
        2,
        ("'edu3'", "'phd'", "not seen", "unseen='nan'"),
        seconds=30,
    ),
    "predict rows with a missing value": Cli(
        ("predict", "{r}/r", "{r}/na_age.csv", "--out", "{t}/p.parquet", "--workers", "1"),
        2,
        ("'age'", "row 500", "--missing drop"),
        seconds=30,
    ),
    "keep a column the data lack": Cli(
        ("predict", "{r}/r", "{r}/anes.csv", "--out", "{t}/p.parquet", "--keep", "uid", "--workers", "1"),
        2,
        ("['uid']", "not in"),
        seconds=5,  # checked before a cluster starts
    ),
    # dmlr summary, info, run
    "summary of a directory that is no result": Cli(("summary", "{r}/no_tables"), 2, ("no complete dmlr result",)),
    "info of a CSV": Cli(("info", "{r}/anes.csv"), 2, ("is a file", "dmlr stage")),
    "run a spec that does not exist": Cli(("run", "{t}/nothing.yaml"), 2, ("no such pipeline spec",)),
    "run a spec with a wrong value": Cli(("run", "{r}/bad_spec.yaml"), 2, ("fit.l2",)),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_command_line_mistake(name, work, tmp_path):
    case = CLI_CASES[name]
    args = [a.format(r=work, t=tmp_path) for a in case.args]
    before = sorted(os.listdir(work))
    start = time.perf_counter()
    done = CliRunner().invoke(main, args, env=dict(case.env))
    seconds = time.perf_counter() - start
    message = done.stderr
    assert done.exit_code == case.code, (done.exit_code, message, done.exception)
    assert message.count("dmlr: error:") == 1 and "Traceback" not in message, message
    for word in case.words:
        assert word in message, (word, message)
    assert seconds < case.seconds, seconds
    assert sorted(os.listdir(work)) == before  # nothing written next to the inputs
    assert not os.listdir(tmp_path)  # and no partial output


@dataclass(frozen=True)
class Api:
    """A Python mistake: the call, the typed error and the words of its message."""

    call: Callable[[Path, pd.DataFrame], Any]
    words: tuple[str, ...]
    error: type[Exception] = InputError


def _anes(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "anes.csv")


def _with(d: pd.DataFrame, **cells: Any) -> pd.DataFrame:
    out = d.copy()
    for key, value in cells.items():
        column, row = key.rsplit("_", 1)
        out[column] = out[column].astype(object)
        out.loc[int(row), column] = value
    return out


API_CASES = {
    "labels mixing text and numbers": Api(
        lambda w, d: dmlr.fit(d[["age"]], _with(d, party_3=1).party), ("mixes text and numeric", "row 3")
    ),
    "a NaN in a DataFrame column": Api(
        lambda w, d: dmlr.fit(_with(d[["age", "income"]], income_9=np.nan), d.party),
        ("column 'income'", "row 9", "missing='drop'"),
    ),
    "a text column in fit": Api(lambda w, d: dmlr.fit(d[["age", "edu3"]], d.party), ("'edu3'", "category")),
    "a scipy.sparse X": Api(
        lambda w, d: dmlr.fit(_sparse(d[["age", "income"]]), d.party), ("scipy.sparse", ".toarray()", "GiB")
    ),
    "a store where a result is expected": Api(lambda w, d: dmlr.load(str(w / "s.zarr")), ("Zarr store", "dmlr info")),
    "a missing label": Api(lambda w, d: dmlr.fit(d[["age"]], _with(d, party_7=None).party), ("missing", "row 7")),
    "a formula over missing values": Api(
        lambda w, d: dmlr.fit_formula("party ~ age + income", _with(d, income_11=np.nan)),
        ("column 'income'", "row 11", "missing='drop'"),
    ),
    "a formula over an absent column": Api(
        lambda w, d: dmlr.fit_formula("party ~ age + wealth", d), ("['wealth']", "not columns")
    ),
    "an unknown method": Api(lambda w, d: dmlr.fit(d[["age"]], d.party, method="irls"), ("method", "'irls'")),
    "an unknown missing policy": Api(lambda w, d: dmlr.fit(d[["age"]], d.party, missing="skip"), ("missing",)),
    "saving over a result": Api(lambda w, d: dmlr.save(dmlr.load(str(w / "r")), str(w / "r")), ("already exists",)),
    "labels given with a store": Api(lambda w, d: dmlr.fit(str(w / "s.zarr"), d.party), ("y must not be given",)),
    "predicting an unseen level": Api(
        lambda w, d: dmlr.load(str(w / "r")).predict_proba(_with(d.head(5), edu3_2="phd")),
        ("'edu3'", "'phd'", "row 2", "known levels"),
    ),
    "predicting without a column": Api(
        lambda w, d: dmlr.load(str(w / "r")).predict_proba(d[["age", "edu3"]]), ("['income']",)
    ),
    "margins over a missing value": Api(
        lambda w, d: dmlr.load(str(w / "r")).get_margeff(_with(d, age_4=np.nan)),
        ("column 'age'", "row 4", "missing='drop'"),
    ),
    "margins per variable of a fit without formula": Api(
        lambda w, d: dmlr.load(str(w / "r")).get_margeff(d, by="variable"), ("dmlr.fit_formula", "no formula")
    ),
    "a prediction table of rows without labels": Api(
        lambda w, d: dmlr.load(str(w / "r")).pred_table(str(w / "s.zarr")), ("both X and y",)
    ),
    "a level whose rows are all one class": Api(
        lambda w, d: dmlr.fit_formula("party ~ age + C(edu3)", d.assign(party=d.party.where(d.edu3 != "low", "dem"))),
        ("'C(edu3)[T.low]' (weight 65)", "all of class 'dem'", "l2 > 0"),
        PerfectSeparationError,
    ),
}


def _sparse(frame: pd.DataFrame) -> Any:
    import scipy.sparse

    return scipy.sparse.csr_matrix(frame.to_numpy(dtype=float))


@pytest.mark.parametrize("name", list(API_CASES))
def test_python_mistake(name, work):
    case = API_CASES[name]
    start = time.perf_counter()
    with pytest.raises(case.error) as caught:
        case.call(work, _anes(work))
    assert time.perf_counter() - start < 10
    for word in case.words:
        assert word in str(caught.value), (word, str(caught.value))


def test_the_catalogue_has_thirty_mistakes_and_the_user_guide_lists_them():
    assert len(CLI_CASES) + len(API_CASES) >= 30
    readme = (Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "errors.md").read_text()
    for name in [*CLI_CASES, *API_CASES]:
        assert name in readme, name


def test_warnings_point_at_the_users_line_and_no_scipy_warning_leaks():
    """A warning names the line of the user's call, whatever the path through dmlr (fit_formula around fit, the
    estimator); a separation found along a continuous feature is one PerfectSeparationWarning, without SciPy's
    LinAlgWarning about the ill-conditioned information before it."""
    import warnings

    from dmlr.errors import ConvergenceWarning, PerfectSeparationWarning

    d = anes96()
    with pytest.warns(ConvergenceWarning) as caught:
        dmlr.fit_formula("PID ~ age + income", d, method="lbfgs", max_iter=2)
    assert {w.filename for w in caught} == {__file__}
    with pytest.warns(ConvergenceWarning) as caught:
        dmlr.MultinomialLogit(method="lbfgs", max_iter=1, l2=0.0).fit(d[["age", "income"]], d.PID)
    assert {w.filename for w in caught} == {__file__}
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 2))
    y = np.where(x[:, 0] < 0, "a", rng.choice(["b", "c"], 600))  # x0 < 0 separates class a: quasi-complete
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dmlr.fit(x, y, method="newton", separation="warn")
    kinds = [w.category for w in caught]
    assert kinds == [PerfectSeparationWarning], [str(w.message)[:80] for w in caught]
    assert caught[0].filename == __file__
