"""Newton, Böhning and auto reach the same optimum; Böhning's log-likelihood never decreases."""

from __future__ import annotations

import numpy as np
import pytest

import dmlr
from tests.problems import draw_problem


@pytest.mark.parametrize(
    ("n", "p", "k", "l2"),
    [(2000, 3, 2, 0.0), (2500, 4, 4, 0.0), (3000, 24, 7, 0.0), (2500, 5, 5, 3.0)],  # the third: auto is L-BFGS
)
def test_all_methods_reach_the_same_optimum(n, p, k, l2):
    x, y, _ = draw_problem(n, p, k, seed=n + k)
    fits = {m: dmlr.fit(x, y, method=m, l2=l2, max_iter=5000, tol=1e-9) for m in ("newton", "bohning", "auto")}
    ref = fits["newton"]
    for name, res in fits.items():
        assert res.converged, name
        assert res.llf == pytest.approx(ref.llf, rel=1e-9), name
        np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-6, atol=1e-6 * np.abs(ref.coef).max())
        # standard errors always come from the exact information at the optimum, never from the bound
        np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-5)


def test_auto_records_its_choice_and_reaches_newtons_optimum():
    x, y, _ = draw_problem(20_000, 29, 7, seed=3)
    res = dmlr.fit(x, y, method="auto")
    start = res.history[0]
    assert start["method"] == res.method and res.method in ("newton", "lbfgs")
    assert set(start["predicted_seconds"]) == {"newton", "lbfgs"}
    assert start["method"] == min(start["predicted_seconds"], key=start["predicted_seconds"].get)
    assert start["streamed"] is False and start["choice"].startswith(f"auto chose {res.method}")
    newton = dmlr.fit(x, y, method="newton")
    assert res.llf == pytest.approx(newton.llf, rel=1e-10)
    np.testing.assert_allclose(res.bse.to_numpy(), newton.bse.to_numpy(), rtol=1e-6)


def test_lbfgs_ends_with_one_information_pass():
    x, y, _ = draw_problem(3000, 29, 7, seed=3)
    res = dmlr.fit(x, y, method="lbfgs")
    assert res.history[-1]["kind"] == "inference"
    assert [r["kind"] for r in res.history].count("inference") == 1


def test_newton_starts_at_the_intercept_only_optimum_without_a_pass():
    """Without an offset, Newton starts at the class log-shares with statistics derived from the first pass (no
    pass): they equal a real pass there, its log-likelihood the null model's ``sum n_c log(n_c / n)``; the fit
    reaches the optimum of a fit from ``W = 0`` (an offset of zeros forces that start)."""
    import dask.array as da

    from dmlr.data.design import build_design
    from dmlr.fitting.evaluator import FitPasses
    from dmlr.fitting.setup import begin_fit, from_intercept_optimum
    from dmlr.oracle.statistics import WITH_INFORMATION
    from dmlr.steps.newton import NEWTON_FIRST

    x, y, _ = draw_problem(2000, 6, 4, seed=5)
    design = build_design(da.from_array(x, chunks=(700, -1)), da.from_array(y, chunks=700), classes=np.unique(y))
    passes, start = begin_fit(FitPasses.over(design), NEWTON_FIRST, None)
    assert start.first.information is not None  # the first pass at W = 0 computed it
    point = from_intercept_optimum(start, passes.design, information=True).point
    assert point is not None
    coef, derived = point
    real = passes(coef, WITH_INFORMATION)
    counts = np.bincount(np.searchsorted(np.unique(y), y))
    assert derived.loglik == pytest.approx(float(np.sum(counts * np.log(counts / counts.sum()))), rel=1e-13)
    assert derived.loglik == pytest.approx(real.loglik, rel=1e-13)
    np.testing.assert_allclose(derived.score, real.score, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(derived.full_information(), real.full_information(), rtol=1e-9, atol=1e-9)

    plain = dmlr.fit(x, y, method="newton")
    from_zero = dmlr.fit(x, y, method="newton", offset=np.zeros((len(y), 3)))
    assert plain.history[0]["loglik"] == pytest.approx(plain.llnull, rel=1e-12)
    assert plain.llf == pytest.approx(from_zero.llf, rel=1e-12)
    np.testing.assert_allclose(plain.coef, from_zero.coef, atol=1e-5)  # both stopped at max |score| / n <= 1e-8


@pytest.mark.parametrize("k", [2, 3, 6])
def test_bohning_loglik_never_decreases(k):
    x, y, _ = draw_problem(1500, 4, k, seed=k)
    res = dmlr.fit(x, y, method="bohning", max_iter=5000)
    assert res.converged
    ll = np.array([r["loglik"] for r in res.history if r["kind"] in ("start", "bohning")])
    assert len(ll) > 10
    # monotone up to the rounding of a sum of 1500 terms
    assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[:-1]))
    # one score pass per bound iteration, plus the final information pass
    assert res.n_passes == res.n_iter + 2


