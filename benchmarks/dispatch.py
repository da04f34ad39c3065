"""Dispatch overhead: how busy the workers are kept, per tuner and engine, against plain Optuna.

utilization = (sum of the trials' own seconds) / (workers x sweep wall seconds), for sleeping
trials (``harness.testfunctions:sleep``, config ``seconds``) of 0.2 s, 1 s and 5 s on 2
workers, with MLflow logging on (a temporary SQLite store per sweep). The harness's wall time
runs from the first dispatch to the moment the last result is stored in the tuner and in
MLflow (``SweepSummary.utilization``); worker start-up (process spawn, ``ray.init``, Ray Tune's
set-up) is printed beside it. The peer is ``optuna`` ``study.optimize(n_jobs=2)`` on the same
sleeps, with no logging at all, measured in the same run.

Ray is started once (``ray.init``) before the Ray pairings and shared by them, so their figures
are "after ray.init", as the targets are. Targets: Optuna >= 0.95 at 0.2 s; Ray engine >= 0.9
at 0.2 s; Ax >= 0.9 at 5 s.

    .venv/bin/python benchmarks/dispatch.py                      # everything (~10 min here)
    .venv/bin/python benchmarks/dispatch.py --seconds 0.2 --tuners optuna,random --engines ray

The harness opens MLflow's SQLite store in WAL mode with ``synchronous=NORMAL``
(``harness.tracking.sqlite_wal``); before that, SQLite's per-commit fsync cost ~260 ms of writes
per trial on this machine's disk (76 ms in WAL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_TRIALS = {0.2: 60, 1.0: 20, 5.0: 8}
TARGETS = {("optuna", "local", 0.2): 0.95, ("optuna", "ray", 0.2): 0.9, ("random", "ray", 0.2): 0.9,
           ("ax", "local", 5.0): 0.9, ("ax", "ray", 5.0): 0.9}


def space_file(folder: Path, seconds: float, trials: int) -> Path:
    path = folder / f"sleep-{seconds:g}.yaml"
    path.write_text(
        "objective: harness.testfunctions:sleep\n"
        "metric: {name: value, goal: minimize}\n"
        f"fixed: {{seconds: {seconds}}}\n"
        "params:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        f"budget: {{trials: {trials}}}\n"
    )
    return path


def plain_optuna(seconds: float, trials: int, workers: int) -> dict[str, float]:
    """The peer: study.optimize(n_jobs=workers) on the same sleep, no logging."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    busy: list[float] = []
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        t0 = time.perf_counter()
        time.sleep(seconds)
        with lock:
            busy.append(time.perf_counter() - t0)
        return (x - 0.5) ** 2

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials, n_jobs=workers)
    wall = time.perf_counter() - t0
    return {"utilization": sum(busy) / (workers * wall), "wall": wall, "startup": 0.0}


def harness_sweep(space: Path, tuner: str, engine: str, workers: int, folder: Path) -> dict[str, float]:
    from harness.runner import SweepOptions, launch

    name = f"{space.stem}-{tuner}-{engine}"
    options = SweepOptions(
        space=str(space), tuner=tuner, engine=engine, workers=workers, devices="cpu",
        tracking_uri=f"sqlite:///{folder / name / 'mlflow.db'}", name=name, seed=0,
        state_root=folder / name / "sweeps", experiment=name,
    )
    (folder / name).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = launch(options)
    s = summary.stats
    return {"utilization": summary.utilization, "wall": s.wall_seconds(), "startup": summary.startup_seconds,
            "total": time.perf_counter() - t0, "complete": s.complete, "failed": s.failed,
            "failed_writes": summary.failed_writes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="0.2,1,5", help="trial lengths, comma-separated")
    ap.add_argument("--trials", default=None, help="trials per length (default 60,20,8)")
    ap.add_argument("--tuners", default="optuna,random,ax,ray")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each measurement this many times, interleaved; report the median (the machine is shared)")
    ap.add_argument("--no-baseline", action="store_true", help="skip plain optuna")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    seconds = [float(s) for s in args.seconds.split(",")]
    trials = [int(t) for t in args.trials.split(",")] if args.trials else [DEFAULT_TRIALS.get(s, 20) for s in seconds]
    tuners = args.tuners.split(",")
    engines = args.engines.split(",")
    folder = Path(tempfile.mkdtemp(prefix="harness-dispatch-"))
    pairings = [(t, e) for t in tuners for e in engines if not (t == "ray" and e != "ray")]
    if any(e == "ray" for _, e in pairings):
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
        print(f"ray.init: {time.perf_counter() - t0:.1f} s (shared by the Ray pairings)", flush=True)
    runs: dict[tuple[float, str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        for sec, n in zip(seconds, trials, strict=True):
            space = space_file(folder, sec, n)
            if not args.no_baseline:
                r = plain_optuna(sec, n, args.workers)
                runs.setdefault((sec, "plain optuna n_jobs", "threads"), []).append({"trials": n, **r})
                print(f"{sec:>4g} s  {'plain optuna n_jobs':<20} {'':<6} util {r['utilization']:.3f}", flush=True)
            for tuner, engine in pairings:
                r = harness_sweep(space, tuner, engine, args.workers, folder / f"rep{rep}")
                runs.setdefault((sec, tuner, engine), []).append({"trials": n, **r})
                print(f"{sec:>4g} s  {tuner:<20} {engine:<6} util {r['utilization']:.3f}  wall {r['wall']:.1f} s  "
                      f"start-up {r['startup']:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    for (sec, tuner, engine), rs in runs.items():
        best = sorted(rs, key=lambda r: r["utilization"])[len(rs) // 2]  # the median run
        rows.append({"seconds": sec, "tuner": tuner, "engine": engine, "target": TARGETS.get((tuner, engine, sec)),
                     **best, "all": [round(r["utilization"], 3) for r in rs]})
    print()
    print("| trial s | trials | tuner | engine | utilization (median) | all runs | wall s | start-up s | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tgt = "" if not r.get("target") else (f">= {r['target']} " + ("ok" if r["utilization"] >= r["target"] else "MISSED"))
        print(f"| {r['seconds']:g} | {r['trials']} | {r['tuner']} | {r['engine']} | {r['utilization']:.3f} | "
              f"{', '.join(map(str, r['all']))} | {r['wall']:.1f} | {r['startup']:.1f} | {tgt} |")
    by_tuner: dict[str, list[float]] = {}
    for r in rows:
        by_tuner.setdefault(f"{r['tuner']}/{r['engine']}", []).append(r["utilization"])
    print("\nmedian over trial lengths:", {k: round(statistics.median(v), 3) for k, v in by_tuner.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
