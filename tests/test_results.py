"""The results object: summary, intervals, default client, singular designs, and the demo."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats
from distributed import Client, get_task_stream

import dmlr
from tests.problems import draw_problem


@pytest.fixture(scope="module")
def fitted():
    x, y, _ = draw_problem(2000, 3, 3, seed=51)
    return dmlr.fit(x, y, method="newton", feature_names=["age", "income", "score"])


def test_summary_lists_every_coefficient_and_fit_statistic(fitted):
    text = str(fitted.summary())
    for needle in ("MNLogit Regression Results", "Log-Likelihood:", "LL-Null:", "Pseudo R-squ.:", "y=1", "y=2"):
        assert needle in text
    for name in ("const", "age", "income", "score"):
        assert text.count(name) == 2  # once per non-base class
    assert f"{fitted.params.loc['age', 1]:.4f}" in text
    assert f"{fitted.bse.loc['income', 2]:.4f}" in text


def test_summary_columns_stay_aligned_for_any_magnitude_and_name_length():
    rng = np.random.default_rng(7)
    n = 3000
    z = rng.normal(size=(n, 3))
    eta = np.column_stack([np.zeros(n), z @ [1.0, 1.0, 0.5], z @ [-1.0, 1.0, 0.0]])
    y = (rng.gumbel(size=(n, 3)) + eta).argmax(axis=1)
    x = z * np.array([1e-6, 1e8, 1.0])  # coefficients near 1e6 and 1e-8
    w = rng.integers(900, 1100, n).astype(float)  # nobs in the millions, exact
    long = "a_feature_name_of_exactly_forty_chars_xx"
    assert len(long) == 40
    res = dmlr.fit(x, y, weights=w, feature_names=[long, "tiny", "plain"], method="newton")
    assert 1e5 < np.abs(res.coef[1]).max() < 1e7 and np.abs(res.coef[2]).max() < 1e-7
    summary = res.summary()
    text = str(summary)
    lines = text.splitlines()
    width = len(lines[1])
    assert all(len(line) == width for line in lines[1:]), [len(line) for line in lines]
    nobs_line = next(line for line in lines if "No. Observations:" in line)
    assert nobs_line.endswith(f" {int(w.sum())}")  # exact, not 3.0e+06
    assert f"{res.llf:.2f}" in text  # the log-likelihood with every integer digit
    headings = ["coef", "std err", "z", "P>|z|", "[0.025", "0.975]"]
    for k in range(2):
        start = lines.index(next(line for line in lines if line.startswith(f"y={k + 1}")))
        head = lines[start]
        ends, pos = [], 0
        for h in headings:
            pos = head.index(h, pos) + len(h)
            ends.append(pos)
        for row in lines[start + 2 : start + 2 + 4]:
            assert row.split()[0] in ("const", long, "tiny", "plain")  # names whole
            tokens = [m.end() for m in re.finditer(r"\S+", row)][-6:]
            assert tokens == ends, (row, head)
    assert "<table" in summary.as_html() and f"| {long} |" in summary.as_markdown()


def test_intervals_pvalues_and_information_criteria_follow_their_definitions(fitted):
    ci = fitted.conf_int(0.01)
    theta = fitted.params.to_numpy().ravel(order="F")
    se = np.sqrt(np.diag(fitted.cov_params().to_numpy()))
    q = scipy.stats.norm.ppf(0.995)
    np.testing.assert_allclose(ci["lower"], theta - q * se, rtol=1e-14)
    np.testing.assert_allclose(ci["upper"], theta + q * se, rtol=1e-14)
    assert list(ci.index[0]) == [1, "const"]
    z = theta / se
    np.testing.assert_allclose(fitted.pvalues.to_numpy().ravel(order="F"), 2 * scipy.stats.norm.sf(np.abs(z)))
    assert fitted.aic == pytest.approx(-2 * fitted.llf + 2 * 8)
    assert fitted.bic == pytest.approx(-2 * fitted.llf + 8 * np.log(2000))
    assert fitted.df_model == 6
    assert fitted.llr_pvalue == pytest.approx(scipy.stats.chi2.sf(2 * (fitted.llf - fitted.llnull), 6))
    with pytest.raises(ValueError, match="alpha"):
        fitted.conf_int(1.5)


@pytest.mark.cluster
def test_the_current_client_is_used_when_none_is_given(cluster_client):
    x, y, _ = draw_problem(1500, 3, 3, seed=52)
    reference = dmlr.fit(x, y, method="newton")
    with Client(cluster_client.scheduler.address) as client, get_task_stream(client=client) as stream:
        res = dmlr.fit(x, y, method="newton")
    assert any(str(t["key"]).startswith("dmlr-pass-") for t in stream.data)
    np.testing.assert_allclose(res.coef, reference.coef, rtol=1e-10)


def test_duplicate_column_is_reported_by_name_with_infinite_standard_errors():
    x, y, _ = draw_problem(1500, 2, 3, seed=53)
    dup = np.column_stack([x, x[:, 1]])
    with pytest.warns(dmlr.SingularInformationWarning, match="x2") as record:
        res = dmlr.fit(dup, y, method="newton", collinear="keep")
    assert "x3" in str(record[0].message)
    assert np.all(np.isfinite(res.coef))
    bse = res.bse
    assert np.isinf(bse.loc["x2"]).all() and np.isinf(bse.loc["x3"]).all()
    assert np.isfinite(bse.loc[["const", "x1"]].to_numpy()).all()
    # the identified combination equals the fit without the duplicate
    single = dmlr.fit(x, y, method="newton")
    np.testing.assert_allclose(res.coef[2] + res.coef[3], single.coef[2], rtol=1e-6)
    np.testing.assert_allclose(res.coef[:2], single.coef[:2], rtol=1e-6)


@pytest.mark.cluster
def test_demo_recovers_the_true_coefficients(tmp_path, capfd):
    from dmlr.demo import run_demo

    max_z = run_demo(n=40_000, workdir=str(tmp_path), n_workers=2)
    out = capfd.readouterr().out
    assert "MNLogit Regression Results" in out and "mode=walk" in out and "region[T.west]" in out
    assert max_z < 4
    assert run_demo(n=5_000, workdir=str(tmp_path), n_workers=1) < 5  # `make demo` again: it replaces its own outputs


@pytest.mark.cluster
def test_evaluate_scores_rows_and_labels_as_scikit_learn_and_as_their_store(cluster_client, tmp_path):
    """Held-out metrics of in-memory rows, of dask arrays (one engine pass) and of the same rows staged as a store
    are scikit-learn's log_loss, accuracy and confusion matrix of predict_proba."""
    import dask.array as da
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    x, y, _ = draw_problem(6000, 3, 3, seed=71)
    labels = np.array(["a", "b", "c"])[y]
    res = dmlr.fit(x[:4000], labels[:4000])
    xt, yt = x[4000:], labels[4000:]
    w = np.random.default_rng(5).uniform(0.5, 2.0, size=2000)
    proba = res.predict_proba(xt)
    predicted = res.classes[proba.argmax(axis=1)]
    expected = {
        "log_loss": log_loss(yt, proba, labels=res.classes, sample_weight=w),
        "accuracy": accuracy_score(yt, predicted, sample_weight=w),
    }
    store = dmlr.stage_arrays(xt, yt, str(tmp_path / "test.zarr"), weights=w, chunk_rows=300)
    for data, labels_, weights in (
        (xt, yt, w),
        (da.from_array(xt, chunks=(250, 3)), da.from_array(yt, chunks=250), da.from_array(w, chunks=250)),
        (store, None, None),
    ):
        metrics = dmlr.evaluate(res, data, labels_, weights=weights, client=cluster_client)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, rel=1e-12), name
        np.testing.assert_allclose(
            metrics["confusion_matrix"], confusion_matrix(yt, predicted, labels=res.classes, sample_weight=w),
            rtol=1e-12,
        )  # fmt: skip
        assert metrics["weight_sum"] == pytest.approx(w.sum(), rel=1e-12)
    with pytest.raises(dmlr.InputError, match="not one of"):
        dmlr.evaluate(res, xt, np.where(np.arange(2000) == 7, "z", yt))
    with pytest.raises(dmlr.InputError, match="needs the labels"):
        dmlr.evaluate(res, xt)
    with pytest.raises(dmlr.InputError, match="one value per row"):
        dmlr.evaluate(res, xt, yt[:10])
