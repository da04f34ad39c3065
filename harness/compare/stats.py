"""Per-tuner statistics, paired tests and the verdict of a comparison, from sweeps read back.

Everything is computed from :class:`~harness.compare.read.SweepRecord` objects, so a comparison
can be repeated (or checked) at any time from MLflow alone:

- per tuner: the final best over seeds (mean, sample standard deviation, median), the training
  steps, wall seconds and trials until the best reached a target value (default: the worst of the
  per-sweep final bests, so every sweep reaches it), and the mean rank across seeds; wall seconds
  count from the sweep's first trial start (as utilization does), its start-up is shown apart;
- which differences hold: for each pair of tuners, the paired differences of the final best over
  the seeds both ran; a paired t-test (two-sided, ``scipy.stats.ttest_1samp``) with the 95%
  t-interval of their mean (its ``confidence_interval``), its p adjusted over all pairs by Holm's
  method, and the distribution-free Wilcoxon signed-rank p beside it. A difference "holds" when
  the Holm-adjusted p is below 0.05; it is "suggestive" when only the unadjusted p is. With few
  seeds little can hold, and the output says so;
- the verdict (:func:`harness.ranking.verdict`): each sweep's final best as a normalized regret
  ``(best - optimum) / (worst - optimum)`` clipped to [0, 1], on the one normalization every
  verdict uses (:func:`harness.ranking.normalization`): ``--optimum`` / ``--worst`` when given,
  else from the space's table when one is found for the experiment (:func:`harness.oracle.find_table`:
  the same range a simulated verdict uses), else from the compared sweeps' complete trials (each
  distinct configuration's mean: the best mean and the median); per tuner the mean regret, its
  IQM with a stratified-bootstrap interval (labelled as no 95% interval below 5 seeds) and the
  mean rank at the final budget; a Friedman test over the seeds every tuner ran (three or more
  tuners) or the exact paired test (two) and, when the Friedman test rejects, the Nemenyi critical
  difference and the groups of tuners it cannot tell apart.
  Beside it, regret (IQM over seeds) and mean rank against the budget in trials and in seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.compare.read import SweepRecord, budget_warning
from harness.ranking import (
    Normalization,
    Verdict,
    iqm,
    normalization,
    normalized_regret,
    paired_exact,
    ranks_over_time,
    verdict,
)

ALPHA = 0.05
TEST_NAME = ("paired t-test of the final bests over common seeds (two-sided, 95% t-interval of the mean "
             "difference), Holm-adjusted over all pairs; the exact Wilcoxon signed-rank (or sign test) p beside it")
SECONDS_GRID = 50  # points of the regret / rank curves against wall seconds


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
    # the verdict at the final budget (harness.ranking.verdict); None without a verdict
    normalized_regret: float | None = None  # mean over the tuner's seeds
    iqm: float | None = None  # interquartile mean of the regrets
    ci95: list[float] | None = None  # [lower, upper]: stratified bootstrap of the IQM


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
    p_wilcoxon: float | None  # exact Wilcoxon signed-rank (or exact sign test on ties), two-sided
    verdict: str  # holds | suggestive | n.s. | no test
    better: str | None  # the better tuner of the pair, when the difference holds or is suggestive
    statement: str = ""

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"


@dataclass
class Budget:
    """Regret and rank against one budget axis, over the seeds every tuner ran."""

    axis: str  # trials | seconds
    x: np.ndarray  # the budget grid
    best: dict[str, np.ndarray]  # tuner -> (seeds, len(x)) best so far (NaN before a complete trial)
    regret_iqm: dict[str, np.ndarray]  # tuner -> IQM over seeds of the normalized regret (NaN -> 1)
    mean_rank: dict[str, np.ndarray]  # tuner -> mean rank over seeds (harness.ranking.ranks_over_time)

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x.tolist(),
                "normalized_regret_iqm": {t: v.tolist() for t, v in self.regret_iqm.items()},
                "mean_rank": {t: v.tolist() for t, v in self.mean_rank.items()}}


@dataclass
class VerdictReport:
    optimum: float
    worst: float
    range_source: str
    verdict: Verdict
    seeds: list[int]  # the seeds of the curves (every tuner ran them)
    budgets: dict[str, Budget] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"optimum": self.optimum, "worst": self.worst, "range_source": self.range_source,
                "normalization": {"optimum": self.optimum, "worst": self.worst, "source": self.range_source},
                **self.verdict.as_dict(), "curve_seeds": self.seeds,
                "curves": {a: b.to_dict() for a, b in self.budgets.items()}}


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
    verdict: VerdictReport | None = None

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
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "sweeps": self.sweep_rows(), "plots": self.plots, "notes": self.notes,
        }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def compare_sweeps(records: list[SweepRecord], *, uri: str, experiment: str, benchmark: str | None = None,
                   target: float | None = None, order: list[str] | None = None,
                   optimum: float | None = None, worst: float | None = None) -> Comparison:
    """Statistics per tuner, paired tests and the verdict, from sweeps read back by
    :func:`harness.compare.read.load_sweeps`.

    Raises ``ValueError`` (one line) when ``optimum`` / ``worst`` are the wrong way round for the goal.
    """
    metric, goal = records[0].metric, records[0].goal
    finals = [s.final_best for s in records if s.final_best is not None]
    notes: list[str] = []
    warn = budget_warning(records)
    if warn is not None:
        notes.append(warn)
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
    latest: dict[str, dict[int, SweepRecord]] = {t: {} for t in tuners}
    for t in tuners:
        for s in by_tuner[t]:  # oldest first, so the latest overwrites
            per_seed[t][s.seed] = s.final_best
            latest[t][s.seed] = s
    common = sorted(set.intersection(*(set(v) for v in per_seed.values()))) if tuners else []
    ranks = _mean_ranks(per_seed, tuners, common, goal)
    if len(tuners) > 1 and not common:
        notes.append("no seed was run by every tuner: mean ranks are undefined")
    if any(len(v) != len({s.seed for s in by_tuner[t]}) or len(by_tuner[t]) != len(v)
           for t, v in per_seed.items()):
        notes.append("some tuner ran a seed more than once: ranks and paired tests use its latest sweep")
    report = verdict_report(records, per_seed, latest, common, goal, optimum=optimum, worst=worst, notes=notes,
                            experiment=experiment)

    rows = []
    for t in tuners:
        ss = by_tuner[t]
        bests = [s.final_best for s in ss if s.final_best is not None]
        hits = [h for h in (s.reach(target) for s in ss) if h is not None] if target is not None else []
        v = report.verdict.tuners[t] if report else {}
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
            normalized_regret=v.get("normalized_regret"), iqm=v.get("iqm"),
            ci95=list(v["ci95"]) if "ci95" in v else None,
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
        notes.append(f"{n} common seeds: no exact two-sided Wilcoxon or sign-test p can fall below "
                     f"{2 / 2 ** n:.3g}, and the t-test leans on roughly normal differences; run more seeds to be sure")
    return Comparison(uri=uri, experiment=experiment, benchmark=benchmark, metric=metric, goal=goal,
                      target=target, target_source=source, rows=rows, pairs=pairs, sweeps=records, notes=notes,
                      verdict=report)


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
    if sd > 0:
        res = stats.ttest_1samp(d, 0.0)
        ci = res.confidence_interval(0.95)
        p, low, high = float(res.pvalue), float(ci.low), float(ci.high)
    else:  # every seed giving the same difference: p is 0, or 1 when that difference is 0
        p, low, high = float(mean == 0), mean, mean
    pw = paired_exact(d, np.zeros_like(d)).pvalue
    return PairTest(a, b, n, mean, low, high, p, None, pw, "n.s.", None)


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
        ps += f", exact Wilcoxon/sign p = {p.p_wilcoxon:.3g}" if p.p_wilcoxon is not None else ""
        if p.verdict == "n.s." or p.mean_diff == 0:
            p.statement = f"{p.a} vs {p.b}: no difference shown over {p.n} seeds ({ci}; {ps})"
            continue
        p.better = winner
        word = "lower" if goal == "minimize" else "higher"
        verb = "beats" if p.verdict == "holds" else "may beat (not after Holm)"
        p.statement = (f"{winner} {verb} {loser}: {metric} {abs(p.mean_diff):.4g} {word} on average over "
                       f"{p.n} seeds ({ci}; {ps})")
    return pairs


# -- the verdict -------------------------------------------------------------------------------
def value_range(records: list[SweepRecord], goal: str, optimum: float | None = None,
                worst: float | None = None, *, experiment: str | None = None) -> tuple[float | None, float | None, str]:
    """The optimum and worst used to normalize the regret, and where they come from
    (:func:`harness.ranking.normalization`, the one every verdict uses).

    Given values win. Else, when a table of the space is found for ``experiment`` (its name is
    the spec's stem by default; :func:`harness.oracle.table_normalization`), the table's range,
    so a real verdict reads on the same scale as a simulated one. Else the compared sweeps'
    complete trials: trials with the same parameters are one configuration (their values
    averaged), the best configuration mean is the optimum, the median one the worst; one diverged
    trial can no longer flatten every regret to 0. ``None`` when no sweep has a complete trial.
    """
    if optimum is not None and worst is not None:
        return optimum, worst, "optimum: --optimum; worst: --worst"
    metric = records[0].metric if records else "value"
    if records and records[0].objectives:  # hypervolume after each trial: cumulative, not one per configuration
        hv = [v for s in records for v in s.complete_values()]
        if not hv:
            return optimum, worst, "none: no complete trial"
        parts = ["optimum: --optimum" if optimum is not None else "optimum: the largest hypervolume reached",
                 "worst: --worst" if worst is not None else "worst: the smallest hypervolume after a complete trial"]
        return (max(hv) if optimum is None else optimum), (min(hv) if worst is None else worst), "; ".join(parts)
    if experiment is not None:
        from harness.oracle import table_normalization

        found = table_normalization(experiment, metric, goal, optimum=optimum, worst=worst)  # type: ignore[arg-type]
        if found is not None:
            return found.optimum, found.worst, _given(found.source, optimum, worst)
    by_config: dict[Any, list[float]] = {}
    for s in records:
        for t in s.trials:
            if t.state == "complete" and t.value is not None and not t.interrupted:
                key = t.config if t.config is not None else (s.run_id, t.number)
                by_config.setdefault(key, []).append(t.value)
    if not by_config:
        return optimum, worst, "none: no complete trial"
    try:
        norm: Normalization = normalization(by_config, goal, optimum=optimum, worst=worst,  # type: ignore[arg-type]
                                            what="configurations tried by the compared sweeps")
    except ValueError:
        return None, None, "none: no finite complete value"
    return norm.optimum, norm.worst, _given(norm.source, optimum, worst)


def _given(source: str, optimum: float | None, worst: float | None) -> str:
    return source.replace("optimum: given", "optimum: --optimum").replace("worst: given", "worst: --worst")


def _on_grid(s: SweepRecord, axis: str, grid: np.ndarray) -> np.ndarray:
    """A sweep's best so far at each grid point (the last event at or before it; NaN before any
    complete trial), carried forward past the sweep's end."""
    h = s.history()
    x = np.array([getattr(e, axis) for e in h], dtype=float)
    y = np.array([np.nan if e.best is None else e.best for e in h], dtype=float)
    out = np.full(grid.size, np.nan)
    idx = np.searchsorted(x, grid, side="right") - 1
    ok = idx >= 0
    out[ok] = y[idx[ok]]
    return out


