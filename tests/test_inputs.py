"""Bad input gets a typed error that names the culprit, before any numerics run."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest

import dmlr
from dmlr import InputError


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 2)), rng.integers(0, 3, size=60)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "bfgs"}, "method must be one of"),
        ({"l2": -1.0}, "l2"),
        ({"tol": 0.0}, "tol"),
        ({"split_every": 1}, "split_every"),
        ({"base": 9}, "base=9 is not one of the class labels"),
        ({"weights": -np.ones(60)}, "weights has a negative value"),
        ({"weights": np.ones(59)}, "weights has 59 rows but X has 60"),
        ({"offset": np.zeros((60, 3))}, r"offset must have shape \(n, K - 1\) = \(60, 2\)"),
        ({"feature_names": ["a"]}, "feature_names has 1 names but X has 2"),
    ],
)
def test_bad_arguments(xy, kwargs, match):
    x, y = xy
    with pytest.raises(InputError, match=match):
        dmlr.fit(x, y, **kwargs)


def test_bad_shapes_and_labels(xy):
    x, y = xy
    with pytest.raises(InputError, match="y has 59 rows but X has 60"):
        dmlr.fit(x, y[:59])
    with pytest.raises(InputError, match="y must be 1-dimensional"):
        dmlr.fit(x, np.column_stack([y, y]))
    with pytest.raises(InputError, match="X has 0 rows"):
        dmlr.fit(x[:0], y[:0])
    with pytest.raises(InputError, match="0 feature columns and fit_intercept=False"):
        dmlr.fit(x[:, :0], y, fit_intercept=False)
    with pytest.raises(InputError, match="one class only"):
        dmlr.fit(x, np.zeros(60))
    with pytest.raises(InputError, match="not integral"):
        dmlr.fit(x, y + 0.5)
    with pytest.raises(InputError, match="X must be 2-dimensional"):
        dmlr.fit(x[:, 0], y)


def test_non_finite_values_name_column_and_partition(xy):
    x, y = xy
    bad = x.copy()
    bad[47, 1] = np.nan
    with pytest.raises(
        InputError, match=r"X has a non-finite value \(nan\) at column 1, row 47 \(row 7 of partition 2, rows 40-59\)"
    ):
        dmlr.fit(da.from_array(bad, chunks=(20, -1)), y)
    bad[47, 1] = -np.inf
    with pytest.raises(InputError, match=r"X has a non-finite value \(-inf\) at column 1, row 47"):
        dmlr.fit(bad, y)
    offset = np.zeros((60, 2))
    offset[13, 0] = np.inf
    with pytest.raises(InputError, match=r"offset has a non-finite value \(inf\) at column 0, row 13"):
        dmlr.fit(x, y, offset=offset)
    with pytest.raises(InputError, match=r"weights has a non-finite value \(inf\) at row 3"):
        dmlr.fit(x, y, weights=np.r_[1.0, 1.0, 1.0, np.inf, np.ones(56)])
    # the first negative weight is row 30; the weights are aligned to X's partitions of 30 rows
    negative = r"weights has a negative value \(-1.0\) at row 30 \(row 0 of partition 1, rows 30-59\)"
    with pytest.raises(InputError, match=negative):
        dmlr.fit(x, y, weights=da.from_array(np.r_[np.ones(30), -np.ones(30)], chunks=20))


def test_dataframe_with_a_text_column_names_it(xy):
    x, y = xy
    frame = pd.DataFrame({"a": x[:, 0], "region": ["north"] * 60})
    with pytest.raises(InputError, match="column 'region'"):
        dmlr.fit(frame, y)
    with pytest.raises(InputError, match="already has a column named 'const'"):
        dmlr.fit(pd.DataFrame({"const": 1.0, "a": x[:, 0]}), y)


def test_unknown_label_is_named_with_its_row():
    coding = dmlr.data.LabelCoding.from_labels(np.array(["b", "a", "c"]), base="b")
    np.testing.assert_array_equal(coding.encode(np.array(["a", "b", "c"])), [1, 0, 2])
    with pytest.raises(InputError, match=r"y \(partition 3\) has label 'z' at row 1"):
        coding.encode(np.array(["a", "z"]), "y (partition 3)")


def test_predict_checks_columns_and_values(xy):
    x, y = xy
    res = dmlr.fit(pd.DataFrame(x, columns=["a", "b"]), y, method="newton")
    with pytest.raises(InputError, match=r"X is missing the columns \['b'\] the model was fitted with"):
        res.predict_proba(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(InputError, match=r"X must have shape \(n, 2\)"):
        res.predict_proba(np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"X has a non-finite value \(inf\) at column 0, row 1"):
        res.predict_proba(np.array([[0.0, 1.0], [np.inf, 0.0]]))
    lazy = np.array(x)
    lazy[33, 1] = np.nan
    with pytest.raises(
        InputError, match=r"X has a non-finite value \(nan\) at column 1, row 33 \(row 13 of partition 1"
    ):
        res.predict_proba(da.from_array(lazy, chunks=(20, -1))).compute()
    # columns given in another order are matched by name
    swapped = pd.DataFrame(x[:, ::-1], columns=["b", "a"])
    np.testing.assert_allclose(res.predict_proba(swapped).to_numpy(), res.predict_proba(x), rtol=1e-15)


def test_zero_row_partitions_and_classes_absent_from_partitions_change_nothing():
    from tests.problems import draw_problem

    x, y, _ = draw_problem(3000, 3, 4, seed=40)
    order = np.argsort(y, kind="stable")  # partitions then hold one or two classes only
    x, y = x[order], y[order]
    w = np.random.default_rng(41).uniform(0.5, 2.0, size=3000)
    chunks = (0, 700, 0, 0, 1300, 1000, 0)
    res = dmlr.fit(
        da.from_array(x, chunks=(chunks, (3,))),
        da.from_array(y, chunks=(chunks,)),
        weights=da.from_array(w, chunks=(chunks,)),
        method="newton",
    )
    one = dmlr.fit(da.from_array(x, chunks=(-1, -1)), y, weights=w, method="newton")
    assert np.max(np.abs(res.coef - one.coef)) <= 1e-12 * np.max(np.abs(one.coef))
    assert res.llf == pytest.approx(one.llf, rel=1e-13)


def test_extreme_scales_give_finite_results_without_overflow():
    from tests.problems import draw_problem

    x, y, _ = draw_problem(3000, 3, 4, seed=42)
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plain = dmlr.fit(x, y, method="newton")
        scaled = dmlr.fit(x * 1e6, y, method="newton")
        proba = plain.predict_proba(x * 1e4)  # linear predictors of order 1e4
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]
    assert scaled.converged and np.isfinite(scaled.llf)
    np.testing.assert_allclose(scaled.coef[1:] * 1e6, plain.coef[1:], rtol=1e-6)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_predict_offset_is_checked(xy):
    x, y = xy
    res = dmlr.fit(x, y, method="newton")
    with pytest.raises(InputError, match=r"offset must have shape \(n, K - 1\) = \(60, 2\)"):
        res.predict_proba(x, offset=np.zeros((60, 3)))
    bad = np.zeros((60, 2))
    bad[5, 1] = np.nan
    with pytest.raises(InputError, match=r"offset has a non-finite value \(nan\) at column 1, row 5"):
        res.predict_proba(x, offset=bad)


@pytest.mark.cluster
def test_dask_dataframes_from_parquet_fit_as_pandas_does(tmp_path, cluster_client):
    """Issue 24, item 3: dmlr.fit(ddf[cols], ddf.label, weights=ddf.w, groups=ddf.g) and fit_formula on a frame of
    dd.read_parquet over 12 small files (its category column with unknown categories) equal the pandas fits (1e-10)
    on the LocalCluster."""
    import dask.dataframe as dd

    rng = np.random.default_rng(12)
    n = 6000
    d = pd.DataFrame({
        "dist": rng.normal(size=n), "hour": rng.integers(5, 23, n).astype(float),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n), "w": rng.integers(1, 3, n).astype(float),
        "g": rng.integers(0, 40, n), "carrier": rng.choice(["AA", "B6", "DL"], n),
    })  # fmt: skip
    for i in range(12):
        d.iloc[i * 500 : (i + 1) * 500].to_parquet(tmp_path / f"m{i:02d}.parquet")
    ddf = dd.read_parquet(str(tmp_path / "*.parquet")).astype({"origin": "category"})
    lazy = dmlr.fit(ddf[["dist", "hour", "origin"]], ddf.carrier, weights=ddf.w, groups=ddf.g, cov_type="cluster",
                    client=cluster_client)  # fmt: skip
    frame = d[["dist", "hour"]].assign(origin=pd.Categorical(d.origin))
    eager = dmlr.fit(frame, d.carrier, weights=d.w, groups=d.g, cov_type="cluster")
    assert lazy.feature_names == eager.feature_names == ("const", "dist", "hour", "origin[T.JFK]", "origin[T.LGA]")
    np.testing.assert_allclose(lazy.coef, eager.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lazy.bse.to_numpy(), eager.bse.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(lazy.predict_proba(frame.iloc[:20]).to_numpy(), eager.predict_proba(frame.iloc[:20]))

    formula = "carrier ~ dist + hour + C(origin)"
    lazy_f = dmlr.fit_formula(formula, dd.read_parquet(str(tmp_path / "*.parquet")), client=cluster_client)
    eager_f = dmlr.fit_formula(formula, d)
    np.testing.assert_allclose(lazy_f.coef, eager_f.coef, rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError, match="hold text: make them categorical"):
        dmlr.fit(dd.read_parquet(str(tmp_path / "*.parquet"))[["dist", "origin"]], ddf.carrier)
