"""Staging to Zarr: fits equal in-memory fits, categorical round trips, integrity against crashes and corruption."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import zarr

import dmlr
from dmlr import InputError, StoreError


def _table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A table with a string target, a categorical feature and weights, drawn from a known model."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(size=n),
            "income": rng.normal(size=n),
            "region": rng.choice(["north", "south", "east"], size=n),
            "w": rng.integers(1, 4, size=n).astype(float),
        }
    )
    region = np.column_stack([frame.region == "north", frame.region == "south"]).astype(float)
    design = np.column_stack([frame.age, frame.income, region])
    eta = np.column_stack([np.zeros(n), design @ rng.normal(scale=0.7, size=(4, 2)) + [0.2, -0.3]])
    prob = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
    codes = (rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)
    frame["choice"] = np.array(["bus", "car", "train"])[np.minimum(codes, 2)]
    return frame, design


def _in_memory_fit(frame: pd.DataFrame, design: np.ndarray, **kwargs):
    names = ["age", "income", "region[T.north]", "region[T.south]"]
    return dmlr.fit(design, frame.choice.to_numpy(), feature_names=names, method="newton", **kwargs)


@pytest.fixture(scope="module")
def table():
    return _table(4000, seed=1)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_staged_multi_file_source_fits_like_memory_and_predicts_new_files(tmp_path, table, fmt):
    frame, design = table
    for i in range(4):
        part = frame.iloc[i * 1000 : (i + 1) * 1000]
        if fmt == "csv":
            part.to_csv(tmp_path / f"part{i}.csv", index=False)
        else:
            part.to_parquet(tmp_path / f"part{i}.parquet", index=False)
    store = dmlr.stage(
        str(tmp_path / f"part*.{fmt}"),
        str(tmp_path / "data.zarr"),
        target="choice",
        features=["age", "income", "region"],
        categorical=["region"],
        weights="w",
        chunk_rows=900,
    )
    assert store.X.chunks[0] == (900, 900, 900, 900, 400)
    assert store.metadata["classes"] == ["bus", "car", "train"]
    assert store.metadata["class_counts"] == [int((frame.choice == c).sum()) for c in ("bus", "car", "train")]
    assert store.feature_names == ["age", "income", "region[T.north]", "region[T.south]"]

    res = dmlr.fit(str(tmp_path / "data.zarr"), method="newton")
    ref = _in_memory_fit(frame, design, weights=frame.w.to_numpy())
    assert list(res.params.columns) == ["car", "train"]
    assert np.max(np.abs(res.coef - ref.coef)) <= 1e-10 * np.max(np.abs(ref.coef))
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-10)

    # new data with the categorical column as text is encoded with the staged levels
    new = frame.drop(columns=["choice", "w"]).iloc[::7]
    np.testing.assert_allclose(res.predict_proba(new).to_numpy(), ref.predict_proba(design[::7]), rtol=1e-9)

    unseen = new.head(3).assign(region=["north", "west", "east"])
    with pytest.raises(InputError, match="'region' has level 'west'"):
        res.predict_proba(unseen)


def test_stage_arrays_with_offset_and_weights(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1500, 3))
    y = rng.choice([10, 20, 30], size=1500)
    w = rng.uniform(0.5, 2.0, size=1500)
    o = rng.normal(size=(1500, 2))
    dmlr.stage_arrays(x, y, str(tmp_path / "a.zarr"), weights=w, offset=o, chunk_rows=400)
    res = dmlr.fit(str(tmp_path / "a.zarr"), method="newton", base=20)
    ref = dmlr.fit(x, y, weights=w, offset=o, method="newton", base=20)
    assert list(res.params.columns) == [10, 30]
    assert np.max(np.abs(res.coef - ref.coef)) <= 1e-10 * np.max(np.abs(ref.coef))


def test_bad_sources_are_named(tmp_path, table):
    frame, _ = table
    frame.to_csv(tmp_path / "t.csv", index=False)
    src, out = str(tmp_path / "t.csv"), str(tmp_path / "s.zarr")
    with pytest.raises(InputError, match=r"columns \['nope'\] are not in the source"):
        dmlr.stage(src, out, target="nope")
    with pytest.raises(InputError, match=r"\['region'\] are not numeric: declare them categorical"):
        dmlr.stage(src, out, target="choice")
    with pytest.raises(InputError, match="no file matches"):
        dmlr.stage(str(tmp_path / "missing*.csv"), out, target="choice")
    bad = frame.copy()
    bad.loc[1234, "income"] = np.nan
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"column 'income' has a missing value at data row 1235 of .*bad\.csv"):
        dmlr.stage(str(tmp_path / "bad.csv"), out, target="choice", categorical=["region"])
    assert not os.path.exists(out) and not glob.glob(out + ".partial-*")  # a failed staging leaves nothing
    dmlr.stage(src, out, target="choice", categorical=["region"])
    with pytest.raises(InputError, match="already exists"):
        dmlr.stage(src, out, target="choice", categorical=["region"])
    again = dmlr.stage(src, out, target="choice", categorical=["region"], weights="w", overwrite=True)
    assert again.metadata["weights"] == "w"


def test_a_staging_run_killed_midway_is_never_fitted(tmp_path):
    script = textwrap.dedent(
        f"""
        import dask.array as da, numpy as np, dmlr
        x = da.random.default_rng(0).standard_normal((4_000_000, 20), chunks=(50_000, 20))
        y = da.random.default_rng(1).integers(0, 3, size=4_000_000, chunks=50_000)
        dmlr.stage_arrays(x, y, {str(tmp_path / "big.zarr")!r}, chunk_rows=50_000)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while time.time() < deadline:
        partial = glob.glob(str(tmp_path / "big.zarr.partial-*" / "X" / "c" / "*"))
        if len(partial) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(partial) >= 3, "the staging run never started writing chunks"
    assert not os.path.exists(tmp_path / "big.zarr")
    with pytest.raises(StoreError, match=r"partial-.* is left from a staging run that did not finish"):
        dmlr.fit(str(tmp_path / "big.zarr"))
    # a group written directly (as on an object store) without the completion flag is refused too
    leftover = glob.glob(str(tmp_path / "big.zarr.partial-*"))[0]
    with pytest.raises(StoreError, match="not a complete dmlr store"):
        dmlr.open_store(leftover)


