"""Tabulate a search space: N configurations x S seeds, every learning curve, in one tidy table.

The design is a scrambled Sobol sequence over the space (``scipy.stats.qmc.Sobol``; log
parameters on a log scale, inclusive integer bounds, conditionals respected: an inactive
parameter is absent). Each configuration is run once per seed on any engine; every finished
trial is appended at once to a part file (``rows.jsonl`` in ``.harness/tables/NAME/``), so a
crash loses at most the trials that were running, and a rerun resumes where it stopped. The
table is built from the part file:

one row per reported step (``kind = report``) and one per trial end (``kind = final``), with
``config_id`` (a hash of the active params), ``config`` (the design index), ``seed``, ``step``,
``elapsed_s`` (seconds since the trial started: the time of that report, or the trial's total
on the final row), ``seconds_per_step``, ``state`` (complete | failed | ...), the params as
``param.<name>`` columns and every metric as ``metric.<name>`` columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import names as N
from harness.engines.base import EngineError
from harness.files import append_line, read_jsonl, repair_jsonl, write_atomic
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec, load_spec
from harness.tracking import NullTracker
from harness.trials import TrialResult

TABLES_ROOT = Path(".harness") / "tables"
ROWS = "rows.jsonl"
META = "meta.json"
DENSE = "dense.json"  # the dense stage's configurations, designed once
PARAM = "param."
METRIC = "metric."
BASE_COLUMNS = ["config_id", "config", "seed", "kind", "step", "elapsed_s", "seconds_per_step", "state"]


class TabulateError(EngineError):
    """A tabulate input is wrong (one line, exit 2)."""


# -- the design -------------------------------------------------------------------------------
def sobol_design(spec: SweepSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations from a scrambled Sobol sequence over the space (one dimension per
    parameter, in the spec's order; conditionals respected)."""
    from scipy.stats import qmc

    names = spec.order()
    sampler = qmc.Sobol(d=len(names), scramble=True, seed=seed)
    with warnings.catch_warnings():  # n need not be a power of two
        warnings.simplefilter("ignore", UserWarning)
        u = sampler.random(n)
    return [spec.active_params({name: from_unit(spec.params[name], float(x)) for name, x in zip(names, row, strict=True)})
            for row in u]


def from_unit(p: FloatParam | IntParam | ChoiceParam, u: float) -> Any:
    """Map u in [0, 1) onto the parameter's domain (log scale when ``log``; ints inclusive)."""
    u = min(max(u, 0.0), 1.0 - 1e-12)
    if isinstance(p, ChoiceParam):
        return p.values[min(int(u * len(p.values)), len(p.values) - 1)]
    if isinstance(p, FloatParam):
        if p.log:
            return float(math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low))))
        return float(p.low + u * (p.high - p.low))
    if p.log:  # equal mass per unit of log on [low, high + 1)
        v = math.exp(math.log(p.low) + u * (math.log(p.high + 1) - math.log(p.low)))
        return int(min(max(math.floor(v), p.low), p.high))
    return int(min(p.low + math.floor(u * (p.high - p.low + 1)), p.high))


def config_id(params: Mapping[str, Any]) -> str:
    """A stable id of a configuration (its active params)."""
    blob = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def row_params(row: Any, spec: SweepSpec) -> dict[str, Any]:
    """A table row's active params as the trial saw them (ints back to int)."""
    import pandas as pd

    out: dict[str, Any] = {}
    for n in spec.order():
        v = row[PARAM + n]
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        p = spec.params[n]
        if isinstance(p, ChoiceParam):
            out[n] = next((c for c in p.values if str(c) == str(v)), v)
        elif isinstance(p, FloatParam):
            out[n] = float(v)
        else:
            out[n] = int(round(float(v)))
    return out


