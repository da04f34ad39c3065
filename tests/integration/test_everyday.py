"""Everyday commands on a real store: enqueue, ls, best -> trial, trial --from-run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:quadratic
metric: {name: value, goal: minimize}
fixed: {y: 2.5}
params:
  x: {type: float, low: -1.0, high: 1.0, default: 0.9}
  kind: {type: choice, values: [a, b]}
budget: {trials: 6}
"""


def cli(tmp_path, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=tmp_path,
                          env=harness_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return proc


def children(client, experiment, sweep):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("harness.sweep") == sweep)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(kids, key=lambda r: int(r.data.tags["harness.trial"]))


@pytest.mark.parametrize("tuner", ["optuna", "random"])
def test_enqueued_configs_run_first(tmp_path, write_space, tuner):
    space = write_space(SPACE)
    queue = tmp_path / "known.yaml"
    queue.write_text("- {x: 0.3, kind: b}\n- {x: -0.5}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cli(tmp_path, "sweep", space, "--tuner", tuner, "--trials", 4, "--workers", 1, "--devices", "cpu",
        "--tracking-uri", uri, "--name", "q", "--enqueue", queue, "--defaults-first")
    _, kids = children(MlflowClient(uri), "space", "q")
    params = [(float(k.data.params["x"]), k.data.params["kind"]) for k in kids]
    assert params[:3] == [(0.9, "a"), (0.3, "b"), (-0.5, "a")]  # defaults, then the file, in order
    assert len(kids) == 4


def test_ls_best_trial_and_rerun(tmp_path, write_space):
    space = write_space(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cli(tmp_path, "sweep", space, "--tuner", "random", "--workers", 2, "--devices", "cpu",
        "--tracking-uri", uri, "--name", "daily", "--seed", 7)

    listing = cli(tmp_path, "ls", "--tracking-uri", uri).stdout
    line = next(row for row in listing.splitlines() if "daily" in row)
    assert "tests.objectives:quadratic" in line
    assert "6 / 6" in line and "finished" in line and "random" in line

    client = MlflowClient(uri)
    _, kids = children(client, "space", "daily")
    best_child = min(kids, key=lambda r: r.data.metrics["value"])

    best_yaml = cli(tmp_path, "best", "daily", "--tracking-uri", uri).stdout
    doc = yaml.safe_load(best_yaml)
    assert doc["run_id"] == best_child.info.run_id
    assert doc["metric"]["value"] == best_child.data.metrics["value"]
    assert doc["params"]["kind"] in ("a", "b") and isinstance(doc["params"]["x"], float)
    top = yaml.safe_load(cli(tmp_path, "best", "daily", "--top", 3, "--tracking-uri", uri).stdout)
    assert [d["metric"]["value"] for d in top] == sorted(d["metric"]["value"] for d in top)

    # the best params fed back into `harness trial` reproduce the metric exactly
    (tmp_path / "best.yaml").write_text(best_yaml)
    cli(tmp_path, "trial", space, "--params", tmp_path / "best.yaml", "--devices", "cpu",
        "--tracking-uri", uri, "--name", "again")
    _, (again,) = children(client, "space", "again")
    assert again.data.metrics["value"] == best_child.data.metrics["value"]
    assert again.data.tags["harness.seed"] == best_child.data.tags["harness.seed"] == str(doc["seed"])  # the file's seed

    # --from-run: same params, same seed, linked to the old run
    cli(tmp_path, "trial", "--from-run", best_child.info.run_id, "--devices", "cpu",
        "--tracking-uri", uri, "--name", "rerun")
    parent, (rerun,) = children(client, "space", "rerun")
    assert parent.data.tags["harness.rerun_of"] == best_child.info.run_id
    assert parent.data.tags["harness.tuner"] == "manual"
    assert rerun.data.params == best_child.data.params
    assert rerun.data.tags["harness.seed"] == best_child.data.tags["harness.seed"]
    assert rerun.data.metrics["value"] == best_child.data.metrics["value"]


def test_trial_set_and_unknown_sweep(tmp_path, write_space):
    space = write_space(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = cli(tmp_path, "trial", space, "--set", "x=0.3", "--set", "y=2", "--devices", "cpu",
              "--tracking-uri", uri, "--name", "one").stdout
    assert "trial complete" in out
    _, (run,) = children(MlflowClient(uri), "space", "one")
    assert run.data.metrics["value"] == pytest.approx(0.0)  # (0.3-0.3)^2 + (2-2)^2/10
    assert run.data.params == {"x": "0.3", "kind": "a"}
    proc = cli(tmp_path, "best", "nope", "--tracking-uri", uri, check=False)
    assert proc.returncode == 2 and "no sweep named 'nope'" in proc.stderr
