"""--population K: a real sweep (real Optuna, real MLflow) whose trials run as populations.

One worker, K = 4, a small LocoProp space whose structural keys are fixed (so members share a
population), 8 enqueued configurations: trial 5 diverges (lr 1e300: NaN in its first epoch),
trial 6 learns far slower than the first four (lr 1e-5) and the median pruner stops it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.inputs import _fit_population, _population
from harness.runner import SweepOptions, UsageError, launch, prepare, run_trial
from harness.spec import load_spec
from models.population import PopulationForm

SPACE = """
objective: locoprop
metric: {name: train_loss, goal: minimize}
fixed: {task: autoencoder, batch_size: 100, epochs: 3, warmup_epochs: 1, method: locoprop-m, optimizer: rmsprop}
params:
  lr:    {type: float, low: 1.0e-5, high: 1.0e+300, log: true, default: 1.0e-3}
  gamma: {type: float, low: 1.0, high: 100.0, log: true, default: 10.0}
  K:     {type: int, low: 1, high: 10, default: 5}
budget: {trials: 8, report_every: 1}
"""
CONFIGS = [
    {"lr": 1e-3, "gamma": 10.0, "K": 5}, {"lr": 2e-3, "gamma": 3.0, "K": 3},
    {"lr": 5e-4, "gamma": 30.0, "K": 8}, {"lr": 1e-3, "gamma": 10.0, "K": 10},
    {"lr": 3e-3, "gamma": 5.0, "K": 4}, {"lr": 1e300, "gamma": 10.0, "K": 3},
    {"lr": 1e-5, "gamma": 1.0, "K": 1}, {"lr": 1e-3, "gamma": 20.0, "K": 6},
]


@pytest.fixture(scope="module")
def pop_sweep(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("population")
    (tmp / "lp.yaml").write_text(SPACE)
    (tmp / "first.yaml").write_text(yaml.safe_dump(CONFIGS))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    options = SweepOptions(space=str(tmp / "lp.yaml"), tuner="optuna", workers=1, devices="cpu",
                           tracking_uri=uri, name="pop", seed=1, pruner="median", population=4,
                           enqueue=str(tmp / "first.yaml"), state_root=tmp / "sweeps")
    summary = launch(options)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lp")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return tmp, uri, summary, client, runs


def test_every_member_is_a_child_run_with_population_tags(pop_sweep):
    _, _, summary, _, runs = pop_sweep
    (parent,) = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
    kids = {int(r.data.tags["harness.trial"]): r for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(kids) == list(range(8))
    for n, r in kids.items():
        assert float(r.data.params["lr"]) == pytest.approx(CONFIGS[n]["lr"])
        assert int(r.data.params["K"]) == CONFIGS[n]["K"]
        assert r.data.tags["harness.population_size"] == "4"
        assert r.data.tags["harness.population"]
    # one worker of 4 places: the first four trials share one population, and the sweep's
    # populations were full most of the time
    assert len({kids[n].data.tags["harness.population"] for n in range(4)}) == 1
    assert summary.population_fill is not None and summary.population_fill > 0.5


def test_failed_and_pruned_members_alone(pop_sweep):
    _, _, summary, _, runs = pop_sweep
    by = {int(r.data.tags["harness.trial"]): r for r in runs if "harness.trial" in r.data.tags}
    bad = by[5]
    assert bad.data.tags["harness.state"] == "failed"
    assert "diverged" in bad.data.tags["harness.reason"]
    slow = by[6]
    assert slow.data.tags["harness.state"] == "pruned", slow.data.tags
    assert slow.data.tags["harness.reason"].startswith("pruned at step")
    assert slow.data.metrics["steps"] < 3  # stopped before its budget of 3 epochs
    for n in (0, 1, 2, 3):  # their population mates were unaffected
        assert by[n].data.tags["harness.state"] == "complete"
        assert math.isfinite(by[n].data.metrics["train_loss"])
    assert summary.stats.failed == 1 and summary.stats.pruned >= 1


def test_a_member_rerun_alone_reproduces_its_metric(pop_sweep):
    tmp, uri, _, _, runs = pop_sweep
    member = next(r for r in runs if r.data.tags.get("harness.trial") == "3")
    rerun = run_trial(SweepOptions(space="", devices="cpu", tracking_uri=uri, name="again",
                                   state_root=tmp / "sweeps"), {}, from_run=member.info.run_id)
    assert rerun.stats.best is not None
    # float32: the population's batched matmuls sum in another order than train()'s; the
    # model tests prove 1e-12 agreement in float64, here we measured ~1e-6 relative
    assert rerun.stats.best.value == pytest.approx(member.data.metrics["train_loss"], rel=1e-4)
    assert rerun.stats.best.params == {k: pytest.approx(v) for k, v in CONFIGS[3].items()}


def test_plain_trainer_runs_one_per_process_said_once(tmp_path, write_space, capsys):
    space = write_space("objective: tests.objectives:quadratic\nmetric: {name: value, goal: minimize}\n"
                        "params:\n  x: {type: float, low: -1.0, high: 1.0}\nbudget: {trials: 2}\n")
    p = prepare(SweepOptions(space=str(space), tuner="random", workers=1, devices="cpu",
                             tracking_uri="none", population=4, state_root=tmp_path))
    assert p.population == 1
    err = capsys.readouterr().err
    assert err.count("--population 4") == 1 and "one per process" in err


def test_population_that_cannot_fit_is_split_or_refused(capsys):
    spec = load_spec("locoprop-quick")
    from harness.runner import free_bytes_per_worker

    free, _ = free_bytes_per_worker(["cpu"])
    assert free is not None
    half = PopulationForm(structural=(), make=lambda *a, **k: None, member_bytes=lambda c: int(free * 0.32))
    assert _fit_population(64, half, spec, ["cpu"]) == 2
    assert "--population 64: split to populations of 2" in capsys.readouterr().err
    huge = PopulationForm(structural=(), make=lambda *a, **k: None, member_bytes=lambda c: free * 2)
    with pytest.raises(UsageError, match="--population 64: one member needs"):
        _fit_population(64, huge, spec, ["cpu"])
    with pytest.raises(UsageError, match="--population 4: populations run on --engine local"):
        _population(SweepOptions(space="locoprop-quick", engine="ray", population=4), spec, ["cpu"])
