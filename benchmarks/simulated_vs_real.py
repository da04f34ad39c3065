"""Agreement of the simulated verdict with real runs, measured (issue 22).

    python benchmarks/simulated_vs_real.py \\
        --spaces gflownet-quick,diffusion-quick,locoprop-quick \\
        --tuners optuna:tpe,optuna:gp,optuna:cmaes,random,ax --budgets 20,50 \\
        --real-seeds 10 --sim-seeds 30 [--workers 1] [--concurrent N] [--part all|real|real-read|sim|report] \\
        [--jobs J] [--surrogate plain|calibrated] [--out FILE]

Per space:

1. the real side (``--part real``): ``harness benchmark SPACE --tuners ... --seeds N --trials
   MAX(budgets) --id ID`` through the CLI (so it runs on whatever engine ``harness benchmark``
   uses: the shared, concurrent one), tracked in ``--tracking-uri`` (default
   ``sqlite:///.harness/simulated_vs_real.db``; an interrupted one continues with the same id).
   Each sweep's best after ``b`` finished trials is its result at budget ``b`` (the anytime reading
   of one sweep of the largest budget). Its per-seed best curves, wall seconds and the machine's
   load are kept in ``--raw``/SPACE/real.json;
2. the simulated side (``--part sim``): the same tuners on ``--sim-seeds`` seeds on the space's
   table (:func:`harness.simulate.simulate_sweep`, no tuner time charged), one file per tuner
   (``--raw``/SPACE/sim-TUNER.json, written after each seed, so a rerun does the seeds it lacks;
   with the table's sha256: a file from another table is rerun); ``--jobs J`` runs J tuners at
   once in separate processes (the tuners' own computation, Ax's and the GP's model fits, is the
   simulated side's main cost); ``--surrogate calibrated`` runs (and reports) the same on the
   surrogate with its calibration line, in files of its own (``sim-TUNER-calibrated.json``);
3. the report (``--part report``, and the end of ``all``): both sides normalized on the one range
   (:func:`harness.oracle.table_normalization`: the best per-configuration mean, the median
   configuration), then :func:`harness.agreement.agreement`: Kendall tau-b between simulated and
   real per-tuner IQM regret and mean rank, its bootstrap interval over the real seeds, the
   real-vs-real split-half tau beside it (the ceiling), and the share of Holm-significant real
   pairs the simulation orders the same way. A space whose raw files are missing is skipped with
   a line saying so.

The raw files are small JSON kept in the repository (benchmarks/results/svr/), so the hours of
real runs survive the machine and the report can be rebuilt from them. The target of the issue is
tau >= 0.8 on every space. A tiny run, to prove the pipeline (minutes):

    python benchmarks/simulated_vs_real.py --spaces locoprop-quick --tuners optuna,random \\
        --budgets 3,6 --real-seeds 3 --sim-seeds 3 --reps 200 --raw /tmp/svr --out /tmp/svr.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

Curves = dict[str, dict[int, list[float]]]  # tuner -> seed -> best after 1 .. n finished trials


def canon(name: str) -> str:
    """The canonical tuner label (the ``harness.tuner`` tag, :func:`harness.inputs.parse_tuner`):
    ``optuna:tpe`` is ``optuna``."""
    from harness.inputs import parse_tuner

    return parse_tuner(name.strip()).label


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


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _write(path: Path, doc: dict[str, Any]) -> None:
    from harness.files import write_atomic
    from harness.strict_json import dumps

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dumps(doc))


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _curves(doc: dict[str, Any]) -> Curves:
    return {t: {int(s): [_nan(v) for v in c] for s, c in per.items()} for t, per in doc["curves"].items()}


def at(curves: Curves, budget: int) -> dict[str, dict[int, float]]:
    """tuner -> seed -> best after ``budget`` trials (sweeps shorter than the budget left out)."""
    return {t: {s: c[budget - 1] for s, c in per.items() if len(c) >= budget} for t, per in curves.items()}


# -- the real side --------------------------------------------------------------------------------
def run_real(space: str, tuners: list[str], seeds: list[int], trials: int, bid: str, uri: str,
             args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``harness benchmark`` through the CLI (``--id`` continues an interrupted one)."""
    from harness.compare.benchmark import seeds_text

    seed_arg = seeds_text(seeds)  # 9, for seed 9 alone: a bare 9 would be seeds 0 .. 8
    cmd = [sys.executable, "-m", "harness.cli", "benchmark", space, "--tuners", ",".join(tuners),
           "--seeds", seed_arg, "--trials", str(trials), "--id", bid, "--tracking-uri", uri,
           "--devices", "cpu", "--format", "json", "--out", str(work / bid)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.concurrent:
        cmd += ["--concurrent", str(args.concurrent)]
    before, t0 = load(), time.perf_counter()
    print("  real:", " ".join(cmd[2:]), flush=True)
    # the driver's own torch (Ax's and the GP's model fits) on one thread: the workers hold the cores
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"the real benchmark failed (exit {proc.returncode}): {' | '.join(tail)}")
    print(f"  real: {bid} took {wall:.0f} s (load {before:.1f} -> {load():.1f})", flush=True)
    return {"benchmark_id": bid, "tuners": tuners, "seeds": seeds, "wall_seconds": wall, "load_before": before,
            "load_after": load(), "cpus": os.cpu_count(),
            "command": cmd[2:]}


