"""Agreement of the simulated verdict with real runs, measured (issue 22).

    python benchmarks/simulated_vs_real.py \\
        --spaces gflownet-quick,diffusion-quick,locoprop-quick \\
        --tuners optuna:tpe,optuna:gp,optuna:cmaes,random,ax --budgets 20,50 \\
        --real-seeds 10 --sim-seeds 30 [--workers 1] [--concurrent N] [--out FILE]

Per space:

1. the real side: ``harness benchmark SPACE --tuners ... --seeds N --trials MAX(budgets) --id ID``
   through the CLI (so it runs on whatever engine ``harness benchmark`` uses: the shared,
   concurrent one), tracked in ``--tracking-uri`` (default ``sqlite:///.harness/simulated_vs_real.db``);
   a benchmark id whose sweeps are all there already is not rerun (``--id-prefix`` names them
   ``PREFIX-SPACE``). Each sweep's best after ``b`` finished trials is its result at budget ``b``
   (the anytime reading of one sweep of the largest budget);
2. the simulated side: the same tuners on ``--sim-seeds`` seeds on the space's table
   (:func:`harness.simulate.run_simulated_benchmark`, no tuner time charged), read the same way;
3. both normalized on the one range (:func:`harness.ranking.normalization` on the table: the
   best per-configuration mean, the median configuration), then :func:`harness.agreement.agreement`:
   Kendall tau-b between simulated and real per-tuner IQM regret and mean rank, its bootstrap
   interval over the real seeds, the real-vs-real split-half tau beside it (the ceiling), and the
   share of Holm-significant real pairs the simulation orders the same way.

It prints one table per space and budget, the real cost (wall seconds of the real benchmark and the
machine's load), and writes everything as strict JSON to ``--out``. The target of the issue is
tau >= 0.8 on every space. A tiny run, to prove the pipeline (minutes):

    python benchmarks/simulated_vs_real.py --spaces gflownet-quick --tuners optuna,random,ax \\
        --budgets 3,6 --real-seeds 3 --sim-seeds 3 --reps 200 --out /tmp/svr.json
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def canon(name: str) -> str:
    """The canonical tuner label (the ``harness.tuner`` tag): ``optuna:tpe`` is ``optuna``."""
    name = name.strip()
    return "optuna" if name == "optuna:tpe" else name


def best_at(history: list[Any], budget: int) -> float:
    """A sweep's best complete value after ``budget`` finished trials (NaN when none)."""
    best = math.nan
    for e in history:
        if e.trials > budget:
            break
        if e.best is not None:
            best = e.best
    return best


def load() -> float:
    return os.getloadavg()[0]


