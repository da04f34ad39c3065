"""Honesty check of a simulated verdict: rerun tuners for real with the same seeds and budget.

    python benchmarks/simulated_vs_real.py real gflownet-quick --tuners optuna,random --seeds 5 --trials 20
    python benchmarks/simulated_vs_real.py compare gflownet-quick --tuners optuna,random --seeds 5 --trials 20

``real`` runs every tuner x seed as a real sweep (local engine, ``--workers`` workers, tracking off) and
writes each sweep's best value after every finished trial to ``.harness/benchmarks/real-<space>.json``
(resumable: finished sweeps are kept). ``compare`` runs the same tuners x seeds on the simulated
engine (table + surrogate) and prints both verdicts (harness.ranking.verdict, the table's
optimum / worst) and whether they agree: the same order of mean ranks, and per seed how often the
two tuners are ordered the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def best_curve(results: list, goal: str) -> list[float]:
    out, best = [], math.nan
    for r in results:
        ok = r.state.value == "complete" and r.value is not None and math.isfinite(r.value)
        if ok and (math.isnan(best) or (r.value < best if goal == "minimize" else r.value > best)):
            best = r.value
        out.append(best)
    return out


def real(args: argparse.Namespace) -> None:
    from harness.runner import SweepOptions, launch
    from harness.spec import load_spec

    spec = load_spec(args.space)
    path = Path(".harness/benchmarks") / f"real-{Path(args.space).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    for t in args.tuners.split(","):
        for s in range(args.seeds):
            key = f"{t}/{s}/{args.trials}"
            if key in data:
                continue
            base, _, sampler = t.partition(":")
            t0 = time.perf_counter()
            summary = launch(SweepOptions(space=args.space, tuner=base, sampler=sampler or "tpe", trials=args.trials,
                                          workers=args.workers, seed=s, tracking_uri="none", devices="cpu",
                                          name=f"real-{t.replace(':', '-')}-{s}-{int(time.time())}",
                                          state_root=Path("/tmp/harness-real-sweeps")))
            results = [r for r in summary.stats.results if not r.interrupted]
            data[key] = {"best": best_curve(results, spec.metric.goal), "wall_s": time.perf_counter() - t0,
                         "sweep_s": summary.stats.wall_seconds()}
            path.write_text(json.dumps(data, indent=1))
            print(key, data[key]["best"][-1], round(data[key]["wall_s"], 1), "s", flush=True)


def compare(args: argparse.Namespace) -> None:
    import numpy as np

    from harness.ranking import verdict
    from harness.simulate import run_simulated_benchmark

    tuners = args.tuners.split(",")
    data = json.loads((Path(".harness/benchmarks") / f"real-{Path(args.space).stem}.json").read_text())
    seeds = [s for s in range(args.seeds) if all(f"{t}/{s}/{args.trials}" in data for t in tuners)]
    print(f"seeds with a real sweep of every tuner: {seeds}")
    sim = run_simulated_benchmark(args.space, tuners=tuners, seeds=seeds, trials=args.trials, workers=args.workers,
                                  charge_tuner_time=False, tracking_uri="none",
                                  out=Path(".harness/benchmarks") / f"honesty-{Path(args.space).stem}")
    sv = sim.verdicts[args.trials]
    real_finals = {t: {s: data[f"{t}/{s}/{args.trials}"]["best"][-1] for s in seeds} for t in tuners}
    rv = verdict(real_finals, sim.optimum, sim.worst, sim.goal)
    print(f"{'tuner':14} {'sim regret':>10} {'sim rank':>8} {'real regret':>11} {'real rank':>9}  real ci95")
    for t in tuners:
        a, b = sv.tuners[t], rv.tuners[t]
        print(f"{t:14} {a['normalized_regret']:10.3f} {a['mean_rank']:8.2f} {b['normalized_regret']:11.3f} "
              f"{b['mean_rank']:9.2f}  [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]")
    order_sim = sorted(tuners, key=lambda t: sv.tuners[t]["mean_rank"])
    order_real = sorted(tuners, key=lambda t: rv.tuners[t]["mean_rank"])
    print("simulated order:", order_sim, "| real order:", order_real, "| agree:", order_sim == order_real)
    if len(tuners) == 2:
        sims = {t: {sw.seed: float(sw.best_curve(sim.goal, args.trials)[-1]) for sw in sim.sweeps if sw.tuner == t}
                for t in tuners}
        same = sum(np.sign(sims[tuners[0]][s] - sims[tuners[1]][s]) == np.sign(real_finals[tuners[0]][s]
                   - real_finals[tuners[1]][s]) for s in seeds)
        print(f"per-seed pairwise order agreement: {same}/{len(seeds)}")
    print("simulated summary:", sv.summary)
    print("real summary:", rv.summary)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["real", "compare"])
    ap.add_argument("space")
    ap.add_argument("--tuners", default="optuna,random")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=20)
    # 2 workers: the local engine gives each worker cpus // workers threads, 1 on this 2-core machine
    # (a 2-thread torch on a loaded machine ran LocoProp trials 50-250x slower than the table's)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    (real if args.mode == "real" else compare)(args)


if __name__ == "__main__":
    main()
