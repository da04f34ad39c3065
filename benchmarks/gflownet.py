"""Iterations per second of GFlowNet ``train()``, against a baseline checkout, in the same run.

Each measurement is one ``train()`` call in a fresh process (this tree, or ``--baseline`` PATH: a
checkout of an earlier commit, e.g. ``git -C /work/main worktree add /tmp/gfn-old 967dcc6``),
one CPU thread, ``--iterations`` training iterations and one report at the end (exact L1, no
sampled L1). The two sides alternate, ``--rounds`` times, so that the load of a shared machine
hits both alike; printed: iterations per second of the thread's CPU time and of wall time
(medians), the ratio, and the exact L1 each side reached (same seeds).

    .venv/bin/python benchmarks/gflownet.py --baseline /tmp/gfn-old [--iterations 200] [--rounds 3]
    .venv/bin/python benchmarks/gflownet.py --baseline /tmp/gfn-old --converge   # 32,000 trajectories

Target (issue 20): TB 8x8 batch 128 at >= 3x the baseline commit 967dcc6, same exact L1.
With ``--reproduce`` it prints the reproduction table of .notes/gflownet-results.md instead
(exact L1 of every loss on 8x8 over seeds, and TB against FM on 8^4 at equal trajectories).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from models.gflownet.train import train
config, seed = json.loads(sys.argv[1]), int(sys.argv[2])
t0, w0 = time.thread_time(), time.perf_counter()
m = train(config, seed=seed)
print(json.dumps({"cpu": time.thread_time() - t0, "wall": time.perf_counter() - w0, "l1": m["l1"]}))
"""
CASES = {
    "tb-8x8-b128": {"ndim": 2, "height": 8, "batch_size": 128},
    "tb-8x8-b16": {"ndim": 2, "height": 8, "batch_size": 16},
    "tb-8^4-b128": {"ndim": 4, "height": 8, "batch_size": 128},
}
BASE = {"loss": "tb", "hidden": 256, "depth": 2, "lr": 1e-3, "logz_lr": 0.1, "r0": 0.1,
        "n_eval_samples": 0}


def run(root: Path, config: dict, seed: int) -> dict[str, float]:
    env = os.environ | {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(seed)], cwd=root,
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(baseline: Path, iterations: int, rounds: int, cases: list[str], converge: bool) -> None:
    load = os.getloadavg()
    print(f"this tree {ROOT} against baseline {baseline}; one thread; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'case':<20} {'iterations':>10} {'it/s new (CPU)':>15} {'it/s base (CPU)':>16} "
          f"{'ratio CPU':>10} {'ratio wall':>11} {'l1 new':>8} {'l1 base':>8}")
    for name in cases:
        n = 250 if converge else iterations  # 250 x 128 = 32,000 trajectories: the reproduction
        config = BASE | CASES[name] | {"n_iterations": n, "report_every": n}
        new: list[dict[str, float]] = []
        old: list[dict[str, float]] = []
        for r in range(rounds):  # alternate, and alternate who goes first
            pair = [(new, ROOT), (old, baseline)]
            for store, root in pair if r % 2 == 0 else pair[::-1]:
                store.append(run(root, config, seed=r))
        cpu_new = statistics.median(n / m["cpu"] for m in new)
        cpu_old = statistics.median(n / m["cpu"] for m in old)
        wall_ratio = statistics.median(o["wall"] for o in old) / statistics.median(m["wall"] for m in new)
        l1_new = statistics.mean(m["l1"] for m in new)
        l1_old = statistics.mean(m["l1"] for m in old)
        print(f"{name:<20} {n:>10} {cpu_new:>15.1f} {cpu_old:>16.1f} {cpu_new / cpu_old:>10.2f} "
              f"{wall_ratio:>11.2f} {l1_new:>8.4f} {l1_old:>8.4f}", flush=True)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def reproduce(device: str) -> None:
    """Exact L1 (and sampled L1, 200k draws) of the reproduction settings."""
    from models.gflownet.train import train

    setting = {"ndim": 2, "height": 8, "r0": 0.1, "batch_size": 128, "n_trajectories": 32_000,
               "hidden": 256, "depth": 2, "lr": 1e-3, "logz_lr": 0.1, "report_every": 250}
    hard = setting | {"ndim": 4, "r0": 0.01}
    runs = [
        ("8x8", setting, {"loss": loss, "backward_policy": pb}, (0, 1, 2))
        for loss, pb in [("tb", "uniform"), ("tb", "learned"), ("db", "uniform"),
                         ("db", "learned"), ("subtb", "uniform"), ("subtb", "learned"),
                         ("fm", "uniform")]
    ] + [
        ("8^4 R0=0.01", hard, {"loss": "tb"}, (0, 1)),
        ("8^4 R0=0.01", hard, {"loss": "fm"}, (0, 1)),
        ("8^4 R0=0.01 b16", hard | {"batch_size": 16, "report_every": 2000}, {"loss": "tb"}, (0,)),
        ("8^4 R0=0.01 b16", hard | {"batch_size": 16, "report_every": 2000}, {"loss": "fm"}, (0,)),
    ]
    print(f"{'grid':<16} {'loss':<6} {'P_B':<8} {'seed':>4} {'l1 exact':>9} {'l1 200k':>8} "
          f"{'|dlogZ|':>8} {'modes':>6} {'seconds':>8}")
    for grid, base, change, seeds in runs:
        for seed in seeds:
            start = time.perf_counter()
            m = train(base | change, device=device, seed=seed)
            pb = change.get("backward_policy", "uniform") if change["loss"] != "fm" else "-"
            print(f"{grid:<16} {change['loss']:<6} {pb:<8} {seed:>4} {m['l1']:>9.4f} "
                  f"{m['l1_sampled']:>8.4f} {m['logz_error']:>8.4f} "
                  f"{m['modes_found']:>3.0f}/{m['modes_total']:<2.0f} "
                  f"{time.perf_counter() - start:>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the baseline commit")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="tb-8x8-b128",
                        help=f"comma-separated, from: {' | '.join(CASES)}")
    parser.add_argument("--converge", action="store_true",
                        help="32,000 trajectories (250 iterations of 128): compare the exact L1 reached")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reproduce", action="store_true", help="the reproduction table")
    args = parser.parse_args()
    if args.reproduce:
        import torch

        torch.set_num_threads(1)
        reproduce(args.device)
        return
    if args.baseline is None:
        parser.error("--baseline PATH is needed (a checkout of the commit to compare against)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    compare(args.baseline.resolve(), args.iterations, args.rounds, cases, args.converge)


if __name__ == "__main__":
    main()