def budget_curves(latest: dict[str, dict[int, SweepRecord]], seeds: list[int], axis: str, optimum: float,
                  worst: float, goal: str) -> Budget | None:
    """Best so far, normalized regret (IQM over seeds) and mean rank of each tuner on a common grid:
    finished trials 1..the longest sweep, or :data:`SECONDS_GRID` points up to the longest sweep's
    seconds. Seeds are those every tuner ran, paired by seed."""
    sweeps = [latest[t][s] for t in latest for s in seeds]
    if not sweeps:
        return None
    if axis == "trials":
        n = max((e.trials for sw in sweeps for e in sw.history()), default=0)
        grid = np.arange(1, n + 1, dtype=float)
    else:
        end = max(sw.seconds_used for sw in sweeps)
        if not end > 0:
            return None
        grid = np.linspace(0.0, end, SECONDS_GRID + 1)[1:]
    if grid.size == 0:
        return None
    best = {t: np.stack([_on_grid(latest[t][s], axis, grid) for s in seeds]) for t in latest}
    regret = {t: np.where(np.isnan(a), 1.0, normalized_regret(a, optimum, worst, goal))  # type: ignore[arg-type]
              for t, a in best.items()}
    return Budget(axis, grid, best, {t: np.asarray(iqm(r, axis=0), dtype=float) for t, r in regret.items()},
                  ranks_over_time(best, goal))  # type: ignore[arg-type]


