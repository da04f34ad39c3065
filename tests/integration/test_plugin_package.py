"""The out-of-tree plugin in examples/plugins: installed as a real distribution, found by entry points.

The package is built and installed offline with the project's own pip and setuptools
(``pip install --no-deps --no-build-isolation --no-index --target DIR``) into a temporary folder,
from a copy of examples/plugins (a build leaves build/ and *.egg-info beside the sources), so
the project's venv never sees it: only a subprocess with ``PYTHONPATH=DIR``, or this module while
DIR is on ``sys.path``, does. Then:

- the entry points are discovered: ``registered_tuners()`` lists ``qmc``, the objective
  ``noisy_quadratic`` resolves, and neither is known without DIR;
- ``harness sweep examples/plugins/space.yaml --tuner qmc`` completes its budget, every
  parameter lies in the space (inactive ones absent), and the design is reproducible for a seed;
- the tuner passes the tuner contract's checks (tests/integration/test_tuner_contract.py, whose
  functions are imported, not copied) and writes the same MLflow layout as the shipped random
  tuner;
- the QMC design is what it claims: balanced on a power-of-two prefix, independent of how the
  asks are batched, resumable.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from harness.objective import registered_objectives
from harness.runner import SweepOptions, launch
from harness.spec import ChoiceParam, load_spec, parse_spec
from harness.tuners.base import TunerOptions, make_tuner, registered_tuners
from tests.conftest import ROOT, harness_env
from tests.integration import test_tuner_contract as contract

PLUGIN = ROOT / "examples" / "plugins"
SPACE = PLUGIN / "space.yaml"
TRIALS = 12

try:  # the trial types' new home
    from harness.trials import TrialResult, TrialState
except ImportError:  # a harness from before harness/trials.py
    from harness.tuners.base import TrialResult, TrialState


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed into a folder of its own (a real wheel, built offline)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(target.glob("harness_qmc_plugin-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def plugin(site: Path):
    """The installed package importable in this process (sys.path restored afterwards)."""
    registered_objectives.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        importlib.invalidate_caches()
        yield SimpleNamespace(tuner=importlib.import_module("harness_qmc_plugin.tuner"),
                              objective=importlib.import_module("harness_qmc_plugin.objective"))
    for name in [m for m in sys.modules if m.split(".")[0] == "harness_qmc_plugin"]:
        del sys.modules[name]
    registered_objectives.cache_clear()
    importlib.invalidate_caches()


def env_with(site: Path) -> dict[str, str]:
    env = harness_env()
    env["PYTHONPATH"] = str(site) + os.pathsep + env["PYTHONPATH"]
    env["OMP_NUM_THREADS"] = "1"
    return env


def harness_cli(site: Path, cwd: Path, *args: Any) -> subprocess.CompletedProcess[str]:
    """The real ``harness`` console script, with the plugin on PYTHONPATH."""
    script = Path(sys.executable).with_name("harness")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
    proc = subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=env_with(site),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return proc


def ledger(cwd: Path, name: str) -> dict[int, dict[str, Any]]:
    """The qmc tuner's own record of sweep ``name``: trial number -> its record."""
    saved = json.loads((cwd / ".harness" / "sweeps" / name / "qmc.json").read_text())
    return {int(k): v for k, v in saved["trials"].items()}


def check_in_space(spec: Any, params: dict[str, Any]) -> None:
    assert set(params) == set(spec.active_params(params)), params  # inactive ones absent
    for name, p in spec.params.items():
        assert (name in params) == p.active(params), (name, params)
        if name in params:
            assert p.contains(params[name]), (name, params[name])