def config_values(table: Any, metric: str) -> dict[str, list[float]]:
    """Each configuration's complete final values over its seeds (non-finite ones kept out)."""
    col = metric if metric.startswith(METRIC) else METRIC + metric
    if col not in table.columns:
        return {}
    f = table[(table["kind"] == "final") & (table["state"] == "complete")]
    out: dict[str, list[float]] = {}
    for cid, v in zip(f["config_id"], f[col].to_numpy(float), strict=True):
        if math.isfinite(v):
            out.setdefault(str(cid), []).append(float(v))
    return out



# -- the dense second stage ----------------------------------------------------------------------
def to_unit(p: FloatParam | IntParam | ChoiceParam, v: Any) -> float:
    """The inverse of :func:`from_unit`: the middle of ``v``'s cell in [0, 1)."""
    if isinstance(p, ChoiceParam):
        i = next((j for j, c in enumerate(p.values) if str(c) == str(v)), 0)
        return (i + 0.5) / len(p.values)
    x = float(v)
    if isinstance(p, FloatParam):
        if p.log:
            return (math.log(x) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        return (x - p.low) / (p.high - p.low) if p.high > p.low else 0.5
    if p.log:
        return (math.log(x + 0.5) - math.log(p.low)) / (math.log(p.high + 1) - math.log(p.low))
    return (x - p.low + 0.5) / (p.high - p.low + 1)


def dense_design(spec: SweepSpec, table: Any, n: int = 100, *, seed: int = 0, top: float = 0.1,
                 radius: float = 0.08, switch: float = 0.2) -> list[dict[str, Any]]:
    """``n`` new configurations around the best ``top`` share (decile) of the table's
    configurations (by mean final metric over complete seeds).

    A scrambled Sobol sequence (``scipy.stats.qmc.Sobol``, seeded) gives, for each new
    configuration, an offset in ``[-radius, radius]`` per numeric dimension of the unit cube
    (log scale where the parameter is log, as the Sobol stage), added to an elite's coordinates
    (the elites taken in turn, best first) and clipped; each choice keeps the elite's value
    except with probability ``switch``, when it is drawn uniformly (so a neighbouring choice is
    explored too). Conditionals are respected; configurations already in the table or drawn
    twice are skipped, so the result holds at most ``n``.
    """
    from scipy.stats import qmc

    if n < 1:
        return []
    col = METRIC + spec.metric.name
    values = config_values(table, col)
    if not values:
        raise ValueError(f"the table has no complete {spec.metric.name} value to find its best decile")
    sign = 1.0 if spec.metric.goal == "minimize" else -1.0
    ranked = sorted(values, key=lambda c: sign * float(np.mean(values[c])))
    elites_ids = ranked[:max(1, int(math.ceil(len(ranked) * top)))]
    first = table.drop_duplicates("config_id").set_index("config_id")
    names = list(spec.order())
    elites = []
    for cid in elites_ids:
        params = row_params(first.loc[cid], spec)
        elites.append([to_unit(spec.params[k], params[k]) if k in params else 0.5 for k in names])
    sampler = qmc.Sobol(d=len(names), scramble=True, seed=seed)
    rng = np.random.default_rng(seed)
    seen = set(first.index.astype(str))
    out: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        u = sampler.random(4 * n)
    for i, row in enumerate(u):
        if len(out) >= n:
            break
        base = elites[i % len(elites)]
        raw: dict[str, Any] = {}
        for j, name in enumerate(names):
            p = spec.params[name]
            if isinstance(p, ChoiceParam):
                x = float(rng.random()) if rng.random() < switch else base[j]
            else:
                x = base[j] + (2.0 * float(row[j]) - 1.0) * radius
            raw[name] = from_unit(p, min(max(x, 0.0), 1.0 - 1e-12))
        params = spec.active_params(raw)
        cid = config_id(params)
        if cid in seen:
            continue
        seen.add(cid)
        out.append(params)
    return out


# -- running ----------------------------------------------------------------------------------
@dataclass
class TabulateOptions:
    space: str
    configs: int = 64
    seeds: int = 3
    design_seed: int = 0
    engine: str = "local"
    workers: int = 1
    threads: int = 1  # CPU threads per worker (local engine)
    out: Path | None = None  # the Parquet file (default: benchmarks/tables/<stem>.parquet)
    name: str | None = None  # state folder name (default: the space's stem)
    state_root: Path = TABLES_ROOT
    time_limit: float | None = None  # stop dispatching after this many seconds (resume later)
    tracking_uri: str | None = None
    trial_timeout: float | None = None
    dense: int = 0  # a second stage: this many configurations around the Sobol stage's best decile


@dataclass
class TabulateSummary:
    out: Path
    trials: int  # finished trials in the table
    configs: int  # configurations with every seed finished
    ran: int  # trials run by this call
    seconds: float
    run_id: str | None
    sha256: str


def default_out(space: str) -> Path:
    return Path("benchmarks") / "tables" / f"{Path(space).stem}.parquet"


def tabulate(opts: TabulateOptions, progress: Callable[[int, int], None] | None = None) -> TabulateSummary:
    """Run (or resume) the tabulation, write the table and log it to MLflow."""
    if opts.configs < 1 or opts.seeds < 1 or opts.workers < 1:
        raise TabulateError(f"--configs, --seeds and --workers must be >= 1 (got {opts.configs}, "
                            f"{opts.seeds}, {opts.workers})")
    spec = load_spec(opts.space)
    from harness.objective import check_objective
    from harness.tracking import check_store, resolve_uri

    check_objective(spec.objective)
    uri = resolve_uri(opts.tracking_uri)
    if uri is not None:
        check_store(uri)
    stem = Path(opts.space).stem
    state = opts.state_root / (opts.name or stem)
    meta = {"space": stem, "spec_hash": spec.hash(), "design_seed": opts.design_seed}
    meta_path = state / META
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise TabulateError(f"{state}: tabulated with another spec or design seed ({old.get('spec_hash')}, "
                                f"seed {old.get('design_seed')}); use another --name or remove the folder")
    state.mkdir(parents=True, exist_ok=True)
    write_atomic(meta_path, json.dumps(meta))
    rows_path = state / ROWS
    if rows_path.exists():
        repair_jsonl(rows_path)
    done = {(int(r["config"]), int(r["seed"])) for r in read_jsonl(rows_path)} if rows_path.exists() else set()
    design = sobol_design(spec, opts.configs, opts.design_seed)
    todo = [(i, s) for i in range(opts.configs) for s in range(opts.seeds) if (i, s) not in done]
    t0 = time.perf_counter()
    total = (opts.configs + opts.dense) * opts.seeds
    ran = _run(spec, design, todo, rows_path, opts, progress, total=total, have=len(done))
    if opts.dense > 0:  # the dense stage, designed once from the finished Sobol stage (kept for resume)
        design += _dense_design(spec, opts, state, rows_path)
        done = {(int(r["config"]), int(r["seed"])) for r in read_jsonl(rows_path)}
        todo = [(i, s) for i in range(opts.configs, len(design)) for s in range(opts.seeds) if (i, s) not in done]
        ran += _run(spec, design, todo, rows_path, opts, progress, total=total, have=total - len(todo))
    out = opts.out or default_out(opts.space)
    df = build_table(read_jsonl(rows_path), spec, configs=len(design), seeds=opts.seeds)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False)
    digest = sha256(out)
    Path(str(out) + ".sha256").write_text(f"{digest}  {out.name}\n")
    finals = df[df["kind"] == "final"]
    per_config = finals.groupby("config")["seed"].nunique()
    complete_configs = int((per_config >= opts.seeds).sum())
    run_id = _log_table(uri, stem, out, spec, opts, len(finals), complete_configs) if uri else None
    return TabulateSummary(out, len(finals), complete_configs, ran, time.perf_counter() - t0, run_id, digest)


