"""Populations against the process pool: trials per minute on the shipped quick spaces.

For each quick space, the same 64 configurations (the random tuner, seed 0: the same
suggestions whatever the engine) run once with one trial per worker process and once with
populations of K = 4, 16 and 64 members per worker (``--population K``), on the same workers
(equal cores: 2 CPU workers of one thread each here; on CUDA one worker per GPU slot). Tracking
is off (``--tracking-uri none``) so the figures are the engine's; the random tuner needs no
Optuna, so this runs on a bare GPU machine too.

Printed per space and mode: wall seconds, trials/min, the ratio to the process pool, and the
fill rate (mean members per running population / K, averaged over time). ``--tuner optuna``
(TPE) measures the fill rate under TPE (its suggestions depend on the results, so they differ
from the random tuner's 64). Target (a benchmark, not a test): on a 2-core CPU, populations
lose no more than 10% against the process pool at equal cores.

    .venv/bin/python benchmarks/population.py                        # all quick spaces, K = 1, 4, 16, 64
    .venv/bin/python benchmarks/population.py --spaces locoprop-quick --ks 1,16 --trials 32
    .venv/bin/python benchmarks/population.py --devices 0 --workers 1  # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SPACES = ("gflownet-quick", "diffusion-quick", "locoprop-quick")


def run(space: str, k: int, *, trials: int, workers: int, devices: str, tuner: str,
        root: Path) -> dict[str, Any]:
    from harness.runner import SweepOptions, launch

    options = SweepOptions(space=space, tuner=tuner, trials=trials, workers=workers, devices=devices,
                           tracking_uri="none", seed=0, population=k, state_root=root,
                           name=f"{space}-{tuner}-k{k}", sampler="tpe")
    t0 = time.perf_counter()
    s = launch(options)
    wall = s.stats.wall_seconds() or (time.perf_counter() - t0)
    return {"space": space, "tuner": tuner, "k": k, "trials": s.stats.finished,
            "complete": s.stats.complete, "failed": s.stats.failed, "wall_s": round(wall, 2),
            "startup_s": round(s.startup_seconds, 2), "trials_per_min": round(60 * s.stats.finished / wall, 2),
            "fill": None if s.population_fill is None else round(s.population_fill, 3),
            "best": s.stats.best.value if s.stats.best else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--ks", default="1,4,16,64", help="population sizes; 1 = one trial per process")
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--devices", default="cpu", help="cpu | GPU indices such as 0")
    ap.add_argument("--tuner", default="random", help="random (the same 64 configurations) | optuna (TPE)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows: list[dict[str, Any]] = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    print(f"{'space':<16} {'K':>3} {'trials':>6} {'failed':>6} {'wall s':>8} {'trials/min':>10} "
          f"{'vs pool':>7} {'fill':>6}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for space in args.spaces.split(","):
            pool: float | None = None
            for k in (int(x) for x in args.ks.split(",")):
                row = run(space, k, trials=args.trials, workers=args.workers, devices=args.devices,
                          tuner=args.tuner, root=Path(tmp))
                row["load"] = round(os.getloadavg()[0], 2)
                if k == 1:
                    pool = row["trials_per_min"]
                row["vs_pool"] = round(row["trials_per_min"] / pool, 3) if pool else None
                rows.append(row)
                ratio = f"{row['vs_pool']:.2f}" if row["vs_pool"] is not None else "-"
                fill = f"{row['fill']:.2f}" if row["fill"] is not None else "-"
                print(f"{space:<16} {k:>3} {row['trials']:>6} {row['failed']:>6} {row['wall_s']:>8.1f} "
                      f"{row['trials_per_min']:>10.1f} {ratio:>7} {fill:>6}   (load {row['load']})", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(rows, indent=1))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