# -- discovery ---------------------------------------------------------------------------------
def test_entry_points_are_discovered_only_where_the_package_is(site: Path, tmp_path: Path) -> None:
    probe = ("import json; from harness.tuners.base import registered_tuners; "
             "from harness.objective import load_objective, registered_objectives; "
             "print(json.dumps([registered_tuners(), registered_objectives(), "
             "load_objective('noisy_quadratic').__module__]))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env_with(site),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuners, objectives, module = json.loads(proc.stdout)
    assert tuners["qmc"] == "harness_qmc_plugin.tuner:QMCTuner"
    assert {"optuna", "random", "ax", "ray"} <= set(tuners)  # the plugin adds, replaces nothing
    assert objectives["noisy_quadratic"] == "harness_qmc_plugin.objective:train"
    assert module == "harness_qmc_plugin.objective"
    # the project's environment itself was not touched
    if not any(Path(p).resolve() == site.resolve() for p in sys.path if p):
        assert "qmc" not in registered_tuners()
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=harness_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "noisy_quadratic" in proc.stderr


@pytest.mark.slow  # ~12 s; the in-process contract test runs by default
# -- the CLI -----------------------------------------------------------------------------------
def test_cli_sweep_completes_its_budget_in_the_space_reproducibly(site: Path, plugin: Any,
                                                                  tmp_path: Path) -> None:
    spec = load_spec(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ("--tuner", "qmc", "--trials", TRIALS, "--workers", 2, "--devices", "cpu")
    out = harness_cli(site, tmp_path, "sweep", SPACE, *common, "--seed", 3, "--name", "qmc-a",
                      "--tracking-uri", uri).stdout
    assert f"{TRIALS} / {TRIALS}: {TRIALS} complete" in out
    first = ledger(tmp_path, "qmc-a")
    assert sorted(first) == list(range(TRIALS))
    assert all(rec["state"] == "complete" for rec in first.values())
    for rec in first.values():
        check_in_space(spec, rec["params"])
    # MLflow: one parent, one child per trial, in the same layout as the contract's sweeps
    parent, children, _ = contract.runs_of(uri, SimpleNamespace(experiment="space"))
    assert parent.data.tags["harness.tuner"] == "qmc"
    assert parent.data.tags["harness.objective"] == "noisy_quadratic"
    assert sorted(int(c.data.tags["harness.trial"]) for c in children) == list(range(TRIALS))
    for c in children:
        assert c.data.tags["harness.state"] == "complete" and c.info.status == "FINISHED"
        number = int(c.data.tags["harness.trial"])
        logged = {k: v for k, v in c.data.params.items() if k in spec.params}
        want = {k: str(v) for k, v in first[number]["params"].items()}
        assert logged == want
        assert c.data.metrics["loss"] == pytest.approx(first[number]["value"])
    # the same seed, the same design, in another process and batched otherwise (one ask of 12)
    again = [s.params for s in plugin.tuner.QMCTuner(spec, seed=3).ask(TRIALS)]
    assert again == [first[n]["params"] for n in range(TRIALS)]
    # another seed and sequence (--sampler halton), another design (tracking off this time)
    harness_cli(site, tmp_path, "sweep", SPACE, *common, "--seed", 4, "--name", "qmc-c",
                "--tracking-uri", "none", "--sampler", "halton")
    other = ledger(tmp_path, "qmc-c")
    assert sorted(other) == list(range(TRIALS))
    halton = [s.params for s in plugin.tuner.QMCTuner(spec, seed=4, sequence="halton").ask(TRIALS)]
    assert [other[n]["params"] for n in range(TRIALS)] == halton != again
    for rec in other.values():
        check_in_space(spec, rec["params"])


# -- the tuner contract --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def contract_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract-space") / "contract.yaml"
    path.write_text(contract.SPACE)
    return path


@pytest.fixture(scope="module")
def sweeps(plugin: Any, contract_space: Path, tmp_path_factory: pytest.TempPathFactory):
    """The contract's sweep runner for local pairings (the plugin's tuner in this process)."""
    cache: dict[tuple[str, str], tuple[Any, str]] = {}

    def run(tuner: str, engine: str) -> tuple[Any, str]:
        assert engine == "local"
        if (tuner, engine) not in cache:
            tmp = tmp_path_factory.mktemp(f"{tuner}-{engine}")
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
            options = SweepOptions(space=str(contract_space), tuner=tuner, engine=engine, workers=2,
                                   devices="cpu", tracking_uri=uri, name=f"contract-{tuner}-{engine}",
                                   seed=contract.SEED, state_root=tmp / "sweeps")
            cache[(tuner, engine)] = (launch(options), uri)
        return cache[(tuner, engine)]

    return run


def test_tuner_contract(plugin: Any, sweeps: Any, contract_space: Path) -> None:
    """The contract's own checks, unchanged: budget, tags, seeds, states, planned failures,
    params in the domain (inactive ones absent), no prunes, best_so_far."""
    assert registered_tuners()["qmc"] == "harness_qmc_plugin.tuner:QMCTuner"
    contract.test_contract("qmc", "local", sweeps, contract_space)


@pytest.mark.slow  # ~6 s; keeps the default run under 10 minutes
def test_mlflow_layout_is_the_random_tuners(plugin: Any, sweeps: Any) -> None:
    got, ref = (contract.layout(*reversed(sweeps(t, "local"))) for t in ("qmc", "random"))
    assert got["parent_tags"] == ref["parent_tags"]
    assert got["parent_metrics"] == ref["parent_metrics"]
    assert got["children"] == ref["children"]


@pytest.mark.parametrize("sequence", ["sobol", "halton"])
def test_same_domain_as_the_spec(plugin: Any, contract_space: Path, monkeypatch: pytest.MonkeyPatch,
                                 sequence: str) -> None:
    """The contract reads a sampler's domain off 4,000 draws: here the draws are the design's."""
    spec = load_spec(contract_space)
    tuner = plugin.tuner.QMCTuner(spec, seed=11, sequence=sequence)
    draws = iter(s.params for s in tuner.ask(4000))
    monkeypatch.setattr(contract, "sample_uniform", lambda spec, rng: next(draws))
    assert contract.random_domains(spec) == contract.canonical(spec)


# -- the design ----------------------------------------------------------------------------------
BALANCED = """
objective: noisy_quadratic
metric: {name: loss, goal: minimize}
params:
  k:    {type: int, low: 1, high: 4}
  opt:  {type: choice, values: [sgd, adam]}
  x:    {type: float, low: -1.0, high: 1.0}
  lr:   {type: float, low: 1.0e-4, high: 1.0, log: true}
  mom:  {type: float, low: 0.0, high: 0.99, when: {opt: sgd}}
"""


def test_sobol_prefix_is_balanced(plugin: Any) -> None:
    """A scrambled Sobol' net: in the first 16 points each of 4 ints (both bounds included)
    appears 4 times, each choice 8 times, each quarter of x and each decade pair of lr 4 times."""
    spec = parse_spec(yaml.safe_load(BALANCED))
    params = [s.params for s in plugin.tuner.QMCTuner(spec, seed=2).ask(16)]
    assert Counter(p["k"] for p in params) == {1: 4, 2: 4, 3: 4, 4: 4}
    assert Counter(p["opt"] for p in params) == {"sgd": 8, "adam": 8}
    assert Counter(int((p["x"] + 1) * 2) for p in params) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert Counter(int(-math.log10(p["lr"])) for p in params) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert all(("mom" in p) == (p["opt"] == "sgd") for p in params)


def test_design_depends_on_the_seed_only(plugin: Any) -> None:
    spec = parse_spec(yaml.safe_load(BALANCED))
    make = plugin.tuner.QMCTuner
    for sequence in ("sobol", "halton"):
        one = [s.params for s in make(spec, seed=7, sequence=sequence).ask(37)]
        t = make(spec, seed=7, sequence=sequence)
        batched = [s.params for n in (1, 4, 3, 16, 13) for s in t.ask(n)]
        assert batched == one  # however the loop batches its asks
        assert [s.params for s in make(spec, seed=8, sequence=sequence).ask(37)] != one
        for p in one:
            check_in_space(spec, p)
    # through the harness's own factory: --sampler picks the sequence, options.extra overrides it
    via = make_tuner("qmc", spec, TunerOptions(seed=7, sampler="halton"))
    assert via.sequence == "halton" and [s.params for s in via.ask(37)] == one
    assert make_tuner("qmc", spec, TunerOptions(seed=7)).sequence == "sobol"  # sampler tpe: default
    assert make_tuner("qmc", spec, TunerOptions(sampler="halton", extra={"sequence": "sobol"})).sequence == "sobol"
    with pytest.raises(ValueError, match="unknown"):
        make_tuner("qmc", spec, TunerOptions(extra={"sequence": "lattice"}))


def test_never_prunes_and_resumes_the_same_design(plugin: Any, tmp_path: Path) -> None:
    spec = parse_spec(yaml.safe_load(BALANCED))
    make = plugin.tuner.QMCTuner
    plain = [s.params for s in make(spec, seed=5).ask(10)]
    t = make(spec, seed=5, state_dir=tmp_path)
    t.enqueue({"k": 2, "opt": "adam", "x": 0.0, "lr": 0.01})
    asked = t.ask(5)
    assert asked[0].params == {"k": 2, "opt": "adam", "x": 0.0, "lr": 0.01}
    assert [s.params for s in asked[1:]] == plain[:4]  # an enqueued configuration uses no point
    assert not any(t.report(s.number, step, 1.0) for s in asked for step in (1, 2, 3))
    for s in asked[:3]:
        t.tell(TrialResult(s.number, s.params, TrialState.COMPLETE, value=1.0, steps=3))
    t.close()
    # the driver died with trials 3 and 4 running: they come back once, then the design goes on
    r = make(spec, seed=5, state_dir=tmp_path)
    restored = r.restore()
    assert [x.number for x in restored.finished] == [0, 1, 2]
    assert [(x.number, x.reason) for x in restored.interrupted] == [(3, "interrupted"), (4, "interrupted")]
    nxt = r.ask(4)
    assert [s.number for s in nxt] == [5, 6, 7, 8]
    assert [s.params for s in nxt] == [asked[3].params, asked[4].params, plain[4], plain[5]]
    with pytest.raises(ValueError, match="seed 5"):
        make(spec, seed=6, state_dir=tmp_path)


def test_objective_is_a_trainer(plugin: Any, tmp_path: Path) -> None:
    """The plugin's trainer: reports its learning curve every report_every steps, writes an
    artifact, depends on its seed only through the noise, and its optimum is where it says."""
    train = plugin.objective.train
    config = {"lr": 1e-2, "width": 128, "depth": 3, "optimizer": "adam", "steps": 40, "report_every": 10}
    seen: list[tuple[int, float]] = []
    out = train(config, device="cpu", seed=1, report=lambda step, m: seen.append((step, m["loss"])),
                artifact_dir=str(tmp_path))
    assert [s for s, _ in seen] == [10, 20, 30, 40]
    losses = [v for _, v in seen]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and out["loss"] == losses[-1]
    assert (tmp_path / "curve.csv").read_text().count("\n") == 41
    assert train(config, device="cpu", seed=1, report=None) == out
    quiet = train({**config, "noise": 0.0}, device="cpu", seed=1, report=None)
    assert quiet["loss"] - quiet["final_gap"] == pytest.approx(0.0, abs=1e-12)  # the curve's floor
    assert 0 < quiet["loss"] < 0.01
    worse = train({**config, "optimizer": "sgd", "momentum": 0.5}, device="cpu", seed=1, report=None)
    assert worse["loss"] > 0.1
    assert plugin.objective.final_loss({**config, "lr": 1e-3}) == pytest.approx(0.5)
    # the shipped space is valid and its every parameter is the trainer's
    spec = load_spec(SPACE)
    assert spec.objective == "noisy_quadratic" and isinstance(spec.params["optimizer"], ChoiceParam)
    params = plugin.tuner.QMCTuner(spec, seed=0).ask(8)
    for s in params:
        assert train(spec.config(s.params), device="cpu", seed=0, report=None)["loss"] < 50
