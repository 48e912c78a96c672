"""Streamed passes: codecs chosen by measurement, reads overlapped with the arithmetic, progress on a terminal."""

from __future__ import annotations

import io

import numpy as np
import pytest

import dmlr
from dmlr.data.store import choose_codec
from dmlr.oracle.statistics import SCORE_ONLY
from dmlr.passes import progress
from dmlr.passes.group import evaluate_group, make_group_data, pass_progress
from dmlr.passes.plan import plan_groups
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
    design = dmlr.api._Inputs.resolve(store, None, None, None, None, None, "raise", None, "nonrobust").design(
        None, True, None
    )
    (group,) = plan_groups(design, 1)
    group_data = make_group_data(group)
    assert all(group_data.is_lazy(i) for i in range(len(group.partitions)))
    coef = np.full((6, 2), 0.01)
    record = evaluate_group(group_data, coef, True, SCORE_ONLY, progress_key="test-pass")
    assert record.n_rows == 20_000
    assert pass_progress("test-pass") == (7, data.X.nbytes)  # 7 chunks, each read once
    assert pass_progress("never-run") == (0, 0)
    # the same statistics as one kernel call over all rows (no partition skipped or doubled by the prefetch)
    from dmlr.oracle.kernels import partition_statistics

    whole = partition_statistics(data.X, design.codes.compute(), None, None, coef, intercept=True, request=SCORE_ONLY)
    assert record.loglik == pytest.approx(whole.loglik, rel=1e-12)
    np.testing.assert_allclose(record.score, whole.score, rtol=1e-10)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only_after_two_seconds(monkeypatch):
    monkeypatch.delenv("DMLR_PROGRESS", raising=False)
    assert not progress.wanted(io.StringIO())  # not a terminal
    assert progress.wanted(_Terminal())
    with progress.quiet():  # the pipeline's JSON logs
        assert not progress.wanted(_Terminal())
    monkeypatch.setenv("DMLR_PROGRESS", "off")
    assert not progress.wanted(_Terminal())

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
