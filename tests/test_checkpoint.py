"""Checkpoints: resuming after any iteration gives the uninterrupted fit; corrupt files fall back; SIGTERM is clean."""

from __future__ import annotations

import os
import signal
import warnings

import dask.array as da
import numpy as np
import pytest
from problems import draw_problem

import dmlr
from dmlr.checkpoint import Checkpointer, DriverState, fingerprint
from dmlr.errors import ConvergenceWarning, JobInterrupted
from dmlr.interrupt import critical, terminate_gracefully
from dmlr.oracle.statistics import Statistics


@pytest.fixture(scope="module")
def data() -> tuple[da.Array, da.Array]:
    x, y, _ = draw_problem(6000, 14, 10, seed=11)
    return da.from_array(x, chunks=(1500, -1)), da.from_array(y, chunks=1500)


def _fit(data, method, tmp=None, max_iter=40, events=None):
    """A fit; one stopped early (``max_iter`` small) skips the inference pass, as a killed fit would."""
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return dmlr.fit(
            x,
            y,
            method=method,
            max_iter=max_iter,
            inference=max_iter == 40,
            checkpoint=tmp,
            callback=None if events is None else events.append,
        )


# lbfgs: its preconditioner refreshed by the information of the pass after its second step (refresh_every 1 here),
# so a stop at 1 resumes before the refresh and one at 3 resumes with the refreshed factor from the checkpoint
@pytest.mark.parametrize("method", ["newton", "bohning", "lbfgs", "auto"])
@pytest.mark.parametrize("stop", [0, 1, 3])
def test_resume_after_any_iteration_equals_uninterrupted(data, tmp_path, method, stop):
    reference = _fit(data, method)
    partial = _fit(data, method, tmp_path, max_iter=stop)
    assert partial.n_iter == stop and not partial.converged
    events: list = []
    resumed = _fit(data, method, tmp_path, events=events)
    starts = [e for e in events if e.get("event") == "resume"]
    assert len(starts) == 1 and starts[0]["iteration"] == stop
    # no pass is repeated: the resumed fit's passes continue the partial fit's count
    assert resumed.history[-1]["passes"] == reference.history[-1]["passes"]
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)
    assert resumed.n_iter == reference.n_iter
    np.testing.assert_allclose(resumed.bse, reference.bse, rtol=1e-10)
    assert abs(resumed.llf - reference.llf) <= 1e-10 * abs(reference.llf)


def test_corrupt_or_truncated_newest_checkpoint_falls_back(data, tmp_path):
    reference = _fit(data, "bohning")
    _fit(data, "bohning", tmp_path, max_iter=4)
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".dmlrckpt"))
    assert files == ["iter-000003.dmlrckpt", "iter-000004.dmlrckpt"]
    newest = tmp_path / files[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    events: list = []
    resumed = _fit(data, "bohning", tmp_path, events=events)
    kinds = [(e["event"], e["iteration"]) for e in events if "event" in e]
    assert kinds == [("checkpoint_invalid", 4), ("resume", 3)]
    assert "checksum" in events[0]["reason"]
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)

    # a flipped byte in the middle is caught the same way
    _fit(data, "bohning", tmp_path / "flip", max_iter=4)
    newest = tmp_path / "flip" / "iter-000004.dmlrckpt"
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    newest.write_bytes(bytes(blob))
    events = []
    resumed = _fit(data, "bohning", tmp_path / "flip", events=events)
    assert [(e["event"], e["iteration"]) for e in events if "event" in e] == [
        ("checkpoint_invalid", 4),
        ("resume", 3),
    ]
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)


def test_checkpoint_of_another_fit_is_not_used(data, tmp_path):
    _fit(data, "newton", tmp_path, max_iter=2)
    x, y = data
    events: list = []
    other = dmlr.fit(x, y, method="newton", l2=0.5, checkpoint=tmp_path, callback=events.append)
    assert [e["event"] for e in events if "event" in e] == ["checkpoint_stale"] * 2  # both files kept, both other
    fresh = dmlr.fit(x, y, method="newton", l2=0.5)
    np.testing.assert_allclose(other.coef, fresh.coef, rtol=0, atol=1e-10)


