"""Comparing tuners: read sweeps back from MLflow, per-tuner statistics, paired tests, tables.

``harness compare`` and ``harness benchmark`` use this module; the figures live in
:mod:`harness.plots`. Everything is computed from the runs in the store, so a comparison can be
repeated (or checked) at any time from MLflow alone:

- a sweep is a parent run (``harness.kind = sweep``); its trials are the child runs, taken in
  completion order (end time, then ``elapsed_s``); only complete trials count toward the best
  value, pruned and failed ones count the steps and the time they used;
- per tuner: the final best over seeds (mean, sample standard deviation, median), the training
  steps, wall seconds and trials until the best reached a target value (default: the worst of the
  per-sweep final bests, so every sweep reaches it), and the mean rank across seeds; wall seconds
  count from the sweep's first trial start (as utilization does), its start-up is shown apart;
- which differences hold: for each pair of tuners, the paired differences of the final best over
  the seeds both ran; a paired t-test (two-sided) with the 95% t-interval of their mean, its p
  adjusted over all pairs by Holm's method, and the distribution-free Wilcoxon signed-rank p beside
  it. A difference "holds" when the Holm-adjusted p is below 0.05; it is "suggestive" when only
  the unadjusted p is. With few seeds little can hold, and the output says so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.records import RecordError, sweep_runs

ALPHA = 0.05
TEST_NAME = ("paired t-test of the final bests over common seeds (two-sided, 95% t-interval of the mean "
             "difference), Holm-adjusted over all pairs; Wilcoxon signed-rank p beside it")
STEPS_ONLY_TRIAL_CAP = 10_000  # `benchmark --budget-steps B` without --trials: the step budget decides
FORMATS = ("table", "csv", "json", "markdown")


# -- what is read back from MLflow -------------------------------------------------------------
@dataclass
class TrialPoint:
    number: int
    state: str  # complete | pruned | failed | running
    value: float | None  # the spec metric of a complete trial
    steps: int
    seconds: float
    elapsed: float  # elapsed_s: seconds since the sweep loop started, when the trial finished
    interrupted: bool = False  # stopped by Ctrl-C or a crash: costs steps, not a finished trial


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

    def reach(self, target: float) -> Event | None:
        """The first event whose best is at least as good as ``target``."""
        for e in self.history():
            if e.best is not None and (e.best == target or better(e.best, target, self.goal)):
                return e
        return None


def better(a: float, b: float, goal: str) -> bool:
    return a > b if goal == "maximize" else a < b


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _known(uri: str) -> tuple[list[str], list[str]]:
    """Experiment names holding sweeps, and benchmark ids, for error messages."""
    runs = sweep_runs(uri)
    client = _client(uri)
    exps = sorted({client.get_experiment(r.info.experiment_id).name for r in runs})
    bids = sorted({r.data.tags["harness.benchmark"] for r in runs if r.data.tags.get("harness.benchmark")})
    return exps, bids


def load_sweeps(uri: str, *, experiment: str | None = None, benchmark: str | None = None) -> list[SweepRecord]:
    """The sweeps to compare (manual `harness trial` runs excluded), each with its trials.

    Raises :class:`RecordError` with one line when nothing matches.
    """
    if experiment is not None and _client(uri).get_experiment_by_name(experiment) is None:
        exps, _ = _known(uri)
        raise RecordError(f"--experiment {experiment}: no such experiment in {uri} "
                          f"(experiments with sweeps: {', '.join(exps) or 'none'})")
    extra = f"tags.`harness.benchmark` = '{benchmark}'" if benchmark is not None else None
    if benchmark is not None and "'" in benchmark:
        raise RecordError(f"--benchmark {benchmark!r}: not a benchmark id")
    parents = [r for r in sweep_runs(uri, experiment=experiment, extra_filter=extra)
               if r.data.tags.get("harness.tuner") != "manual"]
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
        client = _client(uri)
        names = ", ".join(client.get_experiment(e).name for e in exp_ids)
        raise RecordError(f"the sweeps belong to several experiments ({names}): choose one with --experiment")
    metrics = {(r.data.tags.get("harness.metric"), r.data.tags.get("harness.goal")) for r in parents}
    if len(metrics) > 1:
        raise RecordError("the sweeps optimize different metrics (" + ", ".join(f"{m} {g}" for m, g in sorted(metrics, key=str))
                          + "): compare one benchmark or one experiment at a time")
    children = _children(uri, exp_ids[0])
    records = []
    for p in sorted(parents, key=lambda r: r.info.start_time):
        t = p.data.tags
        metric, goal = t.get("harness.metric", "value"), t.get("harness.goal", "minimize")
        kids = [_trial_point(c, metric) for c in children.get(p.info.run_id, [])]
        records.append(SweepRecord(
            run_id=p.info.run_id, name=t.get("harness.sweep", p.info.run_name), tuner=t.get("harness.tuner", "?"),
            seed=int(t.get("harness.seed", 0)), experiment_id=p.info.experiment_id, metric=metric, goal=goal,
            benchmark=t.get("harness.benchmark"), budget=int(t["harness.budget"]) if "harness.budget" in t else None,
            status=p.info.status.lower(), trials=[k for _, k in sorted(kids, key=lambda x: x[0])],
        ))
    return records


def _children(uri: str, experiment_id: str) -> dict[str, list[Any]]:
    """Every trial run of the experiment, by parent run id (one query, paged)."""
    client = _client(uri)
    out: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.`harness.kind` = 'trial'",
                                  max_results=50000, page_token=token)
        for run in page:
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent:
                out.setdefault(parent, []).append(run)
        token = page.token
        if not token:
            return out


def _trial_point(run: Any, metric: str) -> tuple[tuple[float, float, int], TrialPoint]:
    t, m = run.data.tags, run.data.metrics
    state = t.get("harness.state", "running")
    value = m.get(metric) if state == "complete" else None
    if value is not None and not math.isfinite(value):
        value = None
    point = TrialPoint(
        number=int(t.get("harness.trial", -1)), state=state, value=value, steps=int(m.get("steps", 0)),
        seconds=float(m.get("seconds", 0.0)), elapsed=float(m.get("elapsed_s", 0.0)),
        interrupted=t.get("harness.reason") == "interrupted",
    )
    end = run.info.end_time if run.info.end_time is not None else math.inf
    return (end, point.elapsed, point.number), point


# -- statistics --------------------------------------------------------------------------------
@dataclass
class TunerRow:
    tuner: str
    sweeps: int
    seeds: list[int]
    complete: int
    pruned: int
    failed: int
    best_mean: float | None
    best_std: float | None  # sample standard deviation over seeds (ddof = 1)
    best_median: float | None
    steps_used: float  # mean over sweeps
    seconds_used: float  # mean over sweeps, from the first trial's start
    startup_seconds: float  # mean over sweeps: sweep start to the first trial's start
    reached: int  # sweeps that reached the target
    steps_to_target: float | None  # mean over the sweeps that reached it
    seconds_to_target: float | None
    trials_to_target: float | None
    mean_rank: float | None  # over seeds every tuner ran (1 = best)


@dataclass
class PairTest:
    a: str
    b: str
    n: int  # common seeds
    mean_diff: float | None  # mean of (best_a - best_b) over common seeds
    ci_low: float | None  # 95% t-interval of the mean difference
    ci_high: float | None
    p_value: float | None  # paired t-test, two-sided
    p_holm: float | None  # p_value adjusted over all pairs (Holm)
    p_wilcoxon: float | None  # Wilcoxon signed-rank, two-sided
    verdict: str  # holds | suggestive | n.s. | no test
    better: str | None  # the better tuner of the pair, when the difference holds or is suggestive
    statement: str = ""

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"


@dataclass
class Comparison:
    uri: str
    experiment: str
    benchmark: str | None
    metric: str
    goal: str
    target: float | None
    target_source: str
    rows: list[TunerRow]
    pairs: list[PairTest]
    sweeps: list[SweepRecord]
    test: str = TEST_NAME
    plots: dict[str, Any] = field(default_factory=dict)  # written files, curves per panel, run id
    notes: list[str] = field(default_factory=list)

    def sweep_rows(self) -> list[dict[str, Any]]:
        out = []
        for s in self.sweeps:
            hit = s.reach(self.target) if self.target is not None else None
            out.append({
                "name": s.name, "run_id": s.run_id, "tuner": s.tuner, "seed": s.seed, "status": s.status,
                "complete": s.count("complete"), "pruned": s.count("pruned"), "failed": s.failed,
                "final_best": s.final_best, "steps_used": s.steps_used, "seconds_used": s.seconds_used,
                "startup_seconds": s.startup,
                "steps_to_target": hit.steps if hit else None,
                "seconds_to_target": hit.seconds if hit else None,
                "trials_to_target": hit.trials if hit else None,
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "benchmark": self.benchmark, "tracking_uri": self.uri,
            "metric": self.metric, "goal": self.goal, "target": self.target,
            "target_source": self.target_source, "test": self.test,
            "tuners": [asdict(r) for r in self.rows], "pairs": [{**asdict(p), "holds": p.holds} for p in self.pairs],
            "sweeps": self.sweep_rows(), "plots": self.plots, "notes": self.notes,
        }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def compare_sweeps(records: list[SweepRecord], *, uri: str, experiment: str, benchmark: str | None = None,
                   target: float | None = None, order: list[str] | None = None) -> Comparison:
    """Statistics per tuner and paired tests between tuners, from sweeps read back by :func:`load_sweeps`."""
    metric, goal = records[0].metric, records[0].goal
    finals = [s.final_best for s in records if s.final_best is not None]
    notes: list[str] = []
    if target is not None:
        source = "--target"
    elif finals:
        target = min(finals) if goal == "maximize" else max(finals)
        source = "the worst per-sweep final best, so every sweep with a complete trial reaches it"
    else:
        source = "none: no sweep has a complete trial"
    by_tuner: dict[str, list[SweepRecord]] = {}
    for s in records:
        by_tuner.setdefault(s.tuner, []).append(s)
    tuners = [t for t in (order or []) if t in by_tuner] + sorted(t for t in by_tuner if t not in (order or []))

    # per seed: the final best of each tuner (a repeated tuner/seed pair: its latest sweep counts)
    per_seed: dict[str, dict[int, float | None]] = {t: {} for t in tuners}
    for t in tuners:
        for s in by_tuner[t]:  # oldest first, so the latest overwrites
            per_seed[t][s.seed] = s.final_best
    common = sorted(set.intersection(*(set(v) for v in per_seed.values()))) if tuners else []
    ranks = _mean_ranks(per_seed, tuners, common, goal)
    if len(tuners) > 1 and not common:
        notes.append("no seed was run by every tuner: mean ranks are undefined")
    if any(len(v) != len({s.seed for s in by_tuner[t]}) or len(by_tuner[t]) != len(v)
           for t, v in per_seed.items()):
        notes.append("some tuner ran a seed more than once: ranks and paired tests use its latest sweep")

    rows = []
    for t in tuners:
        ss = by_tuner[t]
        bests = [s.final_best for s in ss if s.final_best is not None]
        hits = [h for h in (s.reach(target) for s in ss) if h is not None] if target is not None else []
        rows.append(TunerRow(
            tuner=t, sweeps=len(ss), seeds=sorted({s.seed for s in ss}),
            complete=sum(s.count("complete") for s in ss), pruned=sum(s.count("pruned") for s in ss),
            failed=sum(s.failed for s in ss),
            best_mean=_mean(bests), best_std=float(np.std(bests, ddof=1)) if len(bests) > 1 else None,
            best_median=float(np.median(bests)) if bests else None,
            steps_used=float(np.mean([s.steps_used for s in ss])),
            seconds_used=float(np.mean([s.seconds_used for s in ss])),
            startup_seconds=float(np.mean([s.startup for s in ss])),
            reached=len(hits), steps_to_target=_mean([h.steps for h in hits]),
            seconds_to_target=_mean([h.seconds for h in hits]),
            trials_to_target=_mean([h.trials for h in hits]), mean_rank=ranks.get(t),
        ))
    sign = -1 if goal == "maximize" else 1

    def key(r: TunerRow) -> tuple[float, float]:
        return (r.mean_rank if r.mean_rank is not None else math.inf,
                sign * r.best_mean if r.best_mean is not None else math.inf)

    rows.sort(key=key)
    ordered = [r.tuner for r in rows]
    pairs = holm([paired_test(a, b, per_seed[a], per_seed[b])
                  for i, a in enumerate(ordered) for b in ordered[i + 1:]], goal, metric)
    if pairs and 2 <= max(p.n for p in pairs) < 6:
        n = max(p.n for p in pairs)
        notes.append(f"{n} common seeds: no two-sided Wilcoxon p can fall below {2 / 2 ** n:.3g}, and the "
                     "t-test leans on roughly normal differences; run more seeds to be sure")
    return Comparison(uri=uri, experiment=experiment, benchmark=benchmark, metric=metric, goal=goal,
                      target=target, target_source=source, rows=rows, pairs=pairs, sweeps=records, notes=notes)


def _mean_ranks(per_seed: dict[str, dict[int, float | None]], tuners: list[str], seeds: list[int],
                goal: str) -> dict[str, float]:
    """Rank the tuners on each common seed (1 = best, ties share the mean rank); average over seeds."""
    from scipy.stats import rankdata

    if len(tuners) < 1 or not seeds:
        return {}
    sign = -1.0 if goal == "maximize" else 1.0
    total = np.zeros(len(tuners))
    for seed in seeds:
        vals = [per_seed[t][seed] for t in tuners]
        total += rankdata([sign * v if v is not None else math.inf for v in vals])
    return {t: float(r / len(seeds)) for t, r in zip(tuners, total, strict=True)}


def paired_test(a: str, b: str, va: dict[int, float | None], vb: dict[int, float | None]) -> PairTest:
    """Paired differences over the seeds both tuners finished with a complete trial (unadjusted)."""
    seeds = sorted(s for s in set(va) & set(vb) if va[s] is not None and vb[s] is not None)
    n = len(seeds)
    if n < 2:
        return PairTest(a, b, n, None, None, None, None, None, None, "no test", None,
                        f"{a} vs {b}: {n} common seed(s) with a result, no test")
    from scipy import stats

    d = np.array([va[s] - vb[s] for s in seeds], dtype=float)  # type: ignore[operator]
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    # every seed giving the same difference: p is 0, or 1 when that difference is 0
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else float(mean == 0)
    pw = None
    if np.any(d != 0):
        try:
            pw = float(stats.wilcoxon(d).pvalue)
        except ValueError:
            pw = None
    return PairTest(a, b, n, mean, mean - half, mean + half, p, None, pw, "n.s.", None)


def holm(pairs: list[PairTest], goal: str, metric: str) -> list[PairTest]:
    """Holm's step-down adjustment of the pairs' p values; then each pair's verdict and statement."""
    tested = sorted((p for p in pairs if p.p_value is not None), key=lambda p: p.p_value)  # type: ignore[arg-type,return-value]
    running = 0.0
    for i, p in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - i) * p.p_value))  # type: ignore[operator]
        p.p_holm = running
    for p in pairs:
        if p.p_value is None or p.mean_diff is None:
            continue
        p.verdict = "holds" if p.p_holm < ALPHA else "suggestive" if p.p_value < ALPHA else "n.s."  # type: ignore[operator]
        a_better = (p.mean_diff < 0) != (goal == "maximize")
        winner, loser = (p.a, p.b) if a_better else (p.b, p.a)
        ci = f"95% CI of {p.a} - {p.b}: [{p.ci_low:.4g}, {p.ci_high:.4g}]"
        ps = f"t-test p = {p.p_value:.3g}, Holm {p.p_holm:.3g}"
        ps += f", Wilcoxon p = {p.p_wilcoxon:.3g}" if p.p_wilcoxon is not None else ""
        if p.verdict == "n.s." or p.mean_diff == 0:
            p.statement = f"{p.a} vs {p.b}: no difference shown over {p.n} seeds ({ci}; {ps})"
            continue
        p.better = winner
        word = "lower" if goal == "minimize" else "higher"
        verb = "beats" if p.verdict == "holds" else "may beat (not after Holm)"
        p.statement = (f"{winner} {verb} {loser}: {metric} {abs(p.mean_diff):.4g} {word} on average over "
                       f"{p.n} seeds ({ci}; {ps})")
    return pairs