def test_corrupted_chunk_is_named(tmp_path):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(1000, 3)), rng.integers(0, 3, size=1000)
    dmlr.stage_arrays(x, y, str(tmp_path / "c.zarr"), chunk_rows=300)
    chunk = tmp_path / "c.zarr" / "X" / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"chunk 2 of array 'X' \(rows 600-899\).*crc32c"):
        dmlr.fit(str(tmp_path / "c.zarr"))


def test_store_checksum_changes_when_data_are_rewritten(tmp_path):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(1000, 3)), rng.integers(0, 3, size=1000)
    store = dmlr.stage_arrays(x, y, str(tmp_path / "k.zarr"), chunk_rows=300)
    assert dmlr.store_checksum(store.url) == store.checksum
    zarr.open_group(store.url, mode="r+")["X"][700, 1] = 0.5  # a legitimate write re-encodes chunk 2
    assert dmlr.store_checksum(store.url) != store.checksum


def test_store_arrays_carry_crc32c_and_metadata(tmp_path):
    x, y = np.ones((10, 2)), np.array(["a", "b"] * 5)
    dmlr.stage_arrays(x, y, str(tmp_path / "m.zarr"))
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    codecs = [c.to_dict()["name"] for c in group["X"].metadata.codecs[-1:]]
    assert codecs == ["crc32c"]
    meta = group.attrs["dmlr"]
    assert meta["complete"] is True and meta["schema_version"] == 1
    assert meta["classes"] == ["a", "b"] and meta["n_rows"] == 10


