"""The Ray engine against a real cluster started with ``ray start --head`` on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, harness_env

SPACE = """
objective: tests.objectives:quadratic
metric: {name: value, goal: minimize}
params:
  x: {type: float, low: -1.0, high: 1.0}
budget: {trials: 4}
"""


@pytest.mark.slow  # about 75 s with the head's start-up: make test-slow
def test_sweep_on_a_ray_cluster(tmp_path, write_space):
    port = free_port()
    ray = Path(sys.executable).with_name("ray")
    env = harness_env()
    env.pop("RAY_ADDRESS", None)
    # token authentication, as the README's cluster steps set it up: every process of the
    # cluster and every driver share one token
    token = secrets.token_hex(16)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = token
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir=/tmp/ray-{port}"],  # short: Ray's socket paths have a length limit
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        space = write_space(SPACE)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        deadline = time.time() + 90
        while True:  # the head needs a few seconds before it answers
            proc = subprocess.run(
                [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "random",
                 "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--workers", "2",
                 "--devices", "cpu", "--tracking-uri", uri, "--name", f"cluster{int(time.time())}"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            )
            if proc.returncode != 2 or time.time() > deadline:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("space")
        runs = client.search_runs([exp.experiment_id])
        kids = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
        parent = next(r for r in runs if r.data.tags.get("harness.kind") == "sweep")
        assert parent.data.tags["harness.engine"] == "ray"
        states = [(k.data.tags["harness.state"], k.data.tags.get("harness.reason")) for k in kids]
        assert len(kids) == 4 and all(s == "complete" for s, _ in states), states
        for r in runs:  # the token is the environment's, never logged
            assert token not in " ".join([*r.data.tags.values(), *r.data.params.values()])

        # a driver without the token is refused in one line, before anything is created
        wrong = env | {"RAY_AUTH_TOKEN": secrets.token_hex(16)}
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "random",
             "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--workers", "2",
             "--devices", "cpu", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}",
             "--name", "intruder"],
            cwd=tmp_path, env=wrong, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "refused this process's token" in proc.stderr and token not in proc.stderr
        assert not (tmp_path / "other.db").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
