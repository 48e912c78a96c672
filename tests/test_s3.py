"""Stores and results on an S3-compatible object store (moto's server on loopback), read by the workers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from distributed import get_task_stream

import dmlr
from tests.servers import s3_server
from tests.test_store import _table

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def s3():
    with s3_server() as options:
        yield options


def test_stage_fit_save_load_on_s3_equal_local_disk(s3, cluster_client, tmp_path):
    import s3fs

    frame, _ = _table(3000, seed=31)
    fs = s3fs.S3FileSystem(**s3)
    for i in range(3):  # the raw files live in the bucket too
        with fs.open(f"dmlr-test/raw/part{i}.csv", "wb") as fh:
            fh.write(frame.iloc[i * 1000 : (i + 1) * 1000].to_csv(index=False).encode())
    frame.to_csv(tmp_path / "all.csv", index=False)
    common = {"target": "choice", "categorical": ["region"], "weights": "w", "chunk_rows": 700}
    remote = dmlr.stage("s3://dmlr-test/raw/*.csv", "s3://dmlr-test/data.zarr", storage_options=s3, **common)
    local = dmlr.stage(str(tmp_path / "all.csv"), str(tmp_path / "data.zarr"), **common)
    assert remote.checksum == dmlr.store_checksum("s3://dmlr-test/data.zarr", s3)
    assert remote.X.chunks == local.X.chunks

    with get_task_stream(client=cluster_client) as stream:
        res = dmlr.fit("s3://dmlr-test/data.zarr", storage_options=s3, client=cluster_client, persist=False)
    # with persist=False every pass task reads its group's chunks from the store itself, inside the worker
    readers = {t["worker"] for t in stream.data if str(t["key"]).startswith("dmlr-pass-")}
    assert readers and all(w.startswith("tcp://") for w in readers)  # chunks were read on the workers
    ref = dmlr.fit(str(tmp_path / "data.zarr"), client=cluster_client)
    assert np.max(np.abs(res.coef - ref.coef)) <= 1e-12 * np.max(np.abs(ref.coef))
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)

    dmlr.save(res, "s3://dmlr-test/result", storage_options=s3)
    back = dmlr.load("s3://dmlr-test/result", storage_options=s3)
    assert np.array_equal(back.coef, res.coef) and np.array_equal(back.covariance, res.covariance)
    assert back.history == res.history and back.llf == res.llf


def test_cli_on_s3(s3, tmp_path):
    frame, _ = _table(2000, seed=32)
    frame.to_csv(tmp_path / "t.csv", index=False)
    options = json.dumps(s3)

    def dmlr_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dmlr", *args, "--storage-options", options],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    steps = [
        ("stage", str(tmp_path / "t.csv"), "s3://dmlr-test/cli.zarr", "--target", "choice", "--categorical",
         "region", "--no-progress"),
        ("info", "s3://dmlr-test/cli.zarr"),
        ("fit", "s3://dmlr-test/cli.zarr", "--out", "s3://dmlr-test/cli-result", "--workers", "1"),
        ("summary", "s3://dmlr-test/cli-result"),
        ("predict", "s3://dmlr-test/cli-result", "s3://dmlr-test/cli.zarr", "--out",
         "s3://dmlr-test/cli-pred.parquet", "--workers", "1"),
    ]  # fmt: skip
    for step in steps:
        done = dmlr_cli(*step)
        assert done.returncode == 0, (step, done.stderr)
    assert "rows:       2,000" in dmlr_cli("info", "s3://dmlr-test/cli.zarr").stdout
    pred = pd.read_parquet("s3://dmlr-test/cli-pred.parquet", storage_options=s3)
    res = dmlr.load("s3://dmlr-test/cli-result", storage_options=s3)
    x = dmlr.open_store("s3://dmlr-test/cli.zarr", storage_options=s3).X.compute()
    np.testing.assert_allclose(pred[["p_bus", "p_car", "p_train"]].to_numpy(), res.predict_proba(x), rtol=1e-12)


def test_object_store_read_errors_that_succeed_on_retry_change_nothing(s3, cluster_client):
    from tests.servers import flaky_proxy

    rng = np.random.default_rng(33)
    x, y = rng.normal(size=(4000, 3)), rng.integers(0, 3, size=4000)
    dmlr.stage_arrays(x, y, "s3://dmlr-test/flaky.zarr", chunk_rows=500, storage_options=s3)
    reference = dmlr.fit(x, y, method="newton")
    upstream = s3["client_kwargs"]["endpoint_url"]  # type: ignore[index]
    with flaky_proxy(upstream, fail_every=3) as (endpoint, counts):
        options = {**s3, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        res = dmlr.fit("s3://dmlr-test/flaky.zarr", method="newton", storage_options=options, client=cluster_client,
                       persist=False)  # fmt: skip
    assert counts["failed"] >= 10  # reads really failed (503) and were retried
    assert np.max(np.abs(res.coef - reference.coef)) <= 1e-10 * np.max(np.abs(reference.coef))
    assert res.n_iter == reference.n_iter


SECRET = "dmlr-SECRET-3f9a1c77e0"
"""A secret access key that must appear in no byte dmlr writes or prints (moto accepts any credentials)."""


def _bytes_under(fs, root: str) -> dict[str, bytes]:
    return {path: fs.cat_file(path) for path in fs.find(root)}


def test_a_secret_key_is_written_nowhere(s3, tmp_path):
    """A CLI stage + fit + predict and a pipeline run, each given a secret key in their storage options: the key is
    in no object or file they wrote (stores, results, checkpoints, markers, logs, reports) and in none of their
    output."""
    import s3fs
    import yaml

    from tests.test_pipeline import write_spec

    secret_options = {**s3, "secret": SECRET}
    frame, _ = _table(2000, seed=34)
    frame.to_csv(tmp_path / "t.csv", index=False)
    fs = s3fs.S3FileSystem(**s3)
    fs.put_file(str(tmp_path / "t.csv"), "dmlr-test/secret/raw/t.csv")
    options = json.dumps(secret_options)
    outputs = []
    for step in [
        ("stage", "s3://dmlr-test/secret/raw/t.csv", "s3://dmlr-test/secret/s.zarr", "--target", "choice",
         "--categorical", "region", "--no-progress"),
        ("fit", "s3://dmlr-test/secret/s.zarr", "--out", "s3://dmlr-test/secret/result", "--workers", "1"),
        ("predict", "s3://dmlr-test/secret/result", "s3://dmlr-test/secret/s.zarr", "--out",
         "s3://dmlr-test/secret/pred.parquet", "--workers", "1"),
        ("fit", "s3://dmlr-test/secret/absent.zarr", "--out", "s3://dmlr-test/secret/r2", "--workers", "1"),
    ]:  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "dmlr", *step, "--storage-options", options],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        outputs.append(done.stdout + done.stderr)
    assert "absent.zarr" in outputs[-1]  # the failing command said what failed, without the key

    spec = write_spec(tmp_path / "job", data={"train": "s3://dmlr-test/secret/raw/t.csv",
                                              "test": "s3://dmlr-test/secret/raw/t.csv", "target": "choice",
                                              "categorical": ["region"], "storage_options": secret_options},
                      cluster={"spec": "local", "workers": 1})  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "dmlr", "run", str(spec)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    outputs.append(done.stdout + done.stderr)
    assert SECRET in yaml.safe_dump(yaml.safe_load(spec.read_text()))  # the spec itself is the user's

    written = _bytes_under(fs, "dmlr-test/secret")
    written.update({str(p): p.read_bytes() for p in (tmp_path / "job" / "work").rglob("*") if p.is_file()})
    assert len(written) > 20  # stores, results, checkpoints, markers, logs, the report
    leaked = [path for path, data in written.items() if SECRET.encode() in data]
    assert not leaked, leaked
    assert not [text for text in outputs if SECRET in text]
