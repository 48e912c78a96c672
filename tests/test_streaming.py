"""Streamed passes: codecs chosen by measurement, reads overlapped with the arithmetic, progress on a terminal."""

from __future__ import annotations

import io

import numpy as np
import pytest

import dmlr
import dmlr.steps.newton
from dmlr.data.inputs import Inputs
from dmlr.data.writing import choose_codec
from dmlr.oracle.kernels import StatisticsKernel
from dmlr.oracle.statistics import SCORE_ONLY
from dmlr.passes import progress
from dmlr.passes.plan import plan_tasks
from dmlr.passes.task import make_task_data, pass_progress, run_task
from dmlr.synthetic import make_mnlogit


def test_codec_is_chosen_by_what_compression_saves(tmp_path):
    rng = np.random.default_rng(0)
    assert choose_codec(rng.normal(size=(20_000, 10)))[0] == "none"  # random doubles: LZ4 saves ~6%
    codec, saving = choose_codec(rng.integers(0, 4, size=100_000).astype(np.int32))
    assert codec == "blosc-lz4-shuffle" and saving > 0.5
    assert choose_codec(np.round(rng.normal(size=(20_000, 10)), 1))[0] == "blosc-lz4-shuffle"  # one decimal
    data = make_mnlogit(30_000, 6, 3, seed=2)
    store = dmlr.stage_arrays(data.X, data.y, str(tmp_path / "s.zarr"), chunk_rows=7_000)
    assert store.metadata["codecs"]["X"]["codec"] == "none"
    assert store.metadata["codecs"]["y"]["codec"] == "blosc-lz4-shuffle"
    assert "X none" in store.describe()
    np.testing.assert_array_equal(store.X.compute(), data.X)  # what was staged reads back bit for bit
    ref = dmlr.fit(data.X, data.y)
    res = dmlr.fit(store)
    np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-10, atol=1e-12)


def test_a_prefetched_pass_reads_each_partition_once_and_counts_it(tmp_path):
    data = make_mnlogit(20_000, 5, 3, seed=4)
    store = dmlr.stage_arrays(data.X, data.y, str(tmp_path / "s.zarr"), chunk_rows=3_000)
    design = Inputs.resolve(store).design(None, True, None)
    (task,) = plan_tasks(design.rows, 1)
    task_data = make_task_data(task, transform=design.transform)
    assert all(task_data.is_lazy(i) for i in range(len(task.partitions)))
    coef = np.full((6, 2), 0.01)
    counted = run_task(task_data, StatisticsKernel(coef, SCORE_ONLY, True), progress_key="test-pass")
    record = counted.record
    assert record.n_rows == counted.n_rows == 20_000
    assert pass_progress("test-pass") == (7, data.X.nbytes)  # 7 chunks, each read once
    assert pass_progress("never-run") == (0, 0)
    # the same statistics as one kernel call over all rows (no partition skipped or doubled by the prefetch)
    from dmlr.oracle.kernels import partition_statistics

    codes = design.coding.encode_positions(store.y.compute())
    whole = partition_statistics(data.X, codes, None, None, coef, intercept=True, request=SCORE_ONLY)
    assert record.loglik == pytest.approx(whole.loglik, rel=1e-12)
    np.testing.assert_allclose(record.score, whole.score, rtol=1e-10)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_line_in_place_on_a_terminal_and_a_line_every_ten_seconds_elsewhere(monkeypatch):
    monkeypatch.delenv("DMLR_PROGRESS", raising=False)
    assert progress.wanted()
    with progress.quiet():  # the pipeline's JSON logs
        assert not progress.wanted()
    monkeypatch.setenv("DMLR_PROGRESS", "off")
    assert not progress.wanted()

    out = _Terminal()
    shown = progress.PassProgress(3, 179, out)
    shown.update(10, 10**9)
    assert out.getvalue() == ""  # a pass younger than SHOW_AFTER shows nothing
    shown.start -= progress.SHOW_AFTER + 2.0
    shown.update(85, 2 * 10**9)
    line = out.getvalue()
    assert line.startswith("\rdmlr: pass 3: 85/179 partitions, 2.00 GB read, ")
    rate = float(line.split(", ")[-1].split()[0])
    assert 400 < rate < 1000  # 2 GB in a little over 4 s
    shown.close()
    assert out.getvalue().endswith("\r")

    log = io.StringIO()  # not a terminal: whole lines, one per LOG_EVERY seconds, nothing to clear
    logged = progress.PassProgress(1, 229, log)
    logged.update(5, 10**9)
    logged.start -= progress.LOG_EVERY + 1.0
    logged.logged -= progress.LOG_EVERY + 1.0
    logged.update(40, 3 * 10**9)
    logged.update(41, 3 * 10**9)  # within LOG_EVERY of the last line: nothing
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmlr: pass 1: 40/229 partitions, 3.00 GB read, ")
    assert lines[0].endswith(" 11 s")
    logged.close()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()


