"""Marginal effects of formula fits per variable of the data (Stata's ``margins, dydx(*)``): through interactions and
transforms, factors as discrete changes, against finite differences of ``predict_proba`` on the raw frame and the
delta method by finite differences (issue 24, item 2)."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import dmlr
from dmlr.cli import main
from dmlr.errors import InputError

FORMULA = "origin ~ dist + dist:hour + hour + C(carrier) + w + I(w**2)"
CONTINUOUS = ["dist", "hour", "w"]
CARRIERS = ["AA", "B6", "DL", "UA"]


def _flights(n: int = 2500, seed: int = 0) -> pd.DataFrame:
    """Flights-like rows: distance interacted with the hour, a carrier factor, a quadratic term."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "dist": rng.gamma(2.0, 0.5, n), "hour": rng.integers(5, 23, n).astype(float),
        "carrier": rng.choice(CARRIERS, n), "w": rng.normal(size=n),
    })  # fmt: skip
    eta1 = 0.5 * df.dist - 0.04 * df.dist * df.hour + 0.3 * (df.carrier == "B6") + 0.2 * df.w
    eta2 = -0.3 + 0.02 * df.hour + 0.5 * (df.carrier == "UA") - 0.2 * df.w**2
    p = np.exp(np.column_stack([np.zeros(n), eta1, eta2]))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(n)[:, None]
    df["origin"] = np.array(["EWR", "JFK", "LGA"])[(u > np.cumsum(p, axis=1)).sum(axis=1)]
    return df


@pytest.fixture(scope="module")
def fitted():
    df = _flights()
    return df, dmlr.fit_formula(FORMULA, df)


