"""Appendable stores, warm starts and the incremental refit (issue 26)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import dmlr
from dmlr import InputError
from tests.test_cli import run


def _part(n: int, seed: int, levels=("north", "south", "east"), classes=("bus", "car", "train")) -> pd.DataFrame:
    """Rows of a known model: a text target, a categorical, weights and integer cluster ids."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(size=n),
            "income": rng.normal(size=n),
            "region": rng.choice(list(levels), size=n),
            "w": rng.integers(1, 4, size=n).astype(float),
            "hh": rng.integers(0, 60, size=n),
        }
    )
    eta = np.column_stack(
        [
            np.zeros(n),
            0.6 * frame.age - 0.4 * (frame.region == "south") + 0.2,
            -0.5 * frame.income + 0.3 * frame.age - 0.1,
        ]
    )
    prob = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
    codes = np.minimum((rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1), 2)
    frame["choice"] = np.asarray(classes)[codes]
    return frame


STAGE = {"target": "choice", "categorical": ["region"], "weights": "w", "groups": "hh", "sort_groups": False}


def _files(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (a store, byte for byte)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
        if p.is_file()
    }  # fmt: skip


def test_appends_then_a_fit_equal_staging_every_file_at_once(tmp_path):
    """Item 1: a store staged from one file and grown by two appends (Python, then the command line) holds every
    chunk byte for byte as the store staged from the three files at once; fits of both agree to 1e-10; the store
    lists its three versions (rows, sources, checksums), and dmlr info shows them; a fit records the version."""
    parts = [_part(n, seed) for n, seed in [(2600, 1), (1500, 2), (900, 3)]]
    paths = []
    for i, part in enumerate(parts):
        paths.append(str(tmp_path / f"day{i}.csv"))
        part.to_csv(paths[-1], index=False)
    whole = dmlr.stage(paths, str(tmp_path / "whole.zarr"), chunk_rows=1000, **STAGE)
    grown = dmlr.stage(paths[0], str(tmp_path / "grown.zarr"), chunk_rows=1000, **STAGE)
    first_checksum = grown.checksum
    grown = dmlr.stage(paths[1], str(tmp_path / "grown.zarr"), append=True)
    done = run("stage", paths[2], str(tmp_path / "grown.zarr"), "--append", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "version:    3 of 3" in done.stdout and "rows 4,100-5,000 from day2.csv" in done.stdout

    a, b = _files(tmp_path / "whole.zarr"), _files(tmp_path / "grown.zarr")
    chunks = [k for k in a if "/c/" in k]
    assert chunks and all(a[k] == b.get(k) for k in chunks), [k for k in chunks if a[k] != b.get(k)]
    for name in ("X", "y", "weights", "groups"):
        np.testing.assert_array_equal(
            zarr.open_array(str(tmp_path / "whole.zarr" / name))[:],
            zarr.open_array(str(tmp_path / "grown.zarr" / name))[:],
        )
    store = dmlr.open_store(str(tmp_path / "grown.zarr"))
    meta = store.metadata
    assert meta.n_rows == whole.metadata.n_rows == 5000 and meta.class_counts == whole.metadata.class_counts
    assert meta.n_groups == whole.metadata.n_groups == 60 and meta.version == 3
    assert [v["rows"] for v in meta.versions] == [[0, 2600], [2600, 4100], [4100, 5000]]
    assert [v["sources"] for v in meta.versions] == [[paths[0]], [paths[1]], [paths[2]]]
    assert meta.versions[0]["checksum"] == first_checksum and meta.versions[-1]["checksum"] == store.checksum
    assert store.checksum == dmlr.store_checksum(str(tmp_path / "grown.zarr"))

    r1 = dmlr.fit(str(tmp_path / "whole.zarr"), method="newton", tol=1e-10, cov_type="cluster")
    r2 = dmlr.fit(str(tmp_path / "grown.zarr"), method="newton", tol=1e-10, cov_type="cluster")
    np.testing.assert_allclose(r2.params.to_numpy(), r1.params.to_numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r2.bse.to_numpy(), r1.bse.to_numpy(), rtol=1e-10)
    assert r2.data_info["store_version"] == 3 and r2.data_info["store_rows"] == 5000


def test_refused_appends_name_their_culprit_and_leave_the_store_unchanged(tmp_path):
    """Item 5: a new categorical level, a new class, a missing column, an extra column and a column whose type
    changed each stop the append with a message naming it, and the store is byte for byte as before; the options
    the messages name then append (rows with the new level left out and counted; the extra column left out)."""
    _part(1200, 4).to_csv(tmp_path / "base.csv", index=False)
    url = str(tmp_path / "s.zarr")
    dmlr.stage(str(tmp_path / "base.csv"), url, chunk_rows=500, **STAGE)
    before = _files(Path(url))
    good = _part(300, 5)
    cases = {
        "level": (good.assign(region=np.where(np.arange(300) < 7, "west", good.region)),
                  r"the levels \['west'\] of 'region'.*unseen='drop'"),
        "class": (_part(300, 6, classes=("bus", "car", "tram")), r"the classes \['tram'\] in 'choice'"),
        "missing column": (good.drop(columns=["income"]), r"lack the columns \['income'\]"),
        "extra column": (good.assign(note=1.0), r"columns \['note'\].*extra_columns='ignore'"),
        "dtype": (good.assign(age=good.age.map("{:.3f}y".format)), r"column 'age' .* holds text .* held number"),
    }  # fmt: skip
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        with pytest.raises(InputError, match=message):
            dmlr.stage(str(tmp_path / f"{name}.csv"), url, append=True)
        assert _files(Path(url)) == before, name
    done = run("stage", str(tmp_path / "level.csv"), url, "--append", "--no-progress")
    assert done.returncode == 2 and "--unseen drop" in done.stderr and _files(Path(url)) == before

    store = dmlr.stage(str(tmp_path / "level.csv"), url, append=True, unseen="drop")
    assert store.metadata.n_rows == 1200 + 293 and store.metadata.n_missing == 7
    store = dmlr.stage(str(tmp_path / "extra column.csv"), url, append=True, extra_columns="ignore")
    assert store.metadata.n_rows == 1200 + 293 + 300 and store.metadata.version == 3
    with pytest.raises(InputError, match="--append encodes the rows as the store's are: --target"):
        raise_from_cli(run("stage", str(tmp_path / "base.csv"), url, "--append", "--target", "choice"))


def raise_from_cli(done) -> None:
    assert done.returncode == 2, done.stderr
    raise InputError(done.stderr)


def test_appending_arrays_checks_them_against_the_store(tmp_path):
    """stage_arrays(append=True): columns, names, classes and the optional arrays must be the store's."""
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(400, 3)), rng.choice([0, 1, 2], 400)
    url = str(tmp_path / "a.zarr")
    dmlr.stage_arrays(x, y, url, chunk_rows=150, feature_names=["a", "b", "c"])
    before = _files(Path(url))
    for kwargs, message in [
        ({"X": x[:, :2], "y": y}, "X has 2 columns"),
        ({"X": pd.DataFrame(x, columns=["a", "c", "b"]), "y": y}, r"X's columns \['a', 'c', 'b'\]"),
        ({"X": x, "y": np.where(y == 2, 3, y)}, r"the classes \[3\]"),
        ({"X": x, "y": y, "weights": np.ones(400)}, "has no weights"),
    ]:
        with pytest.raises(InputError, match=message):
            dmlr.stage_arrays(store=url, append=True, **kwargs)
        assert _files(Path(url)) == before
    store = dmlr.stage_arrays(x[:100], y[:100], url, append=True)
    np.testing.assert_array_equal(store.X.compute(), np.vstack([x, x[:100]]))
    assert store.metadata.class_counts == np.bincount(np.concatenate([y, y[:100]])).tolist()


