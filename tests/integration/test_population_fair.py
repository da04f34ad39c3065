"""Populations shared by sweeps (issue 21): a member's seconds is its share of the work, the
trial timeout counts that share, and a killed worker fails only its own members, each run again
once. Known properties: a toy population whose every step costs exactly one pause on a fake
clock (shares are exact), and real worker processes killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time

from harness.engines.population import PopulationEngine, run_populations
from harness.trials import Done, TrialTask
from tests.pop_objectives import CLOCK

OBJ = "tests.pop_objectives:toy"


def _task(number: int, x: float, group: str, steps: int = 4, timeout: float | None = None) -> TrialTask:
    config = {"x": x, "group": group, "steps": steps, "pause": 1.0, "fake_clock": True}
    return TrialTask(number, OBJ, {"x": x}, config, seed=number, timeout=timeout)


def _run(tasks: list[tuple[TrialTask, str]]) -> dict[int, Done]:
    """The worker loop in this process, on the fake clock, until every member ended."""
    CLOCK.now = 0.0
    inbox = [("task", t, pid) for t, pid in tasks]
    done: dict[int, Done] = {}

    def get():  # noqa: ANN202
        return inbox.pop(0) if inbox else None  # None ends the loop once the members are gone

    def send(event):  # noqa: ANN001, ANN202
        if isinstance(event, Done):
            done[event.number] = event

    run_populations(OBJ, "cpu", "cpu", 4, get, lambda: not inbox, send, CLOCK)
    return done


def test_a_members_seconds_is_its_share_of_the_work_not_its_wait() -> None:
    # population a: two members; population b: one member. Each advance of a population costs
    # one second of the fake clock, and the worker advances both every round (8 s of wall).
    done = _run([(_task(0, 0.1, "a"), "pa"), (_task(1, 0.2, "a"), "pa"), (_task(2, 0.3, "b"), "pb")])
    assert CLOCK.now == 8.0
    assert done[0].seconds == done[1].seconds == 2.0  # 4 steps x 1 s / 2 members
    assert done[2].seconds == 4.0  # 4 steps x 1 s alone, though it waited 8 s
    assert sum(d.seconds for d in done.values()) == CLOCK.now  # the work, shared out exactly
    assert all(d.status == "ok" and d.steps == 4 for d in done.values())


def test_the_trial_timeout_counts_the_share() -> None:
    # a timeout of 3 s: the shared members (2 s each) finish; the lone member's share passes
    # 3 s at its 4th step (4 s), so it alone times out, with its share as its seconds
    done = _run([(_task(0, 0.1, "a", timeout=3.0), "pa"), (_task(1, 0.2, "a", timeout=3.0), "pa"),
                 (_task(2, 0.3, "b", steps=6, timeout=3.0), "pb")])
    assert done[0].status == done[1].status == "ok"
    assert done[2].status == "timeout" and done[2].reason == "timeout: trial exceeded 3 s"
    assert done[2].seconds == 4.0


def test_a_killed_worker_fails_only_its_members_each_rerun_once(tmp_path, write_space) -> None:
    """Two random-search sweeps together on 2 workers of 2 members: worker 0 is SIGKILLed while
    both workers are full. Exactly its members end interrupted and their params run again once
    (complete); worker 1's members complete untouched; each sweep still finishes its budget."""
    from harness.builder import launch_together
    from harness.inputs import SweepOptions, prepare

    space = write_space(f"""
objective: {OBJ}
metric: {{name: value, goal: minimize}}
fixed: {{steps: 10, pause: 0.15, group: a}}
params:
  x: {{type: float, low: 0.0, high: 1.0}}
budget: {{trials: 5}}
""")
    items = []
    for seed in (0, 1):
        o = SweepOptions(space=str(space), tuner="random", seed=seed, workers=2, devices="cpu",
                         tracking_uri="none", name=f"s{seed}", state_root=tmp_path / "sweeps", population=2)
        items.append((o, prepare(o), None))
    engine = PopulationEngine(items[0][1].slots, 2)
    seen: dict[str, list] = {}

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ws = list(engine._workers)
            if len(ws) == 2 and all(len(engine._members.get(w.wid, {})) == 2 for w in ws):
                seen["lost"] = [t.params for t in engine._members[ws[0].wid].values()]
                seen["kept"] = [t.params for t in engine._members[ws[1].wid].values()]
                os.kill(ws[0].proc.pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summaries = launch_together(items, engine=engine, cap=2)
    thread.join()
    assert len(seen["lost"]) == 2 and len(seen["kept"]) == 2
    results = [r for s in summaries for r in s.stats.results]
    interrupted = [r.params for r in results if r.interrupted]
    assert sorted(map(str, interrupted)) == sorted(map(str, seen["lost"]))  # only its members
    for params in seen["lost"]:  # each run again once, to completion
        runs = [r for r in results if r.params == params]
        assert len(runs) == 2 and sum(r.state.value == "complete" for r in runs) == 1
    for params in seen["kept"]:
        runs = [r for r in results if r.params == params]
        assert len(runs) == 1 and runs[0].state.value == "complete"
    for s in summaries:  # the budget: 5 counted trials each, the lost ones not counted
        assert s.stats.finished == 5 and s.stats.complete == 5


def test_populations_fill_from_every_sweep(tmp_path, write_space) -> None:
    """Two sweeps together on one worker of K = 4, each with 2 trials in flight, so members
    of both sweeps share populations (one child tag harness.population for runs of two parent
    runs), and the engine's fill rate says how full they were."""
    from mlflow.tracking import MlflowClient

    from harness.builder import launch_together
    from harness.inputs import SweepOptions, prepare

    space = write_space(f"""
objective: {OBJ}
metric: {{name: value, goal: minimize}}
fixed: {{steps: 6, pause: 0.05, group: a}}
params:
  x: {{type: float, low: 0.0, high: 1.0}}
budget: {{trials: 4}}
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    items = []
    for seed in (0, 1):
        o = SweepOptions(space=str(space), tuner="random", seed=seed, workers=1, devices="cpu",
                         tracking_uri=uri, name=f"s{seed}", state_root=tmp_path / "sweeps", population=4)
        items.append((o, prepare(o), None))
    engine = PopulationEngine(items[0][1].slots, 4)
    summaries = launch_together(items, engine=engine, cap=2)  # 2 in flight each, on one worker
    assert [s.stats.complete for s in summaries] == [4, 4]
    assert 0.25 < engine.fill_rate() <= 1.0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("space")
    kids = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'")
    parents_of: dict[str, set[str]] = {}
    for k in kids:
        parents_of.setdefault(k.data.tags["harness.population"], set()).add(k.data.tags["mlflow.parentRunId"])
    assert any(len(p) == 2 for p in parents_of.values())  # a population held members of both sweeps
