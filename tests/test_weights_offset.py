"""Frequency weights equal repeated rows; an offset X C shifts the coefficients by -C."""

from __future__ import annotations

import numpy as np
import pytest

import dmlr
from tests.problems import draw_problem


@pytest.mark.parametrize("method", ["newton", "bohning", "auto"])
def test_frequency_weights_equal_repeated_rows(method):
    x, y, _ = draw_problem(800, 3, 4, seed=21)
    w = np.random.default_rng(22).integers(0, 4, size=len(y))  # zero weights included
    weighted = dmlr.fit(x, y, weights=w.astype(float), method=method, max_iter=5000, tol=1e-10)
    repeated = dmlr.fit(np.repeat(x, w, axis=0), np.repeat(y, w), method="newton", tol=1e-10)
    np.testing.assert_allclose(weighted.coef, repeated.coef, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(weighted.bse.to_numpy(), repeated.bse.to_numpy(), rtol=1e-8)
    assert weighted.nobs == repeated.nobs == w.sum()
    assert weighted.llf == pytest.approx(repeated.llf, rel=1e-10)
    assert weighted.llnull == pytest.approx(repeated.llnull, rel=1e-12)
    assert weighted.bic == pytest.approx(repeated.bic, rel=1e-10)


@pytest.mark.parametrize("method", ["newton", "auto"])
@pytest.mark.parametrize("intercept", [True, False])
def test_offset_xc_shifts_params_by_minus_c(method, intercept):
    x, y, _ = draw_problem(1500, 3, 4, seed=31)
    design = np.column_stack([np.ones(len(x)), x]) if intercept else x
    c = np.random.default_rng(32).normal(scale=0.5, size=(design.shape[1], 3))
    plain = dmlr.fit(x, y, method="newton", fit_intercept=intercept, tol=1e-10)
    shifted = dmlr.fit(x, y, offset=design @ c, method=method, fit_intercept=intercept, tol=1e-10)
    np.testing.assert_allclose(shifted.coef, plain.coef - c, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(shifted.bse.to_numpy(), plain.bse.to_numpy(), rtol=1e-8)
    assert shifted.llf == pytest.approx(plain.llf, rel=1e-11)


def test_null_loglik_with_offset_fits_the_intercept_only_model():
    """With an offset the null model is const + offset, fitted over the data (not the closed form)."""
    x, y, _ = draw_problem(1200, 2, 3, seed=41)
    off = np.random.default_rng(42).normal(size=(len(y), 2))
    res = dmlr.fit(x, y, offset=off, method="newton")
    # reference: the same model with no features, fitted by dmlr's Newton on a zero-column design
    null = dmlr.fit(np.empty((len(y), 0)), y, offset=off, method="newton")
    assert res.llnull == pytest.approx(null.llf, rel=1e-10)
    assert res.llnull != pytest.approx(sum(c * np.log(c / len(y)) for c in np.bincount(y)), rel=1e-6)