def verdict_report(records: list[SweepRecord], per_seed: dict[str, dict[int, float | None]],
                   latest: dict[str, dict[int, SweepRecord]], common: list[int], goal: str, *,
                   optimum: float | None = None, worst: float | None = None,
                   notes: list[str] | None = None, experiment: str | None = None) -> VerdictReport | None:
    """:func:`harness.ranking.verdict` on each tuner's final bests by seed (its latest sweep per
    seed; no complete trial counts as regret 1), and the regret / rank curves against the budget."""
    opt, bad, source = value_range(records, goal, optimum, worst, experiment=experiment)
    if opt is None or bad is None or (opt == bad and (optimum is None or worst is None)):
        if notes is not None:
            notes.append("no verdict: the compared sweeps need two different complete values "
                         "to normalize the regret (or pass --optimum and --worst)")
        return None
    finals = {t: {s: math.nan if v is None else v for s, v in seeds.items()} for t, seeds in per_seed.items()}
    result = verdict(finals, opt, bad, goal)  # type: ignore[arg-type]  # ValueError: wrong way round
    if notes is not None:
        notes += [f"verdict: {n}" for n in result.notes]
    report = VerdictReport(opt, bad, source, result, common)
    if common:
        for axis in ("trials", "seconds"):
            b = budget_curves(latest, common, axis, opt, bad, goal)
            if b is not None:
                report.budgets[axis] = b
    return report