def test_a_sampled_information_is_the_samples_dense_sum_scaled_up_whatever_the_partitions():
    from dmlr.data.design import build_design, rows_of
    from dmlr.fitting.evaluator import FitPasses
    from dmlr.oracle.kernels import SAMPLE_UNIT
    from dmlr.oracle.statistics import Request
    from tests.test_oracle import dense_information

    rng = np.random.default_rng(7)
    n, p, k = 5_000, 3, 3
    x = rng.normal(size=(n, p))
    y = rng.integers(0, k, size=n)
    v = rng.uniform(0.5, 2.0, size=n)
    coef = rng.normal(scale=0.3, size=(p + 1, k - 1))
    sample = np.flatnonzero((np.arange(n) // SAMPLE_UNIT) % 4 == 0)  # rows 0-1023 and 4096-4999
    expected = dense_information(x[sample], v[sample], None, coef, True) * v.sum() / v[sample].sum()
    for rows in (313, 1_700, 5_000):  # 16, 3 and 1 partitions: the same sample
        design = build_design(rows_of(x, rows), rows_of(y, rows), weights=rows_of(v, rows), classes=np.unique(y))
        record = FitPasses.over(design)(coef, Request(information=True, information_every=4))
        assert record.information_weight == pytest.approx(v[sample].sum(), rel=1e-12)
        np.testing.assert_allclose(record.full_information(), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="samples the information"):  # a sampled Gram matrix would be wrong silently
        FitPasses.over(design)(coef, Request(information=True, gram=True, information_every=4))
    exact = FitPasses.over(design)(coef, Request(information=True))
    assert exact.information_weight == pytest.approx(v.sum(), rel=1e-12)
    np.testing.assert_allclose(exact.full_information(), dense_information(x, v, None, coef, True), rtol=1e-10)


def test_newton_on_a_streamed_store_samples_far_and_ends_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(dmlr.steps.newton, "SAMPLE_MIN_ROWS", 10_000)  # sample this small store as a large one
    data = make_mnlogit(40_000, 5, 4, seed=9)
    store = dmlr.stage_arrays(data.X, data.y, str(tmp_path / "s.zarr"), chunk_rows=2_000)  # 20 partitions
    seen = []
    res = dmlr.fit(store, method="newton", callback=seen.append)
    ref = dmlr.fit(data.X, data.y, method="newton")  # in memory: exact information every pass
    assert res.history[0]["passes"] == 1 and [r["kind"] for r in res.history][-1] == "newton"  # no extra pass
    kinds = [r["information"] for r in seen]
    # exact at W = 0 (from the Gram matrix), estimated far from the optimum, exact at the end
    assert kinds[0] == "exact" and kinds[1] == "estimated" and kinds[-1] == "exact", kinds
    assert res.n_passes <= ref.n_passes + 1
    assert res.llf == pytest.approx(ref.llf, rel=1e-12)
    np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-7)  # the exact information at the end
