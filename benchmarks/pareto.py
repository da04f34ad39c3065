"""Multi-objective sample efficiency: hypervolume on Branin-Currin after 40 trials (issue 17).

Each tuner runs the shipped space ``search_spaces/branin-currin.yaml`` through the harness
(local engine, one worker, tracking off; the space's learning-curve sleep set to zero), for
several seeds. The figure is the hypervolume of the trials' points under the space's reference
point (18, 6), computed by ``harness.pareto.hypervolume`` (the same code the sweep's
``hypervolume`` metric comes from), as a fraction of the true front's 59.36011874867746
(BoTorch's ``BraninCurrin.max_hv``); the median over seeds per tuner. The claim checked: the
model-based tuners (Optuna TPE, Optuna NSGA-II, Ax) reach a larger median hypervolume than random.

    .venv/bin/python benchmarks/pareto.py                          # 4 tuners x 3 seeds
    .venv/bin/python benchmarks/pareto.py --tuners ax,random --seeds 0 --json hv.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

MAX_HV = 59.36011874867746

TUNERS: dict[str, dict[str, Any]] = {
    "random": {"tuner": "random"},
    "optuna-tpe": {"tuner": "optuna", "sampler": "tpe"},
    "optuna-nsga2": {"tuner": "optuna", "sampler": "nsga2"},
    "optuna-gp": {"tuner": "optuna", "sampler": "gp"},
    "ax": {"tuner": "ax"},
}
DEFAULT = "random,optuna-tpe,optuna-nsga2,ax"


def space(folder: Path) -> Path:
    from harness.spec import resolve_path

    raw = yaml.safe_load(resolve_path("branin-currin").read_text())
    raw["fixed"] = {**raw.get("fixed", {}), "steps": 1, "step_seconds": 0.0}
    path = folder / "branin-currin.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_one(name: str, seed: int, trials: int, folder: Path) -> dict[str, Any]:
    from harness.pareto import hypervolume
    from harness.runner import SweepOptions, launch
    from harness.trials import TrialState, objective_values

    spec_path = space(folder)
    options = SweepOptions(space=str(spec_path), trials=trials, workers=1, devices="cpu", tracking_uri="none",
                           seed=seed, name=f"branin-currin-{name}-{seed}", state_root=folder, **TUNERS[name])
    t0 = time.perf_counter()
    summary = launch(options)
    spec = summary.spec
    names = [m.name for m in spec.metrics]
    points = [objective_values(r, names) for r in summary.stats.results if r.state is TrialState.COMPLETE]
    hv = hypervolume([p for p in points if p is not None], [m.goal for m in spec.metrics],
                     [m.reference for m in spec.metrics])  # type: ignore[misc]
    return {"tuner": name, "seed": seed, "hypervolume": hv, "fraction": hv / MAX_HV,
            "complete": summary.stats.complete, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tuners", default=DEFAULT, help=f"from {', '.join(TUNERS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    names = args.tuners.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="harness-pareto-"))
    rows = []
    for name in names:
        for seed in seeds:
            r = run_one(name, seed, args.trials, folder)
            rows.append(r)
            print(f"{name:13s} seed {seed}: hypervolume {r['hypervolume']:.3f} ({r['fraction']:.3f} of max), "
                  f"{r['complete']} complete, {r['seconds']:.0f} s", flush=True)
    print(f"\nBranin-Currin, {args.trials} trials, median over seeds {seeds} (fraction of {MAX_HV:.2f}):")
    print("| tuner | hypervolume | fraction of max | per seed |")
    print("|---|---|---|---|")
    summary = {}
    for name in names:
        hvs = [r["hypervolume"] for r in rows if r["tuner"] == name]
        med = statistics.median(hvs)
        summary[name] = {"median_hypervolume": med, "median_fraction": med / MAX_HV, "per_seed": hvs}
        print(f"| {name} | {med:.2f} | {med / MAX_HV:.3f} | {', '.join(f'{h / MAX_HV:.3f}' for h in hvs)} |")
    base = summary.get("random", {}).get("median_hypervolume")
    if base is not None:
        ahead = [n for n in names if n != "random" and summary[n]["median_hypervolume"] > base]
        behind = [n for n in names if n != "random" and n not in ahead]
        print(f"ahead of random: {', '.join(ahead) or 'none'}; not ahead: {', '.join(behind) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