@pytest.mark.cluster
def test_store_fit_streams_chunks_without_keeping_them(tmp_path, cluster_client):
    """With persist=False every pass reads the chunks from Zarr; nothing of the data stays on the workers."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6000, 4)), rng.integers(0, 3, size=6000)
    store = dmlr.stage_arrays(x, y, str(tmp_path / "s.zarr"), chunk_rows=1000)
    streamed = dmlr.fit(store, method="newton", client=cluster_client, persist=False)
    in_memory = dmlr.fit(x, y, method="newton")
    assert np.max(np.abs(streamed.coef - in_memory.coef)) <= 1e-10 * np.max(np.abs(in_memory.coef))
    held = cluster_client.run(lambda dask_worker: sum(1 for k in dask_worker.data if "dmlr-store" in str(k)))
    assert sum(held.values()) == 0


def test_persist_auto_compares_data_with_half_the_workers_memory():
    import dask.array as da
    from distributed import Client, LocalCluster

    from dmlr.data.design import build_design
    from dmlr.passes.shipping import fits_in_cluster_memory

    def design(rows: int):  # lazy zeros: the size is metadata, nothing is allocated
        return build_design(da.zeros((rows, 100), chunks=(10**5, 100)), np.arange(rows) % 2, fit_intercept=True)

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="1GB", processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        assert fits_in_cluster_memory(design(1_000_000).rows, client)  # 0.8 GB of X <= half of 2 GB
        assert not fits_in_cluster_memory(design(2_000_000).rows, client)  # 1.6 GB > 1 GB


def test_stage_like_a_training_store_shares_its_columns_and_codes(tmp_path):
    frame, _ = _table(600, seed=3)
    frame.to_csv(tmp_path / "train.csv", index=False)
    train = dmlr.stage(str(tmp_path / "train.csv"), str(tmp_path / "train.zarr"), target="choice",
                       categorical=["region"])  # fmt: skip
    # a held-out set lacking a level and a class still gets the training columns and label codes
    held = frame[(frame.region != "east") & (frame.choice != "bus")].head(50)
    held.to_csv(tmp_path / "test.csv", index=False)
    test = dmlr.stage(str(tmp_path / "test.csv"), str(tmp_path / "test.zarr"), target="choice",
                      categorical=["region"], like=train)  # fmt: skip
    assert test.feature_names == train.feature_names == ["age", "income", "region[T.north]", "region[T.south]", "w"]
    assert test.classes.tolist() == ["bus", "car", "train"]
    codes = test.y.compute()
    np.testing.assert_array_equal(codes, pd.Index(["bus", "car", "train"]).get_indexer(held.choice))
    x = test.X.compute()
    np.testing.assert_array_equal(x[:, 2], (held.region == "north").to_numpy())
    # alone, the same file would be encoded differently (its first level would be dropped)
    alone = dmlr.stage(str(tmp_path / "test.csv"), str(tmp_path / "alone.zarr"), target="choice",
                       categorical=["region"])  # fmt: skip
    assert alone.feature_names != train.feature_names and alone.classes.tolist() == ["car", "train"]

    bad = frame.head(20).copy()
    bad.loc[bad.index[0], "region"] = "west"
    bad.to_csv(tmp_path / "bad_level.csv", index=False)
    with pytest.raises(InputError, match=r"categorical column 'region' has levels \['west'\]"):
        dmlr.stage(str(tmp_path / "bad_level.csv"), str(tmp_path / "b1.zarr"), target="choice",
                   categorical=["region"], like=train)  # fmt: skip
    bad = frame.head(20).copy()
    bad.loc[bad.index[0], "choice"] = "tram"
    bad.to_csv(tmp_path / "bad_label.csv", index=False)
    with pytest.raises(InputError, match=r"labels \['tram'\]"):
        dmlr.stage(str(tmp_path / "bad_label.csv"), str(tmp_path / "b2.zarr"), target="choice",
                   categorical=["region"], like=str(tmp_path / "train.zarr"))  # fmt: skip


def test_a_float32_store_fits_like_the_rounded_float64_data(tmp_path):
    rng = np.random.default_rng(31)
    x = rng.normal(size=(3000, 4)) * [1.0, 10.0, 0.1, 3.0]
    eta = np.column_stack([np.zeros(3000), x @ [0.3, 0.05, 2.0, -0.2], x @ [-0.4, 0.02, 1.0, 0.1]])
    y = (rng.gumbel(size=(3000, 3)) + eta).argmax(axis=1)
    single = dmlr.stage_arrays(x, y, str(tmp_path / "s32.zarr"), dtype="float32", chunk_rows=700)
    assert single.X.dtype == np.float32 and single.metadata["x_dtype"] == "float32"
    assert "float32" in single.describe()
    res = dmlr.fit(single.url, method="newton")
    rounded = dmlr.fit(x.astype(np.float32).astype(np.float64), y, method="newton")
    np.testing.assert_allclose(res.coef, rounded.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), rounded.bse.to_numpy(), rtol=1e-10)
    with pytest.raises(InputError, match="dtype must be 'float64' or 'float32'"):
        dmlr.stage_arrays(x, y, str(tmp_path / "bad.zarr"), dtype="float16")


def test_real_files_as_they_come_are_staged(tmp_path):
    """Issue 24's staging cases: an integer column with a missing value in a later file (float there), CSV and
    Parquet in one command, a directory as source, a groups column with a missing value (the policy applied before
    the sort), integer labels and levels kept integers, and messages that name the file and its 1-based row."""
    rng = np.random.default_rng(24)

    def month(n: int) -> pd.DataFrame:
        return pd.DataFrame({
            "distance": rng.integers(100, 3000, n), "hour": rng.integers(5, 23, n), "k": rng.integers(0, 3, n),
            "tail": rng.choice(["N1", "N2", "N3", "N4"], n), "carrier": rng.integers(1, 4, n),
        })  # fmt: skip

    jan, may, jun = month(400), month(300), month(200)
    may["distance"] = may["distance"].astype(float)
    may.loc[57, "distance"] = np.nan  # data row 58 of may.csv
    folder = tmp_path / "months"
    folder.mkdir()
    jan.to_csv(folder / "jan.csv", index=False)
    may.to_csv(folder / "may.csv", index=False)
    jun.to_parquet(tmp_path / "jun.parquet")
    common = {"target": "carrier", "features": ["distance", "hour", "k"], "categorical": ["k"]}

    with pytest.raises(InputError, match=r"'distance' has a missing value at data row 58 of .*may\.csv"):
        dmlr.stage(str(folder), str(tmp_path / "a.zarr"), **common)
    store = dmlr.stage([str(folder), str(tmp_path / "jun.parquet")], str(tmp_path / "a.zarr"), missing="drop",
                       **common)  # fmt: skip
    assert store.metadata.n_rows == 899 and store.metadata.n_missing == 1
    assert store.metadata.source["format"] == "csv+parquet"
    assert store.classes.tolist() == [1, 2, 3] and store.feature_names == ["distance", "hour", "k[T.1]", "k[T.2]"]
    whole = pd.concat([jan, may.drop(index=57), jun])
    np.testing.assert_array_equal(store.X.compute()[:, :2], whole[["distance", "hour"]].to_numpy(dtype=float))

    with_na = jan.assign(tail=jan["tail"].where(np.arange(400) != 12))
    with_na.to_csv(tmp_path / "tails.csv", index=False)
    with pytest.raises(InputError, match=r"'tail' has a missing value at data row 13 of .*tails\.csv"):
        dmlr.stage(str(tmp_path / "tails.csv"), str(tmp_path / "g.zarr"), groups="tail", **common)
    grouped = dmlr.stage(str(tmp_path / "tails.csv"), str(tmp_path / "g.zarr"), groups="tail", missing="drop",
                         **common)  # fmt: skip
    assert grouped.metadata.n_rows == 399 and grouped.metadata.n_missing == 1 and grouped.metadata.n_groups == 4

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="is a directory holding no CSV or Parquet file"):
        dmlr.stage(str(tmp_path / "empty_dir"), str(tmp_path / "e.zarr"), **common)
    jun.drop(columns=["hour"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match=r"short\.csv has other columns than .*jan\.csv: missing \['hour'\]"):
        dmlr.stage([str(folder / "jan.csv"), str(tmp_path / "short.csv")], str(tmp_path / "s.zarr"), **common)
