"""One sweep, two drivers: Ctrl-C behaves the same on Ray Tune's loop as on the ask/tell loop;
one driver per sweep without a race; a torn tuner state file is repaired, never a traceback.
The file and lock primitives themselves are tested in tests/unit/harness/test_files.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:sleepy
metric: {name: value, goal: minimize}
fixed: {steps: 6, pause: 0.25}
params:
  x: {type: float, low: -1.0, high: 1.0}
budget: {trials: 6}
"""


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=harness_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("space")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("harness.kind") == "trial"]


def events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- Ctrl-C on Ray Tune's loop ---------------------------------------------------------------------
@pytest.mark.slow  # ~55 s (Ray starts twice): make test-slow, beside the Ray Tune SIGKILL test
def test_ctrl_c_on_ray_tune_exits_130_leaves_nothing_running_and_resumes(tmp_path, write_space):
    # trials of ~4 s, so the ones running when Ctrl-C comes cannot finish before Tune's loop stops
    space = write_space(SPACE.replace("pause: 0.25", "pause: 0.7"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / ".harness" / "sweeps" / "rayc"
    proc = start(tmp_path, "sweep", str(space), "--tuner", "ray", "--workers", "2", "--devices", "cpu",
                 "--tracking-uri", uri, "--name", "rayc")
    deadline = time.time() + 180
    while time.time() < deadline:  # some trials finished, others running
        evs = events(folder)
        done = sum(e["event"] == "finished" for e in evs)
        if done >= 1 and sum(e["event"] == "started" for e in evs) > done:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 130, errs[-3000:]
    assert "harness resume rayc" in errs
    assert "Traceback" not in errs
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted"
    kids = children(uri)
    assert not [k for k in kids if k.info.status == "RUNNING"], "a child run was left RUNNING"
    interrupted = [k for k in kids if k.data.tags.get("harness.reason") == "interrupted"]
    assert interrupted and all(k.data.tags["harness.state"] == "failed" for k in interrupted)
    first_params = Counter(k.data.params["x"] for k in interrupted)

    resumed = start(tmp_path, "resume", "rayc")
    _, errs = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errs[-3000:]
    kids = children(uri)
    counted = [k for k in kids if k.data.tags.get("harness.reason") != "interrupted"]
    assert len(counted) == 6, "the budget is completed"
    assert not [k for k in kids if k.info.status == "RUNNING"]
    reruns = Counter(k.data.params["x"] for k in counted if k.data.params["x"] in first_params)
    assert set(reruns) == set(first_params) and set(reruns.values()) == {1}, "each interrupted one ran again once"


# -- one driver per sweep --------------------------------------------------------------------------
def test_two_resumes_started_at_once_exactly_one_runs(tmp_path, write_space):
    space = write_space(SPACE.replace("pause: 0.25", "pause: 0.1"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / ".harness" / "sweeps" / "twice"
    first = start(tmp_path, "sweep", str(space), "--tuner", "random", "--workers", "1", "--devices", "cpu",
                  "--tracking-uri", uri, "--name", "twice")
    deadline = time.time() + 120
    while time.time() < deadline and sum(e["event"] == "finished" for e in events(folder)) < 1:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # a dead driver: its lock must not block the resume
    first.wait(timeout=30)
    a, b = start(tmp_path, "resume", "twice"), start(tmp_path, "resume", "twice")
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (err_a[-2000:], err_b[-2000:])
    refused = err_a if a.returncode == 2 else err_b
    lines = [ln for ln in refused.splitlines() if ln.strip() and not ln.startswith("resuming")]
    assert len(lines) == 1 and "another process is driving it (pid" in lines[0], refused
    assert "Traceback" not in err_a + err_b
    kids = children(uri)
    numbers = Counter(int(k.data.tags["harness.trial"]) for k in kids)
    assert max(numbers.values()) == 1, "a trial number was recorded twice"
    assert sum(k.data.tags["harness.state"] == "complete" for k in kids) == 6


# -- torn state files (the repair itself: tests/unit/harness/test_files.py) ---------------------
@pytest.mark.slow  # ~16 s; the repair itself is in the default run (test_files.py)
def test_a_torn_optuna_journal_is_repaired_on_resume(tmp_path, write_space):
    space = write_space(SPACE.replace("pause: 0.25", "pause: 0.01").replace("trials: 6", "trials: 3"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "optuna",
                          "--workers", "1", "--devices", "cpu", "--tracking-uri", uri, "--name", "torn"],
                         cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    journal = tmp_path / ".harness" / "sweeps" / "torn" / "optuna.journal"
    with open(journal, "a") as f:
        f.write('{"op_code": 4, "worker_id": "x", "trial_id": 9, "param')  # a crash mid-append
    run = subprocess.run([sys.executable, "-m", "harness.cli", "resume", "torn", "--trials", "5"],
                         cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "optuna.journal: its last record was cut short" in run.stderr
    assert "Traceback" not in run.stderr
    assert list(journal.parent.glob("optuna.journal.torn-*"))
    assert sum(k.data.tags["harness.state"] == "complete" for k in children(uri)) == 5
    # damage that is not a torn append: refused in one line naming the file, nothing changed
    lines = journal.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    journal.write_text("\n".join(lines) + "\n")
    before = journal.read_bytes()
    run = subprocess.run([sys.executable, "-m", "harness.cli", "resume", "torn", "--trials", "6"],
                         cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert ".harness/sweeps/torn/optuna.journal: line 2 of" in run.stderr
    assert journal.read_bytes() == before
