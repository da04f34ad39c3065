"""Wall time of K GFlowNet trials as one population against K sequential ``train()`` runs.

At the gflownet-quick space's defaults (8x8, TB, 2x256, batch 128, 3,200 trajectories = 25
iterations, report every 5, 20k evaluation samples), members differing in seed and learning
rate. Prints seconds for: one trial alone (train), a population of 1, a population of K, and
K trials one after another (train), with the population's speed-up over sequential runs
(wall clock, and this thread's CPU time: on a CUDA device only wall clock means anything).

    .venv/bin/python benchmarks/population_gflownet_probe.py [--k 16] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from models.gflownet.population import make
from models.gflownet.train import train

ROOT = Path(__file__).resolve().parents[1]


def quick_config() -> dict:
    spec = yaml.safe_load((ROOT / "search_spaces" / "gflownet-quick.yaml").read_text())
    config = spec["fixed"] | {k: p["default"] for k, p in spec["params"].items() if "when" not in p}
    return config | {"report_every": spec["budget"]["report_every"]}


def configs(base: dict, k: int) -> list[dict]:
    return [base | {"lr": 1e-3 * (1 + 0.25 * (i % 5))} for i in range(k)]


def run_population(base: dict, k: int, device: str, direct: bool = False) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.thread_time()
    pop = make(base, capacity=k, device=device)
    pop.use_table = pop.use_table and not direct
    for i, c in enumerate(configs(base, k)):
        pop.add(c, seed=i)
    while any(pop.members[s].status == "running" for s in pop.occupied()):
        pop.advance()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.thread_time() - cpu


def run_sequential(base: dict, k: int, device: str) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.thread_time()
    for i, c in enumerate(configs(base, k)):
        train(c, device=device, seed=i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--direct", action="store_true",
                        help="the network on the batch's states, not on every state once (use_table off)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value (YAML values)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = quick_config() | {kv.split("=", 1)[0]: yaml.safe_load(kv.split("=", 1)[1]) for kv in args.set}
    run_population(base, 2, args.device)  # warm up both paths
    run_sequential(base, 1, args.device)
    one = run_sequential(base, 1, args.device)
    pop1 = run_population(base, 1, args.device, args.direct)
    popk = run_population(base, args.k, args.device, args.direct)
    seq = run_sequential(base, args.k, args.device)
    print(f"{base}")
    print(f"device {args.device}, {args.threads} thread(s), K = {args.k}, direct = {args.direct}")
    print("seconds: wall, this thread's CPU time (which other processes do not disturb)")
    print(f"train alone:             {one[0]:7.2f} {one[1]:7.2f}")
    print(f"population of 1:         {pop1[0]:7.2f} {pop1[1]:7.2f}")
    print(f"population of {args.k:<3}:       {popk[0]:7.2f} {popk[1]:7.2f}")
    print(f"{args.k:>3} sequential train(): {seq[0]:7.2f} {seq[1]:7.2f}")
    print(f"population speed-up over sequential: {seq[0] / popk[0]:.2f}x wall, {seq[1] / popk[1]:.2f}x CPU")


if __name__ == "__main__":
    main()
