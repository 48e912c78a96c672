"""Predictions from the raw table a model was fitted from: a formula re-applied, a staged or pandas categorical
encoding re-applied, dask DataFrames kept lazy, one missing-value policy; the Python API equals ``dmlr predict``."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from click.testing import CliRunner

import dmlr
from dmlr.cli import main
from dmlr.errors import InputError
from tests.problems import anes96

pytestmark = pytest.mark.cluster

FORMULA = "party ~ C(edu3) + selfLR:age + income"


@pytest.fixture(scope="module")
def anes(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    d = anes96()
    d["id"] = np.arange(len(d)) * 7 + 3
    d.to_csv(root / "anes.csv", index=False)
    return root, d


def _cli(*args: str) -> None:
    done = CliRunner().invoke(main, list(args))
    assert done.exit_code == 0, (done.stderr, done.exception)


def _cli_proba(root, result: str, out: str, classes) -> pd.DataFrame:
    _cli("predict", result, str(root / "anes.csv"), "--out", str(root / out), "--keep", "id", "--workers", "1")
    written = pd.read_parquet(root / out)
    return written


def test_formula_fit_predicts_raw_frames_as_the_command_line_does(anes):
    root, d = anes
    res = dmlr.fit_formula(FORMULA, d)
    # the formula is statsmodels': same design, same likelihood
    ref = smf.mnlogit(FORMULA.replace("party", "code"), d.assign(code=d.party.map({"dem": 0, "ind": 1, "rep": 2})))
    assert res.llf == pytest.approx(ref.fit(disp=0, method="newton").llf, rel=1e-10)
    dmlr.save(res, str(root / "formula_result"))
    cli = _cli_proba(root, str(root / "formula_result"), "formula.parquet", res.classes)
    mine = res.predict_proba(d)
    assert list(mine.columns) == ["dem", "ind", "rep"]
    np.testing.assert_allclose(cli[["p_dem", "p_ind", "p_rep"]].to_numpy(), mine.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cli["id"].to_numpy(), d["id"].to_numpy())  # --keep carried the id through
    assert (cli["label"].to_numpy() == res.predict(d).to_numpy()).all()
    back = dmlr.load(str(root / "formula_result"))  # the formula travels with the saved result
    np.testing.assert_array_equal(back.predict_proba(d.iloc[::5]).to_numpy(), mine.iloc[::5].to_numpy())

    lazy = res.predict_proba(dd.from_pandas(d, npartitions=4))
    assert isinstance(lazy, dd.DataFrame) and list(lazy.columns) == ["dem", "ind", "rep"]
    np.testing.assert_allclose(lazy.compute().to_numpy(), mine.to_numpy(), rtol=0, atol=1e-15)
    labels = res.predict(dd.from_pandas(d, npartitions=4))
    assert isinstance(labels, dd.Series) and (labels.compute().to_numpy() == res.predict(d).to_numpy()).all()


def test_staged_categorical_fit_predicts_raw_frames_as_the_command_line_does(anes):
    root, d = anes
    _cli("stage", str(root / "anes.csv"), str(root / "s.zarr"), "--target", "party", "--features",
         "age,income,edu3", "--categorical", "edu3", "--reference", "edu3=mid", "--no-progress")  # fmt: skip
    _cli("fit", str(root / "s.zarr"), "--out", str(root / "staged_result"), "--workers", "1")
    res = dmlr.load(str(root / "staged_result"))
    assert list(res.params.index) == ["const", "age", "income", "edu3[T.high]", "edu3[T.low]"]  # mid is the reference
    cli = _cli_proba(root, str(root / "staged_result"), "staged.parquet", res.classes)
    mine = res.predict_proba(d)  # raw text column, encoded as staged
    np.testing.assert_allclose(cli[["p_dem", "p_ind", "p_rep"]].to_numpy(), mine.to_numpy(), rtol=0, atol=1e-12)

    # the same model from a pandas category column (reference = first category) gives the same fit
    frame = d[["age", "income"]].assign(edu3=pd.Categorical(d.edu3, categories=["mid", "high", "low"]))
    mem = dmlr.fit(frame, d.party)
    np.testing.assert_allclose(mem.coef, res.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mem.predict_proba(frame).to_numpy(), mine.to_numpy(), rtol=0, atol=1e-12)


def test_missing_values_one_policy_for_fit_formula_and_prediction(anes):
    _, d = anes
    holes = d.copy()
    holes.loc[[3, 10, 400], "income"] = np.nan
    with pytest.raises(InputError, match=r"column 'income' has a missing value at row 3"):
        dmlr.fit_formula(FORMULA, holes)
    dropped = dmlr.fit_formula(FORMULA, holes, missing="drop")
    reference = dmlr.fit_formula(FORMULA, d.drop(index=[3, 10, 400]))
    assert dropped.n_missing == 3 and dropped.nobs == len(d) - 3
    np.testing.assert_allclose(dropped.coef, reference.coef, rtol=1e-12, atol=1e-14)
    assert "3 rows with a missing value were dropped" in dropped.summary()

    lazy = dmlr.fit_formula(FORMULA, dd.from_pandas(holes, npartitions=3), missing="drop")
    assert lazy.n_missing == 3
    np.testing.assert_allclose(lazy.coef, reference.coef, rtol=1e-9, atol=1e-12)

    x = holes[["age", "income"]]
    with pytest.raises(InputError, match="column 'income'"):
        dmlr.fit(x, holes.party)
    arrays = dmlr.fit(x, holes.party, missing="drop")
    assert arrays.n_missing == 3
    proba = arrays.predict_proba(x, missing="drop")
    assert len(proba) == len(d) - 3 and 3 not in proba.index
    with pytest.raises(InputError, match="missing value at row 3"):
        arrays.predict_proba(x)


def test_unseen_levels_are_named_or_give_nan_rows(anes):
    _, d = anes
    res = dmlr.fit_formula(FORMULA, d)
    new = d.head(4).copy()
    new.loc[2, "edu3"] = "phd"
    with pytest.raises(InputError, match=r"'edu3' has level 'phd' at row 2"):
        res.predict_proba(new)
    proba = res.predict_proba(new, unseen="nan")
    assert proba.iloc[2].isna().all() and not proba.drop(index=2).isna().any().any()
    np.testing.assert_allclose(proba.drop(index=2).to_numpy(), res.predict_proba(d.head(4).drop(index=2)).to_numpy())
    assert res.predict(new, unseen="nan").iloc[2] is None