def read_real(uri: str, bid: str, tuners: list[str], trials: int) -> Curves | None:
    """tuner -> seed -> best curve of every finished real sweep of ``bid`` in MLflow; None when
    the benchmark has no sweeps."""
    from harness.compare.read import load_sweeps
    from harness.records import RecordError

    try:
        records = load_sweeps(uri, benchmark=bid)
    except RecordError:
        return None
    want = {canon(t): t for t in tuners}
    out: Curves = {t: {} for t in tuners}
    for r in records:  # oldest first: a rerun of a tuner / seed overwrites
        t = want.get(canon(r.tuner))
        if t is None:
            continue
        h = r.history()
        if not h or h[-1].trials < trials:
            continue  # unfinished: not a result at the largest budget
        out[t][r.seed] = [best_at(h, b) for b in range(1, trials + 1)]
    return out


def missing_groups(curves: Curves, tuners: list[str], seeds: int) -> dict[tuple[int, ...], list[str]]:
    """The seeds 0 .. ``seeds``-1 each tuner lacks, tuners lacking the same seeds together."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for t in tuners:
        lack = tuple(s for s in range(seeds) if s not in curves.get(t, {}))
        if lack:
            groups.setdefault(lack, []).append(t)
    return groups


def real_side(space: str, tuners: list[str], args: argparse.Namespace, top: int, raw: Path, work: Path) -> None:
    """Run what ``raw``/SPACE/real.json lacks and merge it in. A benchmark per group of tuners
    missing the same seeds (``--seeds 3,7,...``; a sweep's trial seeds depend on its seed alone,
    so a seed run later is the same sweep); the first run of a space is one benchmark with
    every tuner and seed. ``--part real-read`` writes what MLflow holds of those benchmarks
    now (the finished sweeps of an interrupted one), running nothing: a snapshot that a later
    session continues from."""
    path = raw / space / "real.json"
    base = f"{args.id_prefix}-{space}"
    have = _read(path)
    curves: Curves = _curves(have) if have is not None and have["trials"] >= top else {}
    groups = missing_groups(curves, tuners, args.real_seeds)
    if not groups:
        print(f"  real: {path} holds {args.real_seeds} seeds of every tuner already", flush=True)
        return
    costs: list[dict[str, Any]] = list((have or {}).get("costs", []))
    for k, (seeds, ts) in enumerate(sorted(groups.items())):
        bid = base if not curves else f"{base}-g{k}"  # the same ids on a rerun of an unfinished continuation
        if args.part != "real-read":
            costs.append(run_real(space, ts, list(seeds), top, bid, args.tracking_uri, args, work))
        got = read_real(args.tracking_uri, bid, ts, top)
        if got is None:
            print(f"  real: no sweeps of benchmark {bid} in {args.tracking_uri}", flush=True)
            continue
        for t, per in got.items():
            curves.setdefault(t, {}).update({s: c for s, c in per.items() if s in seeds})
        _write(path, {"space": space, "benchmark_ids": sorted({*(have or {}).get("benchmark_ids", []), bid}),
                      "trials": top, "costs": costs, "curves": curves})
    done = sum(len(v) for v in curves.values())
    print(f"  real: {done} of {len(tuners) * args.real_seeds} sweeps -> {path}", flush=True)


# -- the simulated side ---------------------------------------------------------------------------
def _sim_path(raw: Path, space: str, tuner: str, surrogate: str = "plain") -> Path:
    """``sim-TUNER.json`` (the simulator's plain surrogate), ``sim-TUNER-calibrated.json``."""
    suffix = "" if surrogate == "plain" else f"-{surrogate}"
    return raw / space / f"sim-{canon(tuner).replace(':', '-')}{suffix}.json"


def _sim_one(space: str, tuner: str, seeds: int, trials: int, path: str,
             surrogate: str = "plain") -> dict[str, Any]:
    """One tuner's simulated sweeps, seed after seed, the raw file rewritten after each (a rerun
    does the seeds it lacks); one torch thread, as several of these share the cores."""
    import torch

    from harness.oracle import TableOracle, find_table, load_table
    from harness.simulate import check_tuners, quiet_optuna, simulate_sweep
    from harness.spec import load_spec
    from harness.tabulate import sha256

    torch.set_num_threads(1)
    quiet_optuna()
    check_tuners([tuner])
    spec = load_spec(space)
    table = find_table(space)
    digest = sha256(table)
    doc = _read(Path(path))
    if doc is None or doc.get("table_sha256") != digest or doc.get("trials") != trials:
        doc = {"space": space, "tuner": tuner, "trials": trials, "table": str(table), "table_sha256": digest,
               "surrogate": surrogate, "wall_seconds": 0.0, "cpus": os.cpu_count(), "curves": {tuner: {}}}
    oracle = TableOracle(spec, load_table(table, space), calibrate=surrogate == "calibrated")
    for seed in range(seeds):
        if str(seed) in doc["curves"][tuner]:
            continue
        sw = simulate_sweep(spec, oracle, tuner, seed, trials, workers=1, charge_tuner_time=False)
        doc["curves"][tuner][str(seed)] = [float(v) for v in sw.best_curve(spec.metric.goal, trials)]
        doc["wall_seconds"] += sw.wall_seconds
        _write(Path(path), doc)
    return doc


def sim_side(space: str, tuners: list[str], args: argparse.Namespace, top: int, raw: Path) -> None:
    from harness.oracle import find_table
    from harness.tabulate import sha256

    digest = sha256(find_table(space))
    todo = []
    for t in tuners:
        have = _read(_sim_path(raw, space, t, args.surrogate))
        if have is not None and have["table_sha256"] == digest and have["trials"] >= top \
                and len(have["curves"].get(t, {})) >= args.sim_seeds:
            continue
        todo.append(t)
    if not todo:
        print(f"  simulated: every tuner has {args.sim_seeds} seeds on this table already", flush=True)
        return
    print(f"  simulated ({args.surrogate} surrogate): {', '.join(todo)} x {args.sim_seeds} seeds "
          f"({args.jobs} at once)", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futs = {t: pool.submit(_sim_one, space, t, args.sim_seeds, top, str(_sim_path(raw, space, t, args.surrogate)),
                               args.surrogate) for t in todo}
        for t, f in futs.items():
            print(f"  simulated {t}: {f.result()['wall_seconds']:.0f} s", flush=True)


def read_sim(space: str, tuners: list[str], raw: Path,
             surrogate: str = "plain") -> tuple[Curves, dict[str, float], set[str]]:
    curves: Curves = {}
    wall: dict[str, float] = {}
    digests: set[str] = set()
    for t in tuners:
        doc = _read(_sim_path(raw, space, t, surrogate))
        if doc is not None:
            curves.update(_curves(doc))
            wall[t] = doc["wall_seconds"]
            digests.add(doc["table_sha256"])
    return curves, wall, digests


# -- the report -----------------------------------------------------------------------------------
def fmt(x: float | None, d: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def ci(x: list[float] | None) -> str:
    return "-" if not x else f"[{x[0]:.2f}, {x[1]:.2f}]"


def report(space: str, tuners: list[str], budgets: list[int], args: argparse.Namespace,
           raw: Path) -> dict[str, Any] | None:
    from harness.agreement import agreement
    from harness.oracle import find_table, table_normalization
    from harness.ranking import verdict
    from harness.spec import load_spec
    from harness.tabulate import sha256

    spec = load_spec(space)
    goal = spec.metric.goal
    real_doc = _read(raw / space / "real.json")
    sim, sim_wall, digests = read_sim(space, tuners, raw, args.surrogate)
    lacking = [t for t in tuners if t not in sim] + ([] if real_doc else ["the real side"])
    if lacking:
        print(f"  not reported: no raw results of {', '.join(lacking)} in {raw / space}", flush=True)
        return None
    digest = sha256(find_table(space))
    if digests != {digest}:
        print(f"  note: the simulated side was run on another table than {find_table(space)} (sha256 differs)")
    norm = table_normalization(space, spec.metric.name, goal)
    if norm is None:
        raise SystemExit(f"{space}: no readable table to normalize on (build it: make tables)")
    real = _curves(real_doc)  # type: ignore[index]
    res: dict[str, Any] = {"benchmark_ids": real_doc["benchmark_ids"], "normalization": norm.as_dict(),  # type: ignore[index]
                           "table_sha256": digest, "real_costs": real_doc["costs"],  # type: ignore[index]
                           "surrogate": args.surrogate, "sim_wall_seconds": sim_wall, "budgets": {}}
    for b in budgets:
        real_b = {t: v for t, v in at(real, b).items() if v and t in tuners}
        missing = [t for t in tuners if t not in real_b]
        if missing:
            print(f"  budget {b}: no finished real sweep of {', '.join(missing)}: skipped")
            continue
        sim_b = {t: v for t, v in at(sim, b).items() if t in tuners}
        a = agreement(sim_b, real_b, norm.optimum, norm.worst, goal, reps=args.reps)  # type: ignore[arg-type]
        for side, finals in (("sim", sim_b), ("real", real_b)):
            a[f"{side}_verdict"] = verdict(finals, norm.optimum, norm.worst, goal).as_dict()  # type: ignore[arg-type]
        res["budgets"][str(b)] = a
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
        print(f"  real verdict: {a['real_verdict']['summary']}\n  simulated verdict: {a['sim_verdict']['summary']}")
    for cost in real_doc["costs"]:  # type: ignore[index]
        if cost.get("wall_seconds") is not None:
            print(f"  real cost: {cost.get('benchmark_id', '')} {cost['wall_seconds']:.0f} s wall on {cost.get('cpus')} "
                  f"CPUs (load {cost['load_before']:.1f} -> {cost['load_after']:.1f})")
    print(f"  simulated: {sum(sim_wall.values()):.0f} s wall (tuners' computation and the simulation)")
    return res


def main(argv: list[str] | None = None) -> int:
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
    ap.add_argument("--part", choices=["all", "real", "real-read", "sim", "report"], default="all",
                    help="run the real side, the simulated side, or only report from the raw files; real-read "
                         "writes the raw file from the finished sweeps MLflow holds (an unfinished run's), no run")
    ap.add_argument("--jobs", type=int, default=1, help="simulated tuners run at once (processes)")
    ap.add_argument("--surrogate", choices=["plain", "calibrated"], default="plain",
                    help="the simulated side's surrogate: the simulator's own (plain) or with its calibration "
                         "line (Surrogate(calibrate=True)); kept in its own raw files, sim-TUNER-calibrated.json")
    ap.add_argument("--raw", type=Path, default=Path("benchmarks/results/svr"), help="the raw per-side results")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap and split-half replicates")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/simulated_vs_real.json"))
    args = ap.parse_args(argv)
    spaces = [Path(s.strip()).stem for s in args.spaces.split(",") if s.strip()]
    tuners = [t.strip() for t in args.tuners.split(",") if t.strip()]
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    top = max(budgets)
    work = Path(".harness") / "simulated_vs_real"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"tuners": tuners, "budgets": budgets, "real_seeds": args.real_seeds,
                               "sim_seeds": args.sim_seeds, "surrogate": args.surrogate, "spaces": {}}
    for space in spaces:
        print(f"\n== {space}: {', '.join(tuners)}; {args.real_seeds} real / {args.sim_seeds} simulated seeds; "
              f"budgets {budgets}", flush=True)
        if args.part in ("all", "real", "real-read"):
            real_side(space, tuners, args, top, args.raw, work)
        if args.part in ("all", "sim"):
            sim_side(space, tuners, args, top, args.raw)
        if args.part in ("all", "report"):
            res = report(space, tuners, budgets, args, args.raw)
            if res is not None:
                results["spaces"][space] = res
    if args.part in ("all", "report"):
        _write(args.out, results)
        print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
