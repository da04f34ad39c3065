"""Simulated benchmarks: every tuner x seed on a tabulated space, on a simulated clock.

A simulated sweep is a real sweep — the real tuner (Optuna's samplers and pruners, Ax with its
early stopping, random), the ask/tell driver and the recorder — on
:class:`~harness.engines.simulated.SimulatedEngine`, whose trials replay the table (the exact
row for a tabulated configuration: seed ``trial seed mod S``) or the surrogate's prediction.

The result goes straight to :func:`harness.ranking.verdict` (the one normalization,
:func:`harness.ranking.normalization`: optimum = the best per-configuration mean over seeds,
worst = the median configuration's mean; stated in the JSON) at each budget (20, 50, 200 finished trials, as far as the
sweeps go). MLflow gets one compact parent run per simulated benchmark (experiment
``<space>-simulated``: the verdicts as metrics and ``verdict.json``, the best-so-far curves
as ``curves.json``, the CD diagram): hundreds of sweeps x hundreds of child runs would cost
more to log than to simulate. ``log_sweeps=True`` (``--log-sweeps``) also logs every sweep in
the full layout (parent run per sweep, child run per trial, ``elapsed_s`` simulated), so
``harness compare`` reads them back like real sweeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import names as N
from harness.engines.base import EngineError
from harness.engines.simulated import SimulatedEngine
from harness.oracle import TableOracle, find_table, load_table
from harness.spec import SweepSpec, load_spec
from harness.strict_json import dumps as strict_dumps
from harness.surrogate import Curve
from harness.trials import TrialState, TrialTask

BUDGETS = (20, 50, 200)
SIM_TUNERS = ("optuna:tpe", "optuna:gp", "optuna:cmaes", "optuna:nsga2", "ax", "random")  # and plugins


class SimulationError(EngineError):
    """A simulated-benchmark input is wrong (one line, exit 2)."""


def tuner_label(name: str) -> tuple[str, str]:
    """``optuna:gp`` -> ("optuna", "gp"); ``optuna`` -> ("optuna", "tpe"); others: no sampler
    (the one tuner vocabulary: :func:`harness.inputs.parse_tuner`)."""
    from harness.inputs import parse_tuner

    t = parse_tuner(name)
    return t.backend, t.sampler or "tpe"


@dataclass
class SimSweep:
    tuner: str
    seed: int
    results: list[Any]  # TrialResult, in completion order
    elapsed: list[float]  # simulated seconds at each finished trial
    wall_seconds: float  # real seconds the simulated sweep took
    tuner_seconds: float  # real seconds charged to the clock
    sim_seconds: float
    exact: int = 0
    predicted: int = 0

    def best_curve(self, goal: str, n: int) -> np.ndarray:
        """Best complete value after each of the first ``n`` finished trials (NaN before one)."""
        out = np.full(n, np.nan)
        best = math.nan
        for i, r in enumerate(self.results[:n]):
            ok = r.state is TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)
            if ok and (math.isnan(best) or (r.value < best if goal == "minimize" else r.value > best)):
                best = r.value
            out[i] = best
        if len(self.results) < n and len(self.results) > 0:
            out[len(self.results):] = best
        return out


def simulate_sweep(spec: SweepSpec, oracle: Callable[[TrialTask], Curve], tuner: str | Any, seed: int, trials: int,
                   *, workers: int = 1, charge_tuner_time: bool = True, pruner: str = "none",
                   tracker: Any = None, info: Any = None) -> SimSweep:
    """One sweep of ``tuner`` on the simulated engine: the real tuner, built and run by the one
    sweep builder (:func:`harness.builder.assemble`, :func:`harness.builder.run_on`) with the
    recorder on the simulated clock."""
    from harness.builder import assemble, run_on
    from harness.tracking import NullTracker
    from harness.tuners.base import TunerOptions, make_tuner

    t0 = time.perf_counter()
    if isinstance(tuner, str):
        base, sampler = tuner_label(tuner)
        tuner_obj = make_tuner(base, spec, TunerOptions(seed=seed, sampler=sampler,
                                                        pruner=pruner if base == "optuna" else "none", budget=trials))
    else:  # a tuner object (a ManualTuner replaying the table, say)
        tuner_obj, tuner = tuner, getattr(tuner, "name", "tuner")
    quiet_optuna()  # the optuna backend sets WARNING when it builds its study
    engine = SimulatedEngine(oracle, workers=workers, charge_tuner_time=charge_tuner_time)
    elapsed: list[float] = []  # the simulated clock at each finished trial

    def finished_at(stats: Any) -> None:
        elapsed.extend([engine.clock()] * (len(stats.results) - len(elapsed)))

    sweep = assemble(spec, tuner_obj, tracker or NullTracker(), engine, budget=trials, seed=seed, info=info,
                     on_update=finished_at, clock=engine.clock)
    sweep.name = f"{tuner}-{seed}"
    stats = run_on(sweep, engine).stats
    results = [r for r in stats.results if not r.interrupted]
    return SimSweep(tuner, seed, results, elapsed, time.perf_counter() - t0, engine.tuner_seconds,
                    engine.clock(), getattr(oracle, "exact", 0), getattr(oracle, "predicted", 0))


@dataclass
class SimBenchmark:
    space: str
    id: str
    tuners: list[str]
    seeds: list[int]
    trials: int
    optimum: float
    worst: float
    goal: str
    sweeps: list[SimSweep] = field(default_factory=list)
    verdicts: dict[int, Any] = field(default_factory=dict)  # budget -> harness.ranking.Verdict
    wall: dict[str, float] = field(default_factory=dict)  # tuner -> real seconds, all seeds
    charged: dict[str, float] = field(default_factory=dict)  # tuner -> real seconds charged to the clock
    sim: dict[str, float] = field(default_factory=dict)  # tuner -> mean simulated seconds per sweep
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    exact: int = 0
    predicted: int = 0
    resampled: int = 0
    normalization: dict[str, Any] = field(default_factory=dict)  # optimum, worst, source

    def as_dict(self) -> dict[str, Any]:
        return {"space": self.space, "id": self.id, "tuners": self.tuners, "seeds": self.seeds,
                "trials": self.trials, "optimum": self.optimum, "worst": self.worst, "goal": self.goal,
                "normalization": self.normalization,
                "verdicts": {str(b): v.as_dict() for b, v in self.verdicts.items()},
                "wall_seconds": self.wall, "tuner_seconds_charged": self.charged,
                "simulated_seconds_per_sweep": self.sim, "exact_trials": self.exact,
                "surrogate_trials": self.predicted, "resampled_trials": self.resampled}


def check_tuners(tuners: list[str]) -> list[str]:
    """The one tuner vocabulary (:func:`harness.inputs.parse_tuners`), less Ray Tune; returns the
    canonical names (``optuna:tpe`` -> ``optuna``), as a real benchmark tags its sweeps."""
    from harness.inputs import parse_tuners

    parsed = parse_tuners(tuners)
    for t in parsed:
        if t.backend == "ray":
            raise SimulationError("--tuners ray --simulated: Ray Tune's schedulers run trials on Ray's own "
                                  "wall clock and actors, not on a simulated one; simulate optuna, ax or random")
    return [t.label for t in parsed]


def run_simulated_benchmark(
    space: str, *, tuners: list[str], seeds: list[int], trials: int | None, workers: int = 1,
    table: Path | None = None, charge_tuner_time: bool = True, pruner: str = "none",
    bid: str | None = None, out: Path | None = None, tracking_uri: str | None = None,
    log_sweeps: bool = False, progress: Callable[[SimSweep], None] | None = None,
    optimum: float | None = None, worst: float | None = None,
) -> SimBenchmark:
    """Every tuner x seed on the simulated engine, then the verdict at each budget."""
    from datetime import datetime

    from harness.ranking import verdict

    tuners = check_tuners(tuners)
    spec = load_spec(space)
    trials = trials or spec.budget.trials
    if trials < 1 or workers < 1 or not seeds:
        raise SimulationError(f"--trials and --workers must be >= 1 and --seeds not empty "
                              f"(got {trials}, {workers}, {seeds})")
    path = find_table(space, table)
    df = load_table(path, space)
    oracle = TableOracle(spec, df)
    norm = oracle.normalization(optimum=optimum, worst=worst)
    optimum, worst = norm.optimum, norm.worst
    if optimum == worst:
        raise SimulationError(f"optimum and worst are both {optimum}: the normalized regret is undefined")
    quiet_optuna()
    goal = spec.metric.goal
    stem = Path(space).stem
    bid = bid or f"sim-{datetime.now():%Y%m%d-%H%M%S}"
    uri = _uri(tracking_uri)
    bench = SimBenchmark(stem, bid, list(tuners), list(seeds), trials, optimum, worst, goal,
                         normalization=norm.as_dict())
    for t in tuners:
        for s in seeds:
            tracker, info = (None, None)
            if log_sweeps and uri is not None:
                tracker, info = _sweep_tracker(uri, spec, stem, t, s, bid)
            sw = simulate_sweep(spec, oracle, t, s, trials, workers=workers, charge_tuner_time=charge_tuner_time,
                                pruner=pruner, tracker=tracker, info=info)
            bench.sweeps.append(sw)
            bench.wall[t] = bench.wall.get(t, 0.0) + sw.wall_seconds
            bench.charged[t] = bench.charged.get(t, 0.0) + sw.tuner_seconds
            bench.sim[t] = bench.sim.get(t, 0.0) + sw.sim_seconds / len(seeds)
            if progress is not None:
                progress(sw)
    bench.exact, bench.predicted, bench.resampled = oracle.exact, oracle.predicted, oracle.resampled
    for b in sorted({*(x for x in BUDGETS if x < trials), trials}):
        finals = {t: {sw.seed: float(sw.best_curve(goal, b)[-1]) for sw in bench.sweeps if sw.tuner == t}
                  for t in tuners}
        bench.verdicts[b] = verdict(finals, optimum, worst, goal)  # type: ignore[arg-type]
    folder = out or Path(".harness") / "benchmarks" / bid
    bench.files = _write(bench, folder)
    if uri is not None:
        bench.run_id = _log_summary(uri, bench, spec)
    return bench


def quiet_optuna() -> None:
    """The simulated sweeps run hundreds of studies: Optuna's per-trial INFO lines and the GP
    sampler's independent-sampling warning (a documented fallback) would drown the output."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", module="optuna")


