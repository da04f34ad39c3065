"""Time per epoch of LocoProp against backprop with Adam, and against a matmul-count model.

Model: backprop costs about 3 matmuls per layer and batch (forward, input gradient, weight
gradient); LocoProp about 3 + 2K (its backprop pass for the targets, then a forward and a
weight-gradient matmul per local step). So LocoProp / BP should be about (3 + 2K) / 3,
7.67 for K = 10. Target: measured ratio within 1.3x of that.

Digits autoencoder, batch 100 (14 steps per epoch), float32, one CPU thread. Methods are
timed in interleaved rounds (the machine is shared) and the median epoch time is kept.

    .venv/bin/python benchmarks/locoprop.py [--rounds 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.locoprop.data import load
from models.locoprop.nets import make_net
from models.locoprop.optim import Optimizer
from models.locoprop.train import Config, train_epoch

VARIANTS: dict[str, dict[str, object]] = {
    "bp-adam": {"method": "bp", "optimizer": "adam"},
    "bp-rmsprop": {"method": "bp", "optimizer": "rmsprop"},
    "locoprop-m K=1": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 1},
    "locoprop-m K=5": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 5},
    "locoprop-m K=10": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 10},
    "locoprop-s K=10": {"method": "locoprop-s", "optimizer": "rmsprop", "K": 10},
    "locoprop-m K=10 per-layer": {"method": "locoprop-m", "optimizer": "rmsprop", "K": 10},
}


def epoch_timer(name: str, device: str) -> tuple[Config, callable]:  # type: ignore[valid-type]
    cfg = Config.from_dict({"epochs": 1000, "warmup_epochs": 0, "lr": 1e-6, **VARIANTS[name]})
    data = load(device=device)
    batched = not name.endswith("per-layer")  # per-layer: no stacking of same-shape layers
    net = make_net(
        "autoencoder", generator=torch.Generator().manual_seed(0), device=device, batched=batched
    )
    assert cfg.beta1 is not None and cfg.beta2 is not None and cfg.eps is not None
    opt = Optimizer(cfg.optimizer, net.params, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps)
    gen = torch.Generator(device=device).manual_seed(0)
    n = data.x_train.shape[0]

    def one_epoch() -> float:
        perm = torch.randperm(n, generator=gen, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_epoch(cfg, net, opt, data.x_train, data.x_train, perm, 0, cfg.epochs * 14, 0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return cfg, one_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed epochs per method (median kept)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    timers = {name: epoch_timer(name, args.device) for name in VARIANTS}
    for _, run in timers.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (_, run) in timers.items():
            times[name].append(run())
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["bp-adam"]
    print(
        f"digits autoencoder {make_net('autoencoder', generator=torch.Generator()).sizes}, batch 100, "
        f"14 steps/epoch, {args.device}, {torch.get_num_threads()} thread, median of {args.rounds} epochs"
    )
    print(f"{'method':<28}{'ms/epoch':>10}{'vs adam':>10}{'model':>8}{'meas/model':>12}")
    for name, t in med.items():
        cfg = timers[name][0]
        model = 1.0 if cfg.method == "bp" else (3 + 2 * cfg.K) / 3
        print(f"{name:<28}{1e3 * t:>10.2f}{t / base:>10.2f}{model:>8.2f}{t / base / model:>12.2f}")
    ratio = med["locoprop-m K=10"] / base / (23 / 3)
    verdict = "within" if ratio <= 1.3 else "OUTSIDE"
    print(
        f"LocoProp-M (K=10) / Adam = {med['locoprop-m K=10'] / base:.2f}x; model 7.67x; "
        f"measured/model = {ratio:.2f} ({verdict} the 1.3x target)"
    )


if __name__ == "__main__":
    main()
