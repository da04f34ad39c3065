"""One tuner vocabulary (issue 21/22): ``optuna:cmaes`` names the same tuner in ``harness sweep``
(= ``--tuner optuna --sampler cmaes``), a real ``harness benchmark``, ``benchmark --simulated``
and ``harness compare`` (which shows the sweeps' ``harness.tuner`` tags)."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.inputs import TunerName, UsageError, parse_tuner
from harness.simulate import SimulationError, check_tuners
from harness.tuners.base import TunerError

SPACE = """
objective: tests.objectives:quadratic
metric: {name: value, goal: minimize}
params:
  x: {type: float, low: -1.0, high: 1.0}
  y: {type: float, low: 0.0, high: 4.0}
budget: {trials: 3}
"""


@pytest.mark.parametrize("name, parsed, label", [
    ("optuna", TunerName("optuna"), "optuna"),
    ("optuna:tpe", TunerName("optuna", sampler="tpe"), "optuna"),
    ("optuna:gp", TunerName("optuna", sampler="gp"), "optuna:gp"),
    ("optuna:cmaes", TunerName("optuna", sampler="cmaes"), "optuna:cmaes"),
    ("optuna:nsga2", TunerName("optuna", sampler="nsga2"), "optuna:nsga2"),
    ("ax", TunerName("ax"), "ax"),
    ("random", TunerName("random"), "random"),
    ("ray:asha", TunerName("ray", scheduler="asha"), "ray:asha"),
])
def test_names_parse_to_one_thing(name: str, parsed: TunerName, label: str) -> None:
    assert parse_tuner(name) == parsed and parse_tuner(name).label == label


@pytest.mark.parametrize("name, error", [("optuna:", UsageError), ("ax:fast", UsageError), ("nosuch", TunerError)])
def test_bad_names_are_refused(name: str, error: type) -> None:
    with pytest.raises(error):
        parse_tuner(name)


def test_simulated_takes_the_same_names() -> None:
    assert check_tuners(["optuna:tpe", "optuna:cmaes", "random"]) == ["optuna", "optuna:cmaes", "random"]
    with pytest.raises(SimulationError):
        check_tuners(["ray:asha"])


def test_sweep_benchmark_and_compare_name_optuna_cmaes_alike(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quad.yaml").write_text(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--workers", "1", "--devices", "cpu", "--tracking-uri", uri]
    assert main(["sweep", "quad.yaml", "--tuner", "optuna:cmaes", "--name", "cm", *common]) == 0
    capsys.readouterr()
    state = json.loads((tmp_path / ".harness" / "sweeps" / "cm" / "state.json").read_text())
    assert state["options"]["tuner"] == "optuna" and state["options"]["sampler"] == "cmaes"
    assert main(["benchmark", "quad.yaml", "--tuners", "optuna:cmaes,random", "--seeds", "2", "--id", "v1",
                 "--format", "json", *common]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["tuner"] for r in doc["tuners"]} == {"optuna:cmaes", "random"}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quad")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'sweep'")
    tags = sorted((p.data.tags.get("harness.benchmark", "-"), p.data.tags["harness.tuner"]) for p in parents)
    assert tags == [("-", "optuna:cmaes"), ("v1", "optuna:cmaes"), ("v1", "optuna:cmaes"),
                    ("v1", "random"), ("v1", "random")]
    assert main(["compare", "--experiment", "quad", "--benchmark", "v1", "--format", "json",
                 "--tracking-uri", uri]) == 0
    assert {r["tuner"] for r in json.loads(capsys.readouterr().out)["tuners"]} == {"optuna:cmaes", "random"}
