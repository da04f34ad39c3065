"""A tracking store that is down at start stops the sweep early; one that goes away mid-sweep
does not stop the trials, and the missing logs are written when it returns."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer, free_port, harness_env

SPACE = """
objective: tests.objectives:sleepy
metric: {name: value, goal: minimize}
fixed: {steps: 3, pause: 0.15}
params:
  x: {type: float, low: -1.0, high: 1.0}
budget: {trials: 12}
"""


def test_store_down_at_start_stops_before_any_trial(tmp_path, write_space):
    space = write_space(SPACE)
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(space), "--devices", "cpu",
                           "--tracking-uri", url], cwd=tmp_path, env=harness_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not answer" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".harness").exists(), "no trial ran, no state was written"


@pytest.mark.slow  # ~35 s; keeps the default run under 10 minutes
def test_store_away_mid_sweep(tmp_path, write_space):
    space = write_space(SPACE)
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts").start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "random", "--workers", "2",
             "--devices", "cpu", "--tracking-uri", server.url, "--name", "flaky"],
            cwd=tmp_path, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        ledger = tmp_path / ".harness" / "sweeps" / "flaky" / "random.json"
        deadline = time.time() + 120
        while time.time() < deadline and not (ledger.exists() and '"complete"' in ledger.read_text()):
            time.sleep(0.2)
        server.stop()  # the store goes away while trials run
        time.sleep(4)
        assert proc.poll() is None, "the trials go on without the store"
        server.start()  # and comes back on the same port
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("space")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        kids = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
        assert len(kids) == 12, "every trial's run was written once the store returned"
        assert all(k.data.tags["harness.state"] == "complete" for k in kids)
        assert all("value" in k.data.metrics for k in kids)
        assert "not logged" not in out
    finally:
        server.stop()
