"""The tuner contract: one space file, every tuner x engine pairing that makes sense, real Ax,
Ray (Tune and the Ray engine) and MLflow (a temporary SQLite store per sweep).

Every pairing must give the same domains, meet the trial budget exactly, record the planned
failures (an exception and a NaN) and its prunes, and write the same MLflow layout: one
parent run, one child per trial, the same tags, states and metrics, and ``best_so_far``.
Ray is started once for the module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from harness.runner import SweepOptions, SweepSummary, launch
from harness.spec import ChoiceParam, SweepSpec, load_spec
from harness.trials import trial_seed
from harness.tuners.base import sample_uniform
from tests.conftest import ROOT

BUDGET = 10
STEPS = 8
SEED = 5
FAIL_AT, NAN_AT = 3, 6  # trial numbers whose seeds the objective fails on

SPACE = f"""
objective: tests.objectives:contract
metric: {{name: value, goal: minimize}}
fixed: {{steps: {STEPS}, pause: 0.12, fail_seeds: [{trial_seed(SEED, FAIL_AT)}], nan_seeds: [{trial_seed(SEED, NAN_AT)}]}}
params:
  x:    {{type: float, low: 0.0, high: 1.0}}
  lr:   {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
  n:    {{type: int, low: 1, high: 3}}
  h:    {{type: int, low: 16, high: 512, log: true}}
  kind: {{type: choice, values: [a, b]}}
  lam:  {{type: float, low: 0.5, high: 0.99, when: {{kind: b}}}}
budget: {{trials: {BUDGET}}}
"""

PAIRINGS = [
    ("optuna", "local"), ("ax", "local"), ("random", "local"),
    ("optuna", "ray"), ("ax", "ray"), ("random", "ray"),
    ("ray", "ray"),
]
PRUNES = {"optuna", "ax", "ray"}  # tuners configured to stop trials early below
OPTIONS: dict[str, dict[str, Any]] = {
    "optuna": {"pruner": "sha"},  # successive halving: prunes surely within 10 trials
    # Center + Sobol for the whole budget keeps the test fast; BO itself is covered by
    # tests/unit/harness/test_ax_tuner.py and benchmarks/tuners.py
    "ax": {"tuner_options": {"ax_init_trials": BUDGET, "ax_min_curves": 2}},
    "random": {},
    "ray": {"tuner_options": {"scheduler": "asha"}},
}
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "contract.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def ray_session():
    """One Ray for the whole module (the engines and Ray Tune join it and leave it running)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def sweeps(space_file: Path, tmp_path_factory: pytest.TempPathFactory, ray_session: Any):
    """Runs each pairing once, on first use."""
    cache: dict[tuple[str, str], tuple[SweepSummary, str]] = {}

    def run(tuner: str, engine: str) -> tuple[SweepSummary, str]:
        if (tuner, engine) not in cache:
            tmp = tmp_path_factory.mktemp(f"{tuner}-{engine}")
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
            options = SweepOptions(
                space=str(space_file), tuner=tuner, engine=engine, workers=2, devices="cpu",
                tracking_uri=uri, name=f"contract-{tuner}-{engine}", seed=SEED,
                state_root=tmp / "sweeps", **OPTIONS[tuner],
            )
            cache[(tuner, engine)] = (launch(options), uri)
        return cache[(tuner, engine)]

    return run


# -- domains -----------------------------------------------------------------------------------
def canonical(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for name, p in spec.params.items():
        if isinstance(p, ChoiceParam):
            out[name] = ("choice", sorted(p.values, key=repr))
        else:
            out[name] = (p.type, p.low, p.high, p.log)
    return out


def optuna_domains(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from harness.tuners.optuna import distributions

    out: dict[str, tuple[Any, ...]] = {}
    for name, d in distributions(spec).items():
        if isinstance(d, CategoricalDistribution):
            out[name] = ("choice", sorted(d.choices, key=repr))
        else:
            assert isinstance(d, FloatDistribution | IntDistribution)
            out[name] = ("float" if isinstance(d, FloatDistribution) else "int", d.low, d.high, d.log)
    return out


def random_domains(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """The random tuner samples the spec directly: read its domain off 4,000 draws (both ends
    reached; log scale told from the share of draws below the geometric middle)."""
    rng = np.random.default_rng(0)
    draws = [sample_uniform(spec, rng) for _ in range(4000)]
    out: dict[str, tuple[Any, ...]] = {}
    for name, p in spec.params.items():
        seen = [d[name] for d in draws if name in d]
        if isinstance(p, ChoiceParam):
            out[name] = ("choice", sorted(set(seen), key=repr))
            continue
        lo, hi = min(seen), max(seen)
        if p.type == "float":  # continuous: within 1 % of both ends
            tol = 0.01 * (math.log(p.high / p.low) if p.log else p.high - p.low)
            dist = (lambda a, b: abs(math.log(a / b))) if p.log else (lambda a, b: abs(a - b))
            assert dist(lo, p.low) < tol and dist(hi, p.high) < tol, (name, lo, hi)
            lo, hi = p.low, p.high
        log = p.log  # too narrow a range to tell
        if p.low > 0 and p.high / p.low >= 10:
            below = float(np.mean([v < math.sqrt(p.low * p.high) for v in seen]))
            log = 0.4 < below < 0.6
        out[name] = (p.type, lo, hi, log)
    return out


def test_same_domains_in_every_backend(space_file: Path) -> None:
    from harness.tuners import ax as ax_backend
    from harness.tuners import ray as ray_backend

    spec = load_spec(space_file)
    want = canonical(spec)
    assert optuna_domains(spec) == want
    assert ax_backend.domains(spec) == want
    assert ray_backend.domains(spec) == want
    assert random_domains(spec) == want


def test_conditional_structure_is_kept_by_every_backend(space_file: Path) -> None:
    """lam is active exactly when kind == b: Ax's tree says so, and Tune's sample_from too."""
    from harness.tuners import ax as ax_backend
    from harness.tuners import ray as ray_backend

    spec = load_spec(space_file)
    tr = ax_backend.translate(spec)
    kind = next(p for p in tr.params if p.spec_name == "kind")
    assert kind.config.dependent_parameters == {"b": ["lam"]}
    assert next(p for p in tr.params if p.spec_name == "lam").conditions == (("kind", "b"),)
    space = ray_backend.param_space(spec, seed=1)
    fn = space["lam"].func
    for k in ("a", "b"):
        values = [fn({"x": 0.5, "kind": k}) for _ in range(50)]
        assert all(v is None for v in values) if k == "a" else all(0.5 <= v <= 0.99 for v in values)


# -- sweeps ------------------------------------------------------------------------------------
def runs_of(uri: str, summary: SweepSummary) -> tuple[Any, list[Any], MlflowClient]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(summary.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], children, client


@pytest.mark.parametrize("tuner, engine", PAIRINGS, ids=[f"{t}-{e}" for t, e in PAIRINGS])
def test_contract(tuner: str, engine: str, sweeps: Any, space_file: Path) -> None:
    summary, uri = sweeps(tuner, engine)
    spec = load_spec(space_file)
    s = summary.stats
    # the budget, exactly
    assert s.finished == BUDGET == s.complete + s.pruned + s.failed
    parent, children, client = runs_of(uri, summary)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    label = {"ray": "ray:asha"}.get(tuner, tuner)  # the canonical name: --tuner ray --scheduler asha
    assert (tags["harness.tuner"], tags["harness.engine"]) == (label, engine)
    assert tags["harness.seed"] == str(SEED) and tags["harness.spec_hash"] == spec.hash()
    assert sorted(int(c.data.tags["harness.trial"]) for c in children) == list(range(BUDGET))
    states: dict[int, str] = {}
    for c in children:
        number = int(c.data.tags["harness.trial"])
        state = c.data.tags["harness.state"]
        states[number] = state
        assert c.info.status == STATUS[state]
        assert c.data.tags["harness.seed"] == str(trial_seed(SEED, number))
        assert c.data.tags["harness.device"] == "cpu"
        for key in ("elapsed_s", "seconds", "steps"):
            assert key in c.data.metrics, (number, key)
        params = c.data.params
        assert ("lam" in params) == (params["kind"] == "b"), params  # inactive: absent
        for name, raw in params.items():
            p = spec.params[name]
            value = raw if isinstance(p, ChoiceParam) else (int(raw) if p.type == "int" else float(raw))
            assert p.contains(value), (name, raw)
        if state == "complete":
            assert c.data.metrics["steps"] == STEPS and "value" in c.data.metrics
        elif state == "pruned":
            # it really stopped early. Ax decides on its own thread, a fit or a save of ax.json
            # (~0.5 s here) away, so with 1 s trials its stop can land on the last report
            assert 0 < c.data.metrics["steps"] <= STEPS if tuner == "ax" else 0 < c.data.metrics["steps"] < STEPS
            assert c.data.tags.get("harness.reason")
    # the planned failures, and nothing else fails
    assert states[FAIL_AT] == "failed" and states[NAN_AT] == "failed"
    by_number = {int(c.data.tags["harness.trial"]): c for c in children}
    assert by_number[FAIL_AT].data.tags["harness.reason"].startswith("ValueError: planned failure")
    assert by_number[NAN_AT].data.tags["harness.reason"] == "metric 'value' is nan (diverged)"
    assert sorted(n for n, st in states.items() if st == "failed") == [FAIL_AT, NAN_AT]
    assert s.failed == 2 and s.pruned == sum(st == "pruned" for st in states.values())
    if tuner in PRUNES:
        assert s.pruned >= 1, f"{tuner} on {engine} pruned nothing"
    else:
        assert s.pruned == 0
    # best_so_far: never worse, ends at the best complete trial
    hist = sorted(client.get_metric_history(parent.info.run_id, "best_so_far"), key=lambda m: m.step)
    values = [m.value for m in hist]
    assert values and all(b <= a for a, b in zip(values, values[1:], strict=False))
    best = min(c.data.metrics["value"] for c in children if c.data.tags["harness.state"] == "complete")
    assert values[-1] == pytest.approx(best) == pytest.approx(s.best.value)
    # the tuner's own record agrees
    if tuner == "ax":
        saved = json.loads((summary.state_dir / "ax.json").read_text())
        assert len(saved["experiment"]["trials"]) == BUDGET


def layout(uri: str, summary: SweepSummary) -> dict[str, Any]:
    """What must not depend on the tuner or the engine: tag and metric names per state."""
    parent, children, client = runs_of(uri, summary)
    skip = ("harness.version.", "mlflow.")
    per_state: dict[str, tuple[set[str], set[str]]] = {}
    for c in children:
        state = c.data.tags["harness.state"]
        keys = {k for k in c.data.tags if not k.startswith(skip)}
        metrics = set(c.data.metrics)
        old = per_state.setdefault(state, (keys, metrics))
        assert old == (keys, metrics), f"children in state {state} differ within one sweep"
    return {
        "parent_tags": sorted(k for k in parent.data.tags if not k.startswith(skip)),
        "parent_metrics": sorted(parent.data.metrics),
        "children": {k: (sorted(v[0]), sorted(v[1])) for k, v in per_state.items()},
    }


def test_mlflow_layout_is_identical_across_pairings(sweeps: Any) -> None:
    layouts = {f"{t}-{e}": layout(*reversed(sweeps(t, e))) for t, e in PAIRINGS}
    ref = layouts["optuna-local"]
    for key, got in layouts.items():
        assert got["parent_tags"] == ref["parent_tags"], key
        assert got["parent_metrics"] == ref["parent_metrics"], key
        for state in ("complete", "failed"):
            assert got["children"][state] == ref["children"][state], (key, state)
        if "pruned" in got["children"] and "pruned" in ref["children"]:
            assert got["children"]["pruned"] == ref["children"]["pruned"], key


def test_ray_address_check_accepts_a_live_cluster(ray_session: Any) -> None:
    """The live cluster's GCS passes; the same host on a port where nothing listens is refused in
    one line naming the address (so the accepted case is not a check that accepts everything)."""
    from harness.engines.base import EngineError
    from harness.engines.ray import check_address
    from tests.conftest import free_port

    address = ray_session.get_runtime_context().gcs_address
    assert check_address(address) is None
    host = address.rsplit(":", 1)[0]
    dead = f"{host}:{free_port()}"
    with pytest.raises(EngineError) as refused:
        check_address(dead)
    assert str(refused.value).startswith(f"--ray-address {dead}: no Ray cluster answers at {dead} (")


PBT_SPACE = """
objective: tests.objectives:resumable
metric: {name: value, goal: minimize}
fixed: {steps: 12, pause: 0.05}
params:
  x:  {type: float, low: 0.0, high: 1.0}
  lr: {type: float, low: 0.01, high: 0.5, log: true}
budget: {trials: 6}
"""


def test_pbt_moves_checkpoints_and_logs_the_new_hyperparameters(tmp_path: Path, ray_session: Any) -> None:
    """PBT restarts a trial from a better one's checkpoint (the trainer's checkpoint.pt) with
    mutated hyperparameters; MLflow params cannot change, so they are logged as pbt.* metrics."""
    space = tmp_path / "pbt.yaml"
    space.write_text(PBT_SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = launch(SweepOptions(space=str(space), tuner="ray", workers=2, devices="cpu", tracking_uri=uri,
                                  name="pbt", seed=1, state_root=tmp_path / "sweeps",
                                  tuner_options={"scheduler": "pbt"}))
    assert summary.stats.finished == 6 and summary.stats.failed == 0
    _, children, _ = runs_of(uri, summary)
    assert len(children) == 6
    assert all(c.data.metrics["steps"] == 12 for c in children if c.data.tags["harness.state"] == "complete")
    mutated = [c for c in children if any(k.startswith("pbt.") for k in c.data.metrics)]
    assert mutated, "PBT exploited no trial"
