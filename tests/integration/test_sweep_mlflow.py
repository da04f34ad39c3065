"""A real parallel sweep on Branin: real Optuna, real MLflow (temporary SQLite store)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from harness.runner import SweepOptions, launch
from harness.spec import load_spec


@pytest.fixture(scope="module")
def branin_sweep(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    options = SweepOptions(space="branin", tuner="optuna", trials=16, workers=2, devices="cpu",
                           tracking_uri=uri, name="branin-test", seed=3, pruner="median",
                           state_root=tmp / "sweeps")
    summary = launch(options)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("branin")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return summary, client, runs


def children_of(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_one_parent_and_sixteen_children(branin_sweep):
    summary, _, runs = branin_sweep
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == summary.parent_run_id
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["harness.tuner"] == "optuna" and tags["harness.objective"] == "branin"
    assert tags["harness.seed"] == "3" and tags["harness.engine"] == "local"
    assert tags["harness.sweep"] == "branin-test" and tags["harness.spec_hash"] == summary.spec.hash()
    children = children_of(runs, parent.info.run_id)
    assert len(children) == 16 == len(runs) - 1
    assert sorted(int(c.data.tags["harness.trial"]) for c in children) == list(range(16))


def test_children_params_in_space_metrics_and_states(branin_sweep):
    summary, client, runs = branin_sweep
    spec = load_spec("branin")
    states = {}
    early: list[bool] = []
    for c in children_of(runs, summary.parent_run_id):
        x1, x2 = float(c.data.params["x1"]), float(c.data.params["x2"])
        assert spec.params["x1"].low <= x1 <= spec.params["x1"].high
        assert spec.params["x2"].low <= x2 <= spec.params["x2"].high
        state = c.data.tags["harness.state"]
        states[int(c.data.tags["harness.trial"])] = state
        history = client.get_metric_history(c.info.run_id, "value")
        steps = sorted(m.step for m in history)
        assert steps and steps[0] == 1  # step metrics were logged
        assert c.data.tags["harness.device"] == "cpu"
        assert "elapsed_s" in c.data.metrics and "seconds" in c.data.metrics
        if state == "complete":
            assert steps[-1] == 20
            assert c.info.status == "FINISHED"
        elif state == "pruned":
            # it stopped at the report where the decision reached it (as with Optuna's own
            # report / should_prune loop, that can be the last one: the decision is in flight)
            assert c.data.tags["harness.reason"] == f"pruned at step {steps[-1]}"
            assert c.info.status == "KILLED"
            early.append(steps[-1] < 20)
    assert set(states.values()) <= {"complete", "pruned"}
    assert "pruned" in states.values(), "the median pruner should prune some Branin trials"
    assert any(early), "some pruned trials really stopped early"
    assert summary.stats.pruned == sum(s == "pruned" for s in states.values())


def test_best_so_far_never_worsens_and_matches(branin_sweep):
    summary, client, runs = branin_sweep
    hist = sorted(client.get_metric_history(summary.parent_run_id, "best_so_far"), key=lambda m: m.step)
    values = [m.value for m in hist]
    assert values and all(b <= a for a, b in zip(values, values[1:], strict=False))
    complete = [c for c in children_of(runs, summary.parent_run_id) if c.data.tags["harness.state"] == "complete"]
    assert values[-1] == pytest.approx(min(c.data.metrics["value"] for c in complete))
    assert values[-1] == pytest.approx(summary.stats.best.value)
    by_steps = client.get_metric_history(summary.parent_run_id, "best_so_far_by_steps")
    assert max(m.step for m in by_steps) <= summary.stats.cum_steps


def test_optuna_study_holds_the_same_trials(branin_sweep):
    summary, _, runs = branin_sweep
    storage = JournalStorage(JournalFileBackend(str(summary.state_dir / "optuna.journal")))
    study = optuna.load_study(study_name="branin-test", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 16
    by_number = {int(c.data.tags["harness.trial"]): c for c in children_of(runs, summary.parent_run_id)}
    for t in trials:
        child = by_number[t.number]
        assert t.state.name.lower() == child.data.tags["harness.state"]
        assert float(child.data.params["x1"]) == pytest.approx(t.params["x1"])
        if t.state.name == "COMPLETE":
            assert child.data.metrics["value"] == pytest.approx(t.value)


def test_utilization_is_measured(branin_sweep):
    summary, _, _ = branin_sweep
    assert 0 < summary.utilization <= 1.0
    assert summary.stats.wall_seconds() > 0 and summary.startup_seconds > 0