# -- the commands' work ------------------------------------------------------------------------
def run_compare(uri: str | None, *, experiment: str | None = None, benchmark: str | None = None,
                target: float | None = None, out: Path | None = None, log_run: bool = True,
                order: list[str] | None = None) -> Comparison:
    """Read the sweeps, compute the comparison; with ``out``, write the plots and tables there and
    log them as the artifacts of a comparison run (``harness.kind = comparison``)."""
    if uri is None:
        raise RecordError("harness compare reads the tracking store: not --tracking-uri none")
    from harness.tracking import TrackingError

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise RecordError(f"no MLflow store at {uri[len('sqlite:///'):]} (run 'harness benchmark SPACE' "
                          "here, or pass --tracking-uri)")
    try:
        records = load_sweeps(uri, experiment=experiment, benchmark=benchmark)
        exp_name = _client(uri).get_experiment(records[0].experiment_id).name
    except RecordError:
        raise
    except Exception as exc:  # the store itself fails: one line, not a traceback
        raise TrackingError(f"tracking store {uri} does not answer: {str(exc).splitlines()[0][:300]}") from None
    comp = compare_sweeps(records, uri=uri, experiment=exp_name, benchmark=benchmark, target=target, order=order)
    if out is not None:
        from harness.plots import write_plots

        out.mkdir(parents=True, exist_ok=True)
        comp.plots = write_plots(comp, out)
        for fmt in ("csv", "markdown"):
            (out / f"compare.{'md' if fmt == 'markdown' else fmt}").write_text(render_text(comp, fmt))
        if log_run:
            comp.plots["run_id"] = log_comparison(comp, out)
        (out / "compare.json").write_text(render_text(comp, "json"))
        if log_run:
            _client(uri).log_artifact(comp.plots["run_id"], str(out / "compare.json"))
    return comp


