"""Multi-objective sweeps (issue 17) on Branin-Currin, through the real runner, real tuners and MLflow.

The contract every multi-objective tuner keeps (optuna TPE, optuna NSGA-II, ax, random): the
usual layout (one parent, one child per trial), child runs tagged ``harness.pareto`` exactly as a
front recomputed from the child runs' own metrics, the parent's ``hypervolume`` non-decreasing per
finished trial and ending at the hypervolume recomputed from the children, ``hypervolume_by_steps``
stepped by cumulative steps, and ``pareto.json`` naming the front's runs. Resume keeps the front.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness import names as N
from harness.params_file import read_params_doc
from harness.pareto import hypervolume, pareto_mask
from harness.records import best_trials
from harness.runner import SweepOptions, UsageError, launch, read_params_file, resume
from harness.spec import resolve_path

NAMES, GOALS = ["branin", "currin"], ["minimize", "minimize"]
# a looser reference than BoTorch's (18, 6), so a dozen trials already have some volume
REFERENCE = [150.0, 12.0]


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    raw = yaml.safe_load(resolve_path("branin-currin").read_text())
    raw["metrics"] = [{"name": n, "goal": g, "reference": r} for n, g, r in zip(NAMES, GOALS, REFERENCE, strict=True)]
    raw["fixed"] = {"steps": 3, "step_seconds": 0.0}
    path = tmp_path_factory.mktemp("space") / "branin-currin.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sweep_runs(uri: str, parent_id: str) -> tuple[MlflowClient, object, list]:
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], max_results=1000,
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return client, parent, children


def check_front(uri: str, parent_id: str, n: int) -> dict:
    client, parent, children = sweep_runs(uri, parent_id)
    assert parent.info.status == "FINISHED"
    assert sorted(int(c.data.tags[N.TAG_TRIAL]) for c in children) == list(range(n))
    complete = [c for c in children if c.data.tags[N.TAG_STATE] == "complete"]
    assert len(complete) >= n - 1
    points = np.array([[c.data.metrics[m] for m in NAMES] for c in complete])
    mask = pareto_mask(points, GOALS)
    tagged = {c.info.run_id: c.data.tags.get(N.TAG_PARETO) for c in children}
    for c, on in zip(complete, mask, strict=True):
        assert tagged[c.info.run_id] == ("true" if on else "false"), c.data.tags[N.TAG_TRIAL]
    for c in children:
        if c.data.tags[N.TAG_STATE] != "complete":
            assert tagged[c.info.run_id] == "false"
    hv = client.get_metric_history(parent_id, N.METRIC_HYPERVOLUME)
    by_trials = [m.value for m in sorted(hv, key=lambda m: (m.step, m.timestamp))]
    assert sorted({m.step for m in hv}) == list(range(1, n + 1))
    assert all(b >= a for a, b in zip(by_trials, by_trials[1:], strict=False)), by_trials
    final = hypervolume(points, GOALS, REFERENCE)
    assert final > 0
    assert by_trials[-1] == pytest.approx(final, rel=1e-9)
    by_steps = client.get_metric_history(parent_id, N.METRIC_HYPERVOLUME_BY_STEPS)
    assert max(m.step for m in by_steps) == sum(int(c.data.metrics[N.METRIC_STEPS]) for c in children)
    artifacts = {f.path for f in client.list_artifacts(parent_id)}
    assert {N.ARTIFACT_PARETO, "pareto.png", "pareto.html"} <= artifacts
    doc = json.loads(Path(client.download_artifacts(parent_id, N.ARTIFACT_PARETO)).read_text())
    on_front = {c.info.run_id for c, on in zip(complete, mask, strict=True) if on}
    assert {m["run_id"] for m in doc["front"]} == on_front
    by_run = {c.info.run_id: c for c in children}  # a resumed sweep's members too: their own seed and seconds
    for m in doc["front"]:
        run = by_run[m["run_id"]]
        assert m["seed"] == int(run.data.tags[N.TAG_SEED]) and m["seed"] != 0
        assert m["metrics"]["seconds"] == pytest.approx(run.data.metrics[N.METRIC_SECONDS]) and m["metrics"]["seconds"] > 0
    assert doc["hypervolume"] == pytest.approx(final, rel=1e-9)
    assert doc["reference_source"] == "spec"
    return doc


def check_display(summary, doc: dict) -> None:
    """The summary and a benchmark's line show the hypervolume (not the first metric's best); the
    front table names each member's run."""
    from rich.console import Console

    from harness.display import fmt, front_summary, summary_table, sweep_line

    console = Console(width=400, record=True)
    console.print(summary_table(summary))
    console.print(front_summary(summary))
    text = console.export_text()
    rows = [[c.strip() for c in line.split("│") if c.strip()] for line in text.splitlines()]
    assert ["hypervolume", f"{fmt(doc['hypervolume'])}  (reference point 150, 12: spec)"] in rows
    assert "best params" not in text
    for m in doc["front"]:
        assert m["run_id"] in text
    assert sweep_line(summary).startswith(f"  {summary.name}: hypervolume {fmt(doc['hypervolume'])}, "
                                          f"{summary.stats.finished} trials")