def _state(iteration: int) -> DriverState:
    stats = Statistics(10, 10.0, -3.5, np.arange(6.0).reshape(3, 2), np.array([4.0, 3.0, 3.0]))
    first = Statistics(10, 10.0, -4.0, np.ones((3, 2)), np.array([4.0, 3.0, 3.0]), gram=np.eye(3))
    return DriverState(iteration, 2 * iteration + 1, np.full((3, 2), 0.5), stats, first, [{"iteration": 0}], {})


def test_checkpoint_roundtrip_and_pruning(tmp_path):
    ckpt = Checkpointer(str(tmp_path), fingerprint(a=1), keep=2)
    assert ckpt.load() is None and ckpt.newest() is None
    for i in range(5):
        ckpt.save(_state(i))
    assert sorted(os.listdir(tmp_path)) == ["iter-000003.dmlrckpt", "iter-000004.dmlrckpt"]
    assert ckpt.newest() == 4
    (tmp_path / ".tmp-leftover").write_bytes(b"partial")  # a write cut short before its rename
    state = ckpt.load()
    assert state is not None and state.iteration == 4 and state.passes == 9
    assert state.first_stats.gram is not None and state.stats.gram is None
    np.testing.assert_array_equal(state.stats.score, np.arange(6.0).reshape(3, 2))
    assert not (tmp_path / ".tmp-leftover").exists()
    ckpt.clear()
    assert not tmp_path.exists()


def test_sigterm_is_held_until_the_checkpoint_is_written(tmp_path):
    ckpt = Checkpointer(str(tmp_path), fingerprint(a=1))
    with terminate_gracefully():
        with pytest.raises(JobInterrupted, match="SIGTERM"):
            with critical():
                os.kill(os.getpid(), signal.SIGTERM)
                ckpt.save(_state(7))  # the signal arrived mid-write: the write still completes
        with pytest.raises(JobInterrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
    assert Checkpointer(str(tmp_path), fingerprint(a=1)).load().iteration == 7


def test_sigterm_whose_exception_was_swallowed_still_stops_at_the_next_iteration(data, tmp_path):
    """The handler's exception lands wherever the main thread is; code there may swallow it (a bare ``except``)."""
    reference = _fit(data, "bohning")
    swallowed = []

    def swallowing_callback(record):
        if record.get("iteration") == 2 and not swallowed:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs here, at a bytecode boundary
                    pass
            except Exception as exc:  # a library that swallows every exception
                swallowed.append(exc)

    x, y = data
    with terminate_gracefully(), pytest.raises(JobInterrupted, match="SIGTERM"):
        dmlr.fit(x, y, method="bohning", max_iter=40, checkpoint=tmp_path, callback=swallowing_callback)
    assert len(swallowed) == 1 and isinstance(swallowed[0], JobInterrupted)
    events: list = []
    resumed = _fit(data, "bohning", tmp_path, events=events)
    assert [e["iteration"] for e in events if e.get("event") == "resume"] == [2]  # stopped at the next boundary
    np.testing.assert_allclose(resumed.coef, reference.coef, rtol=0, atol=1e-10)


def test_a_checkpoint_of_an_earlier_format_is_refused_with_a_message(data, tmp_path):
    """Checkpoints written before the fit's own state was kept in them (format 1) are not resumed from: the event
    says why, and the fit starts anew and ends as an uninterrupted one."""
    import hashlib
    import io
    import json

    from dmlr.checkpoint import MAGIC

    reference = _fit(data, "newton")
    _fit(data, "newton", tmp_path, max_iter=1)
    for path in tmp_path.glob("iter-*.dmlrckpt"):  # rewrite each as format 1 wrote it
        with np.load(io.BytesIO(path.read_bytes()[len(MAGIC) + 32 :]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
        del meta["format"], meta["fit_state"]
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        path.write_bytes(MAGIC + hashlib.sha256(buf.getvalue()).digest() + buf.getvalue())
    events: list = []
    res = _fit(data, "newton", tmp_path, events=events)
    invalid = [e for e in events if e.get("event") == "checkpoint_invalid"]
    assert invalid and all("earlier dmlr (checkpoint format 1" in e["reason"] for e in invalid)
    assert not [e for e in events if e.get("event") == "resume"]
    np.testing.assert_allclose(res.coef, reference.coef, rtol=0, atol=1e-10)