def run_real(space: str, tuners: list[str], seeds: int, trials: int, bid: str, uri: str, args: argparse.Namespace,
             out: Path) -> dict[str, Any]:
    """``harness benchmark`` through the CLI; skipped when the benchmark is complete already."""
    have = read_real(uri, bid, tuners, [trials]) if _store_exists(uri) else None
    if have is not None and all(len(v) >= seeds for v in have[trials].values()):
        return {"ran": False, "wall_seconds": None, "command": None}
    cmd = [sys.executable, "-m", "harness.cli", "benchmark", space, "--tuners", ",".join(tuners),
           "--seeds", str(seeds), "--trials", str(trials), "--id", bid, "--tracking-uri", uri,
           "--devices", "cpu", "--format", "json", "--out", str(out / bid)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.concurrent:
        cmd += ["--concurrent", str(args.concurrent)]
    before, t0 = load(), time.perf_counter()
    print("  real:", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"the real benchmark failed (exit {proc.returncode}): {' | '.join(tail)}")
    return {"ran": True, "wall_seconds": wall, "load_before": before, "load_after": load(), "command": cmd[2:]}


def _store_exists(uri: str) -> bool:
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()


def read_real(uri: str, bid: str, tuners: list[str], budgets: list[int]) -> dict[int, dict[str, dict[int, float]]] | None:
    """budget -> tuner -> seed -> best after that many finished trials, from MLflow; None when the
    benchmark has no sweeps."""
    from harness.compare.read import load_sweeps
    from harness.records import RecordError

    try:
        records = load_sweeps(uri, benchmark=bid)
    except RecordError:
        return None
    want = {canon(t): t for t in tuners}
    out: dict[int, dict[str, dict[int, float]]] = {b: {t: {} for t in tuners} for b in budgets}
    for r in records:  # oldest first: a rerun of a tuner / seed overwrites
        t = want.get(canon(r.tuner))
        if t is None:
            continue
        h = r.history()
        if not h or h[-1].trials < max(budgets):
            continue  # unfinished: not a result at the largest budget
        for b in budgets:
            out[b][t][r.seed] = best_at(h, b)
    return out


def run_sim(space: str, tuners: list[str], seeds: int, trials: int, budgets: list[int], workers: int,
            out: Path) -> tuple[dict[int, dict[str, dict[int, float]]], Any]:
    from harness.oracle import find_table
    from harness.simulate import run_simulated_benchmark

    bench = run_simulated_benchmark(space, tuners=tuners, seeds=list(range(seeds)), trials=trials, workers=workers,
                                    table=find_table(space), charge_tuner_time=False, tracking_uri="none", out=out)
    res: dict[int, dict[str, dict[int, float]]] = {b: {t: {} for t in tuners} for b in budgets}
    for sw in bench.sweeps:
        curve = sw.best_curve(bench.goal, trials)
        for b in budgets:
            res[b][sw.tuner][sw.seed] = float(curve[b - 1])
    return res, bench


def fmt(x: float | None, d: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def ci(x: list[float] | None) -> str:
    return "-" if not x else f"[{x[0]:.2f}, {x[1]:.2f}]"


def main(argv: list[str] | None = None) -> int:
    from harness.agreement import agreement
    from harness.oracle import table_normalization
    from harness.spec import load_spec
    from harness.strict_json import dumps

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="gflownet-quick,diffusion-quick,locoprop-quick")
    ap.add_argument("--tuners", default="optuna:tpe,optuna:gp,optuna:cmaes,random,ax")
    ap.add_argument("--budgets", default="20,50")
    ap.add_argument("--real-seeds", type=int, default=10)
    ap.add_argument("--sim-seeds", type=int, default=30)
    ap.add_argument("--workers", type=int, default=None, help="--workers of every real sweep")
    ap.add_argument("--concurrent", type=int, default=None, help="harness benchmark --concurrent")
    ap.add_argument("--tracking-uri", default="sqlite:///.harness/simulated_vs_real.db")
    ap.add_argument("--id-prefix", default="svr")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap and split-half replicates")
    ap.add_argument("--skip-real", action="store_true", help="read the real side only (it must exist)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/simulated_vs_real.json"))
    args = ap.parse_args(argv)
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    tuners = [t.strip() for t in args.tuners.split(",") if t.strip()]
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    top = max(budgets)
    work = Path(".harness") / "simulated_vs_real"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"tuners": tuners, "budgets": budgets, "real_seeds": args.real_seeds,
                               "sim_seeds": args.sim_seeds, "spaces": {}}
    for space in spaces:
        spec = load_spec(space)
        goal = spec.metric.goal
        bid = f"{args.id_prefix}-{Path(space).stem}"
        print(f"\n== {space}: {', '.join(tuners)}; {args.real_seeds} real / {args.sim_seeds} simulated seeds; "
              f"budgets {budgets}", flush=True)
        cost = {"ran": False} if args.skip_real else run_real(space, tuners, args.real_seeds, top, bid,
                                                              args.tracking_uri, args, work)
        real = read_real(args.tracking_uri, bid, tuners, budgets)
        if real is None:
            raise SystemExit(f"no real sweeps of benchmark {bid} in {args.tracking_uri}")
        t0 = time.perf_counter()
        sim, bench = run_sim(space, tuners, args.sim_seeds, top, budgets, 1, work / f"sim-{bid}")
        sim_wall = time.perf_counter() - t0
        norm = table_normalization(space, spec.metric.name, goal)
        optimum, worst = (norm.optimum, norm.worst) if norm is not None else (bench.optimum, bench.worst)
        space_res: dict[str, Any] = {"benchmark_id": bid, "normalization": norm.as_dict() if norm else
                                     {"optimum": optimum, "worst": worst, "source": "the simulated benchmark's"},
                                     "real_cost": cost, "sim_wall_seconds": sim_wall, "budgets": {}}
        for b in budgets:
            real_b = {t: v for t, v in real[b].items() if v}
            lacking = [t for t in tuners if t not in real_b]
            if lacking:
                print(f"  budget {b}: no finished real sweep of {', '.join(lacking)}: skipped")
                continue
            a = agreement(sim[b], real_b, optimum, worst, goal, reps=args.reps)  # type: ignore[arg-type]
            space_res["budgets"][str(b)] = a
            print(f"\n  after {b} trials ({len(a['real_seeds'])} real seeds, {len(a['sim_seeds'])} simulated):")
            print(f"  {'tuner':14} {'sim IQM':>8} {'real IQM':>8} {'sim rank':>8} {'real rank':>9}")
            for t, row in a["per_tuner"].items():
                print(f"  {t:14} {fmt(row['sim_iqm_regret'], 3):>8} {fmt(row['real_iqm_regret'], 3):>8} "
                      f"{fmt(row['sim_mean_rank']):>8} {fmt(row['real_mean_rank']):>9}")
            print(f"  tau(IQM regret) {fmt(a['tau_iqm'])} {ci(a['tau_iqm_ci'])}  split-half {fmt(a['split_half_tau_iqm'])} "
                  f"{ci(a['split_half_tau_iqm_ci'])}")
            print(f"  tau(mean rank)  {fmt(a['tau_rank'])} {ci(a['tau_rank_ci'])}  split-half "
                  f"{fmt(a['split_half_tau_rank'])} {ci(a['split_half_tau_rank_ci'])}")
            share = a["significant_share"]
            print(f"  Holm-significant real pairs ordered alike: {a['significant_same_order']} of "
                  f"{a['significant_pairs']}" + ("" if share is None else f" ({share:.0%})"))
        if cost.get("ran"):
            print(f"  real cost: {cost['wall_seconds']:.0f} s wall (load {cost['load_before']:.1f} -> "
                  f"{cost['load_after']:.1f}); simulated: {sim_wall:.0f} s")
        results["spaces"][space] = space_res
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(results))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
