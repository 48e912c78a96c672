"""Models without a finite optimum (separation) and singular designs (collinearity)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dmlr
from dmlr import CollinearityError, PerfectSeparationError, PerfectSeparationWarning
from tests.problems import draw_problem


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(600, 2))


@pytest.mark.parametrize("method", ["newton", "auto"])
def test_two_class_complete_separation_is_named(x, method):
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    with pytest.raises(PerfectSeparationError, match=r"class\(es\) \['no', 'yes'\]"):
        dmlr.fit(x, y, method=method, max_iter=5000)


def test_bohning_on_separated_data_never_reports_convergence(x):
    """The bound's linear rate never meets the stopping rule here: max_iter ends it, unconverged, with a warning."""
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    with pytest.warns(dmlr.ConvergenceWarning, match="max_iter"):
        res = dmlr.fit(x, y, method="bohning", max_iter=300)
    assert not res.converged and np.all(np.isfinite(res.coef))


def test_quasi_complete_separation_is_detected(x):
    y = (x[:, 0] > 0).astype(int)
    xq = np.vstack([x, np.zeros((6, 2))])  # rows on the boundary, both classes: quasi-complete
    yq = np.r_[y, [0, 1, 0, 1, 0, 1]]
    with pytest.raises(PerfectSeparationError, match="separation"):
        dmlr.fit(xq, yq, method="newton")


@pytest.mark.parametrize("separable", ["b", "a"])  # a non-base class, and the base class
def test_only_one_separable_class_of_three_is_named(x, separable):
    rng = np.random.default_rng(1)
    others = [c for c in "abc" if c != separable]
    y = rng.choice(others, size=len(x))
    y[x[:, 0] > 0.8] = separable
    with pytest.raises(PerfectSeparationError, match=rf"class\(es\) \['{separable}'\]"):
        dmlr.fit(x, y, method="newton")


def test_warn_mode_reports_not_converged_with_finite_coefficients(x):
    y = (x[:, 0] > 0).astype(int)
    with pytest.warns(PerfectSeparationWarning, match="separation"):
        res = dmlr.fit(x, y, method="newton", separation="warn")
    assert not res.converged and res.message.startswith("separation")
    assert np.all(np.isfinite(res.coef))


def test_with_l2_the_separated_data_fit_normally(x):
    y = (x[:, 0] > 0).astype(int)
    res = dmlr.fit(x, y, method="newton", l2=1.0)
    assert res.converged and np.all(np.isfinite(res.bse.to_numpy()))
    assert np.max(np.abs(res.coef)) < 50


@pytest.mark.parametrize("k", [2, 4])
def test_regular_problems_are_never_flagged(k):
    for seed in range(5):
        xr, yr, _ = draw_problem(400, 3, k, seed=seed, scale=1.5)
        assert dmlr.fit(xr, yr, method="newton").converged


def test_collinear_columns_are_named_and_can_be_dropped():
    xr, yr, _ = draw_problem(1500, 3, 3, seed=9)
    frame = pd.DataFrame(xr, columns=["a", "b", "c"])
    frame["b_again"] = frame["b"]
    frame["a_plus_c"] = frame["a"] + 2 * frame["c"]
    frame["ones"] = 1.0
    with pytest.raises(CollinearityError) as err:
        dmlr.fit(frame, yr)
    message = str(err.value)
    assert "'b_again' is a linear combination of ['b']" in message
    assert "'a_plus_c' is a linear combination of ['a', 'c']" in message
    assert "'ones' is constant" in message

    with pytest.warns(dmlr.DroppedColumnsWarning, match="b_again"):
        dropped = dmlr.fit(frame, yr, collinear="drop")
    plain = dmlr.fit(frame[["a", "b", "c"]], yr)
    assert dropped.dropped_features == ("b_again", "a_plus_c", "ones")
    assert dropped.n_passes == plain.n_passes  # the columns go after the first pass, which is not made again
    pd.testing.assert_frame_equal(dropped.params, plain.params, rtol=1e-12)
    pd.testing.assert_frame_equal(dropped.bse, plain.bse, rtol=1e-12)
    # prediction takes the original columns (the dropped ones are ignored) or only the kept ones
    np.testing.assert_allclose(dropped.predict_proba(frame), plain.predict_proba(frame[["a", "b", "c"]]))
    np.testing.assert_allclose(dropped.predict_proba(frame.to_numpy()), plain.predict_proba(xr), rtol=1e-12)


def test_with_l2_collinear_columns_are_identified_by_the_penalty():
    xr, yr, _ = draw_problem(800, 2, 3, seed=10)
    dup = np.column_stack([xr, xr[:, 1]])
    res = dmlr.fit(dup, yr, l2=2.0)
    assert res.converged
    np.testing.assert_allclose(res.coef[2], res.coef[3], rtol=1e-8)  # the penalty splits the effect evenly


def test_a_fit_that_drops_columns_resumes_from_its_checkpoint(tmp_path):
    xr, yr, _ = draw_problem(1500, 3, 3, seed=19)
    x = np.column_stack([xr, xr[:, 0] - xr[:, 2]])
    with pytest.warns(dmlr.DroppedColumnsWarning):
        reference = dmlr.fit(x, yr, collinear="drop", method="bohning")
    with pytest.warns(dmlr.DroppedColumnsWarning), pytest.warns(dmlr.ConvergenceWarning):
        dmlr.fit(x, yr, collinear="drop", method="bohning", max_iter=2, checkpoint=tmp_path, inference=False)
    events: list = []
    with pytest.warns(dmlr.DroppedColumnsWarning):
        resumed = dmlr.fit(x, yr, collinear="drop", method="bohning", checkpoint=tmp_path, callback=events.append)
    assert [e["iteration"] for e in events if e.get("event") == "resume"] == [2]
    assert resumed.dropped_features == reference.dropped_features == ("x4",)
    assert resumed.n_passes == reference.n_passes
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)


def test_the_separation_diagnostic_solves_an_ill_conditioned_information_without_scipys_warning():
    """At a separated stopping point the information is near-singular: the diagnostic falls back to least squares
    instead of letting SciPy's LinAlgWarning reach the user before dmlr's own message."""
    import warnings

    from dmlr.diagnostics import standardized_newton_step

    information = np.diag([1.0, 1e-17, 1.0, 1.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = standardized_newton_step(information, np.ones((2, 2)), np.ones(2))
    assert not caught and np.all(np.isfinite(step))
    np.testing.assert_allclose(step[:, 1], [1.0, 1.0])  # the well-conditioned class: the exact solve
