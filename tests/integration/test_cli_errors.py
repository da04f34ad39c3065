"""Bad input: exit code 2, one line naming the problem, no traceback, no MLflow run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import harness_env

GOOD = """
objective: branin
metric: {name: value}
params:
  x1: {type: float, low: -5.0, high: 10.0}
  x2: {type: float, low: 0.0, high: 15.0}
"""

CASES = {
    "malformed-yaml": (GOOD + "  x3: {type: float, low: [\n", ["sweep"], "malformed YAML"),
    "unknown-objective": (GOOD.replace("branin", "nosuchthing"), ["sweep"], "unknown objective 'nosuchthing'"),
    "unknown-module": (GOOD.replace("branin", "nosuch.module:fn"), ["sweep"], "no module named 'nosuch.module'"),
    "unknown-type": (GOOD.replace("type: float, low: 0.0", "type: real, low: 0.0"), ["sweep"], "unknown parameter type 'real'"),
    "low-above-high": (GOOD.replace("low: 0.0, high: 15.0", "low: 16.0, high: 15.0"), ["sweep"], "low must be <= high"),
    "log-nonpositive": (GOOD.replace("low: 0.0, high: 15.0", "low: 0.0, high: 15.0, log: true"), ["sweep"], "log scale needs low > 0"),
    "workers-zero": (GOOD, ["sweep", "--workers", "0", "--devices", "cpu"], "--workers must be >= 1"),
    "unknown-set-key": (GOOD, ["trial", "--set", "nope=3"], "--set nope: not a parameter or fixed value"),
    "unknown-tuner": (GOOD, ["sweep", "--tuner", "hyperopt"], "--tuner hyperopt: unknown tuner"),
    "tuner-empty-part": (GOOD, ["sweep", "--tuner", "optuna:"], "--tuner 'optuna:': use a tuner name"),
    "tuner-two-samplers": (GOOD, ["sweep", "--tuner", "optuna:cmaes", "--sampler", "gp"],
                           "--tuner optuna:cmaes --sampler gp: the name already says sampler cmaes"),
    "benchmark-concurrent-zero": (GOOD, ["benchmark", "--concurrent", "0"], "--concurrent must be >= 1"),
    "benchmark-tuner-part": (GOOD, ["benchmark", "--tuners", "ax:fast,random"], "--tuner ax:fast: only optuna"),
    "unknown-pruner": (GOOD, ["sweep", "--pruner", "lazy"], "--pruner lazy: unknown pruner"),
    "bad-devices": (GOOD, ["sweep", "--devices", "gpu0"], "--devices gpu0"),
    "trials-zero": (GOOD, ["sweep", "--trials", "0"], "--trials must be >= 1"),
    "not-an-int": (GOOD, ["sweep", "--trials", "many"], "Invalid value for '--trials'"),
    # backends: Ax, Ray Tune, the Ray engine
    "scheduler-without-ray": (GOOD, ["sweep", "--scheduler", "asha"], "--scheduler asha: only --tuner ray takes a scheduler"),
    "ray-tuner-local-engine": (GOOD, ["sweep", "--tuner", "ray", "--engine", "local"], "--tuner ray --engine local: Ray Tune runs its own trials"),
    "ray-address-dead": (GOOD, ["sweep", "--engine", "ray", "--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: no Ray cluster answers"),
    "ray-address-without-ray": (GOOD, ["sweep", "--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: needs --engine ray"),
    "ax-pruner": (GOOD, ["sweep", "--tuner", "ax", "--pruner", "median"], "--pruner median: only the optuna tuner takes a pruner"),
    "population-size-not-nsga2": (GOOD, ["sweep", "--population-size", "10"], "--population-size 10: only --sampler nsga2 has a population"),
    "population-size-not-optuna": (GOOD, ["sweep", "--tuner", "random", "--population-size", "10"],
                                   "--population-size 10: only --tuner optuna --sampler nsga2 takes a population size"),
    "member-without-params": (GOOD, ["trial", "--member", "1"], "--member 1: needs --params FILE"),
    "ax-method-not-ax": (GOOD, ["sweep", "--ax-method", "fast"], "--ax-method fast: only --tuner ax takes a method"),
    "ax-unsupported-space": (
        "objective: branin\nmetric: {name: value}\nfixed: {x2: 1.0}\nparams:\n"
        "  a: {type: choice, values: [p, q]}\n  b: {type: choice, values: [r, s]}\n"
        "  x1: {type: float, low: -5.0, high: 10.0, when: {a: p, b: r}}\n",
        ["sweep", "--tuner", "ax"], "params.x1.when names 2 parents (a, b)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path):
    text, args, fragment = CASES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    cmd, *rest = args
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", cmd, str(space), *rest],
        cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "mlflow.db").exists(), "no MLflow store or run may be created"
    assert not (tmp_path / ".harness").exists()


def test_help_explains_every_command():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], env=harness_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("sweep", "trial", "spaces", "ui"):
        assert command in proc.stdout
