"""Many models per pass: folds as functions of the row, cross-validation and fit_many against fits of their own
(statsmodels and dmlr.fit on the rows and columns each model uses), scikit-learn's scores, and the passes shared."""

from __future__ import annotations

import dataclasses
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.metrics import accuracy_score, log_loss

import dmlr
from dmlr.errors import InputError, PerfectSeparationError
from tests.problems import draw_problem


def test_folds_are_functions_of_the_row_index_and_seed():
    """The fold of a row does not change when rows are appended; folds cover 0..k-1 about equally; seeds differ."""
    folds = dmlr.fold_ids(100_000, folds=5, seed=7)
    np.testing.assert_array_equal(dmlr.fold_ids(40_000, folds=5, seed=7), folds[:40_000])
    counts = np.bincount(folds, minlength=5)
    assert counts.sum() == 100_000 and np.all(np.abs(counts - 20_000) < 5 * np.sqrt(20_000 * 0.8 * 0.2))
    other = dmlr.fold_ids(100_000, folds=5, seed=8)
    assert 0.15 < np.mean(other == folds) < 0.25  # independent assignments agree on ~1/5 of the rows
    # a contingency of adjacent rows' folds is uniform (no serial pattern): chi-square with 24 df
    table = np.zeros((5, 5))
    np.add.at(table, (folds[:-1], folds[1:]), 1)
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    assert ((table - expected) ** 2 / expected).sum() < 55  # p ~ 3e-4 under independence
    with pytest.raises(InputError, match="folds must be an integer >= 2"):
        dmlr.fold_ids(10, folds=1)
    with pytest.raises(InputError, match="more than the 3 rows"):
        dmlr.fold_ids(3, folds=4)


@pytest.fixture(scope="module")
def problem():
    x, y, _ = draw_problem(3000, 3, 3, seed=25)
    return x, y


def _alone(x, y, l2, rows):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # each reference fit converges cleanly
        return dmlr.fit(x[rows], y[rows], l2=l2, method="newton")


def test_each_fold_model_is_the_fit_of_its_training_rows_and_scores_its_held_out_rows(problem):
    x, y = problem
    cv = dmlr.cross_validate(x, y, folds=4, l2=[0.0, 30.0], seed=3, method="newton", fold_inference=True)
    folds = dmlr.fold_ids(len(y), 4, 3)
    np.testing.assert_array_equal(cv.folds, folds)
    assert list(cv.scores.columns) == ["l2", "fold", "n_train", "n_test", "log_loss", "accuracy", "brier"]
    most = 0
    for row in cv.scores.itertuples():
        train, test = folds != row.fold, folds == row.fold
        alone = _alone(x, y, row.l2, train)
        res = cv.results(row.l2, row.fold)
        np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.bse.values, alone.bse.values, rtol=0, atol=1e-6)
        assert res.nobs == res.n_rows == row.n_train == train.sum() and row.n_test == test.sum()
        proba = alone.predict_proba(x[test])
        assert row.log_loss == pytest.approx(log_loss(y[test], proba, labels=[0, 1, 2]), abs=1e-12)
        assert row.accuracy == pytest.approx(accuracy_score(y[test], proba.argmax(axis=1)), abs=1e-12)
        brier = np.mean(((proba - np.eye(3)[y[test]]) ** 2).sum(axis=1))
        assert row.brier == pytest.approx(brier, abs=1e-12)
        most = max(most, alone.n_passes)
    assert cv.n_passes <= most + 2  # 8 fold models and 2 refits share every pass
    summary = cv.summary_frame()
    means = cv.scores.groupby("l2")["log_loss"].mean()
    np.testing.assert_allclose(summary["log_loss"].to_numpy(), means.to_numpy(), rtol=1e-15)
    ses = cv.scores.groupby("l2")["log_loss"].std(ddof=1) / 2.0
    np.testing.assert_allclose(summary["log_loss_se"].to_numpy(), ses.to_numpy(), rtol=1e-12)
    assert cv.best_l2 == float(means.idxmin())
    refit = _alone(x, y, cv.best_l2, slice(None))
    np.testing.assert_allclose(cv.refit.params.values, refit.params.values, rtol=0, atol=1e-8)
    assert cv.refit.fitted_data is x  # the fit of every row keeps its data, as dmlr.fit's: bootstrap() needs none


def test_fold_models_started_at_the_fit_of_every_row_are_the_fits_of_their_training_rows(problem):
    """The default: the fits of every row first, each fold model from its penalty's with the fold's information
    there (quasi-Newton, every fold model in the same passes). Each equals dmlr.fit's Newton on its training rows;
    its held-out scores are those of its own coefficients (scikit-learn, to rounding) and so those of the fit alone
    to the coefficients' agreement; weighted rows weigh the likelihoods and the scores."""
    x, y = problem
    cv = dmlr.cross_validate(x, y, folds=4, l2=[0.0, 30.0], seed=3)
    folds = dmlr.fold_ids(len(y), 4, 3)
    iterations = []
    for row in cv.scores.itertuples():
        train, test = folds != row.fold, folds == row.fold
        alone = _alone(x, y, row.l2, train)
        res = cv.results(row.l2, row.fold)
        np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)
        assert res.llf == pytest.approx(alone.llf, rel=1e-10) and res.llnull == pytest.approx(alone.llnull, rel=1e-12)
        assert res.nobs == res.n_rows == row.n_train == train.sum() and row.n_test == test.sum() and res.converged
        own = res.predict_proba(x[test])
        assert row.log_loss == pytest.approx(log_loss(y[test], own, labels=[0, 1, 2]), rel=1e-12)
        assert row.accuracy == pytest.approx(accuracy_score(y[test], own.argmax(axis=1)), abs=1e-12)
        brier = np.mean(((own - np.eye(3)[y[test]]) ** 2).sum(axis=1))
        assert row.brier == pytest.approx(brier, rel=1e-12)
        assert row.log_loss == pytest.approx(log_loss(y[test], alone.predict_proba(x[test])), rel=1e-8)
        iterations.append(res.n_iter)
    for v in (0.0, 30.0):  # the fits of every row are the refits (whichever penalty is best)
        full = _alone(x, y, v, slice(None))
        np.testing.assert_allclose(cv.refits[v].params.values, full.params.values, rtol=0, atol=1e-8)
        np.testing.assert_allclose(cv.refits[v].bse.values, full.bse.values, rtol=0, atol=1e-8)
    full = max(r.n_passes for r in cv.refits.values())  # fold models' first passes alongside the fits' last ones
    assert full < cv.n_passes < full + max(iterations)
    w = np.random.default_rng(2).integers(1, 4, len(y)).astype(float)
    weighted = dmlr.cross_validate(x, y, weights=w, folds=3, seed=5, l2=[1.0], refit=False)
    fold = dmlr.fold_ids(len(y), 3, 5)
    train, test = fold != 2, fold == 2
    alone = dmlr.fit(x[train], y[train], weights=w[train], l2=1.0, method="newton")
    res = weighted.results(1.0, 2)
    np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)
    assert res.nobs == pytest.approx(w[train].sum(), rel=1e-14) and weighted.refit is None
    expected = log_loss(y[test], res.predict_proba(x[test]), sample_weight=w[test])
    assert weighted.scores.log_loss[2] == pytest.approx(expected, rel=1e-12)


