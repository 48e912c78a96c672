"""TLS to every cluster: a real ``dask scheduler`` and ``dask worker`` processes with certificates made here, on
loopback; a LocalCluster dmlr starts with a temporary certificate; fast, named failures without certificates."""

from __future__ import annotations

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

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "planted"
    dmlr.save(res, str(path))
    (path / "formula.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(dmlr.StoreError, match=r"formula\.pkl is not in the result's manifest"):
        dmlr.load(str(path))
    assert not (tmp_path / "pwned").exists()
    (path / "formula.pkl").unlink()
    (path / "coef.npy").unlink()
    with pytest.raises(dmlr.StoreError, match=r"coef\.npy is missing"):
        dmlr.load(str(path))
