"""Standard errors of predicted probabilities against the delta method done by central finite differences of
``predict_proba`` with respect to the coefficients (an independent computation)."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest

import dmlr
from tests.problems import ANES_FEATURES, anes96

FEATURES = ANES_FEATURES


@pytest.fixture(scope="module")
def anes():
    d = anes96()
    return d, dmlr.fit(d[FEATURES], d.PID.astype(int), tol=1e-12)


def _finite_difference_se(res, x, cov, h=1e-6):
    theta = res.coef.ravel(order="F")
    jac = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        up = dataclasses.replace(res, coef=(theta + step).reshape(res.coef.shape, order="F")).predict_proba(x)
        down = dataclasses.replace(res, coef=(theta - step).reshape(res.coef.shape, order="F")).predict_proba(x)
        jac.append((np.asarray(up) - np.asarray(down)) / (2 * h))
    j = np.stack(jac, axis=2)  # (n, K, md)
    return np.sqrt(np.einsum("nki,ij,nkj->nk", j, cov, j)), j


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1"])
def test_prediction_standard_errors_equal_finite_differences(anes, cov_type):
    d, res = anes
    if cov_type != "nonrobust":
        res = dmlr.fit(d[FEATURES], d.PID.astype(int), tol=1e-12, cov_type=cov_type)
    x = d[FEATURES].to_numpy()[::37]
    pred = res.get_prediction(x)
    fd, jac = _finite_difference_se(res, x, res.cov_params().to_numpy())
    np.testing.assert_allclose(pred.predicted, res.predict_proba(x), rtol=1e-14)
    np.testing.assert_allclose(pred.se, fd, rtol=1e-6)
    frame = res.get_prediction(d[FEATURES].iloc[::37]).summary_frame(alpha=0.1)
    assert frame.shape == (len(x), 7 * 4) and list(frame.index) == list(d.index[::37])
    np.testing.assert_allclose(frame[(3, "se")].to_numpy(), fd[:, 3], rtol=1e-6)
    lazy = res.get_prediction(da.from_array(x, chunks=(7, 5)))
    assert isinstance(lazy.se, da.Array)
    np.testing.assert_allclose(lazy.se.compute(), pred.se, rtol=1e-12)
    # average predicted probabilities: the mean of the rows' gradients
    avg = res.get_prediction(x, average=True)
    grad = jac.mean(axis=0)
    np.testing.assert_allclose(avg.predicted, np.asarray(res.predict_proba(x)).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(avg.se, np.sqrt(np.einsum("ki,ij,kj->k", grad, res.cov_params().to_numpy(), grad)),
                               rtol=1e-6)  # fmt: skip
    lazy_avg = res.get_prediction(da.from_array(x, chunks=(7, 5)), average=True)
    np.testing.assert_allclose(lazy_avg.se, avg.se, rtol=1e-12)