def test_penalties_near_the_lead_start_their_fold_models_from_its_fit_and_the_best_is_refitted_warm(problem):
    """Penalties within LEAD_DISTANCE of the median's (here 0.2: the W = 0 information's smallest diagonal entry is
    ~657) make no fit of every row of their own: one fit leads, every fold model starts from it; the refit at the
    best penalty starts at the lead's. Every model still equals dmlr.fit's Newton on its rows."""
    x, y = problem
    l2s = [0.0, 0.2, 0.6]
    cv = dmlr.cross_validate(x, y, folds=4, l2=l2s, seed=3)
    folds = dmlr.fold_ids(len(y), 4, 3)
    for row in cv.scores.itertuples():
        alone = _alone(x, y, row.l2, folds != row.fold)
        res = cv.results(row.l2, row.fold)
        np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)
        assert res.l2 == row.l2 and res.converged
        assert row.log_loss == pytest.approx(log_loss(y[folds == row.fold], alone.predict_proba(x[folds == row.fold])))
    assert set(cv.refits) == {0.2, cv.best_l2}  # the lead's fit and the best's
    refit = _alone(x, y, cv.best_l2, slice(None))
    np.testing.assert_allclose(cv.refit.params.values, refit.params.values, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cv.refit.bse.values, refit.bse.values, rtol=0, atol=1e-8)
    lead_only = dmlr.cross_validate(x, y, folds=4, l2=[0.2], seed=3, refit=False)
    three = dmlr.cross_validate(x, y, folds=4, l2=l2s, seed=3, refit=False)
    assert three.n_passes == lead_only.n_passes and not three.refits  # the penalties near the lead cost no pass
    pd.testing.assert_frame_equal(three.scores, cv.scores, check_exact=False, rtol=1e-10)


