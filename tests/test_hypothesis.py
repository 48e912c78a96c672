"""Wald, t and likelihood-ratio tests against statsmodels on its anes96 survey (7 party-identification classes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dmlr
from dmlr.errors import InputError
from tests.problems import ANES_FEATURES, anes96, anes_fits

FEATURES = ANES_FEATURES


@pytest.fixture(scope="module")
def fits():
    _, res, ref = anes_fits()
    _, small, ref_small = anes_fits(["logpopul", "selfLR", "educ"])
    return res, ref, small, ref_small


def _matrix(res, cells):
    d = len(res.feature_names)
    R = np.zeros((len(cells), res.n_params))
    for i, (k, f) in enumerate(cells):
        R[i, k * d + list(res.feature_names).index(f)] = 1.0
    return R


def test_wald_statistics_equal_statsmodels(fits):
    res, ref, *_ = fits
    np.testing.assert_allclose(res.coef, ref.params.to_numpy(), rtol=1e-8, atol=1e-10)
    R = _matrix(res, [(1, "selfLR"), (3, "income")])
    R[0] -= _matrix(res, [(2, "selfLR")])[0]
    mine = res.wald_test(R)
    theirs = ref.wald_test(R, scalar=True)
    assert mine.df == 2 and mine.statistic == pytest.approx(theirs.statistic, rel=1e-8)
    assert mine.pvalue == pytest.approx(float(theirs.pvalue), rel=1e-7)
    text = res.wald_test("2:selfLR = 3:selfLR, 4:income = 0")  # classes 0..6: coefficient columns 1..6
    assert text.statistic == pytest.approx(mine.statistic, rel=1e-14)
    scaled = res.wald_test("2:selfLR - 3:selfLR = 0, 0.5*4:income + 1 = 1")
    assert scaled.statistic == pytest.approx(mine.statistic, rel=1e-12)


def test_joint_feature_test_and_t_test_equal_statsmodels(fits):
    res, ref, *_ = fits
    m = res.coef.shape[1]
    joint = res.test_features(["age", "income"])
    R = _matrix(res, [(k, f) for f in ("age", "income") for k in range(m)])
    assert joint.df == 2 * m
    assert joint.statistic == pytest.approx(ref.wald_test(R, scalar=True).statistic, rel=1e-8)
    table = res.t_test("2:selfLR = 3:selfLR")
    theirs = ref.t_test(_matrix(res, [(1, "selfLR")]) - _matrix(res, [(2, "selfLR")]))
    assert table["estimate"].iloc[0] == pytest.approx(float(theirs.effect[0]), rel=1e-8)
    assert table["std err"].iloc[0] == pytest.approx(float(theirs.sd[0, 0]), rel=1e-8)
    assert table["P>|z|"].iloc[0] == pytest.approx(float(theirs.pvalue), rel=1e-7)


def test_likelihood_ratio_equals_twice_the_statsmodels_difference(fits):
    res, ref, small, ref_small = fits
    lr = dmlr.lr_test(small, res)
    assert lr.df == 2 * res.coef.shape[1]
    assert lr.statistic == pytest.approx(2 * (ref.llf - ref_small.llf), rel=1e-9)
    assert "age, income = 0" in lr.summary()


def test_bad_restrictions_are_named(fits):
    res, _, small, _ = fits
    with pytest.raises(InputError, match="'9:age' is not a parameter"):
        res.wald_test("9:age = 0")
    with pytest.raises(InputError, match="'2:height' is not a parameter"):
        res.wald_test("2:height = 0")
    with pytest.raises(InputError, match="linearly dependent"):
        res.wald_test("2:age = 0, 2:age = 0")
    with pytest.raises(InputError, match="needs one '='"):
        res.wald_test("2:age")
    with pytest.raises(InputError, match=r"'height' is neither a model column nor a categorical variable"):
        res.test_features(["height"])
    with pytest.raises(InputError, match="arguments look swapped"):
        dmlr.lr_test(res, small)
    d = anes96()
    other = dmlr.fit(d[FEATURES].iloc[:900], d.PID.astype(int).iloc[:900])
    with pytest.raises(InputError, match="different data"):
        dmlr.lr_test(small, other)


def test_the_command_line_tests_features_of_a_saved_result(fits, tmp_path):
    from click.testing import CliRunner

    from dmlr.cli import main

    res = fits[0]
    dmlr.save(res, str(tmp_path / "r"))
    done = CliRunner().invoke(main, ["test", str(tmp_path / "r"), "age", "income"])
    assert done.exit_code == 0, done.stderr
    assert f"chi2(12) = {res.test_features(['age', 'income']).statistic:.4f}" in done.stdout
    bad = CliRunner().invoke(main, ["test", str(tmp_path / "r"), "height"])
    assert bad.exit_code == 2 and "'height' is neither a model column" in bad.stderr
    typo = CliRunner().invoke(main, ["test", str(tmp_path / "r"), "incme"])
    assert typo.exit_code == 2 and "did you mean 'income'?" in typo.stderr


def test_a_factor_name_tests_all_its_columns_as_statas_testparm():
    """Issue 24: test_features(["edu"]) is the joint test of every edu[T.*] column (Stata's testparm i.edu), for a
    DataFrame fit and a formula fit."""
    from dmlr.results.hypothesis import _variable

    d = anes96()
    frame = d[["age", "income"]].assign(
        edu=pd.Categorical(np.asarray(["low", "mid", "high"])[d.educ.to_numpy().astype(int) % 3])
    )
    res = dmlr.fit(frame, d.PID.astype(int))
    columns = [f for f in res.feature_names if f.startswith("edu[")]
    assert len(columns) == 2
    assert res.test_features(["edu"]).statistic == res.test_features(columns).statistic
    assert res.test_features(["edu", "age"]).df == 3 * 6
    assert _variable("C(r, contr.treatment('b'))[T.a]") == "r" and _variable("C(carrier, Sum)[S.AS]") == "carrier"
    assert _variable("dist1k:hour") is None and _variable("np.log(x)") is None
