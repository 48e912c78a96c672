"""Marginal effects against statsmodels' get_margeff (anes96, K = 7) and, where statsmodels' MNLogit fails (dyex and
eyex raise a broadcasting error there), against finite differences of predict_proba."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest
import statsmodels.api as sm

import dmlr
from dmlr.errors import InputError
from tests.problems import ANES_FEATURES, anes96, anes_fits

FEATURES = ANES_FEATURES


@pytest.fixture(scope="module")
def anes():
    d, res, ref = anes_fits()
    return d[FEATURES].to_numpy(), res, ref


@pytest.mark.parametrize("at", ["overall", "mean", "median", "zero"])
@pytest.mark.parametrize("method", ["dydx", "eydx"])
def test_effects_and_standard_errors_equal_statsmodels(anes, at, method):
    x, res, ref = anes
    mine = res.get_margeff(x, at=at, method=method)
    theirs = ref.get_margeff(at=at, method=method)
    assert mine.margeff.shape == theirs.margeff.shape == (5, 7)
    np.testing.assert_allclose(mine.margeff.to_numpy(), theirs.margeff, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(mine.margeff_se.to_numpy(), theirs.margeff_se, rtol=1e-8)
    np.testing.assert_allclose(mine.pvalues.to_numpy(), theirs.pvalues, rtol=1e-6, atol=1e-14)


def _effects_by_finite_differences(res, x, method, h=1e-6):
    """Average effects from central differences of predict_proba in each feature (the definition)."""
    p = np.asarray(res.predict_proba(x))
    out = np.zeros((x.shape[1], p.shape[1]))
    for k in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, k] += h
        down[:, k] -= h
        dp = (np.asarray(res.predict_proba(up)) - np.asarray(res.predict_proba(down))) / (2 * h)
        value = dp / p if method.startswith("ey") else dp
        out[k] = (value * x[:, [k]] if method.endswith("ex") else value).mean(axis=0)
    return out


@pytest.mark.parametrize("method", ["dydx", "eydx", "dyex", "eyex"])
def test_effects_and_jacobian_equal_finite_differences(anes, method):
    x, res, _ = anes
    mine = res.get_margeff(x, method=method)
    np.testing.assert_allclose(mine.margeff.to_numpy(), _effects_by_finite_differences(res, x, method), rtol=1e-6,
                               atol=1e-9)  # fmt: skip
    # the delta method with a Jacobian by central differences of the effects in the coefficients
    theta, h = res.coef.ravel(order="F"), 1e-6
    cols = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        hi = dataclasses.replace(res, coef=(theta + step).reshape(res.coef.shape, order="F"))
        lo = dataclasses.replace(res, coef=(theta - step).reshape(res.coef.shape, order="F"))
        cols.append((hi.get_margeff(x, method=method).margeff.to_numpy().T.ravel()
                     - lo.get_margeff(x, method=method).margeff.to_numpy().T.ravel()) / (2 * h))  # fmt: skip
    jac = np.column_stack(cols)
    se = np.sqrt(np.diag(jac @ res.cov_params().to_numpy() @ jac.T)).reshape(7, 5).T
    np.testing.assert_allclose(mine.margeff_se.to_numpy(), se, rtol=1e-6)


def test_a_dask_array_gives_the_same_effects_in_one_pass(anes):
    x, res, _ = anes
    lazy = res.get_margeff(da.from_array(x, chunks=(100, 5)), method="dydx")
    eager = res.get_margeff(x, method="dydx")
    np.testing.assert_allclose(lazy.margeff.to_numpy(), eager.margeff.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(lazy.margeff_se.to_numpy(), eager.margeff_se.to_numpy(), rtol=1e-12)
    assert "selfLR" in eager.summary() and eager.summary_frame().shape == (35, 6)


def test_bad_options_are_named(anes):
    x, res, _ = anes
    with pytest.raises(InputError, match="at must be one of"):
        res.get_margeff(x, at="max")
    with pytest.raises(InputError, match="method must be one of"):
        res.get_margeff(x, method="elasticity")
    with pytest.raises(InputError, match=r"X must have shape \(n, 5\)"):
        res.get_margeff(x[:, :3])


@pytest.fixture(scope="module")
def with_vote():
    cols = [*FEATURES, "vote"]  # vote is 0/1; selfLR, age, educ, income are non-negative integers
    d, res, ref = anes_fits(cols)
    return d[cols].to_numpy(), res, ref


@pytest.mark.parametrize("at", ["overall", "mean"])
@pytest.mark.parametrize("method", ["dydx", "eydx"])
def test_dummy_changes_and_atexog_equal_statsmodels(with_vote, at, method):
    x, res, ref = with_vote
    mine = res.get_margeff(x, at=at, method=method, dummy=True)
    theirs = ref.get_margeff(at=at, method=method, dummy=True)
    np.testing.assert_allclose(mine.margeff.to_numpy(), theirs.margeff, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(mine.margeff_se.to_numpy(), theirs.margeff_se, rtol=1e-8)
    fixed = res.get_margeff(x, at=at, method=method, atexog={"age": 40})
    theirs = ref.get_margeff(at=at, method=method, atexog={3: 40})  # statsmodels counts the constant as column 0
    np.testing.assert_allclose(fixed.margeff.to_numpy(), theirs.margeff, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(fixed.margeff_se.to_numpy(), theirs.margeff_se, rtol=1e-8)
    by_position = res.get_margeff(x, at=at, method=method, atexog={3: 40})  # the same key as statsmodels'
    np.testing.assert_allclose(by_position.margeff.to_numpy(), theirs.margeff, rtol=1e-8, atol=1e-14)


def test_count_changes_follow_their_definition(with_vote):
    """statsmodels' MNLogit raises for count=True (a float slice index); the definition is checked instead."""
    x, res, _ = with_vote
    mine = res.get_margeff(x, count=True)
    for j in (1, 2, 3, 4):  # selfLR, age, educ, income: integer columns that vary
        up, down = x.copy(), x.copy()
        up[:, j] += 1
        down[:, j] -= 1
        change = (np.asarray(res.predict_proba(up)) - np.asarray(res.predict_proba(down))).mean(axis=0) / 2
        np.testing.assert_allclose(mine.margeff.iloc[j].to_numpy(), change, rtol=1e-10, atol=1e-15)
    continuous = res.get_margeff(x)
    np.testing.assert_allclose(mine.margeff.iloc[[0, 5]], continuous.margeff.iloc[[0, 5]], rtol=1e-12)


