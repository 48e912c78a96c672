"""Agreement with statsmodels' MNLogit, an independent implementation of the same estimator."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import dmlr
from dmlr.errors import InputError
from tests.problems import draw_problem


def _statsmodels_fit(exog: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sm.MNLogit(y, exog).fit(method="newton", disp=0, tol=1e-14, maxiter=200)


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("method", ["newton", "auto"])
def test_matches_statsmodels_mnlogit(k, constant, method):
    x, y, _ = draw_problem(2500, 4, k, seed=100 + k, scale=0.6)
    if constant:
        exog = sm.add_constant(x)
        res = dmlr.fit(x, y, method=method)
    else:
        exog = x
        res = dmlr.fit(x, y, method=method, fit_intercept=False)
    ref = _statsmodels_fit(exog, y)
    assert res.converged
    assert _rel(res.params.to_numpy(), ref.params) < 1e-6
    assert _rel(res.bse.to_numpy(), ref.bse) < 1e-6
    assert _rel(res.llf, ref.llf) < 1e-6
    for name in ("llnull", "prsquared", "aic", "bic"):
        assert _rel(getattr(res, name), getattr(ref, name)) < 1e-8, name
    assert _rel(res.tvalues.to_numpy(), ref.tvalues) < 1e-5
    np.testing.assert_allclose(res.pvalues.to_numpy(), ref.pvalues, rtol=1e-4, atol=1e-12)
    # class-major covariance, the order statsmodels uses for MNLogit
    cov, ref_cov = res.cov_params().to_numpy(), np.asarray(ref.cov_params())
    scale = np.sqrt(np.outer(np.diag(ref_cov), np.diag(ref_cov)))
    assert np.max(np.abs(cov - ref_cov) / scale) < 1e-6
    ci, ref_ci = res.conf_int(0.1), np.asarray(ref.conf_int(0.1)).reshape(-1, 2)
    np.testing.assert_allclose(ci.to_numpy(), ref_ci, rtol=1e-6, atol=1e-8)
    if constant:
        assert res.df_model == ref.df_model
        assert res.llr_pvalue == pytest.approx(ref.llr_pvalue, rel=1e-6, abs=1e-300)
    assert res.df_resid == pytest.approx(len(y) - res.coef.size)
    # prediction, all classes including the base, sums to one
    proba = res.predict_proba(x)
    exog_pred = exog
    np.testing.assert_allclose(proba, ref.predict(exog_pred), rtol=1e-6, atol=1e-12)


def test_string_labels_pandas_input_and_a_chosen_base():
    x, y, _ = draw_problem(2000, 3, 4, seed=9, scale=0.6)
    names = np.array(["apple", "banana", "cherry", "date"])
    frame = pd.DataFrame(x, columns=["age", "income", "score"])
    res = dmlr.fit(frame, pd.Series(names[y], name="fruit"), base="cherry", method="newton")
    assert list(res.params.columns) == ["apple", "banana", "date"]
    assert list(res.params.index) == ["const", "age", "income", "score"]
    assert "fruit=apple" in res.summary()
    # statsmodels always uses the first code as base: recode so that cherry comes first
    order = {"cherry": 0, "apple": 1, "banana": 2, "date": 3}
    ref = _statsmodels_fit(sm.add_constant(x), np.array([order[s] for s in names[y]]))
    assert _rel(res.params.to_numpy(), ref.params) < 1e-6
    assert _rel(res.bse.to_numpy(), ref.bse) < 1e-6
    proba = res.predict_proba(frame)
    assert list(proba.columns) == list(names)
    np.testing.assert_allclose(proba.to_numpy().sum(axis=1), 1.0, atol=1e-12)
    ref_proba = ref.predict(sm.add_constant(x))[:, [1, 2, 0, 3]]  # back to sorted label order
    np.testing.assert_allclose(proba.to_numpy(), ref_proba, rtol=1e-6)
    assert set(res.predict(frame)) <= set(names)


def test_users_own_constant_column_with_fit_intercept_false():
    """A constant column given in X is detected: df_model = m (d - 1), as in statsmodels."""
    x, y, _ = draw_problem(2000, 3, 3, seed=77, scale=0.6)
    exog = sm.add_constant(x)
    res = dmlr.fit(exog, y, fit_intercept=False, feature_names=["const_", "a", "b", "c"], method="newton")
    ref = _statsmodels_fit(exog, y)
    assert _rel(res.params.to_numpy(), ref.params) < 1e-6
    assert res.df_model == ref.df_model == 6
    assert res.llr_pvalue == pytest.approx(ref.llr_pvalue, rel=1e-6, abs=1e-300)
    added = dmlr.fit(x, y, method="newton")  # starts elsewhere (the intercept-only optimum): equal to the tolerance
    np.testing.assert_allclose(res.params.to_numpy(), added.params.to_numpy(), rtol=1e-7)


def test_pred_table_equals_statsmodels_on_every_form_of_the_fitted_data(tmp_path, cluster_client):
    """statsmodels' pred_table (observed x predicted counts): on the fitted data without arguments (in memory, a
    DataFrame, a formula fit and a store fit), and on rows and labels given as NumPy and dask arrays."""
    import dask.array as da

    from tests.problems import ANES_FEATURES, anes96

    d = anes96()
    x, y = d[ANES_FEATURES].to_numpy(), d["PID"].to_numpy()
    expected = sm.MNLogit(y, sm.add_constant(x)).fit(disp=0).pred_table()
    assert expected.sum() == len(y) and np.trace(expected) < len(y)  # a table with errors in it
    res = dmlr.fit(x, y)
    np.testing.assert_array_equal(res.pred_table(), expected)
    np.testing.assert_array_equal(dmlr.fit(d[ANES_FEATURES], d["PID"]).pred_table(), expected)
    formula = dmlr.fit_formula("PID ~ " + " + ".join(ANES_FEATURES), d)
    np.testing.assert_array_equal(formula.pred_table(), expected)
    np.testing.assert_array_equal(res.pred_table(da.from_array(x, chunks=(150, 5)), da.from_array(y, chunks=150)),
                                  expected)  # fmt: skip
    url = str(tmp_path / "s.zarr")
    dmlr.stage_arrays(x, y, url, chunk_rows=200)
    np.testing.assert_array_equal(dmlr.fit(url).pred_table(), expected)
    with pytest.raises(InputError, match="label 99 at row 0, which is not one of"):
        res.pred_table(x, np.full(len(y), 99))
    with pytest.raises(InputError, match="both X and y"):
        res.pred_table(x)