def test_newton_costs_one_pass_per_iteration_and_records_history():
    x, y, _ = draw_problem(2000, 3, 3, seed=11)
    res = dmlr.fit(x, y, method="newton")
    kinds = [r["kind"] for r in res.history]
    assert kinds[0] == "start" and set(kinds[1:]) == {"newton"}
    assert [r["passes"] for r in res.history] == list(range(1, res.n_iter + 2))
    assert all(r["step_size"] == 1.0 for r in res.history[1:])
    assert res.history[-1]["max_abs_score"] / res.nobs <= 1e-8 or "decrement" in res.message


def test_max_iter_reached_warns_and_reports_not_converged():
    x, y, _ = draw_problem(1500, 4, 5, seed=2)
    with pytest.warns(dmlr.ConvergenceWarning, match="max_iter"):
        res = dmlr.fit(x, y, method="bohning", max_iter=3)
    assert not res.converged
    assert res.n_iter == 3
    assert np.all(np.isfinite(res.coef))


def test_inference_false_skips_the_information_and_says_why():
    x, y, _ = draw_problem(1500, 4, 3, seed=5)
    res = dmlr.fit(x, y, method="bohning", inference=False, max_iter=2000)
    assert res.history[-1]["kind"] == "bohning"
    with pytest.raises(dmlr.InferenceUnavailableError, match="inference=False"):
        _ = res.bse
    with pytest.raises(dmlr.InferenceUnavailableError):
        res.cov_params()
    assert "not computed" in res.summary()


@pytest.mark.parametrize("l2", [0.0, 2.5])
def test_frequency_preconditioner_inverts_the_dense_kronecker_matrix(l2):
    from dmlr.steps import Objective
    from dmlr.steps.kronecker import FrequencySolver

    rng = np.random.default_rng(4)
    d, k = 5, 4
    x = np.column_stack([np.ones(200), rng.normal(size=(200, d - 1))])
    gram = x.T @ x
    counts = np.array([50.0, 30.0, 70.0, 50.0])
    mask = np.r_[0.0, np.ones(d - 1)]
    solver = FrequencySolver(gram, counts, Objective(l2, mask))
    pi = counts[1:] / counts.sum()
    dense = np.kron(np.diag(pi) - np.outer(pi, pi), gram) + l2 * np.diag(np.tile(mask, k - 1))
    s = rng.normal(size=(d, k - 1))
    expected = np.linalg.solve(dense, s.ravel(order="F")).reshape(k - 1, d).T  # class-major flattening
    np.testing.assert_allclose(solver.solve(s), expected, rtol=1e-10, atol=1e-12)
    again = FrequencySolver.from_factors(gram, counts, Objective(l2, mask), solver.factors())
    np.testing.assert_array_equal(again.solve(s), solver.solve(s))


def test_lbfgs_preconditioned_by_a_sampled_information_reaches_newtons_optimum_in_fewer_passes():
    from dmlr.data.design import build_design, rows_of
    from dmlr.driver import LoopSettings, optimize
    from dmlr.fitting.evaluator import FitPasses
    from dmlr.steps import RULES, Objective, RuleContext, make_rule

    x, y, _ = draw_problem(40_000, 12, 6, seed=8)
    design = build_design(rows_of(x, 10_000), rows_of(y, 10_000), classes=np.unique(y))
    objective = Objective(0.0, np.r_[0.0, np.ones(12)])
    fits = {}
    for every in (0, 4):
        rule = make_rule("lbfgs", RuleContext(objective, 6, settings={"refresh_every": every}))
        settings = LoopSettings(objective, tol=1e-8, max_iter=500, inference=True, class_labels=list(range(6)))
        fits[every] = optimize(FitPasses.over(design), rule, settings, first_request=RULES["lbfgs"].first_request)
    newton = dmlr.fit(x, y, method="newton")
    for outcome in fits.values():
        assert outcome.converged
        assert outcome.final.stats.loglik == pytest.approx(newton.llf, rel=1e-11)
        # the covariance comes from an exact information (the estimate only preconditions)
        assert outcome.final.stats.information_weight == pytest.approx(40_000)
    passes = {every: outcome.history[-1]["passes"] for every, outcome in fits.items()}
    assert passes[4] < passes[0], passes
