"""LocoProp's speed: train() per epoch (against a baseline checkout, in the same run), the
matmul-count model, what an empty place costs in a population, and float32 drift.

1. Solo trainer: ms per epoch of ``train()`` for each method, timed from the intervals between
   its per-epoch reports (an epoch plus the same whole-set evaluation on both sides), in
   alternating rounds against ``--baseline`` (another checkout's ``models/``, e.g. the previous
   commit: ``git worktree add /tmp/loco-old HEAD~1``), so the machine's load hits both alike.
2. Model: backprop costs about 3 matmuls per layer and batch (forward, input gradient, weight
   gradient); LocoProp about 3 + 2K. So LocoProp / BP should be about (3 + 2K) / 3 (7.67 for
   K = 10); target: measured within 1.3x of that.
3. Empty places: one member in a population of capacity 16 against capacity 1, per epoch
   (target <= 1.2x), and 16 mixed members in one population against 16 solo epochs.
4. Float32 drift: 8 random locoprop-quick configurations as one population against their solo
   runs, same seeds: the largest relative difference of the final train_loss.

Digits autoencoder, batch 100 (14 steps per epoch), one CPU thread; times are this process's
CPU time (``time.process_time``), so other processes' load hits them less than wall time.

    .venv/bin/python benchmarks/locoprop.py [--baseline /tmp/loco-old] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from models.locoprop.population import LocoPropPopulation
from models.locoprop.train import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "bp-adam": {"method": "bp", "optimizer": "adam"},
    "bp-rmsprop": {"method": "bp", "optimizer": "rmsprop"},
    "bp-sgd": {"method": "bp", "optimizer": "sgd"},
    "locoprop-m K=1": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 1},
    "locoprop-m K=5": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 5},
    "locoprop-m K=10": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 10},
    "locoprop-s K=10": {"method": "locoprop-s", "optimizer": "rmsprop", "K": 10},
    "locoprop-m adam K=10": {"method": "locoprop-m", "optimizer": "adam", "K": 10},
}
EPOCHS = 6
# This process's CPU seconds (one thread): on a shared machine, other processes' load changes
# wall times by 2-4x but a process's own CPU time much less; both sides are timed alike.
CLOCK = time.process_time


def load_baseline(path: str) -> Callable[..., dict[str, float]]:
    """``train`` of another checkout's ``models`` package, imported as ``models_baseline``."""
    pkg = Path(path) / "models"
    spec = importlib.util.spec_from_file_location(
        "models_baseline", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["models_baseline"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("models_baseline.locoprop.train").train


def epoch_times(fn: Callable[..., Any], cfg: dict[str, Any]) -> list[float]:
    """Seconds between consecutive per-epoch reports of one run (its first epoch left out)."""
    stamps: list[float] = []
    fn(cfg, seed=0, report=lambda s, m: stamps.append(CLOCK()))
    return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]


def solo_section(baseline: str | None, rounds: int) -> None:
    sides: dict[str, Callable[..., Any]] = {"new": train}
    if baseline:
        sides["baseline"] = load_baseline(baseline)
    common = {"epochs": EPOCHS, "warmup_epochs": 0, "lr": 1e-6, "report_every": 1}
    times: dict[tuple[str, str], list[float]] = {}
    for name, variant in VARIANTS.items():  # warm-up, and the results must agree
        outs = {side: fn({**common, **variant}, seed=0) for side, fn in sides.items()}
        if baseline:
            a, b = outs["new"]["train_loss"], outs["baseline"]["train_loss"]
            assert abs(a - b) <= 1e-4 * abs(b), f"{name}: new {a} vs baseline {b}"
    for r in range(rounds):
        order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
        for name, variant in VARIANTS.items():
            for side, fn in order:
                times.setdefault((name, side), []).extend(epoch_times(fn, {**common, **variant}))
    med = {key: statistics.median(ts) for key, ts in times.items()}
    print(f"1. train() per epoch (CPU ms), median of {rounds} x {EPOCHS - 1} epochs, alternating rounds")
    head = f"{'method':<24}{'ms/epoch':>10}"
    if baseline:
        head += f"{'baseline':>10}{'new/base':>10}"
    print(head + f"{'vs bp-adam':>12}{'model':>8}{'meas/model':>12}")
    base = med[("bp-adam", "new")]
    for name, variant in VARIANTS.items():
        t = med[(name, "new")]
        model = 1.0 if variant["method"] == "bp" else (3 + 2 * variant["K"]) / 3
        line = f"{name:<24}{1e3 * t:>10.2f}"
        if baseline:
            b = med[(name, "baseline")]
            line += f"{1e3 * b:>10.2f}{t / b:>10.2f}"
        print(line + f"{t / base:>12.2f}{model:>8.2f}{t / base / model:>12.2f}")
    ratio = med[("locoprop-m K=10", "new")] / base / (23 / 3)
    print(f"2. LocoProp-M (K=10) / Adam measured/model = {ratio:.2f} "
          f"({'within' if ratio <= 1.3 else 'OUTSIDE'} the 1.3x target)")  # fmt: skip


def population_epochs(configs: list[dict[str, Any]], capacity: int, epochs: int) -> float:
    """Median seconds of one advance (one epoch of every member) after the first."""
    pop = LocoPropPopulation(configs[0], capacity=capacity)
    for i, cfg in enumerate(configs):
        pop.add(cfg, i)
    ts = []
    for _ in range(epochs):
        t = CLOCK()
        pop.advance()
        ts.append(CLOCK() - t)
    return statistics.median(ts[1:])


def quick_configs(n: int, seed: int) -> list[dict[str, Any]]:
    spec = yaml.safe_load((ROOT / "search_spaces" / "locoprop-quick.yaml").read_text())
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cfg = dict(spec["fixed"])
        for name, p in spec["params"].items():
            when = p.get("when", {})
            if any(cfg.get(k) not in v for k, v in when.items()):
                continue
            if p["type"] == "choice":
                cfg[name] = rng.choice(p["values"])
            elif p["type"] == "int":
                cfg[name] = rng.randint(p["low"], p["high"])
            else:
                cfg[name] = math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"])))
        out.append(cfg)
    return out


def population_section(rounds: int) -> None:
    one = [{"epochs": 100, "warmup_epochs": 0, "method": "locoprop-m", "K": 10}]
    cap1, cap16 = [], []
    for _ in range(rounds):
        cap1.append(population_epochs(one, 1, 4))
        cap16.append(population_epochs(one, 16, 4))
    a, b = statistics.median(cap1), statistics.median(cap16)
    print(f"3. one member (locoprop-m K=10): capacity 1 {1e3 * a:.1f} ms/epoch, capacity 16 "
          f"{1e3 * b:.1f} ms/epoch: {b / a:.2f}x (target <= 1.2x)")  # fmt: skip
    mixed = [{**c, "epochs": 100} for c in quick_configs(16, 1)]
    t_pop = population_epochs(mixed, 16, 3)
    t_solo = sum(population_epochs([c], 1, 3) for c in mixed)
    print(f"   16 mixed locoprop-quick members: one population {1e3 * t_pop:.0f} ms/epoch, "
          f"16 solo {1e3 * t_solo:.0f} ms: {t_solo / t_pop:.2f}x the throughput")  # fmt: skip


def drift_section() -> None:
    configs = quick_configs(16, 2)
    pop = LocoPropPopulation(configs[0], capacity=16)
    for i, cfg in enumerate(configs):
        pop.add(cfg, 100 + i)
    finals: dict[int, dict[str, float]] = {}
    while pop.occupied():
        for ev in pop.advance():
            if ev.kind != "report":
                finals[ev.slot] = ev.metrics
                pop.remove(ev.slot)
    worst, equal = 0.0, 0
    for i, cfg in enumerate(configs):
        solo = train(cfg, seed=100 + i)
        got = finals[i]
        equal += got == solo or (math.isnan(got["train_loss"]) and math.isnan(solo["train_loss"]))
        if math.isfinite(solo["train_loss"]) and math.isfinite(got.get("train_loss", math.nan)):
            worst = max(worst, abs(got["train_loss"] - solo["train_loss"]) / abs(solo["train_loss"]))
    print(f"4. float32 drift, 16 locoprop-quick members (one population) vs their solo runs: "
          f"max relative difference of the final train_loss {worst:.2e}; "
          f"{equal}/16 bit for bit equal")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=None, help="another checkout to time train() against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: solo,pop,drift")
    args = ap.parse_args()
    torch.set_num_threads(1)
    skip = set(args.skip.split(","))
    if "solo" not in skip:
        solo_section(args.baseline, args.rounds)
    if "pop" not in skip:
        population_section(args.rounds)
    if "drift" not in skip:
        drift_section()


if __name__ == "__main__":
    main()
