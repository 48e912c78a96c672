"""TLS to every cluster: a real ``dask scheduler`` and ``dask worker`` processes with certificates made here, on
loopback; a LocalCluster dmlr starts with a temporary certificate; fast, named failures without certificates."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import dmlr
from dmlr import InputError
from tests.problems import draw_problem
from tests.servers import dask_processes, make_certificates
from tests.test_cli import run

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    x, y, _ = draw_problem(4000, 4, 3, seed=31)
    dmlr.stage_arrays(x, y, str(root / "s.zarr"), chunk_rows=1000)
    return root


@pytest.mark.slow
def test_a_fit_on_a_tls_scheduler_equals_the_plain_fit_and_fails_fast_without_certificates(store, tmp_path):
    tls = make_certificates(tmp_path)
    plain = run("fit", str(store / "s.zarr"), "--out", str(tmp_path / "plain"), "--method", "newton",
                "--workers", "2")  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    with dask_processes(n_workers=2, tls=tls) as address:
        assert address.startswith("tls://")
        certs = ["--tls-ca-file", tls["tls_ca_file"], "--tls-cert", tls["tls_cert"], "--tls-key", tls["tls_key"]]
        done = run("fit", str(store / "s.zarr"), "--out", str(tmp_path / "tls"), "--method", "newton",
                   "--scheduler", address, *certs)  # fmt: skip
        assert done.returncode == 0, done.stderr
        a, b = dmlr.load(str(tmp_path / "plain")), dmlr.load(str(tmp_path / "tls"))
        np.testing.assert_allclose(b.coef, a.coef, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b.bse.to_numpy(), a.bse.to_numpy(), rtol=1e-12)

        start = time.perf_counter()
        refused = run("fit", str(store / "s.zarr"), "--out", str(tmp_path / "none"), "--scheduler", address)
        assert time.perf_counter() - start < 10
        assert refused.returncode == 2
        assert "uses TLS" in refused.stderr and "--tls-ca-file" in refused.stderr
        assert not (tmp_path / "none").exists()

        with pytest.raises(InputError, match="uses TLS"):  # Python: the same check
            dmlr.cluster.connect(address)
        with dmlr.cluster.connected(address, security=tls) as client:  # and with the files, a client that works
            assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
            res = dmlr.fit(str(store / "s.zarr"), method="newton", client=client)
        np.testing.assert_allclose(res.coef, a.coef, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_security_temporary_starts_an_encrypted_local_cluster(store, tmp_path):
    with dmlr.cluster.connected("local", n_workers=1, security="temporary") as client:
        workers = list(client.scheduler_info()["workers"])
        assert client.scheduler.address.startswith("tls://")
        assert workers and all(w.startswith("tls://") for w in workers)
    done = run("fit", str(store / "s.zarr"), "--out", str(tmp_path / "r"), "--security", "temporary",
               "--workers", "1", "--verbose")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tls://" in done.stderr  # distributed's own logs name the encrypted addresses


def test_bad_security_arguments_are_named_before_anything_starts(store, tmp_path):
    cases = [
        (["--security", "temporary", "--scheduler", "tls://127.0.0.1:8786"], "has its own"),
        (["--security", "temporary", "--tls-ca-file", str(tmp_path / "x.pem")], "not both"),
        (["--tls-ca-file", str(tmp_path / "absent.pem"), "--tls-cert", str(tmp_path / "absent.pem")], "is not a file"),
        (["--tls-cert", str(tmp_path / "c.pem")], "give tls_ca_file and tls_cert"),
    ]
    for extra, words in cases:
        start = time.perf_counter()
        done = run("fit", str(store / "s.zarr"), "--out", str(tmp_path / "r"), *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert words in done.stderr, (extra, done.stderr)
        assert time.perf_counter() - start < 10 and not (tmp_path / "r").exists()


def test_a_pipeline_spec_names_its_certificates_relative_to_itself(tmp_path):
    from dmlr.pipeline.spec import SpecError, load_pipeline

    tls = make_certificates(tmp_path)
    spec = tmp_path / "job.yaml"
    body = "version: 1\nname: tls\ndata: {synthetic: {rows: 1000}, target: y}\ncluster:\n  spec: local\n  security:\n"
    spec.write_text(body + "    tls_ca_file: tls_ca_file.pem\n    tls_cert: tls_cert.pem\n    tls_key: tls_key.pem\n")
    assert load_pipeline(spec).cluster.security == tls
    spec.write_text(body.replace("  security:\n", "  security: temporary\n"))
    assert load_pipeline(spec).cluster.security == "temporary"
    spec.write_text(body + "    tls_ca_file: ca.pem\n    tls_password: x\n")
    with pytest.raises(SpecError, match=r"cluster\.security\.tls_password: unknown field"):
        load_pipeline(spec)
    spec.write_text(body.replace("  security:\n", "  security: yes-please\n"))
    with pytest.raises(SpecError, match=r"cluster\.security: expected 'temporary'"):
        load_pipeline(spec)


def test_a_result_edited_truncated_or_added_to_after_writing_is_refused_by_name(tmp_path):
    """Every file of a result is checked against the SHA-256 manifest written with it, before anything is used: a
    pickle planted as formula.pkl in a result that had none is refused without being unpickled."""
    import pickle

    x, y, _ = draw_problem(500, 2, 3, seed=32)
    res = dmlr.fit(x, y)
    for name, damage in [
        ("coef.npy", lambda b: b[:-8] + bytes(8 * [1])),  # edited
        ("history.jsonl", lambda b: b[: len(b) // 2]),  # truncated
        ("result.json", lambda b: b.replace(b'"converged": true', b'"converged": false')),
    ]:
        path = tmp_path / name
        dmlr.save(res, str(path))
        assert dmlr.load(str(path)).llf == res.llf
        target = path / name
        target.write_bytes(damage(target.read_bytes()))
        with pytest.raises(dmlr.StoreError, match=rf"{name} does not match the SHA-256 digest"):
            dmlr.load(str(path))

    path = tmp_path / "planted"
    dmlr.save(res, str(path))
    (path / "formula.pkl").write_bytes(pickle.dumps(_Payload(tmp_path / "pwned")))
    with pytest.raises(dmlr.StoreError, match=r"formula\.pkl is not in the result's manifest"):
        dmlr.load(str(path))
    assert not (tmp_path / "pwned").exists()
    (path / "formula.pkl").unlink()
    (path / "coef.npy").unlink()
    with pytest.raises(dmlr.StoreError, match=r"coef\.npy is missing"):
        dmlr.load(str(path))


class _Payload:
    """Unpickling it creates the file ``target``: what an attacker would plant."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _forge(path, name: str, data: bytes) -> None:
    """Replace one file of a result and re-sign the manifest, as an attacker who can write the directory would."""
    import hashlib
    import json

    (path / name).write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def _formula_fit():
    import pandas as pd

    rng = np.random.default_rng(27)
    n = 3000
    d = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.uniform(0.1, 2.0, size=n),
            "k": rng.integers(0, 3, size=n),
            "r": rng.choice(["north", "south", "east"], size=n),
        }
    )
    eta = np.column_stack([0.5 * d.x - 0.3 * (d.r == "south"), 0.4 * np.log(d.z) + 0.2 * d.k])
    p = np.exp(np.column_stack([np.zeros(n), eta]))
    p /= p.sum(axis=1, keepdims=True)
    d["y"] = np.array(["a", "b", "c"])[(rng.uniform(size=n)[:, None] > p.cumsum(axis=1)).sum(axis=1)]
    formula = (
        "y ~ scale(x) + scale(x):C(r) + bs(z, df=4) + poly(np.log(z), degree=2) + center(np.sqrt(z))"
        " + C(r, contr.sum) + C(k)"
    )
    return dmlr.fit_formula(formula, d), d