def _dense_design(spec: SweepSpec, opts: TabulateOptions, state: Path, rows_path: Path) -> list[dict[str, Any]]:
    """The dense stage's configurations (:func:`dense_design` around the best
    decile of the Sobol stage), computed once and kept in the state folder so a resume runs the
    same ones; refused while the Sobol stage is unfinished (rerun to resume it first)."""
    path = state / DENSE
    if path.exists():
        return json.loads(path.read_text())[: opts.dense]
    sobol = build_table(read_jsonl(rows_path), spec, configs=opts.configs, seeds=opts.seeds)
    finals = sobol[sobol["kind"] == "final"]
    if finals.groupby("config")["seed"].nunique().ge(opts.seeds).sum() < opts.configs:
        raise TabulateError(f"--dense {opts.dense}: the Sobol stage ({opts.configs} x {opts.seeds}) is not "
                            "finished (stopped by --time-limit?): rerun the same command to finish it first")
    dense = dense_design(spec, sobol, n=opts.dense, seed=opts.design_seed)
    write_atomic(path, json.dumps(dense))
    return dense


def _run(spec: SweepSpec, design: list[dict[str, Any]], todo: list[tuple[int, int]], rows_path: Path,
         opts: TabulateOptions, progress: Callable[[int, int], None] | None, total: int, have: int) -> int:
    """The configurations x seeds still missing, as a sweep of the one builder: a manual tuner
    proposes them in order, the recorder's tracker is :class:`_RowWriter` (a row per finished
    trial, at once), ``--time-limit`` is the sweep's timeout. Ctrl-C: the finished rows stay,
    a rerun does the rest."""
    if not todo:
        return 0
    from harness.builder import assemble, run_on
    from harness.tuners.manual import ManualTuner

    tuner = ManualTuner([design[i] for i, _ in todo], [s for _, s in todo])
    writer = _RowWriter(rows_path, [i for i, _ in todo], progress, total, have)
    engine = _engine(opts)
    sweep = assemble(spec, tuner, writer, engine, budget=len(todo), seed=0, timeout=opts.time_limit,
                     trial_timeout=opts.trial_timeout)
    sweep.name = f"tabulate-{Path(opts.space).stem}"
    run_on(sweep, engine)
    return writer.ran