def test_discrete_options_are_checked(with_vote):
    x, res, _ = with_vote
    with pytest.raises(InputError, match="dummy feature 'income' is not a 0/1 column"):
        res.get_margeff(x, dummy=["income"])
    with pytest.raises(InputError, match="atexog names 'height'"):
        res.get_margeff(x, atexog={"height": 1.0})
    with pytest.raises(InputError, match="defined for dydx and eydx"):
        res.get_margeff(x, method="eyex", dummy=True)


@pytest.mark.cluster
def test_the_command_line_margins_and_prediction_errors(tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from dmlr.cli import main

    d = anes96()
    d.assign(PID=d.PID.astype(int))[[*FEATURES, "PID"]].to_csv(tmp_path / "anes.csv", index=False)
    runner = CliRunner()
    done = runner.invoke(main, ["stage", str(tmp_path / "anes.csv"), str(tmp_path / "s.zarr"), "--target", "PID",
                                "--no-progress"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    done = runner.invoke(main, ["fit", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r"), "--workers", "1",
                                "--tol", "1e-12"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    res = dmlr.load(str(tmp_path / "r"))
    reference = res.get_margeff(d[FEATURES].to_numpy(), method="eydx")
    for data in ("s.zarr", "anes.csv"):
        out = tmp_path / f"margins-{data}.csv"
        done = runner.invoke(main, ["margins", str(tmp_path / "r"), str(tmp_path / data), "--method", "eydx",
                                    "--workers", "1", "--out", str(out)])  # fmt: skip
        assert done.exit_code == 0, done.stderr
        assert "method eydx (d(lny)/dx), at overall" in done.stdout  # statsmodels' name of the effect, not dy/dx
        table = pd.read_csv(out, index_col=[0, 1])
        assert table.columns[0] == "d(lny)/dx"
        np.testing.assert_allclose(table["Std. Err."].to_numpy(), reference.summary_frame()["Std. Err."].to_numpy(),
                                   rtol=1e-10)  # fmt: skip
    done = runner.invoke(main, ["predict", str(tmp_path / "r"), str(tmp_path / "anes.csv"), "--out",
                                str(tmp_path / "p.parquet"), "--se", "--workers", "1"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    written = pd.read_parquet(tmp_path / "p.parquet")
    pred = res.get_prediction(d[FEATURES])
    np.testing.assert_allclose(written[[f"se_{c}" for c in range(7)]].to_numpy(), pred.se, rtol=1e-10)
    bad = runner.invoke(main, ["predict", str(tmp_path / "r"), str(tmp_path / "s.zarr"), "--out",
                               str(tmp_path / "q.parquet"), "--se"])  # fmt: skip
    assert bad.exit_code == 2 and "CSV/Parquet input" in bad.stderr


def test_average_effects_of_lazy_data_read_every_block_once(anes):
    """at='overall' on a dask array is one pass: each block is produced exactly once (counted as it is made)."""
    x, res, _ = anes
    made: list[int] = []

    def block(b, block_info=None):
        made.append(block_info[0]["chunk-location"][0])
        return b

    lazy = da.map_blocks(block, da.from_array(x, chunks=(100, 5)), dtype=float)
    me = res.get_margeff(lazy, method="dydx", dummy=False)
    assert sorted(made) == list(range(lazy.numblocks[0]))
    np.testing.assert_allclose(me.margeff_se.to_numpy(), res.get_margeff(x).margeff_se.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize(("p", "m"), [(10, 2), (8, 3), (12, 1)])
@pytest.mark.parametrize("method", ["dydx", "eydx"])
def test_the_moment_form_equals_the_direct_form(p, m, method):
    """Many features (d > K + 2): dydx and eydx come from probability-weighted column sums; the same numbers."""
    from dmlr.oracle.effects import direct_sums, moment_sums

    rng = np.random.default_rng(p * 10 + m)
    x = rng.normal(size=(2000, p)) * np.linspace(0.5, 2.0, p)
    coef = rng.normal(size=(p + 1, m)) * 0.2
    for a, b in zip(moment_sums(x, coef, True, method), direct_sums(x, coef, True, method), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("at", ["overall", "mean"])
def test_many_features_equal_statsmodels(at):
    from dmlr.synthetic import make_mnlogit

    data = make_mnlogit(3000, 8, 3, seed=21)
    x, y = np.asarray(data.X), np.asarray(data.y)
    res = dmlr.fit(x, y, tol=1e-12)
    ref = sm.MNLogit(y, sm.add_constant(x)).fit(disp=0, method="newton", tol=1e-14, maxiter=100)
    for method in ("dydx", "eydx"):
        mine, theirs = res.get_margeff(x, at=at, method=method), ref.get_margeff(at=at, method=method)
        np.testing.assert_allclose(mine.margeff.to_numpy(), theirs.margeff, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(mine.margeff_se.to_numpy(), theirs.margeff_se, rtol=1e-8)


_LOADED_MARGINS = """
import sys, numpy as np, dmlr
me = dmlr.load(sys.argv[1]).get_margeff()
np.save(sys.argv[2], np.column_stack([me.margeff.to_numpy(), me.margeff_se.to_numpy()]), allow_pickle=False)
"""


def test_get_margeff_without_data_uses_the_fitted_data_as_statsmodels(tmp_path):
    """Issue 24, item 4: get_margeff() and get_prediction() without data equal their calls with the fitted data, for
    an in-memory fit, a store fit, and a store fit loaded in a new process (the store reopened and checked); after
    rows are appended the loaded result still averages over the rows it was fitted on; a loaded fit of arrays says
    to pass the data."""
    import pickle
    import subprocess
    import sys

    rng = np.random.default_rng(41)
    x, y = rng.normal(size=(3000, 3)), rng.choice(["a", "b", "c"], 3000)
    res = dmlr.fit(x, y)
    np.testing.assert_allclose(res.get_margeff().margeff.to_numpy(), res.get_margeff(x).margeff.to_numpy(),
                               rtol=0, atol=1e-12)  # fmt: skip
    average = res.get_prediction(average=True).predicted
    np.testing.assert_allclose(average, res.get_prediction(x, average=True).predicted, rtol=0, atol=1e-12)
    assert "fitted_data" not in pickle.loads(pickle.dumps(res)).__dict__  # a result shipped to workers: no data
    dmlr.save(res, str(tmp_path / "arrays"))
    with pytest.raises(InputError, match="does not hold the data it was fitted on"):
        dmlr.load(str(tmp_path / "arrays")).get_margeff()

    url = str(tmp_path / "s.zarr")
    dmlr.stage_arrays(x, y, url, chunk_rows=700)
    fitted = dmlr.fit(url)
    store_x = dmlr.open_store(url).X
    expected = fitted.get_margeff(store_x)
    np.testing.assert_allclose(fitted.get_margeff().margeff.to_numpy(), expected.margeff.to_numpy(), rtol=0, atol=1e-12)
    for data in (url, dmlr.open_store(url)):  # a store by its path, or opened: as its features (no numpy error)
        np.testing.assert_allclose(fitted.get_margeff(data).margeff.to_numpy(), expected.margeff.to_numpy(), atol=1e-12)
        np.testing.assert_allclose(fitted.get_prediction(data, average=True).predicted,
                                   fitted.get_prediction(store_x, average=True).predicted, atol=1e-12)  # fmt: skip
    dmlr.save(fitted, str(tmp_path / "r"))
    dmlr.stage_arrays(x[:500], y[:500], url, append=True)  # the store grows after the fit
    script = tmp_path / "margins.py"
    script.write_text(_LOADED_MARGINS)
    subprocess.run([sys.executable, str(script), str(tmp_path / "r"), str(tmp_path / "me.npy")], check=True)
    loaded = np.load(tmp_path / "me.npy", allow_pickle=False)
    np.testing.assert_allclose(loaded[:, :3], expected.margeff.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded[:, 3:], expected.margeff_se.to_numpy(), rtol=0, atol=1e-12)


def test_tables_print_small_effects_in_significant_digits():
    """A real effect of order 1e-6 is printed as such, not as 0.0000 (the table used four fixed decimals)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 2)) * [1.0, 1e5]  # the second feature's effect per unit is ~1e-6
    eta = np.column_stack([np.zeros(2000), 0.8 * x[:, 0] + 0.5e-5 * x[:, 1], -0.4 * x[:, 0]])
    y = (rng.random(2000)[:, None] > np.cumsum(np.exp(eta) / np.exp(eta).sum(1, keepdims=True), axis=1)).sum(1)
    me = dmlr.fit(x, y, feature_names=["a", "big"]).get_margeff()
    text = me.summary()
    values = me.margeff.loc["big"].to_numpy()
    assert np.all((np.abs(values) > 1e-8) & (np.abs(values) < 1e-4)) and "0.0000" not in text
    assert all(f"{v:#.4g}" in text for v in values)
