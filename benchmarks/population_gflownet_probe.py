"""GFlowNet populations on the gflownet-quick space: empty places, padding waste, batching, drift.

Four measurements, one CPU thread, each side alternated in the same process:

1. **empty places**: one member in a population of capacity 16 against a population of
   capacity 1 (target <= 1.2x: only occupied rows are computed);
2. **signatures and padding waste**: 64 random configurations of the space, grouped by
   ``POPULATION.signature``; per group the padding's waste by a cost model (the network's
   multiply-adds per state, padded to the group's widest, against each member's own),
   and measured: a population of the group's members against the same members run by ``train()``
   one after another (seconds of this thread's CPU time);
3. **batching**: K members of the space's defaults (learning rates differ) as one population
   against K ``train()`` runs one after another;
4. **float32 drift**: each member's final exact L1 in a population against its solo ``train()``
   (same configuration and seed), relative difference; the members of one mixed population.

    .venv/bin/python benchmarks/population_gflownet_probe.py [--k 16] [--skip-measured]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

from models.gflownet.train import POPULATION, Config, GFlowNetPopulation, train

ROOT = Path(__file__).resolve().parents[1]


def spec() -> dict:
    return yaml.safe_load((ROOT / "search_spaces" / "gflownet-quick.yaml").read_text())


def quick_config() -> dict:
    s = spec()
    config = s["fixed"] | {k: p["default"] for k, p in s["params"].items() if "when" not in p}
    return config | {"report_every": s["budget"]["report_every"]}


def random_configs(n: int, seed: int) -> list[dict]:
    """``n`` configurations drawn as the random tuner draws them (uniform / log-uniform, choices)."""
    s, rng = spec(), random.Random(seed)
    out = []
    for _ in range(n):
        c: dict = {}
        for name, p in s["params"].items():
            if "when" in p and any(c.get(k) != v for k, v in p["when"].items()):
                continue
            if p["type"] == "choice":
                c[name] = rng.choice(p["values"])
            elif p.get("log"):
                v = math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"])))
                c[name] = round(v) if p["type"] == "int" else v
            else:
                c[name] = rng.randint(p["low"], p["high"]) if p["type"] == "int" else rng.uniform(p["low"], p["high"])
        out.append(s["fixed"] | c | {"report_every": s["budget"]["report_every"]})
    return out


def macs(cfg: Config, width: int, depth: int) -> int:
    """Multiply-adds of the network per state at a width and depth."""
    n_in, n_out = cfg.ndim * cfg.height, 2 * cfg.ndim + 2
    if depth == 0:
        return n_in * n_out
    return n_in * width + (depth - 1) * width * width + width * n_out


def run_population(configs: list[dict], capacity: int, seeds: list[int]) -> tuple[float, dict[int, dict]]:
    """CPU seconds to run ``configs`` as one population to the end, and each member's final metrics."""
    start = time.thread_time()
    pop = GFlowNetPopulation(configs[0], capacity=capacity)
    slots = {pop.add(c, s): i for i, (c, s) in enumerate(zip(configs, seeds, strict=True))}
    finals: dict[int, dict] = {}
    while pop.rows:
        for ev in pop.advance():
            if ev.kind == "done":
                finals[slots[ev.slot]] = ev.metrics
            elif ev.kind == "failed":
                finals[slots[ev.slot]] = {"l1": math.nan, "reason": ev.reason}
    return time.thread_time() - start, finals


def run_solo(configs: list[dict], seeds: list[int]) -> tuple[float, list[dict]]:
    start = time.thread_time()
    finals = [train(c, seed=s) for c, s in zip(configs, seeds, strict=True)]
    return time.thread_time() - start, finals


def empty_places(rounds: int) -> None:
    base = quick_config()
    one, sixteen = [], []
    run_population([base], 1, [0])  # warm-up
    for _ in range(rounds):
        one.append(run_population([base], 1, [0])[0])
        sixteen.append(run_population([base], 16, [0])[0])
    a, b = statistics.median(one), statistics.median(sixteen)
    print(f"1. one member, capacity 1: {a:.3f} s; capacity 16: {b:.3f} s; ratio {b / a:.2f} "
          f"(target <= 1.2; medians of {rounds})")


def signatures_and_waste(measure: bool, k_cap: int) -> None:
    configs = random_configs(64, seed=0)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        groups[POPULATION.signature(c)].append(i)
    print(f"2. 64 random configurations: {len(groups)} signatures (was 64 before padding)")
    print(f"   {'bucket':<28} {'members':>7} {'waste (model)':>14} {'pop CPU s':>10} {'solo CPU s':>11} {'solo/pop':>9}")
    for sig, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        cfgs = [Config.from_dict(configs[i]) for i in members]
        # members share a population K at a time, in the order they arrive
        useful = padded = 0.0
        for lo in range(0, len(cfgs), k_cap):
            chunk = cfgs[lo : lo + k_cap]
            w = max(c.hidden for c in chunk)  # padded width; each member runs its own depth
            useful += sum(c.iterations * macs(c, c.hidden, c.depth) for c in chunk)
            padded += sum(c.iterations * macs(c, w, c.depth) for c in chunk)
        line = f"   {str(dict(sig)['bucket']):<28} {len(members):>7} {1 - useful / padded:>14.2f}"
        if measure:
            chosen = [configs[i] for i in members][:k_cap]
            seeds = list(range(len(chosen)))
            pop_s, _ = run_population(chosen, len(chosen), seeds)
            solo_s, _ = run_solo(chosen, seeds)
            line += f" {pop_s:>10.2f} {solo_s:>11.2f} {solo_s / pop_s:>9.2f}"
        print(line, flush=True)


def batching(k: int) -> None:
    base = quick_config()
    configs = [base | {"lr": 1e-3 * (1 + 0.25 * (i % 5))} for i in range(k)]
    pop_s, _ = run_population(configs, k, list(range(k)))
    solo_s, _ = run_solo(configs, list(range(k)))
    print(f"3. {k} members of the defaults (8x8, TB, 2x256, batch 128): population {pop_s:.2f} s, "
          f"{k} train() one after another {solo_s:.2f} s: {solo_s / pop_s:.2f}x")


def drift(n: int) -> None:
    configs = random_configs(64, seed=1)
    by_sig: dict[tuple, list[dict]] = defaultdict(list)
    for c in configs:
        by_sig[POPULATION.signature(c)].append(c)
    chosen = max(by_sig.values(), key=len)[:n]
    seeds = list(range(len(chosen)))
    _, pop = run_population(chosen, len(chosen), seeds)
    _, solo = run_solo(chosen, seeds)
    rel = [abs(pop[i]["l1"] - solo[i]["l1"]) / solo[i]["l1"] for i in range(len(chosen))]
    print(f"4. float32 drift, {len(chosen)} mixed members of one population against their solo "
          f"train(): |l1 - l1_solo| / l1_solo median {statistics.median(rel):.2e}, max {max(rel):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-measured", action="store_true", help="the waste model only in 2.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, one thread, {torch.get_default_dtype()}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    empty_places(args.rounds)
    signatures_and_waste(not args.skip_measured, args.k)
    batching(args.k)
    drift(8)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
