"""What a benchmark costs: its sweeps one after another against all at once on shared workers.

A real ``harness benchmark`` (real tuners, real trainers, MLflow on a temporary SQLite store)
of ``--tuners`` x ``--seeds`` x ``--trials`` per space, in three ways, in one run, on one machine:

- ``sequential``: ``harness benchmark --sequential``: each sweep starts, runs and stops its own
  workers, one sweep after another (the behaviour before sweeps ran together);
- ``together``: the sweeps at once over ONE shared process pool (each sweep still capped at its
  own ``--workers`` trials in flight);
- ``population``: the same with ``--population K``: populations fill from every sweep.

Printed per space and way: the wall time of the whole command, its ratio to sequential, the
population fill rate, and the verdict (each tuner's normalized-regret IQM, its 95% interval and
mean rank; the winner = best mean rank), with whether every way names the same winner and
whether their winners' intervals overlap. The machine's load (``os.getloadavg``) is printed
beside each timing; the ways alternate when ``--repeat`` > 1. Target on a 2-core CPU:
population >= 2x faster than sequential.

    .venv/bin/python benchmarks/benchmark_cost.py                            # the full run (~hours here)
    .venv/bin/python benchmarks/benchmark_cost.py --seeds 2 --trials 6      # a small proof
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WAYS = {"sequential": ["--sequential"], "together": [], "population": None}  # None: --population K


def run_way(space: str, way: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One real ``harness benchmark`` in its own folder and store; its wall time, fill rate, verdict."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = WAYS[way] if WAYS[way] is not None else ["--population", str(args.population)]
    cmd = [sys.executable, "-m", "harness.cli", "benchmark", space, "--tuners", args.tuners,
           "--seeds", str(args.seeds), "--trials", str(args.trials), "--workers", str(args.workers),
           "--devices", args.devices, "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--id", f"cost-{way}", "--format", "json", *extra]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{way} on {space} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    fill = re.search(r"population fill rate ([0-9.]+)", proc.stderr)
    tuners = (doc.get("verdict") or {}).get("tuners") or {}
    winner = min(tuners, key=lambda t: tuners[t]["mean_rank"]) if tuners else None
    return {"space": space, "way": way, "wall_seconds": wall, "load": load,
            "fill_rate": float(fill.group(1)) if fill else None, "winner": winner,
            "verdict": {t: {k: v[k] for k in ("iqm", "ci95", "mean_rank", "normalized_regret")}
                        for t, v in tuners.items()},
            "trials": sum(s["complete"] + s["pruned"] + s["failed"] for s in doc["sweeps"])}


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="gflownet-quick,locoprop-quick")
    ap.add_argument("--tuners", default="optuna,random")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--ways", default="sequential,together,population")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the ways this many times")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "benchmark_cost.json")
    args = ap.parse_args()
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        for space in [s.strip() for s in args.spaces.split(",") if s.strip()]:
            for r in range(args.repeat):
                for way in ways if r % 2 == 0 else ways[::-1]:
                    row = run_way(space, way, args, Path(tmp) / f"{space}-{way}-{r}")
                    rows.append(row)
                    fill = f"{row['fill_rate']:.2f}" if row["fill_rate"] is not None else "-"
                    print(f"{space:16} {way:11} {row['wall_seconds']:8.1f} s  load {row['load']:.2f}  "
                          f"fill {fill:>5}  {row['trials']} trials  winner {row['winner']}", flush=True)
    print(f"\n{args.tuners} x {args.seeds} seeds x {args.trials} trials, {args.workers} workers "
          f"(population {args.population}); wall seconds, speed-up against sequential:")
    for space in dict.fromkeys(r["space"] for r in rows):
        mine = [r for r in rows if r["space"] == space]
        base = [r["wall_seconds"] for r in mine if r["way"] == "sequential"]
        ref = sum(base) / len(base) if base else None
        for way in ways:
            walls = [r["wall_seconds"] for r in mine if r["way"] == way]
            if not walls:
                continue
            mean = sum(walls) / len(walls)
            speed = f"{ref / mean:5.2f}x" if ref else "  -  "
            v = next(r for r in mine if r["way"] == way)
            verdict = "; ".join(f"{t} IQM {x['iqm']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}] rank {x['mean_rank']:.2f}"
                                for t, x in v["verdict"].items())
            print(f"  {space:16} {way:11} {mean:8.1f} s  {speed}  {verdict}")
        winners = {r["winner"] for r in mine}
        w = next(iter(winners)) if len(winners) == 1 else None
        if w is not None:
            cis = [r["verdict"][w]["ci95"] for r in mine if w in r["verdict"]]
            same = all(overlap(a, b) for a in cis for b in cis)
            print(f"  {space}: the same winner ({w}) every way; its intervals overlap: {same}")
        else:
            print(f"  {space}: winners differ: {sorted(map(str, winners))} (check the intervals above)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
