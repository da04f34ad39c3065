"""`harness benchmark` runs its sweeps together over one shared engine (issue 21).

Fairness first, checked against the same benchmark run sequentially: each sweep gets the same
number of trials, the same trial seeds and the same budget, and the random tuner the same
configurations, seed by seed; no sweep ever has more trials in flight than its --workers.
Ctrl-C stops every sweep (exit 130, nothing left running) and the same command with the same
--id continues only the unfinished sweeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.compare import plan_benchmark, run_benchmark
from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:quadratic
metric: {name: value, goal: minimize}
params:
  x: {type: float, low: -1.0, high: 1.0}
  y: {type: float, low: 0.0, high: 4.0}
budget: {trials: 5}
"""
SLEEPY = """
objective: tests.objectives:sleepy
metric: {name: value, goal: minimize}
fixed: {steps: 3, pause: 0.15}
params:
  x: {type: float, low: 0.0, high: 1.0}
budget: {trials: 4}
"""


def _events(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (state_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _max_in_flight(events: list[dict]) -> int:
    running, most = 0, 0
    for e in events:
        running += 1 if e["event"] == "started" else -1 if e["event"] == "finished" else 0
        most = max(most, running)
    return most


def test_together_gives_each_tuner_what_it_gets_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quad.yaml").write_text(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {}
    for bid, sequential in (("seq", True), ("tog", False)):
        plan = plan_benchmark("quad.yaml", tuners="random,optuna", seeds="3", workers=2, devices="cpu",
                              tracking_uri=uri, bid=bid)
        ran = run_benchmark(plan, sequential=sequential)
        runs[bid] = {(s.name.split("-")[1], int(s.name.split("-s")[1].split("-")[0])): s for s in ran.summaries}
    assert set(runs["seq"]) == set(runs["tog"]) == {(t, s) for t in ("random", "optuna") for s in (0, 1, 2)}
    for key, alone in runs["seq"].items():
        together = runs["tog"][key]
        a = sorted(alone.stats.results, key=lambda r: r.number)
        b = sorted(together.stats.results, key=lambda r: r.number)
        assert together.stats.finished == alone.stats.finished == 5
        assert [(r.number, r.seed) for r in a] == [(r.number, r.seed) for r in b]
        if key[0] == "random":  # the same configurations, seed by seed
            assert [r.params for r in a] == [r.params for r in b]
        for s in (alone, together):
            assert _max_in_flight(_events(s.state_dir)) <= 2  # its own --workers cap
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quad")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'sweep'", max_results=100)
    budgets = {(p.data.tags["harness.benchmark"], p.data.tags["harness.budget"]) for p in parents}
    assert budgets == {("seq", "5"), ("tog", "5")}
    # together means together: trials of different sweeps of "tog" overlapped in time
    kids = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'", max_results=1000)
    by_parent = {p.info.run_id: p.data.tags["harness.benchmark"] for p in parents}
    tog = [k for k in kids if by_parent.get(k.data.tags["mlflow.parentRunId"]) == "tog"]
    assert any(a.data.tags["mlflow.parentRunId"] != b.data.tags["mlflow.parentRunId"]
               and a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time
               for a in tog for b in tog)


def test_ctrl_c_stops_every_sweep_and_the_same_id_continues_the_unfinished(tmp_path) -> None:
    (tmp_path / "sleepy.yaml").write_text(SLEEPY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "harness.cli", "benchmark", "sleepy.yaml", "--tuners", "random,optuna",
           "--seeds", "3", "--workers", "2", "--devices", "cpu", "--concurrent", "2",
           "--tracking-uri", uri, "--id", "b1", "--format", "json"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=harness_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sweeps = tmp_path / ".harness" / "sweeps"

    def states() -> dict[str, str]:
        out = {}
        for f in sweeps.glob("*/state.json"):
            try:
                out[f.parent.name] = json.loads(f.read_text())["status"]
            except (OSError, ValueError, KeyError):
                pass
        return out

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "finished" not in states().values():
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--id b1" in err
    first = states()
    assert "finished" in first.values() and set(first.values()) <= {"finished", "interrupted"}, first
    assert len(first) < 6 or "interrupted" in first.values(), first  # stopped before the end
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sleepy")
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    assert not [r for r in all_runs if r.data.tags.get("harness.state") == "running"]
    done_before = {n for n, s in first.items() if s == "finished"}
    kids_before = {n: len(_events(sweeps / n)) for n in done_before}

    again = subprocess.run(cmd, cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done_before)} sweep(s) of b1 finished already: skipped" in again.stderr
    final = states()
    assert len(final) == 6 and set(final.values()) == {"finished"}
    for n in done_before:  # finished sweeps were not touched
        assert len(_events(sweeps / n)) == kids_before[n]
    parents = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'sweep'", max_results=100)
    assert len(parents) == 6  # a continued sweep keeps its one parent run
    kids = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'", max_results=1000)
    for p in parents:  # every sweep ends with its budget of counted trials
        mine = [k for k in kids if k.data.tags["mlflow.parentRunId"] == p.info.run_id]
        counted = [k for k in mine if k.data.tags.get("harness.reason") != "interrupted"]
        assert len(counted) == 4, (p.data.tags["harness.sweep"], [k.data.tags for k in mine])
        assert p.info.status == "FINISHED"


def test_the_same_id_with_more_trials_continues_the_finished_sweeps(tmp_path, monkeypatch) -> None:
    """A finished benchmark rerun with its --id and a larger --trials continues each sweep to the
    new budget, keeping the trials it has (before: every sweep counted as finished and the verdict
    read the smaller budget); the same budget again skips them all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quad.yaml").write_text(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(tuners="random,optuna", seeds="1", workers=1, devices="cpu", tracking_uri=uri, bid="grow")
    first = run_benchmark(plan_benchmark("quad.yaml", trials=3, **kw))
    before = {s.name: [e["params"] for e in _events(s.state_dir) if e["event"] == "started"] for s in first.summaries}
    plan = plan_benchmark("quad.yaml", trials=5, **kw)
    assert plan.extended == plan.unfinished == set(before) and not plan.finished
    run_benchmark(plan)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quad")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'sweep'", max_results=100)
    assert len(parents) == 2  # continued, not started again
    kids = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'", max_results=1000)
    for p in parents:
        assert len([k for k in kids if k.data.tags["mlflow.parentRunId"] == p.info.run_id]) == 5
    for name, params in before.items():  # the first three trials are kept as they were
        after = [e["params"] for e in _events(tmp_path / ".harness" / "sweeps" / name) if e["event"] == "started"]
        assert len(after) == 5 and after[:3] == params
    again = plan_benchmark("quad.yaml", trials=5, **kw)
    assert again.finished == set(before) and not again.unfinished
