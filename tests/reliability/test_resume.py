"""Crashes and Ctrl-C lose nothing: resume continues from the tuner's state and MLflow agrees."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:sleepy
metric: {name: value, goal: minimize}
fixed: {steps: 3, pause: 0.1}
params:
  x: {type: float, low: -1.0, high: 1.0}
budget: {trials: 30}
"""


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args], cwd=tmp_path, env=harness_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def mlflow_children(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
    return parents, kids


def optuna_trials(tmp_path: Path, name: str) -> list:
    path = tmp_path / ".harness" / "sweeps" / name / "optuna.journal"
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
    return study.get_trials(deepcopy=False)


def random_ledger(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / ".harness" / "sweeps" / name / "random.json").read_text())["trials"]


def progress(tmp_path: Path, name: str) -> int:
    """Bytes the tuner's own state has written (it grows as trials are asked and finish)."""
    folder = tmp_path / ".harness" / "sweeps" / name
    files = ("optuna.journal", "ax.results.jsonl", "random.json", "events.jsonl")
    return sum((folder / f).stat().st_size for f in files if (folder / f).exists())


def ax_trials(tmp_path: Path, name: str) -> dict:
    from ax.api import Client

    client = Client.load_from_json_file(str(tmp_path / ".harness" / "sweeps" / name / "ax.json"))
    return dict(client._experiment.trials)


AX_STATES = {"COMPLETED": "complete", "EARLY_STOPPED": "pruned", "ABANDONED": "pruned", "FAILED": "failed"}


def finished_states(tmp_path: Path, tuner: str, name: str) -> dict[int, str]:
    """Trial number -> state for the trials that count toward the budget (tuner's view)."""
    if tuner == "ax":
        from harness.tuners.ax import SPARE

        trials = ax_trials(tmp_path, name)
        assert not [i for i, t in trials.items() if t.status.name in ("RUNNING", "CANDIDATE", "STAGED")]
        return {i: AX_STATES[t.status.name] for i, t in trials.items()
                if t.status_reason not in (SPARE, "interrupted")}
    if tuner == "ray":
        from harness.events import read_events

        _, finished = read_events(tmp_path / ".harness" / "sweeps" / name)
        return {int(r["number"]): r["state"] for r in finished.values() if r.get("reason") != "interrupted"}
    if tuner == "optuna":
        return {t.number: t.state.name.lower().replace("fail", "failed")
                for t in optuna_trials(tmp_path, name)
                if t.state.is_finished() and t.user_attrs.get("harness_reason") != "interrupted"}
    return {int(n): rec["state"] for n, rec in random_ledger(tmp_path, name).items()
            if rec["state"] != "running" and rec.get("reason") != "interrupted"}


def check_consistent(tmp_path: Path, uri: str, tuner: str, name: str, budget: int) -> None:
    states = finished_states(tmp_path, tuner, name)
    assert len(states) == budget, f"{len(states)} trials finished in the tuner's state"
    parents, kids = mlflow_children(uri, "space")
    assert len(parents) == 1, "a resumed sweep keeps one parent run"
    by_number = {int(k.data.tags["harness.trial"]): k for k in kids}
    assert all(k.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for k in kids)
    for number, state in states.items():
        assert by_number[number].data.tags["harness.state"] == state, number
    for number, kid in by_number.items():
        if number not in states:  # interrupted trials are failed with that reason
            assert kid.data.tags["harness.state"] == "failed"
            assert kid.data.tags["harness.reason"] == "interrupted"
    complete = [k.data.params["x"] for k in kids if k.data.tags["harness.state"] == "complete"]
    assert not [x for x, n in Counter(complete).items() if n > 1], "a completed configuration ran twice"
    assert parents[0].data.metrics["trials_finished"] >= 1


@pytest.mark.parametrize("tuner", ["optuna", pytest.param("ax", marks=pytest.mark.slow),  # ~90 s
                                   pytest.param("random", marks=pytest.mark.slow),
                                   pytest.param("ray", marks=pytest.mark.slow)])
