"""The ``dmlr`` command line end to end, as a user runs it, and the exact round trip of saved results."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr

import dmlr
from tests.test_store import _table

pytestmark = pytest.mark.cluster


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmlr", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    frame, _ = _table(3000, seed=11)
    for i in range(3):
        frame.iloc[i * 1000 : (i + 1) * 1000].to_csv(root / f"in{i}.csv", index=False)
    done = run(
        "stage", str(root / "in*.csv"), str(root / "s.zarr"), "--target", "choice", "--categorical", "region",
        "--weights", "w", "--chunk-rows", "800", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "classes:    bus" in done.stdout
    return root, frame


def test_staging_to_a_log_writes_no_progress_bar(staged, tmp_path):
    """dask's ``[####   ] 37%`` bar is for terminals: with stderr a pipe (a log file, a scheduler) staging writes
    its lines without it, even when progress is not turned off."""
    root, _ = staged
    done = run(
        "stage", str(root / "in0.csv"), str(tmp_path / "t.zarr"), "--target", "choice", "--categorical", "region"
    )
    assert done.returncode == 0, done.stderr
    assert "[#" not in done.stderr and "% Completed" not in done.stderr, done.stderr


def test_stage_fit_summary_predict_info(staged):
    root, frame = staged
    fitted = run("fit", str(root / "s.zarr"), "--out", str(root / "res"), "--workers", "2", "--method", "newton")
    assert fitted.returncode == 0, fitted.stderr
    assert "iter   1 newton" in fitted.stderr and "max|score|" in fitted.stderr
    assert "MNLogit Regression Results" in fitted.stdout and "choice=car" in fitted.stdout
    assert sorted(os.listdir(root / "res")) == [
        "COMPLETE", "coef.npy", "covariance.npy", "history.jsonl", "manifest.json", "refit.npz", "result.json",
        "summary.txt",
    ]  # fmt: skip

    res = dmlr.load(str(root / "res"))
    ref = dmlr.fit(str(root / "s.zarr"), method="newton")
    assert np.max(np.abs(res.coef - ref.coef)) <= 1e-10 * np.max(np.abs(ref.coef))
    assert res.data_info["store_checksum"] == dmlr.open_store(str(root / "s.zarr")).checksum

    summary = run("summary", str(root / "res"))
    assert summary.returncode == 0 and "region[T.north]" in summary.stdout

    info = run("info", str(root / "s.zarr"))
    assert info.returncode == 0 and "rows:       3,000" in info.stdout and "chunks:     4 of up to 800" in info.stdout

    new = frame.drop(columns=["choice", "w"]).iloc[:250]
    new.to_csv(root / "new.csv", index=False)
    out = run("predict", str(root / "res"), str(root / "new.csv"), "--out", str(root / "p.parquet"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    got = pd.read_parquet(root / "p.parquet")
    design = np.column_stack([new.age, new.income, new.region == "north", new.region == "south"]).astype(float)
    expected = ref.predict_proba(design)
    np.testing.assert_allclose(got[["p_bus", "p_car", "p_train"]].to_numpy(), expected, rtol=1e-9)
    assert list(got["label"]) == list(ref.predict(design))

    out = run("predict", str(root / "res"), str(root / "s.zarr"), "--out", str(root / "p.zarr"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    group = zarr.open_group(str(root / "p.zarr"), mode="r")
    assert group.attrs["classes"] == ["bus", "car", "train"]
    np.testing.assert_allclose(group["proba"][:], ref.predict_proba(dmlr.open_store(str(root / "s.zarr")).X).compute())


def test_exit_codes(staged, tmp_path):
    root, _ = staged
    missing = run("fit", str(tmp_path / "nowhere.zarr"), "--out", str(tmp_path / "r"))
    assert missing.returncode == 2 and "no dmlr store" in missing.stderr
    usage = run("fit", str(root / "s.zarr"))
    assert usage.returncode == 2 and "--out" in usage.stderr
    bad_base = run("fit", str(root / "s.zarr"), "--out", str(tmp_path / "r"), "--base", "plane", "--workers", "1")
    assert bad_base.returncode == 2 and "'plane' is not one of the class labels" in bad_base.stderr
    slow = run(
        "fit", str(root / "s.zarr"), "--out", str(tmp_path / "r"), "--method", "bohning", "--max-iter", "2",
        "--workers", "1",
    )  # fmt: skip
    assert slow.returncode == 3 and "did not converge" in slow.stderr
    assert not dmlr.load(str(tmp_path / "r")).converged  # the result is still written
    down = run(
        "fit", str(root / "s.zarr"), "--out", str(tmp_path / "r2"), "--scheduler", "tcp://127.0.0.1:9",
        env={"DMLR_CONNECT_TIMEOUT": "2"},  # dmlr waits 30 s by default
    )  # fmt: skip
    assert down.returncode == 4 and "within 2 s" in down.stderr, down.stderr


SCALARS = (
    "llf", "llnull", "nobs", "n_rows", "converged", "n_iter", "method", "base", "intercept", "has_constant", "l2",
    "dep_name", "message", "feature_names", "aic", "bic", "prsquared",
)  # fmt: skip


def test_load_round_trips_every_field_exactly(tmp_path):
    frame, design = _table(1500, seed=12)
    for inference in (True, False):
        res = dmlr.fit(design, frame.choice.to_numpy(), weights=frame.w.to_numpy(), method="bohning",
                       inference=inference, max_iter=2000)  # fmt: skip
        dmlr.save(res, str(tmp_path / f"r{inference}"))
        back = dmlr.load(str(tmp_path / f"r{inference}"))
        assert np.array_equal(back.coef, res.coef)
        assert (back.covariance is None) == (res.covariance is None)
        if inference:
            assert np.array_equal(back.covariance, res.covariance)
            pd.testing.assert_frame_equal(back.bse, res.bse)
            pd.testing.assert_frame_equal(back.cov_params(), res.cov_params())
        pd.testing.assert_frame_equal(back.params, res.params)
        assert back.history == res.history
        for name in SCALARS:
            assert getattr(back, name) == getattr(res, name), name
        assert list(back.classes) == list(res.classes)
        np.testing.assert_array_equal(back.predict_proba(design), res.predict_proba(design))
    with pytest.raises(dmlr.StoreError, match="no complete dmlr result"):
        dmlr.load(str(tmp_path / "nothing"))


def test_separation_and_collinearity_exit_codes(tmp_path):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(500, 2))
    dmlr.stage_arrays(x, np.where(x[:, 0] > 0, "hi", "lo"), str(tmp_path / "sep.zarr"))
    sep = run("fit", str(tmp_path / "sep.zarr"), "--out", str(tmp_path / "r1"), "--workers", "1", "--method", "newton")
    assert sep.returncode == 3 and "separation involving class(es) ['hi', 'lo']" in sep.stderr
    warned = run("fit", str(tmp_path / "sep.zarr"), "--out", str(tmp_path / "r2"), "--workers", "1",
                 "--method", "newton", "--separation", "warn")  # fmt: skip
    assert warned.returncode == 3 and not dmlr.load(str(tmp_path / "r2")).converged
    dmlr.stage_arrays(np.column_stack([x, x[:, 0]]), rng.integers(0, 2, 500), str(tmp_path / "col.zarr"))
    col = run("fit", str(tmp_path / "col.zarr"), "--out", str(tmp_path / "r3"), "--workers", "1")
    assert col.returncode == 2 and "'x3' is a linear combination of ['x1']" in col.stderr
    dropped = run("fit", str(tmp_path / "col.zarr"), "--out", str(tmp_path / "r4"), "--workers", "1",
                  "--collinear", "drop")  # fmt: skip
    assert dropped.returncode == 0 and dmlr.load(str(tmp_path / "r4")).dropped_features == ("x3",)
