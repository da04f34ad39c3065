"""Sample efficiency on a known optimum: Hartmann6 (global minimum -3.32237), 40 trials.

Each tuner runs the shipped space ``search_spaces/hartmann6.yaml`` through the harness (local
engine, tracking off), for several seeds; the figure is the median over seeds of the best value
found, and the regret = that - (-3.32237). The claim checked: Ax and Optuna (TPE and GP) each
reach a better median best value than random search.

One worker, so every tuner sees each result before its next proposal (Ax still computes one
suggestion ahead while a trial runs, as it does in any sweep). No pruning: Optuna runs without
a pruner and Ax's early stopping is off, so all tuners get 40 complete evaluations.

    .venv/bin/python benchmarks/tuners.py                      # 4 tuners x 3 seeds (~10 min here)
    .venv/bin/python benchmarks/tuners.py --tuners ax,random --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.testfunctions import HARTMANN6_MIN

TUNERS: dict[str, dict[str, Any]] = {
    "random": {"tuner": "random"},
    "optuna-tpe": {"tuner": "optuna", "sampler": "tpe"},
    "optuna-gp": {"tuner": "optuna", "sampler": "gp"},
    "ax": {"tuner": "ax", "tuner_options": {"ax_early_stopping": False}},
}


def run_one(name: str, seed: int, trials: int, folder: Path) -> dict[str, Any]:
    from harness.runner import SweepOptions, launch

    options = SweepOptions(
        space="hartmann6", trials=trials, workers=1, devices="cpu", tracking_uri="none", seed=seed,
        name=f"hartmann6-{name}-{seed}", state_root=folder, **TUNERS[name],
    )
    t0 = time.perf_counter()
    summary = launch(options)
    s = summary.stats
    best = s.best.value if s.best is not None else float("nan")
    return {"tuner": name, "seed": seed, "best": best, "regret": best - HARTMANN6_MIN,
            "complete": s.complete, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tuners", default=",".join(TUNERS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    names = args.tuners.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="harness-tuners-"))
    rows: list[dict[str, Any]] = []
    for seed in seeds:  # interleaved, so a slower spell of the shared machine hits every tuner
        for name in names:
            r = run_one(name, seed, args.trials, folder)
            rows.append(r)
            print(f"{name:<11} seed {seed}: best {r['best']:.5f}  regret {r['regret']:.5f}  "
                  f"({r['complete']} complete, {r['seconds']:.0f} s)", flush=True)
    print(f"\nHartmann6, {args.trials} trials, median over seeds {seeds} (minimum {HARTMANN6_MIN})")
    print("| tuner | median best | median regret | regret per seed | minutes |")
    print("|---|---|---|---|---|")
    medians: dict[str, float] = {}
    for name in names:
        mine = [r for r in rows if r["tuner"] == name]
        medians[name] = statistics.median(r["best"] for r in mine)
        per_seed = ", ".join(f"{r['regret']:.3f}" for r in mine)
        minutes = sum(r["seconds"] for r in mine) / 60
        print(f"| {name} | {medians[name]:.4f} | {medians[name] - HARTMANN6_MIN:.4f} | {per_seed} | {minutes:.1f} |")
    if "random" in medians:
        for name, m in medians.items():
            if name != "random":
                verdict = "better" if m < medians["random"] else "NOT better"
                print(f"{name}: {verdict} than random search ({m:.4f} vs {medians['random']:.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