def test_crafted_results_carrying_pickle_payloads_are_refused_without_running_them(tmp_path):
    """Item 2: payloads an attacker plants and re-signs in the manifest (a pickled object array as coef.npy, a
    pickle as formula.pkl of a current result, an object dtype tagged in formula.json) are refused by name; the file
    each payload would create does not exist. A format-1 result with a pickled formula is refused unless
    allow_legacy_pickle, which converts it (its predictions equal the fit's)."""
    import json
    import pickle

    res, d = _formula_fit()
    target = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(target))
    cases = {
        "coef.npy": (lambda p: _forge(p, "coef.npy", _npy_object(_Payload(target))), r"coef\.npy is not a plain"),
        "formula.pkl": (lambda p: _forge(p, "formula.pkl", payload), r"formula\.pkl is no file of a format-2"),
        "formula.json": (lambda p: _tag_object(p), r"formula\.json holds a malformed value"),
        "formula terms": (lambda p: _code_in_terms(p, target), r"calls open: terms may use data columns"),
    }
    for name, (plant, message) in cases.items():
        path = tmp_path / name
        dmlr.save(res, str(path))
        plant(path)
        with pytest.raises(dmlr.StoreError, match=message):
            dmlr.load(str(path))
        assert not target.exists(), name

    # a format-1 formula result (its encoding pickled, as dmlr 0.1 wrote it)
    legacy = tmp_path / "legacy"
    dmlr.save(res, str(legacy))
    doc = json.loads((legacy / "result.json").read_text())
    _forge(legacy, "result.json", json.dumps({**doc, "format_version": 1}).encode())
    (legacy / "formula.json").unlink()
    _forge(legacy, "formula.pkl", pickle.dumps(_old_encoding(res.formula, d)))
    with pytest.raises(dmlr.StoreError, match=r"allow_legacy_pickle=True"):
        dmlr.load(str(legacy))
    old = dmlr.load(str(legacy), allow_legacy_pickle=True)
    np.testing.assert_array_equal(old.predict_proba(d).to_numpy(), res.predict_proba(d).to_numpy())
    dmlr.save(old, str(tmp_path / "converted"))
    assert sorted(p.name for p in (tmp_path / "converted").iterdir() if p.name.startswith("formula")) == [
        "formula.json"
    ]


