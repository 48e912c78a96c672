"""Solvers and checks on designs like real ones: empty (level, class) cells, too many classes, wide categoricals, the
sample-fitted start, and auto's switch from L-BFGS to Newton."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import dmlr
from dmlr import InputError, PerfectSeparationError, PerfectSeparationWarning
from dmlr.oracle.sample import in_row_sample
from tests.problems import draw_problem


def _with_empty_cell(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three classes, a numeric column and a categorical ``region``; class ``c`` never occurs in region ``r3``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"u": rng.normal(size=n), "region": rng.choice(["r0", "r1", "r2", "r3"], size=n)})
    y = rng.choice(np.array(["a", "b", "c"]), size=n)
    y[(frame["region"] == "r3").to_numpy() & (y == "c")] = "a"
    frame["region"] = frame["region"].astype("category")
    return frame, y


def test_a_class_absent_from_a_level_is_named_after_the_first_pass():
    frame, y = _with_empty_cell()
    assert pd.crosstab(frame["region"], y).loc["r3", "c"] == 0  # the cell is empty in the data
    with pytest.raises(PerfectSeparationError, match=r"'region\[T\.r3\]' \(weight \d+\): never of class 'c'"):
        dmlr.fit(frame, y, method="newton")
    only = y.copy()
    only[(frame["region"] == "r2").to_numpy()] = "b"  # a level whose rows all have one class: named as such
    rows = int((frame["region"] == "r2").sum())
    with pytest.raises(PerfectSeparationError, match=rf"'region\[T\.r2\]' \(weight {rows}\): all of class 'b'"):
        dmlr.fit(frame, only, method="newton")
    with pytest.warns(PerfectSeparationWarning, match="region"):
        res = dmlr.fit(frame, y, method="newton", separation="warn")
    assert res.n_passes == 1 and not res.converged and res.message.startswith("separation")


def test_the_named_cell_really_has_no_finite_optimum():
    """statsmodels' log-likelihood keeps rising as the named coefficient goes to -inf from the penalized optimum,
    and a penalty gives a finite fit."""
    frame, y = _with_empty_cell()
    res = dmlr.fit(frame, y, l2=1.0)
    assert res.converged
    exog = sm.add_constant(pd.get_dummies(frame, columns=["region"], drop_first=True, dtype=float))
    codes = pd.Categorical(y, categories=["a", "b", "c"]).codes
    model = sm.MNLogit(codes, exog)
    params = res.params.to_numpy().copy()
    row, col = list(res.params.index).index("region[T.r3]"), list(res.params.columns).index("c")
    values = []
    for t in (0.0, 5.0, 10.0, 20.0):
        moved = params.copy()
        moved[row, col] -= t
        values.append(model.loglike(moved))
    assert np.all(np.diff(values) > 0)


def test_with_a_penalty_no_cell_check_is_made():
    frame, y = _with_empty_cell()
    assert dmlr.fit(frame, y, method="newton", l2=0.5).converged


def test_a_continuous_or_very_wide_target_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"x": rng.normal(size=600), "delay": np.round(rng.normal(size=600) * 40, 1)})
    table["ids"] = np.arange(600) % 150
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    distinct = table["delay"].nunique()
    with pytest.raises(InputError, match=rf"'delay' holds non-integral numbers \({distinct:,} distinct values"):
        dmlr.stage(str(path), str(tmp_path / "a.zarr"), target="delay", features=["x"])
    minutes = table.assign(delay=np.round(table["delay"]))  # integral floats: 200+ "classes"
    minutes.to_csv(path, index=False)
    distinct = minutes["delay"].nunique()
    with pytest.raises(InputError, match=rf"'delay' has {distinct:,} distinct values, more than max_classes=100"):
        dmlr.stage(str(path), str(tmp_path / "b.zarr"), target="delay", features=["x"])
    with pytest.raises(InputError, match="150 distinct values"):
        dmlr.fit(table[["x"]], table["ids"].to_numpy())
    store = dmlr.stage(str(path), str(tmp_path / "c.zarr"), target="ids", features=["x"], max_classes=150)
    assert len(store.classes) == 150


def test_a_categorical_of_more_than_a_thousand_levels_warns_with_its_size(tmp_path):
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"y": rng.integers(0, 2, 2500), "tail": [f"N{i % 1201}" for i in range(2500)]})
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.warns(dmlr.WideDesignWarning, match=r"'tail' has 1,201 levels: it expands to 1,200 dense columns"):
        store = dmlr.stage(str(path), str(tmp_path / "s.zarr"), target="y", categorical=["tail"])
    assert len(store.feature_names) == 1200


def test_the_row_sample_is_a_fixed_share_independent_of_partitioning():
    ids = np.arange(200_000, dtype=np.int64)
    keep = in_row_sample(ids, 0.1)
    assert abs(keep.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / ids.size)
    pieces = np.concatenate([in_row_sample(part, 0.1) for part in np.array_split(ids, 7)])
    np.testing.assert_array_equal(pieces, keep)
    assert abs(keep[:100_000].mean() - keep[100_000:].mean()) < 0.01  # spread over the whole range


def test_a_large_fit_far_from_the_null_starts_from_its_sample_and_reaches_statsmodels():
    """Strong effects (coefficients ~N(0, 3^2)): Newton's first step from the intercept-only optimum would move
    linear predictors by more than 1 (1.9), so the fit starts from its sample's optimum."""
    x, y, _ = draw_problem(70_000, 4, 3, seed=21, scale=3.0)
    import dask.array as da

    res = {}
    for chunks in (7_000, 23_000):
        res[chunks] = dmlr.fit(da.from_array(x, chunks=(chunks, -1)), da.from_array(y, chunks=chunks), method="newton")
    first, other = res[7_000], res[23_000]
    assert first.history[0]["passes"] == 3  # the first pass, the one that keeps the sample, one at its optimum
    null = first.llnull
    assert first.history[0]["loglik"] > null + 0.9 * (first.llf - null)  # the start is most of the way there
    # the same sample (and so the same start) whatever the partitioning
    assert first.history[0]["loglik"] == pytest.approx(other.history[0]["loglik"], rel=1e-12)
    ref = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    np.testing.assert_allclose(first.params.to_numpy(), ref.params, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(first.bse.to_numpy(), ref.bse, rtol=1e-6)


def test_a_fit_whose_first_newton_step_is_short_fits_no_sample():
    """Moderate effects: Newton's first step from the intercept-only optimum moves no linear predictor by more than
    1, so the loop starts there (one pass before the first iteration) and the sample is not fitted."""
    x, y, _ = draw_problem(70_000, 4, 3, seed=21, scale=0.3)
    res = dmlr.fit(x, y, method="newton")
    assert res.history[0]["passes"] == 1
    assert res.history[0]["loglik"] == pytest.approx(res.llnull, rel=1e-12)
    ref = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    np.testing.assert_allclose(res.params.to_numpy(), ref.params, rtol=1e-6, atol=1e-8)


@pytest.mark.cluster
def test_a_wide_fit_says_what_it_does_before_its_first_iteration(tmp_path):
    """``dmlr fit`` of a 601-column store prints its phases (the rank check, the rule with its predicted passes and
    time, the covariance) on stderr, before the iterations they precede, and completes."""
    from tests.test_cli import run

    rng = np.random.default_rng(8)
    x = rng.normal(size=(3_000, 600))
    y = (x[:, 0] + rng.normal(size=3_000) > 0).astype(int)
    store = dmlr.stage_arrays(x, y, str(tmp_path / "wide.zarr"))
    assert len(store.feature_names) == 600
    done = run("fit", str(tmp_path / "wide.zarr"), "--out", str(tmp_path / "r"), "--method", "lbfgs",
               "--workers", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    rank = next(i for i, s in enumerate(lines) if s.startswith("dmlr: checking the rank of the 601-column design"))
    rule = next(i for i, s in enumerate(lines) if s.startswith("dmlr: fitting 601 columns x 2 classes with lbfgs"))
    first = next(i for i, s in enumerate(lines) if s.startswith("iter   0"))
    assert rank < rule < first and "predicted" in lines[rule]
    assert "Coef." in done.stdout or "coef" in done.stdout.lower()


def _levels_design(n: int = 30_000, levels: int = 80, k: int = 6, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Like a real design: an 80-level factor with strong class effects (sd 3) and two raw-unit numeric columns."""
    rng = np.random.default_rng(seed)
    lev = rng.integers(0, levels, n)
    effects = rng.normal(scale=3.0, size=(levels, k))
    dist, hour = rng.gamma(2.0, 500.0, n), rng.uniform(5, 23, n)
    eta = effects[lev] + np.outer(dist / 1000, rng.normal(size=k)) + np.outer(hour / 10, rng.normal(size=k))
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1), k - 1)
    return pd.DataFrame({"dist": dist, "hour": hour, "lev": pd.Categorical(lev)}), y


class _Stop(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("stop", [8, 21])
def test_autos_switch_from_lbfgs_to_newton_is_recorded_and_resumed(tmp_path, stop):
    """auto picks L-BFGS on this design, sees it will not reach tol within max_iter and continues with Newton; a fit
    interrupted before (8) or after (21) the switch resumes from its checkpoint to the uninterrupted result."""
    frame, y = _levels_design()
    reference = dmlr.fit(frame, y, method="auto", l2=1.0)
    kinds = [r["kind"] for r in reference.history]
    assert reference.converged and reference.method == "newton"
    assert "lbfgs" in kinds and kinds.index("newton") > kinds.index("lbfgs")  # L-BFGS first, then Newton
    assert reference.n_iter < 100

    def interrupt(record: dict) -> None:
        if record.get("iteration") == stop and record.get("kind") in ("lbfgs", "newton"):
            raise _Stop

    with pytest.raises(_Stop):
        dmlr.fit(frame, y, method="auto", l2=1.0, checkpoint=str(tmp_path), callback=interrupt)
    resumed = dmlr.fit(frame, y, method="auto", l2=1.0, checkpoint=str(tmp_path))
    assert [r["kind"] for r in resumed.history] == kinds
    assert resumed.history[-1]["passes"] == reference.history[-1]["passes"]
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)
    # the same optimum as Newton alone
    newton = dmlr.fit(frame, y, method="newton", l2=1.0)
    assert resumed.llf == pytest.approx(newton.llf, rel=1e-10)