class _RowWriter(NullTracker):
    """The tracker of a tabulation: each trial's learning curve (report times since its start)
    and, when it finishes, its row appended to the part file (interrupted trials: none, so a
    rerun runs them)."""

    def __init__(self, path: Path, configs: list[int], progress: Callable[[int, int], None] | None,
                 total: int, have: int) -> None:
        self.path, self.configs, self.progress, self.total, self.have = path, configs, progress, total, have
        self.ran = 0
        self._t0: dict[int, float] = {}
        self._curves: dict[int, list[dict[str, Any]]] = {}

    def trial_started(self, number: int, params: Mapping[str, Any], seed: int, device: str,
                      tags: Mapping[str, str] | None = None) -> None:
        self._t0[number] = time.perf_counter()
        self._curves[number] = []

    def trial_report(self, number: int, step: int, metrics: Mapping[str, float]) -> None:
        self._curves[number].append({"step": step, "t": time.perf_counter() - self._t0[number],
                                     "metrics": dict(metrics)})

    def trial_finished(self, result: TrialResult, **kwargs: Any) -> None:
        curve = self._curves.pop(result.number, [])
        if result.interrupted:
            return
        append_line(self.path, _row(result, self.configs[result.number], curve))
        self.ran += 1
        if self.progress is not None:
            self.progress(self.have + self.ran, self.total)


def _engine(opts: TabulateOptions) -> Any:
    from harness.engines.local import device_slots

    slots = device_slots("cpu", 1, opts.workers)
    if opts.engine == "local":
        from harness.engines.local import LocalEngine

        return LocalEngine(slots, threads_per_worker=opts.threads)
    from harness.engines import make_engine

    return make_engine(opts.engine, slots)


