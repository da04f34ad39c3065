"""Speed of a GFlowNet training iteration against the bare network work it needs.

For TB on 8x8 (batch 16 and 128) and 8^4 (batch 16 and 128), with one CPU thread, prints
iterations per second (wall clock, and per second of the thread's CPU time, which other
processes on a shared machine do not disturb) and the ratio of one training iteration to its bare network work: the
same policy forward passes (same batch shapes, same grad mode: the sampling steps without
gradient, the loss's batched pass with it) plus one backward through them, timed in the same
process, interleaved with the iterations they mirror. Target: ratio <= 1.3.

    .venv/bin/python benchmarks/gflownet.py [--iterations 200] [--device cpu]

With ``--reproduce`` it prints the reproduction table of .notes/gflownet-results.md instead
(exact L1 of every loss on 8x8 over seeds, and TB against FM on 8^4 at equal trajectories;
about 15 minutes on one thread).
"""

from __future__ import annotations

import argparse
import time

import torch

from models.gflownet.train import Config, build, train, train_step


def bare_network_work(policy: torch.nn.Module, calls: list[tuple[torch.Size, bool]], height: int,
                      generator: torch.Generator) -> None:
    """The recorded forward passes on random states of the same shapes, then one backward."""
    outputs = []
    for shape, grad in calls:
        x = torch.randint(height, shape, generator=generator).to(policy.log_z.device)
        with torch.set_grad_enabled(grad):
            out = policy(x)
        if grad:
            outputs.append(out.sum())
    torch.stack(outputs).sum().backward()


def measure(config: dict, iterations: int, warmup: int, device: str) -> tuple[float, float, float]:
    """(iterations per wall second, per CPU second, iteration CPU time / bare network CPU time).

    On CPU the times are the thread's CPU time (time.thread_time), so that other processes
    on a shared machine do not enter the ratio; on a GPU they are wall times after a sync.
    """
    cfg = Config.from_dict(config)
    torch.manual_seed(0)
    generator = torch.Generator(device=device).manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(1)
    env, policy, optimizer = build(cfg, device)
    visits = torch.zeros(env.n_states, dtype=torch.long, device=device)
    calls: list[tuple[torch.Size, bool]] = []
    policy.register_forward_pre_hook(
        lambda _m, args: calls.append((args[0].shape, torch.is_grad_enabled())))
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.thread_time
    for _ in range(warmup):  # trajectories lengthen as the policy learns
        train_step(cfg, env, policy, optimizer, generator, visits)
    t_iter = t_bare = wall = 0.0
    for _ in range(iterations):
        calls.clear()
        sync()
        w0, t0 = time.perf_counter(), clock()
        train_step(cfg, env, policy, optimizer, generator, visits)
        sync()
        t1, w1 = clock(), time.perf_counter()
        bare_network_work(policy, list(calls), cfg.height, cpu_gen)
        sync()
        t2 = clock()
        policy.zero_grad(set_to_none=True)
        wall += w1 - w0
        t_iter += t1 - t0
        t_bare += t2 - t1
    return iterations / wall, iterations / t_iter, t_iter / t_bare


def reproduce(device: str) -> None:
    """Exact L1 (and sampled L1, 200k draws) of the reproduction settings."""
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
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reproduce", action="store_true", help="the reproduction table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.reproduce:
        reproduce(args.device)
        return
    base = {"loss": "tb", "hidden": 256, "depth": 2, "lr": 1e-3, "logz_lr": 0.1}
    cases = [
        ("TB 8x8, batch 16", {"ndim": 2, "height": 8, "batch_size": 16}),
        ("TB 8x8, batch 128", {"ndim": 2, "height": 8, "batch_size": 128}),
        ("TB 8^4, batch 16", {"ndim": 4, "height": 8, "batch_size": 16}),
        ("TB 8^4, batch 128", {"ndim": 4, "height": 8, "batch_size": 128}),
    ]
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.iterations} timed iterations after {args.warmup} warm-up")
    print(f"{'case':<20} {'it/s (wall)':>12} {'it/s (CPU time)':>16} {'iteration / bare network':>26}")
    for name, case in cases:
        wall, cpu, ratio = measure(base | case, args.iterations, args.warmup, args.device)
        print(f"{name:<20} {wall:>12.1f} {cpu:>16.1f} {ratio:>26.3f}", flush=True)


if __name__ == "__main__":
    main()
