"""``dmlr run SPEC.yaml``: stages, skipping, resuming after SIGKILL and SIGTERM, spec errors, held-out metrics."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import dmlr
from dmlr.pipeline import load_pipeline
from dmlr.pipeline.spec import SpecError

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipelines" / "example.yaml"


def write_spec(folder: Path, **changes) -> Path:
    """The example spec with sections replaced (small data, workdir in ``folder``)."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["workdir"] = "work"
    doc["data"]["synthetic"].update(rows=40_000, test_rows=10_000)
    for key, value in changes.items():
        doc[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def dmlr_run(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmlr", "run", str(spec), *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def events(stderr: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def stage_status(stderr: str) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in events(stderr) if e["event"] == "stage" and e["status"] != "started"}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_example_pipeline_end_to_end_then_rerun_does_nothing(tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    spec = write_spec(tmp_path)
    first = dmlr_run(spec)
    assert first.returncode == 0, first.stderr
    assert stage_status(first.stderr) == {s: "done" for s in ("stage", "fit", "evaluate", "report")}
    lines = events(first.stderr)
    iterations = [e for e in lines if e["event"] == "iteration"]
    assert iterations and {"iteration", "loglik", "max_abs_score", "seconds", "passes"} <= set(iterations[0])
    work = tmp_path / "work"
    assert sorted(os.listdir(work / "report")) == ["coefficients.png", "convergence.png", "report.html", "summary.txt"]
    assert '<img src="convergence.png"' in (work / "report" / "report.html").read_text()

    # held-out metrics against scikit-learn on the raw test CSVs, encoded independently with pandas
    res = dmlr.load(str(work / "fit" / "result"))
    test = pd.concat(pd.read_csv(p) for p in sorted((work / "raw" / "test").glob("*.csv")))
    x = pd.get_dummies(test.drop(columns="mode"), columns=["region"], drop_first=True, prefix_sep="[T.", dtype=float)
    x.columns = [c + "]" if "[T." in c else c for c in x.columns]
    proba = res.predict_proba(x[list(res.data_feature_names)].to_numpy())
    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    labels = list(res.classes)
    assert metrics["n_rows"] == len(test) == 10_000
    assert metrics["log_loss"] == pytest.approx(log_loss(test["mode"], proba, labels=labels), rel=1e-12)
    predicted = np.asarray(labels)[proba.argmax(axis=1)]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(test["mode"], predicted), rel=1e-12)
    np.testing.assert_array_equal(metrics["confusion_matrix"], confusion_matrix(test["mode"], predicted, labels=labels))
    bins = metrics["calibration"]["bins"]
    assert sum(b["weight"] for b in bins) == len(test)
    top = proba.max(axis=1)
    hits = predicted == test["mode"].to_numpy()
    ece = sum(abs(top[m].mean() - hits[m].mean()) * m.sum() for b in bins
              if (m := (top >= b["lower"]) & (top < b["upper"] + (b["upper"] == 1.0))).any()) / len(test)  # fmt: skip
    assert metrics["calibration"]["expected_calibration_error"] == pytest.approx(ece, rel=1e-9)

    before = tree_bytes(work)
    again = dmlr_run(spec)
    assert again.returncode == 0, again.stderr
    assert stage_status(again.stderr) == {s: "skipped" for s in ("stage", "fit", "evaluate", "report")}
    assert not [e for e in events(again.stderr) if e["event"] in ("cluster", "iteration")]  # no cluster, no pass
    assert tree_bytes(work) == before  # not one output byte changed

    # a damaged output makes its stage (and only what depends on it) run again
    (work / "report" / "summary.txt").write_text("edited")
    third = dmlr_run(spec)
    assert stage_status(third.stderr) == {"stage": "skipped", "fit": "skipped", "evaluate": "skipped", "report": "done"}
    after = tree_bytes(work)
    assert after.keys() == before.keys()
    assert b"MNLogit Regression Results" in after["report/summary.txt"]  # rewritten (its clock line is new)
    assert {k: v for k, v in after.items() if not k.startswith(("report/", "stages/report"))} == {
        k: v for k, v in before.items() if not k.startswith(("report/", "stages/report"))
    }


def test_file_sources_changed_test_set_reruns_only_what_depends_on_it(tmp_path):
    from dmlr.demo import make_table

    table, _ = make_table(24_000, seed=5)
    for name, part in (("train", table.iloc[:18_000]), ("test", table.iloc[18_000:])):
        (tmp_path / name).mkdir()
        half = len(part) // 2
        part.iloc[:half].to_csv(tmp_path / name / "a.csv", index=False)
        part.iloc[half:].to_csv(tmp_path / name / "b.csv", index=False)
    spec = write_spec(
        tmp_path,
        data={"train": "train/*.csv", "test": ["test/a.csv", "test/b.csv"], "target": "mode",
              "categorical": ["region"]},
        report={"format": "markdown"},
    )  # fmt: skip
    first = dmlr_run(spec)
    assert first.returncode == 0, first.stderr
    assert "![convergence.png](convergence.png)" in (tmp_path / "work" / "report" / "report.md").read_text()
    metrics = json.loads((tmp_path / "work" / "evaluate" / "metrics.json").read_text())
    assert metrics["n_rows"] == 6_000

    table.iloc[18_000:21_000].to_csv(tmp_path / "test" / "b.csv", index=False)  # the held-out set changes
    second = dmlr_run(spec)
    assert second.returncode == 0, second.stderr
    # the training store is rewritten with identical content, so the fit is kept
    assert stage_status(second.stderr) == {"stage": "done", "fit": "skipped", "evaluate": "done", "report": "done"}
    assert json.loads((tmp_path / "work" / "evaluate" / "metrics.json").read_text())["n_rows"] == 6_000

    forced = dmlr_run(spec, "--stage", "fit", "--force")
    assert stage_status(forced.stderr) == {"fit": "done"}


@pytest.fixture(scope="module")
def staged_bohning(tmp_path_factory):
    """The example staged once, with a slow-converging method so kills land inside the fit; plus its result."""
    root = tmp_path_factory.mktemp("resume")
    spec = write_spec(root / "reference", fit={"method": "bohning", "max_iter": 400})
    done = dmlr_run(spec)
    assert done.returncode == 0, done.stderr
    n_iter = max(e["iteration"] for e in events(done.stderr) if e["event"] == "iteration")
    assert n_iter >= 20
    return root, spec, n_iter, np.load(root / "reference" / "work" / "fit" / "result" / "coef.npy")


def _copy_staged(root: Path, name: str) -> Path:
    """A fresh pipeline folder whose stage step is complete (its marker and stores copied) and nothing else."""
    src, dst = root / "reference", root / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fit", "evaluate", "report"))
    for stage in ("fit", "evaluate", "report"):
        (dst / "work" / "stages" / f"{stage}.json").unlink()
    return dst / "spec.yaml"


def _start_and_stop_at(spec: Path, iteration: int, sig: signal.Signals) -> tuple[int, list[dict], str]:
    """Start ``dmlr run`` and send ``sig`` when the fit logs ``iteration`` (SIGKILL: the whole process group).

    Returns the exit status, the JSON log lines and the other lines of stderr (for failure messages).
    """
    proc = subprocess.Popen([sys.executable, "-m", "dmlr", "run", str(spec)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    seen, other = [], []
    assert proc.stderr is not None
    for line in proc.stderr:
        if not line.startswith("{"):
            other.append(line)
            continue
        seen.append(json.loads(line))
        if seen[-1]["event"] == "iteration" and seen[-1]["iteration"] == iteration:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    rest = proc.stderr.read()
    seen += events(rest)
    other += [line for line in rest.splitlines(keepends=True) if not line.startswith("{")]
    return rc, seen, "".join(other)


@pytest.mark.slow
def test_sigkill_at_random_iterations_then_rerun_equals_uninterrupted(staged_bohning):
    root, _, n_iter, reference = staged_bohning
    kill_points = sorted(random.Random(2026).sample(range(1, n_iter - 2), 3))
    for k in kill_points:
        spec = _copy_staged(root, f"kill{k}")
        rc, before, stderr = _start_and_stop_at(spec, k, signal.SIGKILL)
        assert rc == -signal.SIGKILL, stderr
        logged = [e["iteration"] for e in before if e["event"] == "iteration"]
        assert logged[-1] >= k and not (spec.parent / "work" / "fit" / "result").exists()
        rerun = dmlr_run(spec)
        assert rerun.returncode == 0, rerun.stderr
        lines = events(rerun.stderr)
        (resume,) = [e for e in lines if e["event"] == "resume"]
        # each logged iteration was checkpointed first; the kill may land after the next checkpoint but before its line
        assert k <= resume["iteration"] <= logged[-1] + 1
        after = [e["iteration"] for e in lines if e["event"] == "iteration"]
        assert after[0] == resume["iteration"] + 1  # no iteration is repeated
        coef = np.load(spec.parent / "work" / "fit" / "result" / "coef.npy")
        print(f"killed at iteration {k} (last logged {logged[-1]}), resumed at {resume['iteration']} of {n_iter}, "
              f"max |coef - uninterrupted| = {np.max(np.abs(coef - reference)):.1e}")  # fmt: skip
        assert np.max(np.abs(coef - reference)) <= 1e-10
        assert not (spec.parent / "work" / "fit" / "checkpoints").exists()  # cleared once the result is saved


def test_sigterm_exits_with_retry_code_and_leaves_a_resumable_checkpoint(staged_bohning):
    from dmlr.cli import EXIT_RETRY

    root, _, _n_iter, reference = staged_bohning
    spec = _copy_staged(root, "term")
    rc, before, stderr = _start_and_stop_at(spec, 5, signal.SIGTERM)
    assert rc == EXIT_RETRY == 75, stderr
    stopped = [e for e in before if e["event"] == "stage" and e["status"] == "interrupted"]
    assert stopped and stopped[0]["stage"] == "fit" and "SIGTERM" in stopped[0]["reason"]
    saved = next(e for e in before if e["event"] == "checkpoint")["iteration"]
    files = sorted(os.listdir(spec.parent / "work" / "fit" / "checkpoints"))
    assert files[-1] == f"iter-{saved:06d}.dmlrckpt"
    rerun = dmlr_run(spec)
    assert rerun.returncode == 0, rerun.stderr
    assert [e["iteration"] for e in events(rerun.stderr) if e["event"] == "resume"] == [saved]
    coef = np.load(spec.parent / "work" / "fit" / "result" / "coef.npy")
    assert np.max(np.abs(coef - reference)) <= 1e-10


def test_ctrl_c_exits_130_with_an_interrupted_line_and_a_resumable_checkpoint(staged_bohning):
    """SIGINT is handled as SIGTERM: the checkpoint being written completes, the stage logs "interrupted", the exit
    code is 130 (not click's "Aborted!" and 1), and the rerun resumes to the uninterrupted coefficients."""
    from dmlr.cli import EXIT_INTERRUPTED

    root, _, _n_iter, reference = staged_bohning
    spec = _copy_staged(root, "ctrl-c")
    rc, before, stderr = _start_and_stop_at(spec, 4, signal.SIGINT)
    assert rc == EXIT_INTERRUPTED == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr
    stopped = [e for e in before if e["event"] == "stage" and e["status"] == "interrupted"]
    assert stopped and stopped[0]["stage"] == "fit" and "SIGINT" in stopped[0]["reason"]
    saved = next(e for e in before if e["event"] == "checkpoint")["iteration"]
    rerun = dmlr_run(spec)
    assert rerun.returncode == 0, rerun.stderr
    assert [e["iteration"] for e in events(rerun.stderr) if e["event"] == "resume"] == [saved]
    assert np.max(np.abs(np.load(spec.parent / "work" / "fit" / "result" / "coef.npy") - reference)) <= 1e-10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fit": {"methd": "newton"}}, "fit.methd: unknown field"),
        ({"fit": {"l2": "strong"}}, "fit.l2: expected a number >= 0, got 'strong'"),
        ({"fit": {"method": "sgd"}}, "fit.method: expected one of"),
        ({"cluster": {"workers": 0}}, "cluster.workers: expected an integer >= 1"),
        ({"version": 2}, "version: this dmlr reads pipeline spec version 1"),
        ({"data": {"train": "a.csv", "test": "b.csv"}}, "data.target: required field is missing"),
        ({"data": {"target": "y", "test": "b.csv"}}, "data.train: required field is missing"),
        ({"data": {"synthetic": {"rows": -5}}}, "data.synthetic.rows: expected an integer >= 1"),
        ({"report": {"format": "pdf"}}, "report.format: expected one of ('html', 'markdown'), got 'pdf'"),
        ({"evaluate": []}, "evaluate: expected a mapping"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"fit": {"cov_type": "HC9"}}, "fit.cov_type: expected one of"),
        ({"fit": {"weights_type": "sampling"}}, "fit.weights_type: expected one of"),
        ({"fit": {"cov_type": "cluster"}}, "fit.cov_type: cluster needs cluster ids: name their column in data.groups"),
        ({"fit": {"l2_path": [1.0, 1.0]}}, "fit.l2_path: lists a penalty twice"),
        ({"fit": {"l2_path": [1.0, -2]}}, "fit.l2_path: expected numbers >= 0, got -2"),
        ({"fit": {"l2_path": [1.0], "l2": 3.0}}, "fit.l2: is chosen by cross-validation"),
        ({"fit": {"l2_path": [1.0], "folds": 1}}, "fit.folds: expected an integer >= 2, got 1"),
        ({"report": {"bootstrap": {"nrep": 1}}}, "report.bootstrap.nrep: expected an integer >= 2, got 1"),
        ({"report": {"bootstrap": {"steps": 0}}}, "report.bootstrap.steps: expected an integer >= 1, got 0"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, change, field):
    spec = write_spec(tmp_path, **change)
    with pytest.raises(SpecError) as info:
        load_pipeline(spec)
    assert field in str(info.value) and str(spec) in str(info.value)


def test_bad_spec_from_the_command_line(tmp_path):
    spec = write_spec(tmp_path, fit={"tol": -1})
    done = dmlr_run(spec)
    assert done.returncode == 2
    assert "fit.tol: expected a number > 0, got -1" in done.stderr
    (tmp_path / "broken.yaml").write_text("version: 1\nname: [unclosed\n")
    done = dmlr_run(tmp_path / "broken.yaml")
    assert done.returncode == 2 and "not valid YAML" in done.stderr
    missing = dmlr_run(tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "no such pipeline spec" in missing.stderr
    sources = write_spec(tmp_path / "src", data={"train": "none/*.csv", "test": "none/*.csv", "target": "y"})
    done = dmlr_run(sources)
    assert done.returncode == 2 and "matches no file" in done.stderr


def test_example_spec_is_valid():
    spec = load_pipeline(EXAMPLE)
    assert spec.workdir == str(ROOT / "runs" / "example")
    assert spec.data.synthetic is not None and spec.fit.method == "auto"


def test_a_separated_fit_writes_its_result_and_exits_3_or_goes_on_with_warn(tmp_path):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(600, 2))
    frame = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": np.where(x[:, 0] > 0, "hi", "lo")})
    frame.iloc[:400].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[400:].to_csv(tmp_path / "test.csv", index=False)
    data = {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"), "target": "y"}
    spec = write_spec(tmp_path / "raise", data=data, fit={"method": "newton"}, cluster={"spec": "local", "workers": 1})
    done = dmlr_run(spec)
    assert done.returncode == 3, done.stderr
    assert "separation involving class(es) ['hi', 'lo'] along the feature(s) x1" in done.stderr
    result = dmlr.load(str(tmp_path / "raise" / "work" / "fit" / "result"))  # written, as the README says
    assert not result.converged and result.message.startswith("separation")
    assert stage_status(done.stderr) == {"stage": "done", "fit": "failed"}

    spec = write_spec(tmp_path / "warn", data=data, fit={"method": "newton", "separation": "warn"},
                      cluster={"spec": "local", "workers": 1})  # fmt: skip
    done = dmlr_run(spec)
    assert done.returncode == 0, done.stderr
    warnings = [e for e in events(done.stderr) if e["event"] == "warning"]
    assert warnings and "separation" in warnings[0]["message"]
    assert set(stage_status(done.stderr).values()) == {"done"}


def test_the_report_can_add_average_marginal_effects(tmp_path):
    spec = write_spec(tmp_path, report={"format": "markdown", "margins": True})
    done = dmlr_run(spec)
    assert done.returncode == 0, done.stderr
    report = tmp_path / "work" / "report"
    assert {"margins.csv", "margins.png", "report.md"} <= {p.name for p in report.iterdir()}
    res = dmlr.load(str(tmp_path / "work" / "fit" / "result"))
    me = res.get_margeff(dmlr.open_store(str(tmp_path / "work" / "data" / "train.zarr")).X)
    table = pd.read_csv(report / "margins.csv", index_col=[0, 1])
    np.testing.assert_allclose(table["Std. Err."].to_numpy(), me.summary_frame()["Std. Err."].to_numpy(), rtol=1e-10)
    text = (report / "report.md").read_text()
    assert "## Average marginal effects (standard error)" in text and "![margins.png](margins.png)" in text


def test_a_nightly_pipeline_appends_new_files_refits_and_reports_what_changed(tmp_path):
    """Issue 26, item 4: a spec naming a base file and an incoming folder, run four times: over the base file (no
    incoming file yet), after a first and a second file arrived (each appended once, the fit started at the previous
    run's result, reading the new rows only before its first step) and once with nothing new (every stage skipped,
    no byte of the workdir changed). The third run's result equals a cold fit of all files; each refit's report has
    its "what changed" tables."""
    from dmlr.demo import make_table

    table, _ = make_table(30_000, seed=26)
    table.iloc[24_000:].to_csv(tmp_path / "test.csv", index=False)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    days = [table.iloc[:20_000], table.iloc[20_000:21_000], table.iloc[21_000:22_000]]  # ~5% more rows a night
    spec = write_spec(
        tmp_path,
        data={"train": "base.csv", "incoming": "incoming/*.csv", "test": "test.csv", "target": "mode",
              "categorical": ["region"]},
        fit={"method": "newton", "tol": 1e-10}, report={"format": "markdown"},
    )  # fmt: skip
    work = tmp_path / "work"
    results = []
    sources = [str(tmp_path / "base.csv"), *(str(incoming / f"day{day}.csv") for day in (1, 2))]
    for day, rows in enumerate(days):
        rows.to_csv(sources[day], index=False)  # the first night: the base file, no incoming file yet
        done = dmlr_run(spec)
        assert done.returncode == 0, done.stderr
        log = events(done.stderr)
        assert stage_status(done.stderr) == {"stage": "done", "fit": "done", "evaluate": "done", "report": "done"}
        store = dmlr.open_store(str(work / "data" / "train.zarr"))
        assert store.metadata.version == day + 1 and store.metadata.n_rows == sum(len(d) for d in days[: day + 1])
        assert store.metadata.versions[-1]["sources"] == [sources[day]]
        res = dmlr.load(str(work / "fit" / "result"))
        results.append(res)
        report = (work / "report" / "report.md").read_text()
        if day == 0:
            assert "What changed" not in report and not any(e["event"] == "warm_start" for e in log)
            continue
        appended = [e for e in log if e["event"] == "appended"]
        assert len(appended) == 1 and appended[0]["files"] == [sources[day]]
        assert res.history[0]["refit"] == {"appended_rows": len(days[day]), "appended_row_passes": 2}
        assert res.history[-1]["passes"] <= 2
        assert f"What changed: {sum(len(d) for d in days[:day]):,} rows before, {len(days[day]):,} appended" in report
        changes = json.loads((work / "report" / "changes.json").read_text())
        assert changes["rows"] == store.metadata.n_rows
        old_share = pd.concat(days[:day])["mode"].value_counts(normalize=True)
        new_share = days[day]["mode"].value_counts(normalize=True)
        for cls, before_share, new_rows_share in changes["shares"]:
            assert before_share == pytest.approx(old_share[cls], abs=1e-12)
            assert new_rows_share == pytest.approx(new_share[cls], abs=1e-12)

    before = tree_bytes(work)
    idle = dmlr_run(spec)
    assert idle.returncode == 0, idle.stderr
    assert set(stage_status(idle.stderr).values()) == {"skipped"} and tree_bytes(work) == before

    cold = dmlr.fit(str(work / "data" / "train.zarr"), method="newton", tol=1e-10)
    np.testing.assert_allclose(results[-1].params.to_numpy(), cold.params.to_numpy(), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(results[-1].bse.to_numpy(), cold.bse.to_numpy(), rtol=1e-6)


def test_held_out_rows_with_a_level_training_never_saw_stop_the_run_or_are_dropped(tmp_path):
    """Issue 24: one held-out row with a level the training files lack stops `dmlr run` with exit 2 naming the
    level and `data.unseen: drop`; with it the row is left out and counted in the stage's log line."""
    from dmlr.demo import make_table

    table, _ = make_table(12_000, seed=24)
    table.iloc[:9_000].to_csv(tmp_path / "train.csv", index=False)
    test = table.iloc[9_000:].copy()
    test.loc[test.index[7], "region"] = "LEX"
    test.to_csv(tmp_path / "test.csv", index=False)
    data = {"train": "train.csv", "test": "test.csv", "target": "mode", "categorical": ["region"]}
    spec = write_spec(tmp_path, data=data)
    stopped = dmlr_run(spec)
    assert stopped.returncode == 2 and "['LEX']" in stopped.stderr and "data.unseen: drop" in stopped.stderr
    spec = write_spec(tmp_path, data={**data, "unseen": "drop"})
    done = dmlr_run(spec)
    assert done.returncode == 0, done.stderr
    staged = next(e for e in events(done.stderr) if e["event"] == "stage" and e.get("stage") == "stage"
                  and e["status"] == "done")  # fmt: skip
    assert staged["test_rows"] == 2_999 and staged["test_missing"] == 1


def test_a_spec_chooses_the_penalty_by_cross_validation_and_reports_bootstrap_errors(tmp_path):
    """fit.l2_path + fit.folds: the fit stage cross-validates the penalties (scores written) and its result is the
    fit at the best one; report.bootstrap adds bootstrap standard errors next to the model-based ones."""
    fit = {"method": "newton", "l2_path": [0.0, 10.0, 1e4], "folds": 3}
    spec = write_spec(tmp_path, fit=fit, report={"format": "markdown", "bootstrap": {"nrep": 50, "seed": 3}})
    done = dmlr_run(spec)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    scores = pd.read_csv(work / "fit" / "cv_scores.csv")
    assert len(scores) == 9 and set(scores["l2"]) == {0.0, 10.0, 1e4}
    best = float(scores.groupby("l2")["log_loss"].mean().idxmin())
    assert best != 1e4  # a penalty that large shrinks every coefficient to ~0: worse held-out log-loss
    chosen = [e for e in events(done.stderr) if e["event"] == "cross_validation"]
    assert chosen and chosen[0]["best_l2"] == best
    res = dmlr.load(str(work / "fit" / "result"))
    alone = dmlr.fit(str(work / "data" / "train.zarr"), l2=best, method="newton")
    assert res.l2 == best
    np.testing.assert_allclose(res.params.to_numpy(), alone.params.to_numpy(), rtol=0, atol=1e-8)
    boot = pd.read_csv(work / "report" / "bootstrap.csv", index_col=[0, 1])
    expected = alone.bootstrap(dmlr.open_store(str(work / "data" / "train.zarr")), nrep=50, seed=3).bse.unstack()
    np.testing.assert_allclose(boot["boot_bse"].to_numpy(), expected.to_numpy(), rtol=1e-6)
    assert boot["ratio"].between(0.6, 1.4).all()  # 50 replicates: SE of an SE ~ 10%
    assert "## Bootstrap standard errors (50 replicates, poisson)" in (work / "report" / "report.md").read_text()