def log_comparison(comp: Comparison, out: Path) -> str:
    """A run tagged ``harness.kind = comparison`` in the sweeps' experiment, holding the files."""
    from mlflow.entities import RunTag

    client = _client(comp.uri)
    label = comp.benchmark or comp.experiment
    tags = {"harness.kind": "comparison", "harness.metric": comp.metric, "harness.goal": comp.goal,
            "harness.compared_runs": ",".join(s.run_id for s in comp.sweeps)[:5000],
            "harness.tuners": ",".join(r.tuner for r in comp.rows), "harness.test": comp.test}
    if comp.benchmark:
        tags["harness.benchmark"] = comp.benchmark
    if comp.target is not None:
        tags["harness.target"] = repr(comp.target)
    run = client.create_run(comp.sweeps[0].experiment_id, run_name=f"compare-{label}-{datetime.now():%H%M%S}",
                            tags=tags)
    rid = run.info.run_id
    # the table as the run's description; no metrics, so the UI's chart view keeps to the sweeps' curves
    client.log_batch(rid, tags=[RunTag("mlflow.note.content", render_text(comp, "markdown"))])
    client.log_artifacts(rid, str(out))
    client.set_terminated(rid, "FINISHED")
    return rid


@dataclass
class BenchmarkPlan:
    id: str
    space: str
    tuners: list[str]
    seeds: list[int]
    experiment: str
    sweeps: list[Any]  # SweepOptions, interleaved: every tuner on seed 0, then on seed 1, ...
    trials: int
    budget_steps: int | None


