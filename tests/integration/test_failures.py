"""Trials that raise, diverge, hang or kill their worker are failed with a reason; the sweep goes on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:misbehave
metric: {name: value, goal: minimize}
params:
  mode: {type: choice, values: [ok, raise, nan, hang, kill]}
  x: {type: float, low: 0.0, high: 1.0}
budget: {trials: 14, trial_timeout: 4}
"""

REASONS = {
    "raise": "ValueError: bad x=",
    "nan": "metric 'value' is nan (diverged)",
    "hang": "timeout: trial exceeded 4 s",
    "kill": "worker died (exit code -9)",
}


def test_failures_are_recorded_and_the_sweep_finishes(tmp_path, write_space):
    space = write_space(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "random", "--workers", "2",
         "--devices", "cpu", "--tracking-uri", uri, "--seed", "4", "--name", "bad"],
        cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("space")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
    assert len(children) == 14
    modes = {c.data.params["mode"] for c in children}
    assert modes == {"ok", "raise", "nan", "hang", "kill"}, "seed 4 draws every mode"
    n_failed = 0
    for c in children:
        mode = c.data.params["mode"]
        state = c.data.tags["harness.state"]
        if mode == "ok":
            assert state == "complete"
        else:
            n_failed += 1
            assert state == "failed", (mode, c.data.tags)
            assert c.data.tags["harness.reason"].startswith(REASONS[mode])
            assert c.info.status == "FAILED"
            if mode == "raise":  # the traceback is an artifact
                path = client.download_artifacts(c.info.run_id, "traceback.txt", str(tmp_path))
                assert "ValueError" in Path(path).read_text()
    summary = proc.stdout
    assert f"{n_failed} failed" in summary
    assert "14 / 14" in summary