def test_sigkill_the_driver_five_times(tmp_path, write_space, tuner):
    space = write_space(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = random.Random(1234)
    args = ["sweep", str(space), "--tuner", tuner, "--workers", "2", "--devices", "cpu",
            "--tracking-uri", uri, "--name", "crashy", "--seed", "1"]
    proc = start(tmp_path, *args)
    kills = 0
    for _ in range(5):
        # a kill at a random moment once this run has made progress (Ray alone takes seconds
        # to start: a fixed delay killed it during start-up every time, resuming nothing)
        seen = progress(tmp_path, "crashy")
        deadline = time.time() + 60
        while progress(tmp_path, "crashy") == seen and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(rng.uniform(0.2, 2.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        kills += 1
        proc.wait(timeout=30)
        started = (tmp_path / ".harness" / "sweeps" / "crashy" / "state.json").exists()
        # killed before it wrote any state: nothing to resume, so start it again
        proc = start(tmp_path, "resume", "crashy") if started else start(tmp_path, *args)
    out, errs = proc.communicate(timeout=300)
    assert proc.returncode == 0, errs[-3000:]
    assert kills >= 3, "the sweep should have been killed several times"
    check_consistent(tmp_path, uri, tuner, "crashy", budget=30)


def test_ctrl_c_then_resume(tmp_path, write_space):
    space = write_space(SPACE.replace("steps: 3, pause: 0.1", "steps: 6, pause: 0.2").replace("trials: 30", "trials: 10"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start(tmp_path, "sweep", str(space), "--tuner", "optuna", "--workers", "2", "--devices", "cpu",
                 "--tracking-uri", uri, "--name", "ctrlc")
    state = tmp_path / ".harness" / "sweeps" / "ctrlc" / "optuna.journal"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some trials finished and others run
        if state.exists() and sum(t.state.is_finished() for t in optuna_trials(tmp_path, "ctrlc")) >= 3:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130, errs[-3000:]
    assert "harness resume ctrlc" in errs
    trials = optuna_trials(tmp_path, "ctrlc")
    interrupted = [t for t in trials if t.user_attrs.get("harness_reason") == "interrupted"]
    done = [t for t in trials if t.state.is_finished() and t not in interrupted]
    assert interrupted, "the trials running at Ctrl-C are marked interrupted"
    assert all(t.state.name == "FAIL" for t in interrupted)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    _, kids = mlflow_children(uri, "space")
    by_number = {int(k.data.tags["harness.trial"]): k for k in kids}
    for t in done:  # every finished trial is in both the tuner state and MLflow
        assert by_number[t.number].data.tags["harness.state"] == "complete"
    for t in interrupted:
        assert by_number[t.number].data.tags["harness.reason"] == "interrupted"
    # they stopped at their next report, not at the end of their budget (a trial may already have
    # sent its last report when Ctrl-C came: then it stops there, so ask it of one of them)
    assert min(max(t.intermediate_values, default=0) for t in interrupted) < 6
    state_json = json.loads((tmp_path / ".harness" / "sweeps" / "ctrlc" / "state.json").read_text())
    assert state_json["status"] == "interrupted"

    resumed = start(tmp_path, "resume", "ctrlc")
    _, errs = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errs[-3000:]
    check_consistent(tmp_path, uri, "optuna", "ctrlc", budget=10)
    # each interrupted configuration ran again exactly once
    trials = optuna_trials(tmp_path, "ctrlc")
    requeued = Counter(t.user_attrs.get("harness_requeue_of") for t in trials if "harness_requeue_of" in t.user_attrs)
    assert set(requeued) == {t.number for t in interrupted} and set(requeued.values()) == {1}


def test_resume_refuses_a_changed_spec(tmp_path, write_space):
    space = write_space(SPACE.replace("trials: 30", "trials: 2"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start(tmp_path, "sweep", str(space), "--tuner", "random", "--devices", "cpu", "--workers", "1",
                 "--tracking-uri", uri, "--name", "fixed")
    assert proc.wait(timeout=200) == 0
    space.write_text(SPACE.replace("high: 1.0", "high: 2.0"))
    proc = start(tmp_path, "sweep", str(space), "--resume", "--name", "fixed")
    _, errs = proc.communicate(timeout=100)
    assert proc.returncode == 2 and "differs from the spec the sweep started with" in errs
    # a larger budget extends the sweep
    proc = start(tmp_path, "resume", "fixed", "--trials", "4")
    _, errs = proc.communicate(timeout=200)
    assert proc.returncode == 0, errs
    assert len(finished_states(tmp_path, "random", "fixed")) == 4