def parse_seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; a comma list names them (``0,5,9``; ``7,`` is seed 7 alone)."""
    from harness.runner import UsageError

    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise UsageError(f"--seeds {text}: give a count (3) or a comma list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text}: give a positive count or distinct non-negative seeds")
    return seeds


def plan_benchmark(space: str, *, tuners: str, seeds: str, trials: int | None = None,
                   budget_steps: int | None = None, workers: int | None = None, devices: str = "auto",
                   tracking_uri: str | None = None, experiment: str | None = None,
                   bid: str | None = None, pruner: str = "none", command: str | None = None) -> BenchmarkPlan:
    """Validate everything before the first sweep starts: tuners installed, seeds, budget, space."""
    from harness.runner import SweepOptions, UsageError, prepare
    from harness.tuners.base import TunerError, registered_tuners

    names = [t.strip() for t in tuners.split(",") if t.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--tuners {tuners}: give distinct tuner names, e.g. optuna,random")
    installed = registered_tuners()
    missing = [t for t in names if t not in installed]
    if missing:
        raise TunerError(f"--tuners: {', '.join(missing)} not installed (installed: {', '.join(sorted(installed))})")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if budget_steps is not None and budget_steps < 1:
        raise UsageError(f"--budget-steps must be >= 1, got {budget_steps}")
    seed_list = parse_seeds(seeds)
    bid = bid or f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    if any(c in bid for c in "/\\'\" ") or bid.startswith("."):
        raise UsageError(f"--id {bid!r}: a benchmark id has no quotes, spaces or '/'")
    stem = Path(space).stem
    cap = trials if trials is not None else (STEPS_ONLY_TRIAL_CAP if budget_steps is not None else None)
    sweeps = []
    for seed in seed_list:
        for tuner in names:
            tags = {"harness.benchmark": bid}
            if budget_steps is not None:
                tags["harness.budget_steps"] = str(budget_steps)
            sweeps.append(SweepOptions(
                space=space, tuner=tuner, engine="ray" if tuner == "ray" else "local", seed=seed,
                trials=cap, workers=workers, devices=devices, budget_steps=budget_steps,
                tracking_uri=tracking_uri, experiment=experiment, tags=tags,
                name=f"{stem}-{tuner}-s{seed}-{bid}", command=command,
                pruner=pruner if tuner == "optuna" else "none",
            ))
    p = prepare(sweeps[0])  # the space, the objective, the devices and the store, checked once
    if p.uri is None:
        raise UsageError("harness benchmark compares sweeps read back from MLflow: not --tracking-uri none")
    for s in sweeps[1:]:
        if (s.state_root / s.name / "state.json").exists():
            raise UsageError(f"--id {bid}: sweeps of that benchmark exist already; choose another id")
    return BenchmarkPlan(id=bid, space=space, tuners=names, seeds=seed_list, experiment=p.experiment,
                         sweeps=sweeps, trials=p.trials, budget_steps=budget_steps)


def run_benchmark(plan: BenchmarkPlan,
                  progress: Callable[[int, Any], AbstractContextManager[Any]] | None = None) -> Iterator[Any]:
    """Run the plan's sweeps one after another; yield each :class:`SweepSummary` as it finishes.

    ``progress(i, options)`` returns a context manager whose value receives live updates.
    """
    from harness.runner import launch

    for i, options in enumerate(plan.sweeps):
        with (progress(i, options) if progress else nullcontext(None)) as live:
            summary = launch(options, live)
        yield summary


# -- output ------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def fmt_count(value: float | None) -> str:
    """A count, or a mean of counts: whole numbers as such, others to one decimal."""
    if value is None or not math.isfinite(value):
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


COLUMNS = ["tuner", "sweeps", "seeds", "trials c/p/f", "best mean", "best std", "best median",
           "steps used", "seconds used", "start-up s", "steps to target", "seconds to target",
           "trials to target", "reached", "mean rank"]


def table_rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for r in comp.rows:
        rows.append([
            r.tuner, str(r.sweeps), ",".join(map(str, r.seeds)), f"{r.complete}/{r.pruned}/{r.failed}",
            fmt(r.best_mean), fmt(r.best_std), fmt(r.best_median), fmt_count(r.steps_used),
            fmt(r.seconds_used, 3), fmt(r.startup_seconds, 2),
            fmt_count(r.steps_to_target), fmt(r.seconds_to_target, 3), fmt_count(r.trials_to_target),
            f"{r.reached}/{r.sweeps}", fmt(r.mean_rank, 3),
        ])
    return rows


def title(comp: Comparison) -> str:
    what = f"{comp.experiment} / benchmark {comp.benchmark}" if comp.benchmark else f"experiment {comp.experiment}"
    return f"{what}: {comp.metric} ({comp.goal}), {len(comp.sweeps)} sweeps"


def target_line(comp: Comparison) -> str:
    return (f"target {comp.metric} = {fmt(comp.target, 6)} ({comp.target_source}); seconds: wall time "
            "from each sweep's first trial start (the start-up before it is shown apart); means over sweeps")


def tables(comp: Comparison) -> list[Any]:
    """Rich renderables: the per-tuner table, then which differences hold."""
    from rich.table import Table

    t = Table(title=title(comp), title_justify="left", caption=target_line(comp), caption_justify="left")
    for i, c in enumerate(COLUMNS):
        t.add_column(c, justify="left" if i < 3 else "right")
    for row in table_rows(comp):
        t.add_row(*row)
    out: list[Any] = [t]
    if comp.pairs:
        p = Table(title="which differences hold", title_justify="left", show_header=False)
        p.add_column()
        p.add_row(f"[bold]test[/]       {_escape(comp.test)}")
        for pair in comp.pairs:
            style = {"holds": "[green]holds[/]     ", "suggestive": "[yellow]suggestive[/]"}.get(
                pair.verdict, f"[dim]{pair.verdict:<10}[/]")
            p.add_row(f"{style} {_escape(pair.statement)}")
        for note in comp.notes:
            p.add_row(f"[bold]note[/]       {_escape(note)}")
        out.append(p)
    elif comp.notes:
        out += [f"note: {_escape(n)}" for n in comp.notes]
    if comp.plots.get("files"):
        out.append(f"plots: {', '.join(comp.plots['files'])}")
    if comp.plots.get("run_id"):
        out.append(f"logged as comparison run {comp.plots['run_id']} in experiment '{comp.experiment}'")
    return out


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def render_text(comp: Comparison, format: str) -> str:
    """csv, json or markdown text."""
    if format == "json":
        return json.dumps(comp.to_dict(), indent=2, default=str) + "\n"
    if format == "csv":
        buf = io.StringIO()
        keys = list(asdict(comp.rows[0]).keys()) if comp.rows else []
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["experiment", "benchmark", "metric", "goal", "target", *keys])
        for r in comp.rows:
            d = asdict(r)
            d["seeds"] = " ".join(map(str, r.seeds))
            w.writerow([comp.experiment, comp.benchmark or "", comp.metric, comp.goal,
                        "" if comp.target is None else repr(comp.target),
                        *("" if d[k] is None else d[k] for k in keys)])
        return buf.getvalue()
    if format == "markdown":
        lines = [f"**{title(comp)}**; {target_line(comp)}", "",
                 "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(comp)]
        if comp.pairs:
            lines += ["", f"Which differences hold ({comp.test}):", ""]
            lines += [f"- {'**holds**' if p.holds else p.verdict}: {p.statement}" for p in comp.pairs]
        lines += [f"- note: {n}" for n in comp.notes]
        return "\n".join(lines) + "\n"
    raise ValueError(format)