def _designs(res, df: pd.DataFrame, h: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per effect: the designs (with the constant) whose probabilities are differenced, and the divisor."""

    def design(frame: pd.DataFrame) -> np.ndarray:
        x = res.encode(frame)[0]
        return np.column_stack([np.ones(len(x)), x])

    out = []
    for v in CONTINUOUS:
        step = h * np.maximum(1.0, np.abs(df[v].to_numpy()))
        hi, lo = design(df.assign(**{v: df[v] + step})), design(df.assign(**{v: df[v] - step}))
        out.append((hi, lo, 2.0 * step[:, None]))
    ref = design(df.assign(carrier="AA"))
    out += [(design(df.assign(carrier=c)), ref, 1.0) for c in CARRIERS[1:]]
    return out


def _average_effects(coef: np.ndarray, designs) -> np.ndarray:
    """Effects (E, K), classes in sorted order (EWR is the base, code 0 = sorted 0 here), by plain NumPy."""

    def proba(x: np.ndarray) -> np.ndarray:
        eta = np.column_stack([np.zeros(len(x)), x @ coef])
        e = np.exp(eta - eta.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return np.array([((proba(a) - proba(b)) / div).mean(axis=0) for a, b, div in designs])


def test_effects_per_variable_equal_finite_differences_of_predict_proba_on_the_raw_frame(fitted):
    df, res = fitted
    me = res.get_margeff(df)
    assert me.by == "variable" and list(me.margeff.columns) == ["EWR", "JFK", "LGA"]
    assert me.margeff.index.tolist() == ["dist", "hour", "w", "carrier[B6 vs AA]", "carrier[DL vs AA]",
                                         "carrier[UA vs AA]"]  # fmt: skip
    for i, v in enumerate(CONTINUOUS):  # central differences of predict_proba on the raw frame
        h = 1e-6 * np.maximum(1.0, np.abs(df[v].to_numpy()))
        hi = res.predict_proba(df.assign(**{v: df[v] + h})).to_numpy()
        lo = res.predict_proba(df.assign(**{v: df[v] - h})).to_numpy()
        np.testing.assert_allclose(me.margeff.iloc[i], ((hi - lo) / (2 * h[:, None])).mean(axis=0), rtol=0, atol=1e-6)
    ref = res.predict_proba(df.assign(carrier="AA")).to_numpy()
    for i, c in enumerate(CARRIERS[1:]):  # discrete changes: the level set on every row
        change = (res.predict_proba(df.assign(carrier=c)).to_numpy() - ref).mean(axis=0)
        np.testing.assert_allclose(me.margeff.iloc[3 + i], change, rtol=0, atol=1e-10)
    # the interaction matters: statsmodels' per-column "effect of dist" is another number
    by_column = res.get_margeff(df, by="column")
    assert abs(by_column.margeff.loc["dist", "EWR"] - me.margeff.loc["dist", "EWR"]) > 0.01
    assert "C(carrier)[T.B6]" in by_column.margeff.index


def test_standard_errors_per_variable_equal_the_delta_method_by_finite_differences(fitted):
    df, res = fitted
    me = res.get_margeff(df)
    designs = _designs(res, df, 1e-4)
    d, m = res.coef.shape
    jac = np.empty((me.margeff.size, d * m))
    for i in range(d * m):  # coefficients in the covariance's class-major order
        step = np.zeros(d * m)
        step[i] = 1e-4
        up, down = res.coef + step.reshape(m, d).T, res.coef - step.reshape(m, d).T
        jac[:, i] = ((_average_effects(up, designs) - _average_effects(down, designs)) / 2e-4).T.ravel()
    se = np.sqrt(np.diag(jac @ res.cov_params().to_numpy() @ jac.T)).reshape(3, -1).T
    np.testing.assert_allclose(me.margeff_se.to_numpy(), se, rtol=1e-5)
    for method in ("eydx", "dyex", "eyex"):  # the other methods: effects by finite differences of predict_proba
        other = res.get_margeff(df, method=method)
        h = 1e-6 * np.maximum(1.0, np.abs(df["dist"].to_numpy()))
        hi = res.predict_proba(df.assign(dist=df.dist + h)).to_numpy()
        lo = res.predict_proba(df.assign(dist=df.dist - h)).to_numpy()
        deriv = (np.log(hi) - np.log(lo) if method.startswith("ey") else hi - lo) / (2 * h[:, None])
        if method.endswith("ex"):
            deriv = deriv * df["dist"].to_numpy()[:, None]
        np.testing.assert_allclose(other.margeff.loc["dist"], deriv.mean(axis=0), rtol=0, atol=1e-6)


def test_every_form_of_the_raw_rows_gives_the_same_effects(fitted, cluster_client, tmp_path):
    df, res = fitted
    me = res.get_margeff()  # no data: the raw rows fitted, the formula re-applied (statsmodels' default data)
    np.testing.assert_allclose(me.margeff.to_numpy(), res.get_margeff(df).margeff.to_numpy(), rtol=0, atol=1e-15)
    lazy = res.get_margeff(dd.from_pandas(df, npartitions=7))  # one pass of the engine over 7 partitions
    np.testing.assert_allclose(lazy.margeff.to_numpy(), me.margeff.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(lazy.margeff_se.to_numpy(), me.margeff_se.to_numpy(), rtol=1e-10)
    folder = tmp_path / "months"
    folder.mkdir()
    for i, start in enumerate(range(0, len(df), 1000)):
        df.iloc[start : start + 1000].to_parquet(folder / f"part{i}.parquet")
    np.testing.assert_allclose(res.get_margeff(str(folder)).margeff.to_numpy(), me.margeff.to_numpy(), atol=1e-12)
    fitted_lazily = dmlr.fit_formula(FORMULA, dd.from_pandas(df, npartitions=4))
    np.testing.assert_allclose(fitted_lazily.get_margeff().margeff.to_numpy(), me.margeff.to_numpy(), atol=1e-9)
    # the command line: table files with a missing value, --missing drop, per variable by default
    holes = df.copy()
    holes.loc[7, "dist"] = np.nan
    holes.to_parquet(tmp_path / "holes.parquet")
    dmlr.save(res, str(tmp_path / "result"))
    args = ["margins", str(tmp_path / "result"), str(tmp_path / "holes.parquet"),
            "--scheduler", cluster_client.scheduler.address]  # fmt: skip
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 2 and "'dist' has a missing value" in failed.output and "--missing drop" in failed.output
    out = CliRunner().invoke(main, [*args, "--missing", "drop", "--out", str(tmp_path / "me.csv")])
    assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp_path / "me.csv", index_col=[0, 1])
    expected = res.get_margeff(df.drop(index=7))
    np.testing.assert_allclose(table["dy/dx"].to_numpy(), expected.margeff.to_numpy().T.ravel(), atol=1e-12)
    assert "carrier[UA vs AA]" in out.output and "per variable" in out.output


def test_per_variable_options_are_checked(fitted):
    df, res = fitted
    at_x = res.get_margeff(df, atexog={"hour": 12.0})  # a variable of the data fixed: every row at 12
    np.testing.assert_allclose(at_x.margeff.to_numpy(), res.get_margeff(df.assign(hour=12.0)).margeff.to_numpy(),
                               atol=1e-15)  # fmt: skip
    with pytest.raises(InputError, match="at='overall'"):
        res.get_margeff(df, at="mean")
    with pytest.raises(InputError, match="at='overall'"):
        res.get_margeff(df, dummy=True)
    with pytest.raises(InputError, match="atexog names 'hours'"):
        res.get_margeff(df, atexog={"hours": 1})
    with pytest.raises(InputError, match="needs a fit of dmlr"):
        res.get_margeff(res.encode(df)[0], by="variable")
    with pytest.raises(InputError, match="by must be"):
        res.get_margeff(df, by="factor")
    arrays = dmlr.fit(res.encode(df)[0], df.origin.to_numpy())
    with pytest.raises(InputError, match="this fit has no formula"):
        arrays.get_margeff(pd.DataFrame(res.encode(df)[0]), by="variable")
    conf = res.get_margeff(df).conf_int()  # statsmodels' form: (effects, lower/upper, classes)
    assert isinstance(conf, np.ndarray) and conf.shape == (6, 2, 3)


def test_a_boolean_is_a_discrete_change_and_a_spline_basis_is_differenced_inside_its_range():
    """A bool column gets False -> True (not a derivative of 0/1); a variable inside bs() (defined only on the fitted
    range) is differenced one-sidedly at the ends of that range, centrally elsewhere."""
    rng = np.random.default_rng(8)
    n = 1500
    df = pd.DataFrame({"x": rng.normal(size=n), "flag": rng.random(n) < 0.4})
    p = np.exp(np.column_stack([np.zeros(n), 0.8 * df.x + 0.5 * df.flag, np.sin(df.x)]))
    p /= p.sum(axis=1, keepdims=True)
    df["y"] = np.array(["a", "b", "c"])[(rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1)]
    res = dmlr.fit_formula("y ~ x + flag", df)
    me = res.get_margeff(df)
    assert me.margeff.index.tolist() == ["x", "flag[True vs False]"]
    change = res.predict_proba(df.assign(flag=True)).to_numpy() - res.predict_proba(df.assign(flag=False)).to_numpy()
    np.testing.assert_allclose(me.margeff.loc["flag[True vs False]"], change.mean(axis=0), rtol=0, atol=1e-10)

    spline = dmlr.fit_formula("y ~ bs(x, df=4) + flag", df)
    effects = spline.get_margeff(df)
    h = 1e-6 * np.maximum(1.0, np.abs(df.x.to_numpy()))
    up, down = np.minimum(df.x + h, df.x.max()), np.maximum(df.x - h, df.x.min())  # inside the fitted range
    hi = spline.predict_proba(df.assign(x=up)).to_numpy()
    lo = spline.predict_proba(df.assign(x=down)).to_numpy()
    reference = ((hi - lo) / (up - down).to_numpy()[:, None]).mean(axis=0)
    np.testing.assert_allclose(effects.margeff.loc["x"], reference, rtol=0, atol=1e-6)
