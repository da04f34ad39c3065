"""Diffusion trainer throughput: training steps per second, the share of a step spent
outside the denoiser's forward/backward, and seconds to sample 10,000 points.

    .venv/bin/python benchmarks/diffusion.py [--threads 1] [--steps 200] [--reps 5] [key=value ...]

key=value pairs override the trainer's Config (e.g. width=128 dataset=digits). A training
step is everything `train` does per step: draw a batch, t and eps, noise the batch, the
denoiser's forward, the loss, backward, gradient clipping, AdamW, the EMA update. The
"bare" work is only the denoiser's forward, the loss and backward on tensors of the same
shapes, timed in the same process; share outside = 1 - bare / step (target: under 20%).
Step and bare timings are interleaved in short blocks and the fastest block of each is
kept, by wall time and by CPU time (which leaves out time spent waiting for a core), to
filter out other processes on a shared machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    parser.add_argument("overrides", nargs="*", help="Config overrides, key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
    params = {k: v.detach().clone().requires_grad_(True) for k, v in pop._own(pop.flat, 0, member).items()}

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

    n_params = pop.flat.numel()
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

if __name__ == "__main__":
    main()