CASES = [("optuna", "tpe", 14), pytest.param("optuna", "nsga2", 14, marks=pytest.mark.slow),
         ("random", "tpe", 14), pytest.param("ax", "tpe", 7, marks=pytest.mark.slow)]  # slow: ~15 s together


@pytest.mark.parametrize(("tuner", "sampler", "trials"), CASES,
                         ids=["optuna-tpe", "optuna-nsga2", "random-tpe", "ax-tpe"])
def test_multi_objective_contract(tmp_path, space, tuner, sampler, trials):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = SweepOptions(space=str(space), tuner=tuner, sampler=sampler, trials=trials, workers=2,
                           devices="cpu", tracking_uri=uri, name=f"mo-{tuner}-{sampler}", seed=1,
                           state_root=tmp_path / "sweeps",
                           tuner_options={"ax_init_trials": 4} if tuner == "ax" else {})
    summary = launch(options)
    doc = check_front(uri, summary.parent_run_id, trials)
    check_display(summary, doc)
    member = doc["front"][0]
    assert set(member) == {"number", "params", "metrics", "run_id", "seed"}
    assert set(member["params"]) == {"x0", "x1"} and set(NAMES) <= set(member["metrics"])
    # harness best: the same front, read back from the child runs; harness trial --params takes it
    _, docs = best_trials(uri, options.name)
    assert [d["run_id"] for d in docs] == [m["run_id"] for m in doc["front"]]
    assert all(set(d) >= {"params", "metrics", "run_id", "seed"} for d in docs)
    path = tmp_path / "front.yaml"
    path.write_text(yaml.safe_dump(docs))
    if len(docs) > 1:  # a whole front: refused in one line unless a member is chosen
        with pytest.raises(UsageError, match=rf"holds {len(docs)} configurations \(a Pareto front\): choose one with --member I"):
            read_params_file(str(path))
    assert read_params_doc(str(path), member=len(docs) - 1) == (docs[-1]["params"], docs[-1]["seed"])
    with pytest.raises(UsageError, match=rf"^--member {len(docs)}: "):
        read_params_file(str(path), member=len(docs))
    path.write_text(yaml.safe_dump(docs[-1]))
    assert read_params_doc(str(path)) == (docs[-1]["params"], docs[-1]["seed"])


