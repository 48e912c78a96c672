"""Robust and cluster-robust covariances, probability weights: against statsmodels on two data sets it ships (anes96,
fair), against the dense sandwich formula, across partitions and clusters spanning them on a real LocalCluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import statsmodels.api as sm

import dmlr
from dmlr.errors import InputError
from tests.problems import anes96

ANES = ["logpopul", "selfLR", "educ", "income"]
FAIR = ["age", "yrs_married", "children", "religious", "educ"]


@pytest.fixture(scope="module")
def anes():
    d = anes96()
    return d, d[ANES], d.PID.astype(int)


@pytest.fixture(scope="module")
def fair():
    d = sm.datasets.fair.load_pandas().data
    return d, d[FAIR], d.rate_marriage.astype(int)


def _statsmodels(x, y, **kw):
    return sm.MNLogit(y, sm.add_constant(x)).fit(disp=0, method="newton", maxiter=100, **kw)


CASES = [
    ("anes", "HC0", None),
    ("anes", "cluster", "educ"),  # G = 7
    ("anes", "cluster", "age"),  # G = 70
    ("anes", "cluster", "popul"),  # G in the hundreds
    ("fair", "HC0", None),
    ("fair", "cluster", "occupation"),  # G = 6
    ("fair", "cluster", "affairs"),  # G = 77
    ("fair", "cluster", "occupation*occupation_husb*educ"),  # G = 172: cells of three existing columns
]


@pytest.mark.parametrize(("data", "cov", "column"), CASES)
def test_standard_errors_and_wald_tests_equal_statsmodels(request, data, cov, column):
    d, x, y = request.getfixturevalue(data)
    groups = None if column is None else d[column.split("*")].astype(int).astype(str).agg("-".join, axis=1).to_numpy()
    res = dmlr.fit(x, y, cov_type=cov, groups=groups, tol=1e-12)
    kw = {"cov_type": cov} | ({"cov_kwds": {"groups": np.unique(groups, return_inverse=True)[1]}} if column else {})
    ref = _statsmodels(x, y, **kw)
    np.testing.assert_allclose(res.coef, ref.params.to_numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-8)
    cov_ref = ref.cov_params().to_numpy()
    np.testing.assert_allclose(res.cov_params().to_numpy(), cov_ref, rtol=1e-8, atol=1e-9 * np.abs(cov_ref).max())
    if column:
        assert res.n_clusters == len(np.unique(groups)) and res.cov_type == "cluster"
    m = res.coef.shape[1]
    d_ = res.coef.shape[0]
    R = np.zeros((m, m * d_))
    R[np.arange(m), np.arange(m) * d_ + 2] = 1.0  # the third column is zero in every equation
    assert res.wald_test(R).statistic == pytest.approx(ref.wald_test(R, scalar=True).statistic, rel=1e-8)
    assert res.test_features([res.feature_names[2]]).statistic == pytest.approx(res.wald_test(R).statistic, rel=1e-12)


def test_hc1_is_stata_robust_and_the_stata_cluster_factor(anes):
    """Stata's factors against statsmodels' own covariances (statsmodels has HC0 and its cluster factor)."""
    d, x, y = anes
    hc1 = dmlr.fit(x, y, cov_type="HC1", tol=1e-12)
    n, k = len(y), hc1.n_params
    ref_hc0 = _statsmodels(x, y, cov_type="HC0").cov_params().to_numpy()
    np.testing.assert_allclose(hc1.cov_params().to_numpy(), ref_hc0 * n / (n - 1), rtol=1e-8, atol=1e-15)
    groups = np.unique(d.educ.to_numpy(), return_inverse=True)[1]
    ref_cluster = _statsmodels(x, y, cov_type="cluster", cov_kwds={"groups": groups}).cov_params().to_numpy()
    sm_factor = dmlr.fit(x, y, groups=d.educ.to_numpy(), tol=1e-12)  # groups alone: cov_type defaults to cluster
    stata = dmlr.fit(x, y, groups=d.educ.to_numpy(), cluster_correction="stata", tol=1e-12)
    scale = np.abs(ref_cluster).max()
    np.testing.assert_allclose(sm_factor.cov_params().to_numpy(), ref_cluster, rtol=1e-8, atol=1e-12 * scale)
    np.testing.assert_allclose(
        stata.cov_params().to_numpy(), ref_cluster * (n - k) / (n - 1), rtol=1e-8, atol=1e-12 * scale
    )
    text = str(stata.summary())
    assert "Covariance Type:" in text and "cluster" in text and "adjusted for 7 clusters (stata" in text


def _dense_sandwich(x, y, w, coef, power):
    """The sandwich from its definition, one observation at a time (the dense Kronecker formula)."""
    X = np.column_stack([np.ones(len(x)), x])
    classes = np.unique(y)
    eta = np.column_stack([np.zeros(len(x)), X @ coef])
    p = np.exp(eta - eta.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = (y[:, None] == classes[None, :]).astype(float) - p
    m, d = coef.shape[1], X.shape[1]
    info = np.zeros((m * d, m * d))
    meat = np.zeros((m * d, m * d))
    for i in range(len(x)):
        q = p[i, 1:]
        info += w[i] * np.kron(np.diag(q) - np.outer(q, q), np.outer(X[i], X[i]))
        s = np.kron(r[i, 1:], X[i])
        meat += w[i] ** power * np.outer(s, s)
    bread = np.linalg.inv(info)
    return bread @ meat @ bread


def test_probability_weights_follow_the_dense_formula_and_ignore_their_scale(fair):
    _, x, y = fair
    rng = np.random.default_rng(3)
    w = rng.uniform(0.2, 5.0, len(y))
    res = dmlr.fit(x, y, weights=w, weights_type="probability", tol=1e-12)
    assert res.cov_type == "HC1" and res.nobs == len(y) and res.weights_type == "probability"
    n = len(y)
    dense = _dense_sandwich(x.to_numpy(), y.to_numpy(), w, res.coef, power=2) * n / (n - 1)
    np.testing.assert_allclose(res.cov_params().to_numpy(), dense, rtol=1e-9, atol=1e-15)
    scaled = dmlr.fit(x, y, weights=w * 37.5, weights_type="probability", tol=1e-12)
    np.testing.assert_allclose(scaled.coef, res.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scaled.bse.to_numpy(), res.bse.to_numpy(), rtol=1e-10)
    assert "Log-Pseudolikelihood:" in str(res.summary())
    with pytest.raises(InputError, match="probability weights need a robust covariance"):
        dmlr.fit(x, y, weights=w, weights_type="probability", cov_type="nonrobust")
    small = dmlr.fit(x[FAIR[:3]], y, weights=w, weights_type="probability")
    with pytest.raises(InputError, match="not valid with probability weights"):
        dmlr.lr_test(small, res)


@pytest.mark.parametrize("cov", ["HC0", "HC1", "cluster"])
def test_frequency_weights_equal_repeated_rows_for_every_covariance(anes, cov):
    d, x, y = anes
    rng = np.random.default_rng(5)
    w = rng.integers(1, 4, len(y))
    groups = d.educ.to_numpy() if cov == "cluster" else None
    weighted = dmlr.fit(x, y, weights=w.astype(float), cov_type=cov, groups=groups, tol=1e-12)
    rows = np.repeat(np.arange(len(y)), w)
    repeated = dmlr.fit(
        x.iloc[rows], y.iloc[rows], cov_type=cov, groups=None if groups is None else groups[rows], tol=1e-12
    )
    assert weighted.nobs == repeated.nobs == w.sum()
    np.testing.assert_allclose(weighted.coef, repeated.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.bse.to_numpy(), repeated.bse.to_numpy(), rtol=1e-9)


@pytest.mark.cluster
def test_clusters_spanning_partitions_equal_the_one_partition_fit(cluster_client):
    rng = np.random.default_rng(11)
    n, G = 3000, 40
    x = rng.normal(size=(n, 3))
    groups = rng.integers(0, G, n)
    effect = rng.normal(size=(G, 2))[groups]
    eta = np.column_stack([np.zeros(n), x @ [0.5, -0.3, 0.2] + effect[:, 0], x @ [0.1, 0.4, 0.0] + effect[:, 1]])
    y = (rng.gumbel(size=(n, 3)) + eta).argmax(axis=1)
    order = rng.permutation(n)  # rows shuffled: every cluster spans partitions
    x, y, groups = x[order], y[order], groups[order]
    one = dmlr.fit(x, y, groups=groups, tol=1e-12)
    for parts in (1, 3, 7):
        rows = -(-n // parts)
        lazy_groups = da.from_array(groups, chunks=rows)
        res = dmlr.fit(
            da.from_array(x, chunks=(rows, 3)), da.from_array(y, chunks=rows), groups=lazy_groups,
            client=cluster_client, tol=1e-12, method="newton",
        )  # fmt: skip
        np.testing.assert_allclose(res.cov_params().to_numpy(), one.cov_params().to_numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(res.bse.to_numpy(), one.bse.to_numpy(), rtol=1e-12)
    # sorted by cluster: no cluster spans partitions and no exchange is needed; same matrix
    by = np.argsort(groups, kind="stable")
    from dmlr.passes.engine import PassEngine
    from dmlr.results.robust import group_meat

    def cluster_meat(design, coef, ids, client):
        """The meat's pass over the design's data with the group ids among them."""
        rows = design.rows.replace(groups=ids.rechunk((design.x.chunks[0],)))
        return group_meat(PassEngine(rows, client, transform=design.transform), coef, design.intercept)

    sorted_fit = dmlr.fit(x[by], y[by], groups=groups[by], tol=1e-12)
    np.testing.assert_allclose(sorted_fit.bse.to_numpy(), one.bse.to_numpy(), rtol=1e-9)
    design = dmlr.data.build_design(
        da.from_array(x, chunks=(500, 3)), da.from_array(y, chunks=500), classes=np.unique(y)
    )
    exchange = cluster_meat(design, one.coef, da.from_array(groups, chunks=500), cluster_client)
    assert exchange.path == "exchange" and exchange.n_groups == G
    sizes = np.bincount(groups, minlength=G)
    aligned = tuple(int(sizes[i : i + 8].sum()) for i in range(0, G, 8))  # chunk edges at cluster edges
    # then chunks that cut clusters (~75 rows each) in two, and chunks of 50 rows (a cluster spans up to 3)
    for chunks in (aligned, 500, 50):
        design = dmlr.data.build_design(
            da.from_array(x[by], chunks=(chunks, 3)), da.from_array(y[by], chunks=chunks), classes=np.unique(y)
        )
        local = cluster_meat(design, one.coef, da.from_array(groups[by], chunks=chunks), cluster_client)
        assert local.path == "local" and local.n_groups == G
        np.testing.assert_allclose(local.meat, exchange.meat, rtol=1e-12, atol=1e-12 * np.abs(local.meat).max())


def test_one_cluster_per_row_is_hc0_times_the_correction(anes):
    _, x, y = anes
    n = len(y)
    hc0 = dmlr.fit(x, y, cov_type="HC0", tol=1e-12)
    each = dmlr.fit(x, y, groups=np.arange(n), tol=1e-12)
    k = hc0.n_params
    factor = n / (n - 1) * (n - 1) / (n - k)
    np.testing.assert_allclose(each.cov_params().to_numpy(), hc0.cov_params().to_numpy() * factor, rtol=1e-10)


def test_bad_groups_and_options_are_named(anes):
    d, x, y = anes
    g = d.educ.to_numpy().astype(float)
    g[17] = np.nan
    with pytest.raises(InputError, match="groups has a missing value at row 17"):
        dmlr.fit(x, y, groups=g)
    with pytest.raises(InputError, match="1 distinct cluster id"):
        dmlr.fit(x, y, groups=np.zeros(len(y)))
    with pytest.raises(InputError, match=r"groups must have shape \(944,\)"):
        dmlr.fit(x, y, groups=np.zeros(10))
    with pytest.raises(InputError, match="cov_type must be one of"):
        dmlr.fit(x, y, cov_type="HC3")
    with pytest.raises(InputError, match="groups were given but cov_type is 'HC0'"):
        dmlr.fit(x, y, cov_type="HC0", groups=d.educ.to_numpy())
    with pytest.raises(InputError, match="cov_type='cluster' needs groups"):
        dmlr.fit(x, y, cov_type="cluster")
    with pytest.raises(InputError, match="weights_type='probability' needs weights"):
        dmlr.fit(x, y, weights_type="probability")


@pytest.mark.cluster
def test_a_store_staged_with_text_cluster_ids_fits_like_memory(tmp_path, anes):
    from click.testing import CliRunner

    from dmlr.cli import main

    d, x, y = anes
    frame = x.assign(PID=y, region=np.where(d.popul > 50, "city", np.where(d.popul > 5, "town", "rural")))
    frame.to_csv(tmp_path / "anes.csv", index=False)
    store = dmlr.stage(str(tmp_path / "anes.csv"), str(tmp_path / "s.zarr"), target="PID", features=ANES,
                       groups="region")  # fmt: skip
    assert store.metadata["n_groups"] == 3 and store.groups is not None
    source = store.metadata["source"]
    assert {k: source[k] for k in ("format", "paths", "sorted_by")} == {
        "format": "csv",
        "paths": [str(tmp_path / "anes.csv")],
        "sorted_by": "region",
    }
    assert source["columns"]["region"] == "text" and source["columns"]["PID"] == "number"
    ids = store.groups.compute()
    assert np.all(ids[1:] >= ids[:-1])
    memory = dmlr.fit(x, y, groups=frame.region.to_numpy(), tol=1e-12)
    done = CliRunner().invoke(main, ["fit", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r"), "--workers", "1",
                                     "--cov-type", "cluster", "--tol", "1e-12"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    res = dmlr.load(str(tmp_path / "r"))
    assert res.cov_type == "cluster" and res.n_clusters == 3 and res.cluster_correction == "statsmodels"
    np.testing.assert_allclose(res.bse.to_numpy(), memory.bse.to_numpy(), rtol=1e-9)
    plain = dmlr.stage(str(tmp_path / "anes.csv"), str(tmp_path / "plain.zarr"), target="PID", features=ANES)
    done = CliRunner().invoke(main, ["fit", plain.url, "--out", str(tmp_path / "r2"), "--cov-type", "cluster"])
    assert done.exit_code == 2 and "stage" in done.stderr and "--groups COL" in done.stderr


def test_the_estimator_passes_covariance_options_and_groups(anes):
    pytest.importorskip("sklearn")
    from dmlr import MultinomialLogit

    d, x, y = anes
    clf = MultinomialLogit(l2=0.0, cov_type="cluster", cluster_correction="stata", tol=1e-12)
    clf.fit(x, y, groups=d.educ.to_numpy())
    ref = dmlr.fit(x, y, groups=d.educ.to_numpy(), cluster_correction="stata", tol=1e-12)
    assert clf.results_.cov_type == "cluster" and clf.results_.n_clusters == 7
    np.testing.assert_allclose(clf.results_.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-10)


def test_the_sorted_meat_joins_partitions_across_gaps():
    """Persisted partitions are placed by worker, so a task's partitions need not follow each other: rows joined across
    gaps (``Rows.segments``) give the meat of the dense sum over groups, whatever the split into tasks."""
    from dmlr.data.rows import Rows
    from dmlr.oracle.groups import SortedGroupsKernel

    rng = np.random.default_rng(5)
    n, k = 3000, 3
    x = rng.normal(size=(n, 2))
    codes = rng.integers(0, k, size=n).astype(np.int32)
    groups = np.sort(rng.integers(0, 70, size=n))  # sorted: groups span partitions of 100 rows
    coef = rng.normal(scale=0.3, size=(3, k - 1))
    z = np.column_stack([np.ones(n), x])
    eta = np.column_stack([np.zeros(n), z @ coef])
    p = np.exp(eta - eta.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    resid = np.eye(k)[codes][:, 1:] - p[:, 1:]
    scores = (resid[:, :, None] * z[:, None, :]).reshape(n, -1)
    sums = np.array([scores[groups == g].sum(axis=0) for g in np.unique(groups)])
    dense = sums.T @ sums
    parts = [
        Rows(x=x[s : s + 100], codes=codes[s : s + 100], groups=groups[s : s + 100], partition=s // 100, row_start=s)
        for s in range(0, n, 100)
    ]
    kernel = SortedGroupsKernel(coef, True)
    for tasks in ([parts[0::2], parts[1::2]], [parts[:7], parts[7:13], parts[13:]], [parts[i::3] for i in range(3)]):
        records = [kernel(Rows.concat(task)) for task in tasks]  # each task's partitions joined into one call
        meat, g = sum(records[1:], records[0]).finish()
        assert g == np.unique(groups).size
        np.testing.assert_allclose(meat, dense, rtol=1e-12, atol=1e-12 * np.abs(dense).max())
