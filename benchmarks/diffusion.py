"""Diffusion trainer throughput: training steps per second, the share of a step spent
outside the denoiser's forward/backward, and seconds to sample 10,000 points.

    .venv/bin/python benchmarks/diffusion.py [--threads 1] [--steps 200] [--reps 5] [key=value ...]
    .venv/bin/python benchmarks/diffusion.py --baseline /tmp/old-checkout [--rounds 3]
    .venv/bin/python benchmarks/diffusion.py --population [--ks 1,4,16]
    .venv/bin/python benchmarks/diffusion.py --drift [--trials 8]

key=value pairs override the trainer's Config (e.g. width=128 dataset=digits). A training
step is everything `train` does per step: draw a batch, t and eps, noise the batch, the
denoiser's forward, the loss, backward, gradient clipping, AdamW, the EMA update. The
"bare" work is only the denoiser's forward, the loss and backward on tensors of the same
shapes, timed in the same process; share outside = 1 - bare / step (target: under 20%).
Step and bare timings are interleaved in short blocks and the fastest block of each is
kept, by wall time and by CPU time (which leaves out time spent waiting for a core), to
filter out other processes on a shared machine.

--baseline DIR times DIR's training step (another checkout, e.g. the previous commit:
`git worktree add /tmp/old HEAD~1`; its models/ imported as another package) beside this
one's, in one process, in interleaved blocks (reps x rounds), so the same load hits both.

--population times populations (models/diffusion/train.py, DiffusionPopulation): a population
of capacity 16 holding one member against one of capacity 1 (target <= 1.2x), and K members
drawn from search_spaces/diffusion-quick.yaml's bucket of the default (random tuner draws,
padded to the largest) against the same K trials stepped one by one, with the padding's waste.

--drift measures how far a member trained in a population is from its solo run in float32:
the random tuner's first --trials configurations of diffusion-quick, grouped by signature as
the population engine groups them, each group trained as one population and each trial alone
by train(), same seeds; prints the relative differences of the final loss and swd_ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402

from models.diffusion.denoiser import denoise  # noqa: E402
from models.diffusion.train import Config, DiffusionPopulation  # noqa: E402


def seconds_per_call(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call of fn over n calls. CPU time (process_time) leaves out
    the time this process waits for a core, so it is the steadier one on a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key] = None if raw == "None" else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--reps", type=int, default=50, help="timed blocks of each kind")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", default=None, help="another checkout to time beside this one")
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    parser.add_argument("--population", action="store_true", help="time populations instead")
    parser.add_argument("--ks", default="1,4,16", help="population sizes for --population")
    parser.add_argument("--group-overhead", type=float, default=None,
                        help="row groups' fixed cost for --population and --drift (default: "
                        "the device's; inf: one padded group)")
    parser.add_argument("--drift", action="store_true", help="float32 drift against solo runs")
    parser.add_argument("--trials", type=int, default=8, help="configurations for --drift")
    parser.add_argument("overrides", nargs="*", help="Config overrides, key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.baseline:
        return against_baseline(args)
    if args.population:
        return populations(args)
    if args.drift:
        return drift(args)
    config = {"n_steps": 10**9} | parse_overrides(args.overrides)  # never runs out of steps
    cfg = Config.from_dict(config)
    pop = DiffusionPopulation(config, capacity=1, device=args.device)  # what train() runs
    slot = pop.add(config, seed=0)
    member = pop.members[0]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    # the bare denoiser work, on the shapes of one training step
    g = torch.Generator(args.device).manual_seed(1)
    x0 = pop.data.train[: cfg.batch_size]
    t = torch.randint(0, cfg.T, (x0.shape[0],), generator=g, device=x0.device)
    xt = member.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g, device=x0.device))
    target = torch.randn(x0.shape, generator=g, device=x0.device)
    params = pop.groups[0]._leaves  # the step's own parameters: views of its row buffers

    def bare() -> None:
        out = denoise(params, xt, t, shape=member.shape, T=cfg.T, t_scale=1000.0 / cfg.T)
        F.mse_loss(out, target).backward()

    def step() -> None:
        pop.train_step()

    for _ in range(20):  # warm-up: allocator, kernels
        step()
        bare()
    step_s, bare_s = [], []
    for _ in range(args.reps):  # short interleaved blocks; keep the fastest of each
        sync()
        step_s.append(seconds_per_call(lambda: (step(), sync()), args.steps))
        bare_s.append(seconds_per_call(lambda: (bare(), sync()), args.steps))
    step_wall, bare_wall = min(w for w, _ in step_s), min(w for w, _ in bare_s)
    step_cpu, bare_cpu = min(c for _, c in step_s), min(c for _, c in bare_s)

    n_params = pop.groups[0].flat.shape[1]
    print(
        f"diffusion benchmark: dataset={cfg.dataset} width={cfg.width} depth={cfg.depth} "
        f"T={cfg.T} batch={cfg.batch_size} params={n_params:,} device={args.device} "
        f"threads={torch.get_num_threads()} loadavg={os.getloadavg()[0]:.1f}"
    )
    blocks = f"fastest of {args.reps} blocks of {args.steps}"
    print(f"training: {1 / step_wall:7.1f} steps/s wall ({step_wall * 1e3:.2f} ms/step, {blocks})")
    print(f"          {1 / step_cpu:7.1f} steps/s CPU time ({step_cpu * 1e3:.2f} ms/step)")
    print(
        f"bare denoiser forward+loss+backward: {bare_wall * 1e3:.2f} ms wall, {bare_cpu * 1e3:.2f} ms CPU"
    )
    print(
        "share of a step outside the denoiser's forward/backward: "
        f"{1 - bare_cpu / step_cpu:.1%} by CPU time, {1 - bare_wall / step_wall:.1%} by wall time "
        "(target < 20%)"
    )

    for sampler, steps in ((cfg.sampler, cfg.sampling_steps), ("ddpm", None)):
        member.cfg = dataclasses.replace(cfg, sampler=sampler, sampling_steps=steps)
        times = []
        for _ in range(2):
            sync()
            times.append(seconds_per_call(lambda: (pop.samples(slot, 10_000, seed=0), sync()), 1))
        wall, cpu = min(w for w, _ in times), min(c for _, c in times)
        label = f"{sampler}, {steps or cfg.T} steps"
        print(f"sampling 10,000 points ({label}): {wall:.2f} s wall, {cpu:.2f} s CPU")
    member.cfg = cfg

def against_baseline(args: argparse.Namespace) -> None:
    """This checkout's training step and args.baseline's in one process, in interleaved blocks
    (the same load hits both): args.baseline's models/ is imported as another package."""
    import importlib
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(Path(args.baseline) / "models", tmp / "baseline_models")
    sys.path.insert(0, str(tmp))
    config = {"n_steps": 10**9} | parse_overrides(args.overrides)

    def stepper(module: str) -> Callable[[], object]:
        tr = importlib.import_module(f"{module}.diffusion.train")
        if hasattr(tr, "DiffusionPopulation"):  # train() is a population of one
            pop = tr.DiffusionPopulation(config, capacity=1, device=args.device)
            pop.add(config, seed=0)
            return pop.train_step
        state = tr.build(tr.Config.from_dict(config), args.device, seed=0)  # 967dcc6 and before
        return lambda: tr.train_step(state)

    steps = {"baseline": stepper("baseline_models"), "this": stepper("models")}
    for _ in range(20):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.reps * args.rounds):
        for name, fn in steps.items():
            times[name].append(seconds_per_call(fn, args.steps)[1])
    best = {k: min(v) for k, v in times.items()}
    q25 = {k: sorted(v)[len(v) // 4] for k, v in times.items()}
    print(f"{config} threads={args.threads} load={os.getloadavg()[0]:.1f}, "
          f"{args.reps * args.rounds} interleaved blocks of {args.steps} steps, CPU time")
    for k in steps:
        print(f"{k:>8}: {1 / best[k]:7.1f} steps/s (fastest block), {1 / q25[k]:7.1f} (25th percentile)")
    print(f"this / baseline: {best['baseline'] / best['this']:.3f} by the fastest blocks, "
          f"{q25['baseline'] / q25['this']:.3f} by the 25th percentile (>= 1: no slower)")
    shutil.rmtree(tmp)


def populations(args: argparse.Namespace) -> None:
    """Capacity cost and K-member steps against K lone steps (see the module doc)."""
    import numpy as np

    from harness.spec import load_spec
    from harness.tuners.random import sample_uniform
    from models.diffusion.train import bucket

    spec = load_spec("diffusion-quick")
    base = spec.config(spec.defaults()[0]) | {"n_steps": 10**9} | parse_overrides(args.overrides)
    print(f"populations: load {os.getloadavg()[0]:.1f}, threads {torch.get_num_threads()}, "
          f"fastest of {args.reps} blocks of {args.steps} steps, CPU time")

    def timed(steps: list[Callable[[], object]]) -> list[float]:
        for step in steps:
            for _ in range(5):
                step()
        best = [float("inf")] * len(steps)
        for _ in range(args.reps):  # interleaved blocks; the fastest of each
            for j, step in enumerate(steps):
                best[j] = min(best[j], seconds_per_call(step, args.steps)[1])
        return best

    one, big = (DiffusionPopulation(base, capacity=c, device=args.device) for c in (1, 16))
    one.add(base, 0)
    for seed in range(16):
        big.add(base | {"width": 96}, seed)  # 15 of them leave: the rows compact and shrink
    for slot in range(1, 16):
        big.remove(slot)
    big.add(base, 99)
    big.remove(0)
    t_one, t_big = timed([one.train_step, big.train_step])
    print(f"one member: capacity 16 {t_big * 1e3:.2f} ms/step, capacity 1 {t_one * 1e3:.2f}: "
          f"ratio {t_big / t_one:.3f} (target <= 1.2)")

    draws = (spec.config(sample_uniform(spec, np.random.default_rng([0, i]))) for i in range(10**4))
    same = [c | {"n_steps": 10**9} for c in draws if bucket(c) == bucket(base)]
    for k in (int(x) for x in args.ks.split(",")):
        pop = DiffusionPopulation(base, capacity=k, device=args.device, group_overhead=args.group_overhead)
        alone = []
        for seed, c in enumerate(same[:k]):
            pop.add(c, seed)
            alone.append(DiffusionPopulation(c, capacity=1, device=args.device))
            alone[-1].add(c, seed)
        t_pop, t_alone = timed([pop.train_step, lambda alone=alone: [a.train_step() for a in alone]])
        print(f"K={k:>2}: {t_pop * 1e3:7.2f} ms/step for all, {t_alone * 1e3:7.2f} ms for "
              f"{k} lone steps: speed {t_alone / t_pop:.2f}x; padding waste {pop.waste():.2f}x "
              f"({len(pop.groups)} row groups)")


def drift(args: argparse.Namespace) -> None:
    """Members against their solo runs, float32 (see the module doc)."""
    import numpy as np

    from harness.spec import load_spec
    from harness.tuners.random import sample_uniform
    from models.diffusion.train import train

    spec = load_spec("diffusion-quick")
    configs = [spec.config(sample_uniform(spec, np.random.default_rng([0, i])))
               for i in range(args.trials)]  # fmt: skip
    form = train.population  # type: ignore[attr-defined]
    groups: dict[object, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(form.signature(c), []).append(i)
    print(f"float32 drift, diffusion-quick, {args.trials} random configurations in "
          f"{len(groups)} populations, group overhead {args.group_overhead or 'default'} "
          f"(load {os.getloadavg()[0]:.1f})")
    ours: dict[int, dict[str, float]] = {}
    for rows in groups.values():
        pop = DiffusionPopulation(configs[rows[0]], capacity=len(rows), device=args.device,
                                  group_overhead=args.group_overhead)
        slots = {pop.add(configs[i], seed=i): i for i in rows}
        while pop.occupied():
            for ev in pop.advance():
                if ev.kind != "report":
                    ours[slots[ev.slot]] = ev.metrics
                    pop.remove(ev.slot)
    worst = 0.0
    for i, c in enumerate(configs):
        solo = train(c, device=args.device, seed=i)
        rel = {k: abs(ours[i][k] - solo[k]) / abs(solo[k]) for k in ("loss", "swd_ratio")}
        worst = max(worst, rel["swd_ratio"])
        print(f"  trial {i} (width {c['width']}, depth {c['depth']}, batch {c['batch_size']}, "
              f"T {c['T']}): swd_ratio {solo['swd_ratio']:.4f} alone, {ours[i]['swd_ratio']:.4f} "
              f"in its population: {rel['swd_ratio']:.2e} relative (loss {rel['loss']:.2e})")
    print(f"largest relative difference of swd_ratio: {worst:.2e}")


if __name__ == "__main__":
    main()