@pytest.mark.parametrize("tuner", ["optuna", pytest.param("random", marks=pytest.mark.slow)])
def test_resume_keeps_the_front(tmp_path, space, tuner):
    """A sweep extended by resume: one front over both runs of the driver, tags and curve current."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = SweepOptions(space=str(space), tuner=tuner, trials=6, workers=2, devices="cpu",
                           tracking_uri=uri, name=f"mo-resume-{tuner}", seed=2, state_root=tmp_path / "sweeps")
    first = launch(options)
    second = resume(f"mo-resume-{tuner}", state_root=tmp_path / "sweeps", trials=12)
    assert second.parent_run_id == first.parent_run_id
    check_front(uri, first.parent_run_id, 12)


def test_resume_without_a_reference_point_logs_one_curve_under_one_reference(tmp_path, space):
    """No reference point in the spec: the default is chosen when the first run of the sweep ends,
    kept in its state folder, and the resumed run measures its trials under the same point, so
    the parent holds exactly one ``hypervolume`` value per step (before: the whole curve was
    logged again under a new default, two values per earlier step)."""
    from harness.front import REFERENCE_FILE
    from harness.pareto import default_reference

    raw = yaml.safe_load(space.read_text())
    for m in raw["metrics"]:
        m.pop("reference")
    free = tmp_path / "branin-currin.yaml"
    free.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = SweepOptions(space=str(free), tuner="random", trials=5, workers=1, devices="cpu",
                           tracking_uri=uri, name="mo-noref", seed=3, state_root=tmp_path / "sweeps")
    first = launch(options)
    stored = json.loads((first.state_dir / REFERENCE_FILE).read_text())
    _, _, children = sweep_runs(uri, first.parent_run_id)
    early = np.array([[c.data.metrics[m] for m in NAMES] for c in children])
    assert stored["reference"] == pytest.approx(default_reference(early, GOALS), rel=1e-12)
    resume("mo-noref", state_root=tmp_path / "sweeps", trials=10)
    client, _, children = sweep_runs(uri, first.parent_run_id)
    hv = client.get_metric_history(first.parent_run_id, N.METRIC_HYPERVOLUME)
    assert sorted(m.step for m in hv) == list(range(1, 11)), "one value per finished trial, no step twice"
    curve = [m.value for m in sorted(hv, key=lambda m: m.step)]
    assert all(b >= a for a, b in zip(curve, curve[1:], strict=False)), curve
    by_number = sorted(children, key=lambda c: int(c.data.tags[N.TAG_TRIAL]))
    points = np.array([[c.data.metrics[m] for m in NAMES] for c in by_number])
    for k in (5, 10):  # each step's value is the volume of the first k trials under the kept point
        assert curve[k - 1] == pytest.approx(hypervolume(points[:k], GOALS, stored["reference"]), rel=1e-9)
    assert len(client.get_metric_history(first.parent_run_id, N.METRIC_HYPERVOLUME_BY_STEPS)) == 10
    doc = json.loads(Path(client.download_artifacts(first.parent_run_id, N.ARTIFACT_PARETO)).read_text())
    assert doc["reference_source"] == "default"
    assert list(doc["reference_point"].values()) == pytest.approx(stored["reference"], rel=1e-12)


def test_compare_ranks_tuners_by_hypervolume_and_overlays_their_fronts(space, tmp_path):
    """harness compare on multi-objective sweeps reads hypervolume (maximized) with one reference
    point for every sweep: each sweep's final best equals the hypervolume of its front recomputed
    from its child runs; the paired tests and the verdict run on it; the fronts share one plot."""
    from harness.compare import run_compare

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for tuner in ("random", "optuna"):
        for seed in (0, 1):
            launch(SweepOptions(space=str(space), tuner=tuner, trials=6, workers=1, devices="cpu", seed=seed,
                                tracking_uri=uri, name=f"{tuner}-{seed}", state_root=tmp_path / "state",
                                tags={N.TAG_BENCHMARK: "mo"}))
    comp = run_compare(uri, benchmark="mo", out=tmp_path / "out")
    assert comp.metric == N.METRIC_HYPERVOLUME and comp.goal == "maximize"
    for s in comp.sweeps:
        _, _, children = sweep_runs(uri, s.run_id)
        pts = np.array([[c.data.metrics[m] for m in NAMES] for c in children
                        if c.data.tags[N.TAG_STATE] == "complete"])
        assert s.final_best == pytest.approx(hypervolume(pts, GOALS, REFERENCE), rel=1e-9)
        values = [e.best for e in s.history() if e.best is not None]
        assert values == sorted(values), "hypervolume never falls"
    assert {r.tuner for r in comp.rows} == {"random", "optuna"}
    assert (tmp_path / "out" / "fronts.png").stat().st_size > 0
    assert (tmp_path / "out" / "fronts.html").exists()