@pytest.mark.cluster
def test_a_refit_after_an_append_reads_only_the_new_rows_before_its_first_step(tmp_path, cluster_client):
    """Item 3: after appending 5% more rows, a fit started at the previous result (saved and loaded) reads the
    appended rows only (two passes over them) before Newton's first step, then needs at most 2 full passes, and
    equals the cold fit of all rows (params 1e-8, bse 1e-6). dmlr fit --start does the same; a result of other
    classes or columns is refused by name."""
    _part(20000, 7).to_parquet(tmp_path / "old.parquet")
    _part(1000, 8).to_parquet(tmp_path / "new.parquet")
    url = str(tmp_path / "s.zarr")
    dmlr.stage(str(tmp_path / "old.parquet"), url, chunk_rows=2500, **STAGE)
    old = dmlr.fit(url, client=cluster_client, tol=1e-10)
    dmlr.save(old, str(tmp_path / "old"))
    dmlr.stage(str(tmp_path / "new.parquet"), url, append=True)
    cold = dmlr.fit(url, client=cluster_client, method="newton", tol=1e-10)
    warm = dmlr.fit(url, client=cluster_client, start_params=dmlr.load(str(tmp_path / "old")), tol=1e-10)
    start = warm.history[0]
    assert start["passes"] == 0 and start["refit"] == {"appended_rows": 1000, "appended_row_passes": 2}
    assert warm.history[-1]["passes"] <= 2 < cold.history[-1]["passes"]
    np.testing.assert_allclose(warm.params.to_numpy(), cold.params.to_numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(warm.bse.to_numpy(), cold.bse.to_numpy(), rtol=1e-6)
    assert warm.llf == pytest.approx(cold.llf, rel=1e-12)

    done = run("fit", url, "--out", str(tmp_path / "cli"), "--start", str(tmp_path / "old"), "--workers", "1",
               "--tol", "1e-10", "--checkpoint", str(tmp_path / "ckpt"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "ckpt"))[-1].endswith(".dmlrckpt")  # dmlr fit --checkpoint DIR
    cli = dmlr.load(str(tmp_path / "cli"))
    assert cli.history[0]["refit"]["appended_rows"] == 1000
    np.testing.assert_allclose(cli.params.to_numpy(), cold.params.to_numpy(), rtol=1e-8, atol=1e-10)

    arrays = dmlr.fit(url, start_params=cold.coef, tol=1e-10)  # a plain warm start: one pass at the point
    assert arrays.n_iter <= 1 and arrays.history[0]["passes"] == 2
    with pytest.raises(InputError, match=r"start_params has shape \(2, 2\)"):
        dmlr.fit(url, start_params=np.zeros((2, 2)))
    x = np.random.default_rng(1).normal(size=(300, 2))
    with pytest.raises(InputError, match=r"start_params is a result with classes \['bus', 'car', 'train'\]"):
        dmlr.fit(x, np.random.default_rng(2).choice(["a", "b", "c"], 300), start_params=cold)


def test_the_estimator_warm_starts_at_its_previous_fit():
    """warm_start=True: the second fit starts at the first's coefficients (scikit-learn's meaning)."""
    pytest.importorskip("sklearn")
    frame = _part(3000, 11)
    x, y = frame[["age", "income"]].to_numpy(), frame.choice.to_numpy()
    est = dmlr.MultinomialLogit(l2=0.0, warm_start=True, method="newton", tol=1e-10).fit(x, y)
    cold_iterations = int(est.n_iter_[0])
    est.fit(x, y)
    assert int(est.n_iter_[0]) == 0 < cold_iterations and est.get_params()["warm_start"] is True


_APPENDER = """
import json, sys
import dask.dataframe, pandas, zarr, dmlr.data.appending, dmlr.data.staging  # imported before BEGIN
import dmlr
options = json.loads(sys.argv[3]) or None
print("BEGIN", flush=True)
dmlr.stage(sys.argv[1], sys.argv[2], append=True, storage_options=options)
print("END", flush=True)
"""


def _killed_appends(tmp_path, new: str, url: str, reset, options, kills: int = 10) -> dict[str, int]:
    """Run the appender in a child process, SIGKILL it at ``kills`` random points of its append (one in each
    ``1 / kills`` of an uninterrupted append's duration), and check the store after each; returns how many kills found
    the journal."""
    import signal
    import subprocess
    import sys
    import time

    from dmlr.data.appending import journal_state

    script = tmp_path / "appender.py"
    script.write_text(_APPENDER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def start() -> tuple[subprocess.Popen[str], float]:
        proc = subprocess.Popen(
            [sys.executable, str(script), new, url, json.dumps(options)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "BEGIN"
        return proc, time.perf_counter()

    reset()
    before = dmlr.store_checksum(url, options)
    proc, began = start()
    assert proc.stdout is not None and proc.stdout.readline().strip() == "END"
    duration = time.perf_counter() - began  # the append itself, not the interpreter's exit
    assert proc.wait(timeout=120) == 0
    final = dmlr.store_checksum(url, options)
    assert dmlr.open_store(url, storage_options=options).metadata.version == 2

    rng = np.random.default_rng(26)
    seen = {"journal": 0, "committed": 0, "before": 0}
    reset()
    for i in range(kills):
        proc, began = start()
        time.sleep(max(0.0, (i + rng.random()) / kills * duration - (time.perf_counter() - began)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        journal = journal_state(url, options)
        store = dmlr.open_store(url, storage_options=options)  # an abandoned append of this host is undone here
        assert journal_state(url, options) is None
        if store.metadata.version == 2:  # killed after the commit point: the append is complete
            seen["committed"] += 1
            assert dmlr.store_checksum(url, options) == final == store.checksum
            reset()
            continue
        seen["journal" if journal is not None else "before"] += 1
        assert store.metadata.version == 1 and store.metadata.n_rows == 40_000
        assert dmlr.store_checksum(url, options) == before == store.checksum, f"kill {i}"
        # the store is byte for byte as before this kill's append: the next kill starts from it
    again = dmlr.stage(new, url, append=True, storage_options=options)  # the rerun after the last kill completes
    assert again.metadata.version == 2 and dmlr.store_checksum(url, options) == final
    return seen


def _kill_data(tmp_path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    for name, n in [("old", 40_000), ("new", 30_000)]:
        frame = pd.DataFrame(rng.normal(size=(n, 10)), columns=[f"x{i}" for i in range(10)])
        frame.assign(y=rng.choice(["a", "b", "c"], n)).to_parquet(tmp_path / f"{name}.parquet")
    return str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")


@pytest.mark.slow
def test_appends_killed_at_any_point_leave_the_store_at_its_previous_version_on_disk(tmp_path):
    """Item 2 (local disk): SIGKILL at 10 random points of an append; each time the store opens at its previous
    version with the same checksum (or, killed after the commit, at the new one), and the rerun append completes
    with the checksum of an uninterrupted append."""
    import shutil

    old, new = _kill_data(tmp_path)
    pristine, url = str(tmp_path / "pristine.zarr"), str(tmp_path / "s.zarr")
    dmlr.stage(old, pristine, target="y", chunk_rows=1500)

    def reset() -> None:
        shutil.rmtree(url, ignore_errors=True)
        shutil.copytree(pristine, url)

    seen = _killed_appends(tmp_path, new, url, reset, {})
    print("local disk kills:", seen)
    assert seen["journal"] >= 1, seen  # a kill landed inside the append, between its journal and its commit


@pytest.mark.slow
@pytest.mark.cluster
def test_appends_killed_at_any_point_leave_the_store_at_its_previous_version_on_s3(tmp_path):
    """Item 2 on the S3-compatible test server (every file an object: the commit is one PUT); 6 kills (the disk's
    test makes 10: the same code, each S3 kill costs ~3 s)."""
    import s3fs

    from tests.servers import s3_server

    old, new = _kill_data(tmp_path)
    with s3_server() as options:
        fs = s3fs.S3FileSystem(**options)
        pristine, url = "s3://dmlr-test/pristine.zarr", "s3://dmlr-test/s.zarr"
        dmlr.stage(old, pristine, target="y", chunk_rows=1500, storage_options=options)

        def reset() -> None:
            if fs.exists(url):
                fs.rm(url, recursive=True)
            fs.copy(pristine, url, recursive=True)
            fs.invalidate_cache()

        seen = _killed_appends(tmp_path, new, url, reset, options, kills=6)
    print("S3 kills:", seen)
    assert seen["journal"] >= 1, seen