def _row(result: TrialResult, config: int, curve: list[dict[str, Any]]) -> dict[str, Any]:
    state = result.state.value
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, float | int)}
    if state == "complete" and any(not math.isfinite(v) for v in metrics.values()):
        state = "failed"
    return {"config": config, "seed": result.seed, "config_id": config_id(result.params), "params": result.params,
            "state": state, "reason": result.reason, "steps": result.steps, "seconds": result.seconds,
            "metrics": metrics, "curve": curve}


# -- the table --------------------------------------------------------------------------------
def build_table(records: list[dict[str, Any]], spec: SweepSpec, configs: int | None = None,
                seeds: int | None = None) -> Any:
    """The tidy table (pandas) from the part file's records (the first ``configs`` x ``seeds``)."""
    import pandas as pd

    names = list(spec.order())
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for r in records:
        key = (int(r["config"]), int(r["seed"]))
        if key in seen or (configs is not None and key[0] >= configs) or (seeds is not None and key[1] >= seeds):
            continue
        seen.add(key)
        base = {"config_id": r["config_id"], "config": key[0], "seed": key[1], "state": r["state"]}
        params = {PARAM + n: r["params"].get(n) for n in names}
        for c in r["curve"]:
            step = int(c["step"])
            rows.append({**base, "kind": "report", "step": step, "elapsed_s": float(c["t"]),
                         "seconds_per_step": float(c["t"]) / step if step > 0 else float("nan"),
                         **params, **{METRIC + k: v for k, v in c["metrics"].items()}})
        step = int(r["steps"])
        rows.append({**base, "kind": "final", "step": step, "elapsed_s": float(r["seconds"]),
                     "seconds_per_step": float(r["seconds"]) / step if step > 0 else float("nan"),
                     **params, **{METRIC + k: v for k, v in r["metrics"].items()}})
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=BASE_COLUMNS + [PARAM + n for n in names])
    for n in names:  # one dtype per param column (choices as strings, numbers as floats)
        col = PARAM + n
        df[col] = df[col].astype("string") if isinstance(spec.params[n], ChoiceParam) else df[col].astype("float64")
    df["_final"] = df["kind"] == "final"
    df = df.sort_values(["config", "seed", "_final", "step"], kind="stable").drop(columns="_final")
    return df.reset_index(drop=True)


def read_table(path: str | Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _log_table(uri: str, stem: str, out: Path, spec: SweepSpec, opts: TabulateOptions,
               trials: int, complete: int) -> str:
    """The table as an artifact of a parent run in experiment ``<stem>-table``."""
    import mlflow
    from mlflow import MlflowClient

    from harness.tracking import init_sqlite

    if uri.startswith("sqlite:"):
        init_sqlite(uri)
    client = MlflowClient(uri)
    name = f"{stem}-table"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=f"tabulate-{stem}", tags={
        N.TAG_TABULATE: "true", N.TAG_SPEC_HASH: spec.hash(), N.TAG_OBJECTIVE: spec.objective})
    rid = run.info.run_id
    for k, v in {"configs": opts.configs, "seeds": opts.seeds, "design_seed": opts.design_seed,
                 "engine": opts.engine}.items():
        client.log_param(rid, k, str(v))
    client.log_metric(rid, N.METRIC_TABLE_TRIALS, trials)
    client.log_metric(rid, N.METRIC_TABLE_COMPLETE_CONFIGS, complete)
    client.log_artifact(rid, str(out))
    client.set_terminated(rid)
    del mlflow
    return rid


__all__ = ["TabulateError", "TabulateOptions", "TabulateSummary", "build_table", "config_id",
           "config_values", "default_out", "dense_design", "read_table", "row_params", "sobol_design",
           "tabulate", "to_unit"]