def test_without_a_penalty_a_design_with_dependent_columns_gets_its_own_fit_of_every_row(problem):
    """A fit without penalty drops a dependent column that a penalty keeps: the zero penalty's fold models cannot
    start from the lead's fit (penalized, every column), so the zero penalty's own fit goes on after the first
    pass and its fold models equal dmlr.fit's with the column dropped."""
    x, y = problem
    wide = np.column_stack([x, x[:, 0] + 2.0 * x[:, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped column
        cv = dmlr.cross_validate(wide, y, folds=3, l2=[0.0, 0.2], seed=1, collinear="drop", refit=False)
        folds = dmlr.fold_ids(len(y), 3, 1)
        for row in cv.scores.itertuples():
            rows = folds != row.fold
            alone = dmlr.fit(wide[rows], y[rows], l2=row.l2, method="newton", collinear="drop")
            res = cv.results(row.l2, row.fold)
            assert list(res.params.index) == list(alone.params.index)
            assert len(res.params) == (4 if row.l2 == 0 else 5)
            np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)


def test_fold_models_that_stop_at_their_first_evaluation_are_scored_at_their_coefficients(problem):
    """A fold model's first evaluation (one step from the fit of every row) computes no held-out sums; with a loose
    tol every fold model stops there, and one more evaluation at the same coefficients scores its held-out rows."""
    x, y = problem
    cv = dmlr.cross_validate(x, y, folds=3, l2=[1.0], seed=2, tol=1e-2, refit=False)
    folds = dmlr.fold_ids(len(y), 3, 2)
    for row in cv.scores.itertuples():
        res, test = cv.results(1.0, row.fold), folds == row.fold
        assert res.n_iter == 1 and res.converged
        own = res.predict_proba(x[test])
        assert row.log_loss == pytest.approx(log_loss(y[test], own, labels=[0, 1, 2]), rel=1e-12)
        assert row.accuracy == pytest.approx(accuracy_score(y[test], own.argmax(axis=1)), abs=1e-12)


def test_the_bootstrap_of_a_fit_of_named_arrays_finds_its_columns(problem):
    x, y = problem
    res = dmlr.fit(x, y, feature_names=["a", "b", "c"], method="newton")
    boot = res.bootstrap(nrep=3, seed=0)
    assert list(boot.bse.index) == ["const", "a", "b", "c"] and boot.params.shape == (3, 4, 2)
    with pytest.raises(InputError, match=r"the data lack the fit's columns \['a'\]"):
        res.bootstrap(pd.DataFrame(x, columns=["z", "b", "c"]), y, nrep=2)


@pytest.mark.cluster
def test_cross_validation_is_the_same_for_any_partitioning_in_memory_dask_or_store(problem, cluster_client, tmp_path):
    x, y = problem
    first = dmlr.cross_validate(x, y, folds=3, l2=[1.0], seed=1, refit=False)
    store = str(tmp_path / "cv.zarr")
    dmlr.stage_arrays(x, y, store, chunk_rows=700)
    runs = [dmlr.cross_validate(store, folds=3, l2=[1.0], seed=1, refit=False, client=cluster_client)]
    for parts in (1, 7, 40):
        rows = -(-len(y) // parts)
        xs, ys = da.from_array(x, chunks=(rows, 3)), da.from_array(y, chunks=rows)
        runs.append(dmlr.cross_validate(xs, ys, folds=3, l2=[1.0], seed=1, refit=False, client=cluster_client))
    for run in runs:
        pd.testing.assert_frame_equal(run.scores, first.scores, rtol=1e-12, atol=1e-12)
        for fold in range(3):
            np.testing.assert_allclose(
                run.results(1.0, fold).params.values, first.results(1.0, fold).params.values, rtol=0, atol=1e-12
            )
        assert run.refit is None


def _statsmodels(x, y, columns):
    exog = sm.add_constant(x[:, columns], has_constant="add")
    return sm.MNLogit(y, exog).fit(method="newton", tol=1e-12, maxiter=100, disp=0)


def test_fit_many_equals_each_model_fitted_alone_and_statsmodels(problem):
    x, y = problem
    names = ["a", "b", "c"]
    models = [{"features": ["a"]}, {"features": ["c", "a"]}, {}, {"l2": 20.0, "method": "bohning", "tol": 1e-8}]
    ms = dmlr.fit_many(x, y, models=models, feature_names=names, method="newton", tol=1e-12)
    assert len(ms) == 4
    table = ms.table()
    for i, (spec, res) in enumerate(zip(models, ms, strict=True)):
        features = [f for f in names if f in spec.get("features", names)]
        columns = [names.index(f) for f in features]
        options = {"method": "newton", "tol": 1e-12} | {k: v for k, v in spec.items() if k != "features"}
        alone = dmlr.fit(x[:, columns], y, feature_names=features, **options)
        np.testing.assert_allclose(res.params.values, alone.params.values, rtol=0, atol=1e-8)
        assert list(res.feature_names) == ["const", *features]
        if "l2" not in spec:  # unpenalized: statsmodels' MLE, its AIC and BIC
            ref = _statsmodels(x, y, columns)
            np.testing.assert_allclose(res.params.values, ref.params, rtol=0, atol=1e-7)
            assert table.loc[i, "llf"] == pytest.approx(ref.llf, rel=1e-12)
            assert table.loc[i, "aic"] == pytest.approx(ref.aic, rel=1e-12)
            assert table.loc[i, "bic"] == pytest.approx(ref.bic, rel=1e-12)
        assert table.loc[i, "features"] == ", ".join(features)
    test = ms.lr_test(0, 2)
    ref_small, ref_full = _statsmodels(x, y, [0]), _statsmodels(x, y, [0, 1, 2])
    assert test.statistic == pytest.approx(2 * (ref_full.llf - ref_small.llf), rel=1e-9) and test.df == 4
    assert ms.n_passes <= max(r.n_passes for r in ms) + 1


def test_fit_many_names_bad_models_and_stops_every_model_when_one_fails(problem):
    x, y = problem
    with pytest.raises(InputError, match=r"model 1 names columns the data do not have: \['d'\]"):
        dmlr.fit_many(x, y, models=[{}, {"features": ["a", "d"]}], feature_names=["a", "b", "c"])
    with pytest.raises(InputError, match="base must be the same for every model"):
        dmlr.fit_many(x, y, models=[{"base": 1}])
    with pytest.raises(InputError, match="at least one model"):
        dmlr.fit_many(x, y, models=[])
    with pytest.raises(InputError, match="has no option 'l3'"):
        dmlr.fit_many(x, y, models=[{"l3": 1.0}])
    with pytest.raises(InputError, match="cov_type='cluster' is not available"):
        dmlr.cross_validate(x, y, groups=np.arange(len(y)) % 10)
    with pytest.raises(InputError, match="distinct penalties"):
        dmlr.cross_validate(x, y, l2=[1.0, 1.0])
    with pytest.raises(InputError, match="more than the 3000 rows"):
        dmlr.cross_validate(x, y, folds=3001)
    # one model's data are separated (and it was asked to raise): the other models stop, that error is raised
    separated = np.column_stack([x[:, :2], np.where(y == 2, 1.0, 0.0) * 10])
    with pytest.raises(PerfectSeparationError):
        dmlr.fit_many(
            separated, y, models=[{"features": ["a"]}, {"features": ["c"], "separation": "raise"}, {}],
            feature_names=["a", "b", "c"],
        )  # fmt: skip


def test_cross_validation_of_lazily_filtered_rows_uses_their_positions_after_the_filter(problem):
    """Rows filtered by a dask mask (chunk sizes unknown) are counted first; the folds are the filtered rows'
    positions, as for the same rows in memory."""
    x, y = problem
    keep = np.random.default_rng(5).random(len(y)) < 0.7
    mask = da.from_array(keep, chunks=1000)
    xs, ys = da.from_array(x, chunks=(1000, 3))[mask], da.from_array(y, chunks=1000)[mask]
    assert np.isnan(xs.chunks[0][0])
    lazy = dmlr.cross_validate(xs, ys, folds=3, l2=[2.0], seed=4, refit=False)
    eager = dmlr.cross_validate(x[keep], y[keep], folds=3, l2=[2.0], seed=4, refit=False)
    pd.testing.assert_frame_equal(lazy.scores, eager.scores, rtol=1e-12, atol=1e-12)
    assert lazy.n_rows == keep.sum()


def test_bootstrap_replicates_are_weighted_fits_and_their_spread_matches_the_analytic_errors():
    """n 50k, K 4, d 6, nrep 400: a replicate equals dmlr.fit with its Poisson weights; every bootstrap SE is within
    0.9-1.1 of the model-based one, the cluster bootstrap's within 0.85-1.15 of the cluster-robust one (200
    clusters); the weights do not depend on the partitioning."""
    from dmlr.data.rows import Rows
    from dmlr.models.weightings import PoissonReplicates

    x, y, _ = draw_problem(50_000, 5, 4, seed=3, scale=0.5)
    res = dmlr.fit(x, y, method="newton")
    boot = res.bootstrap(nrep=400, seed=1, tol=1e-11)
    assert boot.params.shape == (400, 6, 3) and boot.converged.all()
    ratio = boot.bse.to_numpy() / res.bse.to_numpy()
    assert ratio.min() > 0.9 and ratio.max() < 1.1, ratio
    replicate = PoissonReplicates(1, (7,))
    weights = replicate(Rows(x=x))[:, 0]
    halves = np.concatenate([replicate(Rows(x=x[:20_000])), replicate(Rows(x=x[20_000:], row_start=20_000))])[:, 0]
    np.testing.assert_array_equal(weights, halves)
    assert abs(weights.mean() - 1) < 0.02 and abs(weights.var() - 1) < 0.03  # Poisson(1)
    replicate = dmlr.fit(x, y, weights=weights, method="newton", tol=1e-12)
    np.testing.assert_allclose(boot.params[7], replicate.params.to_numpy(), rtol=0, atol=1e-8)
    one = res.bootstrap(nrep=400, seed=1, steps=1)  # the one-step bootstrap: one pass, the same spread
    one_ratio = one.bse.to_numpy() / res.bse.to_numpy()
    assert one.n_passes == 1 and one_ratio.min() > 0.9 and one_ratio.max() < 1.1, one_ratio
    gap = (one.params - boot.params) / res.bse.to_numpy()  # O(1/n) against a spread of O(1/sqrt(n)): in SEs
    assert np.sqrt(np.mean(gap**2)) < 0.05 and np.abs(gap).max() < 0.3, (np.sqrt(np.mean(gap**2)), np.abs(gap).max())
    percentile = boot.conf_int(method="percentile")
    np.testing.assert_allclose(percentile["lower"].to_numpy(), np.quantile(boot.params, 0.025, axis=0).ravel(order="F"))
    groups = np.arange(len(y)) % 200
    clustered = dmlr.fit(x, y, method="newton", groups=groups)
    cboot = clustered.bootstrap(nrep=400, kind="cluster", groups=groups, seed=2)
    cratio = cboot.bse.to_numpy() / clustered.bse.to_numpy()
    assert cratio.min() > 0.85 and cratio.max() < 1.15, cratio
    with pytest.raises(InputError, match="nrep must be an integer >= 2"):
        res.bootstrap(nrep=1)
    with pytest.raises(InputError, match="kind='cluster' needs groups"):
        res.bootstrap(nrep=2, kind="cluster")
    with pytest.raises(InputError, match="groups has 1 distinct id"):
        res.bootstrap(nrep=2, kind="cluster", groups=np.zeros(len(y)))


def test_what_a_worker_unpickles_for_many_models_imports_neither_scipy_stats_nor_the_api(tmp_path):
    """The kernels of banks, folds and replicates, pickled as the engine ships them, unpickle in a fresh interpreter
    without SciPy's stats, pandas or the driver's modules (measured: 140-170 MB of RSS per worker when they did).
    The Poisson(1) table, computed without SciPy, is SciPy's quantile function."""
    import pickle
    import subprocess
    import sys

    from scipy import stats

    from dmlr.models.bank import BankKernel, FoldSplitKernel, Idle, Weighted
    from dmlr.models.weightings import _POISSON_TABLE, FoldStack, FoldWeighting, PoissonReplicates
    from dmlr.oracle.kernels import StatisticsKernel
    from dmlr.oracle.replicates import DepartureKernel, ReplicateScoreKernel
    from dmlr.oracle.stacked import StackedScoreKernel
    from dmlr.oracle.statistics import WITH_INFORMATION

    coef = np.zeros((4, 2))
    kernels = BankKernel((
        Idle(),
        FoldSplitKernel(StatisticsKernel(coef, WITH_INFORMATION, True), 5, 0),
        Weighted(StatisticsKernel(coef, WITH_INFORMATION, True), FoldWeighting(1, 5, 0)),
        StackedScoreKernel(np.zeros((3, 4, 2)), True, FoldStack((0, 1, 2), 5, 0), held_out=True),
        ReplicateScoreKernel(coef, True, PoissonReplicates(0, (0, 1))),
        DepartureKernel(coef, np.zeros((2, 4, 2)), True, PoissonReplicates(0, (0, 1))),
    ))  # fmt: skip
    (tmp_path / "kernels.pkl").write_bytes(pickle.dumps(kernels))
    code = (
        f"import sys, pickle; pickle.loads(open({str(tmp_path / 'kernels.pkl')!r}, 'rb').read()); "
        "print(sorted(m for m in ('scipy.stats', 'pandas', 'dmlr.api', 'dmlr.fitting', 'dmlr.models.bootstrap', "
        "'dmlr.models.fold_models') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    u = (np.arange(2**16) + 0.5) / 2**16
    np.testing.assert_array_equal(_POISSON_TABLE, stats.poisson.ppf(u, 1.0))


def test_bootstrap_replicates_converge_on_a_large_sample_without_a_pass_to_confirm_it(monkeypatch):
    """n 1M: the fixed information contracts each replicate's gradient by ~1e-2 a step, so after the second step the
    gradient it leaves is predicted below tol / 10 and no third step's pass is made (3 passes, not 4); every
    replicate's gradient at its coefficients, computed here from its Poisson weights with NumPy, is below tol. With
    tol 1e-7 the later passes sum the departures in single precision (their rounding stays under tol / 10), and the
    gradients are below that tol too."""
    from dmlr.data.rows import Rows
    from dmlr.models.weightings import PoissonReplicates
    from dmlr.oracle import replicates

    x, y, _ = draw_problem(1_000_000, 2, 3, seed=3, scale=0.5)
    res = dmlr.fit(x, y, method="newton")
    design = np.column_stack([np.ones(len(y)), x])
    weights = PoissonReplicates(1, tuple(range(10)))(Rows(x=x))

    def gradient_sizes(params):
        sizes = []
        for r in range(10):
            eta = np.column_stack([np.zeros(len(y)), design @ params[r]])
            prob = np.exp(eta - eta.max(axis=1, keepdims=True))
            prob /= prob.sum(axis=1, keepdims=True)
            resid = (y[:, None] == np.arange(1, 3)) - prob[:, 1:]
            gradient = design.T @ (weights[:, r : r + 1] * resid)
            sizes.append(np.abs(gradient).max() / weights[:, r].sum())
        return np.array(sizes)

    single = []
    original = replicates._Near.departures
    monkeypatch.setattr(replicates._Near, "departures", lambda *a: single.append(1) or original(*a))
    boot = res.bootstrap(nrep=10, seed=1, tol=1e-8)
    assert boot.converged.all() and boot.n_passes == 3 and not single
    assert gradient_sizes(boot.params).max() < 1e-8
    loose = res.bootstrap(nrep=10, seed=1, tol=1e-7)
    assert loose.converged.all() and single
    assert gradient_sizes(loose.params).max() < 1e-7


def test_a_bootstrap_resumes_from_its_checkpoint_and_ends_with_the_uninterrupted_replicates(problem, tmp_path):
    """Checkpoints after each pass: a run whose last checkpoint is lost resumes from the one before and ends with the
    same replicates; another bootstrap's checkpoints in the directory are not used."""
    x, y = problem
    res = dmlr.fit(x, y, method="newton")
    reference = res.bootstrap(nrep=8, seed=3, tol=1e-10)
    ckpt = tmp_path / "boot"
    full = res.bootstrap(nrep=8, seed=3, tol=1e-10, checkpoint=str(ckpt))
    np.testing.assert_array_equal(full.params, reference.params)
    files = sorted(ckpt.glob("iter-*"))
    assert len(files) == 2 and full.n_passes >= 3
    files[-1].unlink()  # the last pass's checkpoint never written: a crash during it
    resumed = res.bootstrap(nrep=8, seed=3, tol=1e-10, checkpoint=str(ckpt))
    np.testing.assert_allclose(resumed.params, reference.params, rtol=0, atol=1e-12)
    assert resumed.n_passes == full.n_passes and resumed.converged.all()
    other = res.bootstrap(nrep=8, seed=4, tol=1e-10, checkpoint=str(ckpt))  # another seed: starts anew
    np.testing.assert_array_equal(other.params, res.bootstrap(nrep=8, seed=4, tol=1e-10).params)


def test_the_one_step_bootstrap_is_the_fit_plus_the_inverse_hessian_times_each_replicates_score(problem):
    """steps=1: each replicate is b + (-H)^-1 sum_i w_ri s_i(b), with statsmodels' Hessian and per-row scores at the
    fit; steps=2 takes one more step from there (a weighted statsmodels score at the first step's coefficients)."""
    from dmlr.data.rows import Rows
    from dmlr.models.weightings import PoissonReplicates

    x, y = problem
    res = dmlr.fit(x, y, method="newton", tol=1e-12)
    model = sm.MNLogit(y, sm.add_constant(x))
    b = res.params.to_numpy().ravel(order="F")
    hessian, scores = model.hessian(b), model.score_obs(b)
    one = res.bootstrap(nrep=6, seed=4, steps=1)
    two = res.bootstrap(x, y, nrep=6, seed=4, steps=2)  # data given: the information from a pass
    assert one.steps == 1 and one.n_passes == 1 and two.n_passes == 3 and not one.converged.any()
    for r in (0, 5):
        w = PoissonReplicates(4, (r,))(Rows(x=x))[:, 0]
        first = b - np.linalg.solve(hessian, scores.T @ w)
        np.testing.assert_allclose(one.params[r].ravel(order="F"), first, rtol=0, atol=1e-10)
        second = first - np.linalg.solve(hessian, model.score_obs(first).T @ w)
        np.testing.assert_allclose(two.params[r].ravel(order="F"), second, rtol=0, atol=1e-10)
    with pytest.raises(InputError, match="steps must be None"):
        res.bootstrap(nrep=2, steps=0)
    with pytest.raises(InputError, match="tol must be a number > 0, got 0"):
        res.bootstrap(nrep=2, tol=0)


@pytest.mark.cluster
def test_the_commands_write_tables_plots_and_models(problem, tmp_path):
    """dmlr cv, dmlr compare and dmlr bootstrap on a store, as a user runs them (a local cluster each)."""
    import subprocess
    import sys

    x, y = problem
    store = str(tmp_path / "s.zarr")
    dmlr.stage_arrays(x, y, store, chunk_rows=1000, feature_names=["a", "b", "c"])

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "dmlr", *args, "--workers", "1"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    run("cv", store, "--folds", "3", "--l2", "0,50", "--seed", "2", "--out", str(tmp_path / "cv"), "--method", "newton")
    scores = pd.read_csv(tmp_path / "cv" / "scores.csv")
    folds = dmlr.fold_ids(len(y), 3, 2)
    for row in scores.itertuples():  # each score: the fit of the fold's training rows, scored by scikit-learn
        test = folds == row.fold
        proba = _alone(x, y, row.l2, ~test).predict_proba(x[test])
        assert row.log_loss == pytest.approx(log_loss(y[test], proba, labels=[0, 1, 2]), abs=1e-9)
        assert row.accuracy == pytest.approx(accuracy_score(y[test], proba.argmax(axis=1)), abs=1e-12)
    refit = dmlr.load(str(tmp_path / "cv" / "refit"))
    best = float(scores.groupby("l2")["log_loss"].mean().idxmin())
    np.testing.assert_allclose(refit.params.to_numpy(), _alone(x, y, best, slice(None)).params.to_numpy(), atol=1e-8)
    assert (tmp_path / "cv" / "cv.png").stat().st_size > 1000

    compare = ("compare", store, "--model", "a", "--model", "a,b", "--model", "all", "--out", str(tmp_path / "cmp"))
    done = run(*compare, "--checkpoint", str(tmp_path / "ck"))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["model-0", "model-1", "model-2"]
    again = run(*compare, "--checkpoint", str(tmp_path / "ck"))  # resumed from the checkpoints: the same table
    table = pd.read_csv(tmp_path / "cmp" / "table.csv", index_col=0)
    for i, columns in enumerate([[0], [0, 1], [0, 1, 2]]):
        assert table.loc[i, "llf"] == pytest.approx(_statsmodels(x, y, columns).llf, rel=1e-10)
    tests = pd.read_csv(tmp_path / "cmp" / "lr_tests.csv")
    assert list(tests["df"]) == [2, 2] and "model 0 vs 1: chi2(2)" in done.stdout and "model 0 vs 1" in again.stdout

    from dmlr.data.rows import Rows
    from dmlr.models.weightings import PoissonReplicates

    res = dmlr.fit(store, method="newton")
    dmlr.save(res, str(tmp_path / "fit"))
    run("bootstrap", str(tmp_path / "fit"), store, "--nrep", "20", "--seed", "4", "--out", str(tmp_path / "boot"))
    params = np.load(tmp_path / "boot" / "params.npy")
    assert params.shape == (20, 4, 2)
    weights = PoissonReplicates(4, (3,))(Rows(x=x))[:, 0]  # replicate 3: the fit of the rows so weighted
    weighted = dmlr.fit(x, y, weights=weights, method="newton", tol=1e-12)
    np.testing.assert_allclose(params[3], weighted.params.to_numpy(), rtol=0, atol=1e-6)
    bse = pd.read_csv(tmp_path / "boot" / "bse.csv", index_col=[0, 1])
    np.testing.assert_allclose(bse["boot_bse"].to_numpy(), params.std(axis=0, ddof=1).ravel(), rtol=1e-12)
    np.testing.assert_allclose(bse["bse"].to_numpy(), res.bse.stack().to_numpy(), rtol=1e-12)
    assert np.load(tmp_path / "boot" / "params.npy").shape == (20, 4, 2)
    assert (tmp_path / "boot" / "bootstrap.png").stat().st_size > 1000
    one = run("bootstrap", str(tmp_path / "fit"), store, "--nrep", "20", "--seed", "4", "--steps", "1", "--out",
              str(tmp_path / "boot1"))  # fmt: skip
    assert "20 replicates in 1 passes" in one.stderr  # the fit's own store: its covariance is the information
    gap = (np.load(tmp_path / "boot1" / "params.npy") - params) / res.bse.to_numpy()
    assert 0 < np.abs(gap).max() < 0.3
    with pytest.raises(AssertionError, match="already exists; pass --overwrite"):
        run("compare", store, "--model", "a", "--out", str(tmp_path / "cmp"))


@pytest.mark.cluster
def test_a_killed_cross_validation_resumes_and_ends_with_the_uninterrupted_results(tmp_path):
    """dmlr cv --checkpoint SIGKILLed (with its cluster) mid-run; the same command resumes every model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    x, y, _ = draw_problem(20_000, 3, 3, seed=31, scale=0.3)  # Böhning converges in ~30 iterations
    store = str(tmp_path / "s.zarr")
    dmlr.stage_arrays(x, y, store, chunk_rows=2500)
    options = ["--folds", "3", "--l2", "0,5", "--method", "bohning", "--tol", "1e-8"]
    reference = dmlr.cross_validate(store, folds=3, l2=[0.0, 5.0], method="bohning", tol=1e-8)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    command = [sys.executable, "-m", "dmlr", "cv", store, *options, "--checkpoint", str(ckpt), "--out", str(out)]
    proc = subprocess.Popen([*command, "--workers", "1"], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        files = [f for d in ckpt.glob("*") for f in d.glob("iter-*")]
        if len({f.parent for f in files}) == 2 and min(int(f.stem.split("-")[1]) for f in files) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "scores.csv").exists()
    done = subprocess.run([*command, "--workers", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv"), reference.scores, rtol=1e-10, atol=1e-12)
    refit = dmlr.load(str(out / "refit"))
    np.testing.assert_allclose(refit.params.to_numpy(), reference.refit.params.to_numpy(), rtol=0, atol=1e-10)


def test_a_bank_whose_working_models_left_makes_no_pass_for_the_idle_one():
    """The fold models' run waits idle in the bank while the fits of every row iterate; when the last fit leaves
    without posting (it converged, or was resumed converged from its checkpoint), the idle member alone made a pass
    that read nothing and counted no rows, which the engine's row check took for a lost partition (seen once, in a
    resumed cross-validation). No pass is made now, and the idle member carries on."""
    import threading
    import time

    from dmlr.data.design import RowData, rows_of
    from dmlr.models.bank import Bank, BankKernel, Idle
    from dmlr.passes.engine import PassEngine

    x, y, _ = draw_problem(1000, 3, 3, seed=5)
    engine = PassEngine(RowData(x=rows_of(x, 250), codes=rows_of(y.astype(np.int32), 250)))
    bank = Bank(engine, 2)
    got: dict = {}
    idle = threading.Thread(target=lambda: got.update(record=bank.reduce(1, BankKernel((Idle(),)))))
    idle.start()
    deadline = time.monotonic() + 10
    while 1 not in bank._posted and time.monotonic() < deadline:  # the idle member waits for member 0
        time.sleep(0.01)
    bank.leave(0)  # member 0 ends without posting
    idle.join(10)
    assert not idle.is_alive() and bank.failure is None, bank.failure
    assert engine.count == 0  # no pass over the data
    assert got["record"].records[0].values["rows"][0] == 0.0


def test_models_posting_the_same_kernel_in_a_pass_share_one_evaluation():
    """The fits of every row at several penalties all start at W = 0: their first passes are the same kernel, which
    a bank evaluates once, each model getting its own copy of the record (equal to the kernel's pass alone)."""
    import threading

    from dmlr.data.design import RowData, rows_of
    from dmlr.models.bank import Bank
    from dmlr.oracle.kernels import StatisticsKernel
    from dmlr.oracle.statistics import Request
    from dmlr.passes.engine import PassEngine

    x, y, _ = draw_problem(1000, 3, 3, seed=6)
    data = RowData(x=rows_of(x, 250), codes=rows_of(y.astype(np.int32), 250))
    engine = PassEngine(data)
    evaluated = []
    real = engine.reduce
    engine.reduce = lambda kernel, *a, **k: (evaluated.append(len(kernel.kernels)), real(kernel, *a, **k))[1]
    same = StatisticsKernel(np.zeros((4, 2)), Request(), True)
    other = StatisticsKernel(np.full((4, 2), 0.1), Request(), True)
    bank, got = Bank(engine, 3), {}
    posts = [
        threading.Thread(target=lambda i=i, k=k: got.update({i: bank.reduce(i, k)}))
        for i, k in enumerate([same, other, StatisticsKernel(np.zeros((4, 2)), Request(), True)])
    ]
    for thread in posts:
        thread.start()
    for thread in posts:
        thread.join(30)
    assert evaluated == [2] and bank.failure is None  # one pass, two distinct kernels
    for i, kernel in ((0, same), (1, other), (2, same)):
        alone = PassEngine(data).reduce(kernel)
        np.testing.assert_array_equal(got[i].score, alone.score)
        assert got[i].loglik == alone.loglik
    assert got[0] is not got[2] and got[0].score is not got[2].score


@pytest.mark.parametrize(
    ("l2", "stop"),
    [((0.0, 5.0), 2), ((0.0, 5.0), 3), ((0.0, 5.0), 5), ((0.0, 0.05, 0.2), 4), ((0.0, 0.05, 0.2), 7),
     ((0.0, 0.05, 0.2), 8)],
)  # fmt: skip
def test_a_cross_validation_of_the_default_method_stopped_after_any_pass_resumes_to_the_same_results(
    tmp_path, monkeypatch, l2, stop
):
    """The killed-run test above uses Böhning (slow enough to be killed mid-run from outside); with the default
    method (Newton here: 6 passes) the run is stopped inside, after ``stop`` passes of the bank, and resumed from its
    checkpoints: the held-out scores and the refit equal the uninterrupted run's (1e-10), the fold models'
    coefficients bit for bit. Their start is kept when they start, so a run stopped after it resumes them from the
    same start (the same steps); one stopped before finds the same start as the first run would have. Two fits of
    every row (l2 0 and 5: far apart) or one leading three near penalties, whose best (0.2) is refitted warm after
    the fold models (9 passes: stopped before the fold models start, after they stop, and during the refit)."""
    from dmlr.passes.engine import PassEngine

    x, y, _ = draw_problem(20_000, 3, 3, seed=31, scale=0.3)
    store = str(tmp_path / "s.zarr")
    dmlr.stage_arrays(x, y, store, chunk_rows=2500)
    options = {"folds": 3, "l2": list(l2), "tol": 1e-8}
    reference = dmlr.cross_validate(store, **options)
    real, calls = PassEngine.reduce, []

    def stopping(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > stop:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PassEngine, "reduce", stopping)
    with pytest.raises(KeyboardInterrupt):
        dmlr.cross_validate(store, checkpoint=str(tmp_path / "ckpt"), **options)
    monkeypatch.setattr(PassEngine, "reduce", real)
    resumed = dmlr.cross_validate(store, checkpoint=str(tmp_path / "ckpt"), **options)
    pd.testing.assert_frame_equal(resumed.scores, reference.scores, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(resumed.refit.params.to_numpy(), reference.refit.params.to_numpy(), rtol=0, atol=1e-10)
    for v in l2:
        for fold in range(3):
            got, want = resumed.results(v, fold).params.to_numpy(), reference.results(v, fold).params.to_numpy()
            np.testing.assert_array_equal(got, want)  # the same steps from the same start


@pytest.mark.cluster
def test_a_bank_too_large_for_its_workers_says_how_many_models_fit():
    """The memory check knows the bank's size: 200 Newton models of 255 parameters (an information record of
    0.5 MB each, kept per model) on a 400 MB worker; a bootstrap's score-only replicates are small and all fit."""
    import re

    from distributed import Client, LocalCluster

    from dmlr.errors import WorkerMemoryError

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(4000, 50)), rng.integers(0, 6, size=4000)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="400MB", dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        models = [{"l2": float(i + 1)} for i in range(200)]
        with pytest.raises(WorkerMemoryError, match=r"evaluates 200 models; at most (\d+) fit a worker") as info:
            dmlr.fit_many(x, y, models=models, method="newton", client=client)
        most = int(re.search(r"at most (\d+) fit", str(info.value)).group(1))
        assert 20 <= most < 200  # 2 x 0.5 MB of records per model within ~150 MB
        res = dmlr.fit(x[:, :3], y, method="newton")
        boot = res.bootstrap(x[:, :3], y, nrep=1000, client=client)  # 1000 score-only replicates: small records
        assert boot.converged.all()


def test_a_bad_value_is_named_by_its_row_in_a_bank(problem):
    """Fold models leave their zero-weight rows out of second-order passes, after the checks saw every row: a NaN
    in a row some models hold out is still named by its global position."""
    x, y = problem
    bad = x.copy()
    bad[1234, 1] = np.inf
    with pytest.raises(InputError, match=r"row 1234 \(row 234 of partition 1") as info:
        dmlr.cross_validate(da.from_array(bad, chunks=(1000, 3)), da.from_array(y, chunks=1000), folds=3)
    assert "inf" in str(info.value)


def test_fit_many_checkpoints_every_model_and_resumes_from_them(problem, tmp_path):
    """Each model writes its own checkpoints; the same call again resumes every model at its newest state (no
    iteration repeated) and gives the same results."""
    x, y = problem
    models = [{"features": ["a"]}, {"l2": 3.0}]
    first = dmlr.fit_many(x, y, models=models, feature_names=["a", "b", "c"], checkpoint=str(tmp_path / "ck"))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["model-0", "model-1"]
    again = dmlr.fit_many(x, y, models=models, feature_names=["a", "b", "c"], checkpoint=str(tmp_path / "ck"))
    assert again.n_passes < first.n_passes
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.params.to_numpy(), b.params.to_numpy())
        np.testing.assert_array_equal(a.bse.to_numpy(), b.bse.to_numpy())


def test_the_stacked_scores_of_many_models_equal_each_models_own_pass():
    """One GEMM each way for F models: each model's log-likelihood and score equal the statistics kernel's of its
    own weighted rows (intercept, offset, data weights, all classes present), to rounding."""
    from dmlr.data.rows import Rows
    from dmlr.models.bank import Weighted
    from dmlr.models.scores import HeldOutKernel
    from dmlr.models.weightings import FoldStack, FoldWeighting, PoissonReplicates
    from dmlr.oracle.kernels import StatisticsKernel
    from dmlr.oracle.stacked import HELD_SUMS, StackedScoreKernel
    from dmlr.oracle.statistics import Request

    x, y, _ = draw_problem(5000, 4, 4, seed=12)
    rng = np.random.default_rng(3)
    rows = Rows(x=x, codes=y.astype(np.int32), weights=rng.uniform(0.5, 2, 5000), offset=rng.normal(size=(5000, 3)),
                row_start=1000)  # fmt: skip
    coefs = rng.normal(scale=0.3, size=(7, 5, 3))
    replicates = PoissonReplicates(4, tuple(range(7)))
    weightings = [lambda rows, f=f: replicates(rows)[:, f] for f in range(7)]
    stacked = StackedScoreKernel(coefs, True, replicates)(rows)
    for f in range(7):
        own = Weighted(StatisticsKernel(coefs[f], Request(), True), weightings[f])(rows)
        assert stacked.loglik[f] == pytest.approx(own.loglik, rel=1e-12)
        np.testing.assert_allclose(stacked.score[f], own.score, rtol=1e-10, atol=1e-9)
        assert stacked.weight_sum[f] == pytest.approx(own.weight_sum, rel=1e-14)
    folds = FoldStack((0, 2, 1, 0, 2, 1, 0), 3, seed=9)  # held-out sums: the evaluation's, on each fold's rows
    held = StackedScoreKernel(coefs, True, folds, held_out=True)(rows)
    for f, fold in enumerate(folds.model_folds):
        sums = HeldOutKernel(coefs[f], True, None, FoldWeighting(fold, 3, 9, held_out=True))(rows).values
        expected = [sums[name][0] for name in HELD_SUMS]
        np.testing.assert_allclose(held.held[f], expected, rtol=1e-12)
        own = Weighted(StatisticsKernel(coefs[f], Request(), True), FoldWeighting(fold, 3, 9))(rows)
        assert held.loglik[f] == pytest.approx(own.loglik, rel=1e-12)
        np.testing.assert_allclose(held.score[f], own.score, rtol=1e-10, atol=1e-9)
        assert held.weight_sum[f] == pytest.approx(own.weight_sum, rel=1e-14)
    columns = StackedScoreKernel(coefs[:, :3], True, replicates, columns=(0, 2))(rows)
    own = Weighted(StatisticsKernel(coefs[2, :3], Request(), True, (0, 2)), weightings[2])(rows)
    np.testing.assert_allclose(columns.score[2], own.score, rtol=1e-10, atol=1e-9)


def test_the_departures_of_models_near_a_center_are_the_differences_of_their_own_passes():
    """The bootstrap's later passes take each model's departure from the center, sum_i w_if (p_if - p_i) x_i: the
    center's score under the model's weights minus the model's own, each from the statistics kernel of the weighted
    rows (intercept or not, offset, data weights). Near models (|z| < 0.05) in single precision, within
    SINGLE_ERROR of the departures' size (the bound the bootstrap's choice of precision rests on), also where a
    column sits far from 0 (year-like values: z is summed from centered columns, else 5e-5 of the departures were
    lost); farther ones (|z| ~ 1) in double precision; a block where some model is far (|z| > 30, where exp(z) would
    lose digits) from the stacked softmax."""
    from dmlr.data.rows import Rows
    from dmlr.models.bank import Weighted
    from dmlr.models.weightings import PoissonReplicates
    from dmlr.oracle.kernels import StatisticsKernel
    from dmlr.oracle.replicates import SINGLE_ERROR, DepartureKernel
    from dmlr.oracle.statistics import Request

    x, y, _ = draw_problem(5000, 4, 4, seed=13)
    rng = np.random.default_rng(4)
    rows = Rows(x=x, codes=y.astype(np.int32), weights=rng.uniform(0.5, 2, 5000), offset=rng.normal(size=(5000, 3)),
                row_start=300)  # fmt: skip
    replicates = PoissonReplicates(5, tuple(range(3, 9)))

    located = dataclasses.replace(rows, x=x + np.array([2000.0, 0.0, 0.0, 0.0]))  # the first column around 2000

    def score(data, coef, f, intercept):
        return Weighted(StatisticsKernel(coef, Request(), intercept), lambda r: replicates(r)[:, f])(data)

    cases = ((True, 1e-3, rows, SINGLE_ERROR), (False, 1e-3, rows, SINGLE_ERROR), (True, 1e-5, located, SINGLE_ERROR),
             (True, 0.05, rows, 1e-11), (True, 0.05, None, 1e-11))  # fmt: skip
    for intercept, spread, data, rtol in cases:
        d = 4 + intercept
        center = rng.normal(scale=0.5, size=(d, 3))
        coefs = center + rng.normal(scale=spread, size=(6, d, 3))
        if data is None:  # far: |z| up to ~45 on the rows with the largest x
            data, coefs[2, -1] = rows, coefs[2, -1] + 12.0
        if data is located:  # the same models of the located column: each intercept takes its shift
            center[0] -= 2000.0 * center[1]
            coefs[:, 0] -= 2000.0 * coefs[:, 1]
        departures = DepartureKernel(center, coefs, intercept, replicates)(data).sums
        for f in range(6):
            reference = score(data, center, f, intercept).score - score(data, coefs[f], f, intercept).score
            error = np.abs(departures[f] - reference).max() / np.abs(reference).max()
            assert error <= rtol, (intercept, spread, f, error)


def test_the_series_of_expm1_is_within_single_precision_where_the_departures_use_it():
    """The degree series_degree picks for |z| <= bound: the truncated series of expm1 is within float32's unit
    roundoff of expm1 (relative, over the whole interval, in double precision); None past the largest degree."""
    import math

    from dmlr.oracle.replicates import MAX_DEGREE, series_degree

    assert series_degree(0.0) == 2 and series_degree(0.05) == 4 and series_degree(1.0) is None
    for bound in (1e-4, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2):
        degree = series_degree(bound)
        assert degree is not None and degree <= MAX_DEGREE
        z = np.linspace(-bound, bound, 20001)
        z = z[z != 0]
        series = sum(z**k / math.factorial(k) for k in range(1, degree + 1))
        assert np.max(np.abs(series / np.expm1(z) - 1)) <= 2.0**-24, bound
        if degree > 2:  # and the degree below would not do
            lower = sum(z**k / math.factorial(k) for k in range(1, degree))
            assert np.max(np.abs(lower / np.expm1(z) - 1)) > 2.0**-25, bound


def test_a_fold_model_of_probability_weighted_rows_is_the_fit_of_its_rows(problem):
    """Probability weights: a fold model's nobs counts its training rows and its HC1 errors are those of dmlr.fit of
    those rows with their weights."""
    x, y = problem
    w = np.random.default_rng(6).uniform(0.2, 3.0, len(y))
    options = {"weights_type": "probability", "method": "newton"}
    cv = dmlr.cross_validate(x, y, weights=w, folds=3, seed=5, fold_inference=True, refit=False, **options)
    train = dmlr.fold_ids(len(y), 3, 5) != 1
    alone = dmlr.fit(x[train], y[train], weights=w[train], **options)
    res = cv.results(0.0, 1)
    assert res.cov_type == alone.cov_type == "HC1" and res.nobs == alone.nobs == train.sum()
    np.testing.assert_allclose(res.params.to_numpy(), alone.params.to_numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.bse.to_numpy(), alone.bse.to_numpy(), rtol=0, atol=1e-6)