def _npy_object(value) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([value], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _tag_object(path) -> None:
    import json

    doc = json.loads((path / "formula.json").read_text())
    doc["state"]["transform_state"]["center(np.sqrt(z))"]["center"] = {"__array__": [1.0], "dtype": "|O"}
    _forge(path, "formula.json", json.dumps(doc).encode())


def _code_in_terms(path, target) -> None:
    """A formula whose term would run code when a table is encoded (formulaic evaluates terms as Python)."""
    import json

    doc = json.loads((path / "formula.json").read_text())
    doc["formula"] += f" + I(open({str(target)!r}, 'w') and 1)"
    doc["state"]["terms"] = doc["formula"].split("~")[1].strip()
    _forge(path, "formula.json", json.dumps(doc).encode())


def test_formula_terms_may_compute_arithmetic_of_the_data_only(tmp_path):
    """A formula is code to formulaic; dmlr admits terms of columns, arithmetic, formulaic's transforms and numpy's
    ufuncs only (checked with ast, nothing evaluated), at fit time so that a fitted result always loads again."""
    import pandas as pd

    from dmlr.formula_check import check_terms, term_variables

    d = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "r": ["a", "b", "a", "b"], "y": [0, 1, 0, 1]})
    target = tmp_path / "pwned"
    for term, problem in [
        (f"I(open({str(target)!r}, 'w') and 1)", "calls open"),
        ("{__import__('os').getpid()}", "calls __import__"),
        ("I(x.__class__)", "reads the attribute x.__class__"),
        ("np.save('f', x)", "calls np.save"),
        ("I([v for v in x])", "uses Python's ListComp"),
        ("I(eval)", "uses ['eval'], which are not columns of the data"),
    ]:
        with pytest.raises(InputError, match=re.escape(problem)):
            dmlr.fit_formula(f"y ~ x + {term}", d)
    assert not target.exists()
    for ok in [
        "x + C(r, contr.sum)",
        "np.log(x) + I(x ** 2) + np.maximum(x, 2)",
        "C(r, contr.treatment('b')) + center(x)",
        "bs(x, df=3) + poly(x, degree=2) + Q('x') + {np.where(x > 2, x, 0)} + C(r, levels=['b', 'a'])",
    ]:
        check_terms(ok, ["x", "r"])
    # formulaic's required_variables leaves out stateful transforms' arguments; dmlr reads them from the terms
    assert term_variables("center(x) + bs(z, df=3) + C(k, Sum) + Q('odd name') + np.log(w)") == [
        "k",
        "odd name",
        "w",
        "x",
        "z",
    ]


