"""Results do not depend on how rows are partitioned or reduced, on a real LocalCluster with worker processes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import dmlr
from tests.problems import draw_problem

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def problem():
    x, y, _ = draw_problem(3000, 4, 4, seed=7)
    rng = np.random.default_rng(8)
    w = rng.integers(1, 4, size=len(y)).astype(float)
    o = rng.normal(scale=0.3, size=(len(y), 3))
    return x, y, w, o


@pytest.fixture(scope="module")
def reference(problem):
    x, y, w, o = problem
    return dmlr.fit(x, y, weights=w, offset=o, method="newton")


@pytest.mark.parametrize("n_parts", [1, 3, 7])
@pytest.mark.parametrize("split_every", [2, 8])
def test_params_independent_of_partitions_and_fan_in(cluster_client, problem, reference, n_parts, split_every):
    x, y, w, o = problem
    rows = -(-len(y) // n_parts)
    res = dmlr.fit(
        da.from_array(x, chunks=(rows, -1)),
        da.from_array(y, chunks=rows),
        weights=da.from_array(w, chunks=rows),
        offset=da.from_array(o, chunks=(rows, -1)),
        method="newton",
        split_every=split_every,
        client=cluster_client,
    )
    assert res.converged
    scale = np.max(np.abs(reference.coef))
    assert np.max(np.abs(res.coef - reference.coef)) <= 1e-10 * scale
    assert res.llf == pytest.approx(reference.llf, rel=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), reference.bse.to_numpy(), rtol=1e-9)


def test_misaligned_chunks_are_realigned(cluster_client, problem, reference):
    """y, weights and offset chunked differently from X are rechunked to X's partitions."""
    x, y, w, o = problem
    res = dmlr.fit(
        da.from_array(x, chunks=(500, -1)),
        da.from_array(y, chunks=777),
        weights=da.from_array(w, chunks=1234),
        offset=o,
        method="newton",
        client=cluster_client,
    )
    assert np.max(np.abs(res.coef - reference.coef)) <= 1e-10 * np.max(np.abs(reference.coef))


def test_numpy_input_on_cluster_and_lazy_prediction(cluster_client, problem, reference):
    x, y, w, o = problem
    res = dmlr.fit(x, y, weights=w, offset=o, method="newton", client=cluster_client)
    assert np.max(np.abs(res.coef - reference.coef)) <= 1e-10 * np.max(np.abs(reference.coef))
    lazy = res.predict_proba(da.from_array(x, chunks=(700, -1)), offset=o)
    assert isinstance(lazy, da.Array)
    assert lazy.chunks[0] == da.from_array(x, chunks=(700, -1)).chunks[0]
    eager = res.predict_proba(x, offset=o)
    np.testing.assert_allclose(cluster_client.compute(lazy).result(), eager, rtol=1e-14)
    labels = cluster_client.compute(res.predict(da.from_array(x, chunks=(700, -1)), o)).result()
    np.testing.assert_array_equal(labels, res.predict(x, o))
