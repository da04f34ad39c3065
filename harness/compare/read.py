"""Reading sweeps back from MLflow for a comparison: each sweep with its trials, in completion order.

A sweep is a parent run (``harness.kind = sweep``); its trials are the child runs, taken in
completion order (end time, then ``elapsed_s``); only complete trials count toward the best
value, pruned and failed ones count the steps and the time they used. The runs are found with
:mod:`harness.records` (the reader ``harness ls`` and ``harness best`` use); the tag and metric
names are those of :mod:`harness.names`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from harness import names as N
from harness.records import RecordError, client, sweep_runs, trial_runs_by_parent
from harness.spec import better


@dataclass
class TrialPoint:
    number: int
    state: str  # complete | pruned | failed | running
    value: float | None  # the spec metric of a complete trial
    steps: int
    seconds: float
    elapsed: float  # elapsed_s: seconds since the sweep loop started, when the trial finished
    interrupted: bool = False  # stopped by Ctrl-C or a crash: costs steps, not a finished trial
    objectives: list[float] | None = None  # a multi-objective sweep: the complete trial's values
    config: str | None = None  # the trial's params as a key: equal params, one configuration


@dataclass
class Event:
    """The state of a sweep after one more finished trial."""

    trials: int  # finished trials so far (interrupted ones excluded, as in best_so_far)
    steps: int  # cumulative training steps, all trials
    seconds: float  # wall seconds since the first trial started (see SweepRecord.startup)
    best: float | None  # best complete value so far


@dataclass
class SweepRecord:
    run_id: str
    name: str
    tuner: str
    seed: int
    experiment_id: str
    metric: str
    goal: str
    benchmark: str | None
    budget: int | None
    status: str
    trials: list[TrialPoint] = field(default_factory=list)
    budget_steps: int | None = None  # harness.budget_steps: the sweep's training-step budget, when set
    objectives: list[dict[str, Any]] | None = None  # a multi-objective sweep: [{name, goal, reference}]

    def count(self, state: str) -> int:
        return sum(1 for t in self.trials if t.state == state and not t.interrupted)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.trials if t.state == "failed" or t.interrupted)

    @property
    def startup(self) -> float:
        """Seconds from the sweep's start to its first trial's start (min of elapsed - seconds).

        Wall time is counted from there, as the harness measures utilization from the first
        dispatch: an engine that starts inside the sweep (Ray) shows its start-up here, apart,
        instead of inside every time-to-target.
        """
        done = [t.elapsed - t.seconds for t in self.trials if t.state != "running"]
        return max(0.0, min(done)) if done else 0.0

    def history(self) -> list[Event]:
        """One event per finished trial, in completion order (what best_so_far logs)."""
        t0 = self.startup
        events: list[Event] = []
        best: float | None = None
        finished = steps = 0
        for t in self.trials:
            if t.state == "running":
                continue
            steps += t.steps
            if not t.interrupted:
                finished += 1
            if t.state == "complete" and t.value is not None and not t.interrupted and (
                best is None or better(t.value, best, self.goal)
            ):
                best = t.value
            events.append(Event(finished, steps, max(0.0, t.elapsed - t0), best))
        return events

    @property
    def final_best(self) -> float | None:
        h = self.history()
        return h[-1].best if h else None

    @property
    def steps_used(self) -> int:
        return sum(t.steps for t in self.trials if t.state != "running")

    @property
    def seconds_used(self) -> float:
        return max((t.elapsed for t in self.trials if t.state != "running"), default=self.startup) - self.startup

    def complete_values(self) -> list[float]:
        """The metric of every complete trial (interrupted ones excluded), in completion order."""
        return [t.value for t in self.trials
                if t.state == "complete" and t.value is not None and not t.interrupted]

    def reach(self, target: float) -> Event | None:
        """The first event whose best is at least as good as ``target``."""
        for e in self.history():
            if e.best is not None and (e.best == target or better(e.best, target, self.goal)):
                return e
        return None


def _known(uri: str) -> tuple[list[str], list[str]]:
    """Experiment names holding sweeps, and benchmark ids, for error messages."""
    runs = sweep_runs(uri)
    c = client(uri)
    exps = sorted({c.get_experiment(r.info.experiment_id).name for r in runs})
    bids = sorted({r.data.tags[N.TAG_BENCHMARK] for r in runs if r.data.tags.get(N.TAG_BENCHMARK)})
    return exps, bids


def load_sweeps(uri: str, *, experiment: str | None = None, benchmark: str | None = None) -> list[SweepRecord]:
    """The sweeps to compare (manual `harness trial` runs excluded), each with its trials.

    Raises :class:`RecordError` with one line when nothing matches.
    """
    if experiment is not None and client(uri).get_experiment_by_name(experiment) is None:
        exps, _ = _known(uri)
        raise RecordError(f"--experiment {experiment}: no such experiment in {uri} "
                          f"(experiments with sweeps: {', '.join(exps) or 'none'})")
    if benchmark is not None and "'" in benchmark:
        raise RecordError(f"--benchmark {benchmark!r}: not a benchmark id")
    extra = N.flt(N.TAG_BENCHMARK, benchmark) if benchmark is not None else None
    parents = [r for r in sweep_runs(uri, experiment=experiment, extra_filter=extra)
               if r.data.tags.get(N.TAG_TUNER) != "manual"]
    if not parents:
        if benchmark is not None:
            _, bids = _known(uri)
            where = f" in experiment '{experiment}'" if experiment else ""
            raise RecordError(f"--benchmark {benchmark}: no sweeps of that benchmark{where} in {uri} "
                              f"(benchmarks: {', '.join(bids) or 'none'}; start one with 'harness benchmark SPACE')")
        if experiment is not None:
            raise RecordError(f"experiment '{experiment}' has no sweeps to compare "
                              f"(run 'harness sweep SPACE --experiment {experiment}' or 'harness benchmark SPACE')")
        raise RecordError(f"no sweeps in {uri} to compare (run 'harness benchmark SPACE' first)")
    exp_ids = sorted({r.info.experiment_id for r in parents})
    if len(exp_ids) > 1:
        c = client(uri)
        names = ", ".join(c.get_experiment(e).name for e in exp_ids)
        raise RecordError(f"the sweeps belong to several experiments ({names}): choose one with --experiment")
    metrics = {(r.data.tags.get(N.TAG_METRIC), r.data.tags.get(N.TAG_GOAL)) for r in parents}
    if len(metrics) > 1:
        raise RecordError("the sweeps optimize different metrics (" + ", ".join(f"{m} {g}" for m, g in sorted(metrics, key=str))
                          + "): compare one benchmark or one experiment at a time")
    objectives = _objectives(parents)
    children = trial_runs_by_parent(uri, exp_ids[0])
    records = []
    for p in sorted(parents, key=lambda r: r.info.start_time):
        t = p.data.tags
        metric, goal = t.get(N.TAG_METRIC, "value"), t.get(N.TAG_GOAL, "minimize")
        names = [o["name"] for o in objectives] if objectives else None
        kids = [_trial_point(c, metric, names) for c in children.get(p.info.run_id, [])]
        records.append(SweepRecord(
            run_id=p.info.run_id, name=t.get(N.TAG_SWEEP, p.info.run_name), tuner=t.get(N.TAG_TUNER, "?"),
            seed=int(t.get(N.TAG_SEED, 0)), experiment_id=p.info.experiment_id, metric=metric, goal=goal,
            benchmark=t.get(N.TAG_BENCHMARK), budget=int(t[N.TAG_BUDGET]) if N.TAG_BUDGET in t else None,
            status=p.info.status.lower(), trials=[k for _, k in sorted(kids, key=lambda x: x[0])],
            objectives=objectives,
            budget_steps=int(t[N.TAG_BUDGET_STEPS]) if t.get(N.TAG_BUDGET_STEPS, "").isdigit() else None,
        ))
    if objectives:
        by_hypervolume(records, objectives)
    return records


def budget_warning(records: list[SweepRecord]) -> str | None:
    """One line when the compared sweeps ran on different budgets (trials or training steps):
    their best values are then not comparable as they stand (issue 23). None when they agree."""
    parts = []
    for what, values in (("trials", {s.budget for s in records}), ("training steps", {s.budget_steps for s in records})):
        if len(values) > 1:
            shown = ", ".join("unset" if v is None else str(v) for v in sorted(values, key=lambda v: (v is None, v or 0)))
            parts.append(f"{what} {shown}")
    if not parts:
        return None
    return ("the compared sweeps have different budgets (" + "; ".join(parts) + "): a tuner given more "
            "budget looks better for that reason alone; compare sweeps of one budget (one --benchmark)")


def _objectives(parents: list[Any]) -> list[dict[str, Any]] | None:
    """The objectives of multi-objective sweeps (None for single-metric ones); all must agree."""
    found = {r.data.tags.get(N.TAG_OBJECTIVES) for r in parents}
    if found == {None}:
        return None
    if len(found) > 1:
        raise RecordError("the sweeps optimize different objectives (single and multi-objective, or other "
                          "metrics or reference points): compare one benchmark or one experiment at a time")
    return json.loads(next(iter(found)))


def by_hypervolume(records: list[SweepRecord], objectives: list[dict[str, Any]]) -> None:
    """Multi-objective sweeps are compared by the hypervolume of their front after each trial: one
    reference point for every sweep (the spec's, else the default over the union of all sweeps'
    complete points, so no tuner is judged by a point of its own), computed by the harness's one
    front code (:mod:`harness.pareto`); a complete trial's value becomes the hypervolume after it,
    so best-so-far, the paired tests and the verdict read hypervolume, maximized."""
    import numpy as np

    from harness.pareto import default_reference, hypervolume_curve

    goals = [o["goal"] for o in objectives]
    reference = [o.get("reference") for o in objectives]
    if any(r is None for r in reference):
        points = [t.objectives for s in records for t in s.trials if t.objectives is not None]
        reference = default_reference(np.asarray(points, dtype=float), goals) if points else None
    for s in records:
        s.metric, s.goal = N.METRIC_HYPERVOLUME, "maximize"
        if reference is None:
            continue
        rows = [t.objectives if t.objectives is not None else [float("nan")] * len(goals) for t in s.trials]
        curve = hypervolume_curve(rows, goals, reference) if rows else []
        for t, hv in zip(s.trials, curve, strict=True):
            t.value = hv if t.objectives is not None else None


def _trial_point(run: Any, metric: str, names: list[str] | None = None) -> tuple[tuple[float, float, int], TrialPoint]:
    t, m = run.data.tags, run.data.metrics
    state = t.get(N.TAG_STATE, N.STATE_RUNNING)
    value = m.get(metric) if state == "complete" else None
    if value is not None and not math.isfinite(value):
        value = None
    objectives = None
    if names is not None and state == "complete" and t.get(N.TAG_REASON) != N.REASON_INTERRUPTED:
        values = [m.get(n) for n in names]
        if all(v is not None and math.isfinite(v) for v in values):
            objectives = [float(v) for v in values]  # type: ignore[arg-type]
    point = TrialPoint(
        number=int(t.get(N.TAG_TRIAL, -1)), state=state, value=value, steps=int(m.get(N.METRIC_STEPS, 0)),
        seconds=float(m.get(N.METRIC_SECONDS, 0.0)), elapsed=float(m.get(N.METRIC_ELAPSED, 0.0)),
        interrupted=t.get(N.TAG_REASON) == N.REASON_INTERRUPTED, objectives=objectives,
        config=json.dumps(dict(sorted(run.data.params.items()))) if run.data.params else None,
    )
    end = run.info.end_time if run.info.end_time is not None else math.inf
    return (end, point.elapsed, point.number), point