def _old_encoding(encoding, data):
    """The object dmlr 0.1 pickled: its FormulaEncoding held the model spec formulaic learnt from the data."""
    from dmlr.formula import FormulaEncoding

    old = FormulaEncoding.__new__(FormulaEncoding)
    spec = encoding.spec.get_model_matrix(data.astype({"r": "category"})).model_spec
    fields = {"formula": encoding.formula, "spec": spec, "variables": encoding.variables}
    vars(old).update(fields, levels=encoding.levels)
    return old


_FRESH = """
import sys, numpy as np, pandas as pd, dmlr
res = dmlr.load(sys.argv[1])
d = pd.read_parquet(sys.argv[2])
np.save(sys.argv[3], res.predict_proba(d).to_numpy(), allow_pickle=False)
"""


def test_a_formula_fit_loaded_in_a_fresh_process_predicts_raw_frames_as_before_with_no_pickle_saved(tmp_path):
    """Item 3: a formula with stateful transforms (centre, B-spline knots, orthogonal polynomial, sum contrasts, an
    integer categorical, an interaction of a scaled column) is saved, loaded in a new Python process, and predicts the
    raw table as the fitted result does (1e-12); every file of the result reads as JSON, text or a numeric .npy with
    allow_pickle=False, and none holds pickle's protocol opcode."""
    import json
    import subprocess
    import sys

    res, d = _formula_fit()
    out = tmp_path / "result"
    dmlr.save(res, str(out))
    d.to_parquet(tmp_path / "d.parquet")
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH)
    subprocess.run(
        [sys.executable, str(script), str(out), str(tmp_path / "d.parquet"), str(tmp_path / "p.npy")], check=True
    )
    again = np.load(tmp_path / "p.npy", allow_pickle=False)
    np.testing.assert_allclose(again, res.predict_proba(d).to_numpy(), rtol=0, atol=1e-12)
    assert res.predict_proba(d).shape == (len(d), 3) and np.isfinite(again).all()

    for f in sorted(out.iterdir()):
        data = f.read_bytes()
        assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data and not data.startswith(b"\x80"), f.name
        if f.suffix == ".npy":
            assert np.load(f, allow_pickle=False).dtype.kind == "f", f.name
        elif f.suffix == ".json":
            json.loads(data)
        elif f.suffix == ".jsonl":
            [json.loads(line) for line in data.decode().splitlines()]
        else:
            assert f.name in {"summary.txt", "COMPLETE"}, f.name
            data.decode("utf-8")


def test_stores_and_checkpoints_hold_no_pickle(tmp_path):
    """Item 2's "no pickle anywhere": a store staged from text columns (a categorical feature, text labels, text
    groups) holds numeric arrays only, with no object codec, and every checkpoint of a fit on it reads with
    allow_pickle=False."""
    import io
    import json

    import pandas as pd

    from dmlr.checkpoint import MAGIC

    rng = np.random.default_rng(4)
    n = 2000
    d = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "r": rng.choice(["a", "b"], n),
            "g": rng.choice(["g1", "g2", "g3"], n),
            "y": rng.choice(["p", "q", "s"], n),
        }
    )
    d.to_csv(tmp_path / "d.csv", index=False)
    store = tmp_path / "s.zarr"
    dmlr.stage(str(tmp_path / "d.csv"), str(store), target="y", features=["x", "r"], categorical=["r"], groups="g")
    kinds = {}
    for meta in store.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc["node_type"] == "array":
            kinds[meta.parent.name] = np.dtype(doc["data_type"]).kind
            assert not any("pickle" in c["name"] or "vlen" in c["name"] for c in doc["codecs"]), meta
    assert kinds == {"X": "f", "y": "i", "groups": "i"}

    res = dmlr.fit(str(store), checkpoint=str(tmp_path / "ckpt"), method="bohning", cov_type="cluster")
    files = [f for f in (tmp_path / "ckpt").rglob("*") if f.is_file()]
    assert files and res.n_iter > 1
    for f in files:
        blob = f.read_bytes()
        assert blob.startswith(MAGIC), f.name
        with np.load(io.BytesIO(blob[len(MAGIC) + 32 :]), allow_pickle=False) as npz:
            assert all(npz[k].dtype.kind in "biuf" for k in npz.files), f.name