def parse_seeds(seeds: str) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,4,7`` -> [0, 4, 7]."""
    try:
        if "," in seeds:
            return [int(x) for x in seeds.split(",") if x.strip()]
        n = int(seeds)
    except ValueError:
        raise SimulationError(f"--seeds {seeds}: a count or a comma list of integers") from None
    if n < 1:
        raise SimulationError(f"--seeds {seeds}: must be >= 1")
    return list(range(n))


def render(bench: SimBenchmark, format: str = "table") -> str:
    """The verdict per budget (per tuner normalized_regret, iqm, ci95, mean_rank), the wall time
    per tuner, where the files are."""
    if format == "json":
        return strict_dumps(bench.as_dict())
    lines = [f"simulated benchmark {bench.id}: {bench.space}, {', '.join(bench.tuners)} x "
             f"{len(bench.seeds)} seeds, {bench.trials} trials; optimum {bench.optimum:.6g}, worst {bench.worst:.6g} "
             f"({bench.normalization.get('source', 'the best configuration mean; the median configuration')}); {bench.exact} trials replayed from the table, {bench.predicted} from the surrogate"
             + (f", {bench.resampled} of them with a drawn seed deviation" if bench.resampled else "")]
    for b, v in sorted(bench.verdicts.items()):
        lines.append(f"\nafter {b} trials:")
        lines.append(f"  {'tuner':14} {'normalized_regret':>17} {'iqm':>7} {'ci95':>17} {'mean_rank':>9}")
        for t, row in v.tuners.items():
            lo, hi = row["ci95"]
            lines.append(f"  {t:14} {row['normalized_regret']:17.4f} {row['iqm']:7.4f} "
                         f"{f'[{lo:.4f}, {hi:.4f}]':>17} {row['mean_rank']:9.2f}")
        lines.append(f"  {v.summary}")
    lines.append("\nwall time per tuner (real seconds, all seeds; of which charged tuner time; mean simulated s/sweep):")
    for t in bench.tuners:
        lines.append(f"  {t:14} {bench.wall[t]:8.1f} s  {bench.charged[t]:8.1f} s  {bench.sim[t]:10.1f} s")
    lines.append("files: " + ", ".join(str(f) for f in bench.files))
    if bench.run_id:
        lines.append(f"MLflow run {bench.run_id} (experiment {bench.space}-simulated)")
    return "\n".join(lines)


def _uri(tracking_uri: str | None) -> str | None:
    from harness.tracking import check_store, resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri is not None:
        check_store(uri)
    return uri


def _sweep_tracker(uri: str, spec: SweepSpec, stem: str, tuner: str, seed: int, bid: str) -> tuple[Any, Any]:
    from harness.tracking import SweepInfo, make_tracker

    info = SweepInfo(name=f"{bid}-{tuner.replace(':', '-')}-{seed}", experiment=stem, tuner=tuner,
                     objective=spec.objective, engine="simulated", seed=seed, spec_yaml=spec.to_yaml(),
                     spec_hash=spec.hash(), metric=spec.metric.name, goal=spec.metric.goal,
                     params=dict(spec.fixed), tags={N.TAG_BENCHMARK: bid, N.TAG_SIMULATED: "true"})
    return make_tracker(uri), info


def _write(bench: SimBenchmark, folder: Path) -> list[Path]:
    from harness.ranking_plots import cd_diagram, regret_rank_curves

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "verdict.json", folder / "curves.json"]
    files[0].write_text(strict_dumps(bench.as_dict()))
    curves = {t: [sw.best_curve(bench.goal, bench.trials).tolist() for sw in bench.sweeps if sw.tuner == t]
              for t in bench.tuners}
    files[1].write_text(strict_dumps({"x": "finished trials", "curves": curves,  # NaN before a first result: null
                                      "elapsed_s": {f"{sw.tuner}/{sw.seed}": sw.elapsed for sw in bench.sweeps}}))
    last = bench.verdicts[max(bench.verdicts)]
    if len(bench.tuners) >= 2 and last.cd is not None:
        ranks = {t: v["mean_rank"] for t, v in last.tuners.items()}
        groups = last.groups if last.friedman is not None and last.friedman.pvalue < last.alpha else [list(ranks)]
        files += cd_diagram(ranks, last.cd, folder / "cd_diagram", groups=groups,
                            title=f"{bench.space} (simulated), {max(bench.verdicts)} trials")
    files += regret_rank_curves({t: np.array(c) for t, c in curves.items()}, bench.optimum, bench.worst,
                                bench.goal, folder / "regret_rank", title=f"{bench.space} (simulated)")  # type: ignore[arg-type]
    return files


def _log_summary(uri: str, bench: SimBenchmark, spec: SweepSpec) -> str:
    """One parent run per simulated benchmark: verdict metrics, the JSON and the plots."""
    from mlflow import MlflowClient

    from harness.tracking import init_sqlite

    init_sqlite(uri)
    client = MlflowClient(uri)
    name = f"{bench.space}-simulated"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=bench.id, tags={
        N.TAG_BENCHMARK: bench.id, N.TAG_SIMULATED: "true", N.TAG_SPEC_HASH: spec.hash(),
        N.TAG_TUNERS: ",".join(bench.tuners), N.TAG_SEEDS: ",".join(map(str, bench.seeds))})
    rid = run.info.run_id
    for b, v in bench.verdicts.items():
        for t, row in v.tuners.items():
            key = t.replace(":", "_")
            for m in ("normalized_regret", "iqm", "mean_rank"):
                client.log_metric(rid, f"{key}.{m}", float(row[m]), step=b)
    for t, w in bench.wall.items():
        client.log_metric(rid, f"{t.replace(':', '_')}.{N.METRIC_WALL_SECONDS}", w)
    for f in bench.files:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid)
    return rid


__all__ = ["BUDGETS", "parse_seeds", "render", "SimBenchmark", "SimSweep", "SimulationError", "TableOracle", "check_tuners",
           "quiet_optuna", "run_simulated_benchmark", "simulate_sweep", "tuner_label"]
