"""The scikit-learn estimator (scikit-learn's own check suite, pipelines, dask inputs) and the formula interface."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import dmlr
from dmlr.estimator import MultinomialLogit
from tests.problems import draw_problem


@parametrize_with_checks([MultinomialLogit()])
def test_scikit_learn_check_estimator(estimator, check):
    """Every check of scikit-learn's suite, none exempted."""
    check(estimator)


def test_layout_matches_the_results_and_scikit_learn_semantics():
    x, y, _ = draw_problem(2000, 3, 4, seed=61)
    est = MultinomialLogit(l2=0.0, method="newton").fit(x, y)
    res = est.results_
    assert est.coef_.shape == (4, 3) and est.intercept_.shape == (4,)
    np.testing.assert_array_equal(est.coef_[0], 0.0)  # the base class row
    np.testing.assert_allclose(est.coef_[1:].T, res.params.to_numpy()[1:])
    decision = x @ est.coef_.T + est.intercept_
    softmax = np.exp(decision - decision.max(axis=1, keepdims=True))
    np.testing.assert_allclose(est.predict_proba(x), softmax / softmax.sum(axis=1, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(est.predict_log_proba(x), np.log(est.predict_proba(x)))
    assert est.score(x, y) == pytest.approx(np.mean(est.predict(x) == y))
    binary = MultinomialLogit(l2=0.0).fit(x, (y > 1).astype(int))
    assert binary.coef_.shape == (1, 3) and binary.intercept_.shape == (1,)
    np.testing.assert_allclose(binary.coef_[0], binary.results_.params.to_numpy()[1:, 0])


def test_pipeline_cross_validation_and_dataframe_names():
    x, y, _ = draw_problem(1500, 3, 3, seed=62)
    frame = pd.DataFrame(x, columns=["age", "income", "score"])
    scores = cross_val_score(make_pipeline(StandardScaler(), MultinomialLogit()), frame, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.4)
    est = MultinomialLogit(l2=0.0).fit(frame, y, sample_weight=np.ones(1500))
    assert list(est.feature_names_in_) == ["age", "income", "score"]
    assert list(est.results_.params.index) == ["const", "age", "income", "score"]
    np.testing.assert_allclose(est.results_.coef, dmlr.fit(frame, y).coef, rtol=1e-12)


@pytest.mark.cluster
def test_dask_inputs_stay_distributed(cluster_client):
    x, y, _ = draw_problem(3000, 3, 3, seed=63)
    xd, yd = da.from_array(x, chunks=(700, -1)), da.from_array(y, chunks=700)
    est = MultinomialLogit(l2=0.0, client=cluster_client).fit(xd, yd)
    proba, labels = est.predict_proba(xd), est.predict(xd)
    assert isinstance(proba, da.Array) and isinstance(labels, da.Array)
    np.testing.assert_allclose(cluster_client.compute(proba).result(), est.predict_proba(x), rtol=1e-12)
    np.testing.assert_allclose(est.results_.coef, dmlr.fit(x, y).coef, rtol=1e-10)


def _formula_data(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(64)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["x1", "x2", "x3"])
    frame["region"] = rng.choice(["east", "north", "south"], size=n)
    eta = np.column_stack([np.zeros(n), 0.5 * frame.x1 - frame.x2 * frame.x3, (frame.region == "north") - 0.3])
    prob = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
    frame["mode"] = np.array(["bike", "bus", "car"])[(rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)]
    return frame


def test_formula_fit_equals_the_manual_design_and_names_columns_as_formulaic():
    from formulaic import model_matrix

    frame = _formula_data()
    res = dmlr.fit_formula("mode ~ x1 + C(region) + x2:x3", frame, method="newton")
    expected = [str(c) for c in model_matrix("x1 + C(region) + x2:x3", frame).columns]
    assert (
        list(res.params.index) == expected == ["Intercept", "x1", "C(region)[T.north]", "C(region)[T.south]", "x2:x3"]
    )
    manual = np.column_stack([frame.x1, frame.region == "north", frame.region == "south", frame.x2 * frame.x3])
    ref = dmlr.fit(manual.astype(float), frame["mode"].to_numpy(), method="newton")
    assert np.max(np.abs(res.coef - ref.coef)) <= 1e-10 * np.max(np.abs(ref.coef))
    assert "C(region)[T.north]" in res.summary() and "mode=bus" in res.summary()
    lazy = dmlr.fit_formula("mode ~ x1 + C(region) + x2:x3", dd.from_pandas(frame, npartitions=3), method="newton")
    assert list(lazy.params.index) == expected
    assert np.max(np.abs(lazy.coef - ref.coef)) <= 1e-10 * np.max(np.abs(ref.coef))
    no_intercept = dmlr.fit_formula("mode ~ x1 + x2 - 1", frame, method="newton")
    assert list(no_intercept.params.index) == ["x1", "x2"]
    with pytest.raises(dmlr.InputError, match="not columns of the data"):
        dmlr.fit_formula("mode ~ x1 + nope", frame)


def test_the_estimator_takes_what_dmlr_fit_takes_a_frame_with_category_columns():
    """Issue 24: MultinomialLogit().fit on a DataFrame with a category column (one-hot encoded by dmlr.fit, against
    its first category) equals dmlr.fit of the frame, and predicts raw frames."""
    rng = np.random.default_rng(24)
    n = 2000
    frame = pd.DataFrame({"x": rng.normal(size=n), "g": pd.Categorical(rng.choice(["a", "b", "c"], n))})
    y = rng.choice(["p", "q", "r"], n)
    est = dmlr.MultinomialLogit(l2=0.0).fit(frame, y)
    ref = dmlr.fit(frame, y)
    np.testing.assert_allclose(est.results_.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.predict_proba(frame.iloc[:50]), ref.predict_proba(frame.iloc[:50]).to_numpy(),
                               rtol=0, atol=1e-12)  # fmt: skip
    assert list(est.feature_names_in_) == ["x", "g"] and est.n_features_in_ == 2
    assert est.score(frame, y) == pytest.approx(np.mean(est.predict(frame) == y))
