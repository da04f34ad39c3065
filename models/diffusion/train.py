"""Train a DDPM on a 2-D toy or 8x8 digits and judge its samples against held-out data.

Loss (Ho et al. 2020, https://arxiv.org/abs/2006.11239, eq. 14, "L_simple"):
    E_{x0, eps, t uniform} || target - net(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2
with target eps (default), x0 or v. AdamW, gradient clipping, an EMA of the weights (used
for sampling), a linear warm-up then cosine decay of the learning rate.

Entry point for the harness: `train(config, *, device, seed, report, artifact_dir)`.
Primary metric: `swd_ratio`, the sliced Wasserstein-2 distance of 5,000 samples to 5,000
held-out points over its noise floor (minimize; 1.0 = indistinguishable from data).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adamw import adamw

from ..config import config_from_mapping
from .data import DATASETS, Splits, load_splits
from .denoiser import INPUT_EMBEDDINGS, Denoiser
from .metrics import Evaluator
from .sampling import PREDICTIONS, SAMPLERS, sample, training_target
from .schedule import SCHEDULES, Schedule, make_schedule

PRIMARY_METRIC = "swd_ratio"
REPORT_METRICS = ("swd",)  # cheap metrics at intermediate reports; the final step has all
N_FLOOR_DRAWS = 3
EVAL_SEED_OFFSET = 1_000_003  # eval sampling noise: fixed per run, independent of training noise


@dataclass
class Config:
    # data
    dataset: str = "moons"  # moons | swiss_roll | 8gaussians | checkerboard | digits
    n_train: int = 20_000  # training points of a 2-D toy (digits: 1,198 images)
    n_eval: int = 5_000  # held-out points of a 2-D toy (digits: 599 images)
    data_seed: int = 0  # fixes the splits, so every trial is judged on the same set
    # diffusion
    T: int = 100
    schedule: str = "cosine"  # linear | cosine
    # v | eps | x0. v by default: with eps, ~0.2% of 2-D samples (those starting in the
    # prior's tail) drift far out, which the SWD punishes (.notes/diffusion-results.md)
    prediction: str = "v"
    # denoiser
    width: int = 64
    depth: int = 3  # residual blocks
    input_embedding: str = "auto"  # auto: sinusoidal for 2-D toys, none for digits
    # optimization
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    n_steps: int = 3_000
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999
    # sampling and evaluation
    sampler: str = "ddim"  # ddpm (ancestral) | ddim (deterministic)
    sampling_steps: int | None = 50  # None: T
    n_projections: int = 256
    report_every: int = 1000

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Config from a flat dict; ValueError naming the field for an unknown key or bad value."""
        cfg = config_from_mapping(cls, d, "diffusion")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(field: str, rule: str) -> ValueError:
            return ValueError(f"diffusion config: {field} {rule}, got {getattr(self, field)!r}")

        choices = {
            "dataset": DATASETS, "schedule": SCHEDULES, "prediction": PREDICTIONS,
            "sampler": SAMPLERS, "input_embedding": ("auto", *INPUT_EMBEDDINGS),
        }  # fmt: skip
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise bad(field, f"must be one of {list(allowed)}")
        minimum = {
            "T": 1, "width": 1, "depth": 0, "batch_size": 1, "n_steps": 0, "warmup_steps": 0,
            "n_train": 2, "n_eval": 2, "n_projections": 1, "report_every": 1,
        }  # fmt: skip
        for field, low in minimum.items():
            if getattr(self, field) < low:
                raise bad(field, f"must be >= {low}")
        if self.sampling_steps is not None and not 1 <= self.sampling_steps <= self.T:
            raise bad("sampling_steps", f"must be in [1, T={self.T}]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "must be a positive number")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "must be in [0, 1)")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "must be >= 0")
        if not self.grad_clip >= 0:
            raise bad("grad_clip", "must be >= 0 (0 disables clipping)")


# ----------------------------------------------------------------------------- state


@dataclass
class State:
    """Everything one training step touches; built once by `build`."""

    cfg: Config
    data: Splits
    schedule: Schedule  # float32, on the device
    model: Denoiser
    ema: Denoiser  # the weights that sample
    flat: torch.nn.Parameter  # every weight of `model`, in one buffer (see flatten_parameters)
    ema_flat: torch.Tensor  # every weight of `ema`, in one buffer
    opt: FlatAdamW  # AdamW on `flat`
    generator: torch.Generator  # training noise: batches, t, eps
    step: int = 0


def flatten_parameters(model: torch.nn.Module, with_grad: bool) -> torch.nn.Parameter:
    """Move every parameter of `model` (and, with_grad, its gradient) into one contiguous
    buffer and make the parameters views of it. The optimizer, gradient clipping and the EMA
    then run one kernel on one tensor instead of a loop over ~30 small ones (on a CPU that
    loop cost about a third of a training step of the default denoiser). Backward still
    writes the views:
    autograd accumulates in place into an existing .grad."""
    params = list(model.parameters())
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    if with_grad:
        flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        if with_grad:
            p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat


class FlatAdamW:
    """AdamW (Loshchilov and Hutter 2019, https://arxiv.org/abs/1711.05101) on one flat
    parameter buffer, through torch's functional fused AdamW: one kernel per step, without
    the bookkeeping of torch.optim.AdamW.step (~0.2 ms, a tenth of a CPU training step of
    this small denoiser). Same update as torch.optim.AdamW (tested against it)."""

    def __init__(
        self, param: torch.nn.Parameter, lr: float, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 0.0,
    ) -> None:  # fmt: skip
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(param)  # m
        self.exp_avg_sq = torch.zeros_like(param)  # v
        self.state_step = torch.zeros((), device=param.device)  # t, counted by the kernel

    @torch.no_grad()
    def step(self) -> None:
        adamw(
            [self.param], [self.param.grad], [self.exp_avg], [self.exp_avg_sq], [],
            [self.state_step], fused=True, amsgrad=False, beta1=self.betas[0],
            beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay, eps=self.eps,
            maximize=False,
        )  # fmt: skip


@functools.lru_cache(maxsize=4)
def _cached(
    dataset: str, n_train: int, n_eval: int, data_seed: int, n_projections: int, device: str,
    dtype: torch.dtype = torch.float32,
) -> tuple[Splits, Evaluator]:  # fmt: skip
    data = load_splits(
        dataset, n_train=n_train, n_eval=n_eval, n_floor=N_FLOOR_DRAWS,
        data_seed=data_seed, device=device,
    )  # fmt: skip
    if dtype != data.train.dtype:  # float64 under torch.set_default_dtype (exactness tests)
        data = Splits(
            data.train.to(dtype), data.heldout.to(dtype), [f.to(dtype) for f in data.floor],
            data.clip, data.image_shape,
        )  # fmt: skip
    evaluator = Evaluator(data.heldout, data.floor, n_projections=n_projections, seed=data_seed)
    return data, evaluator


def cached_splits(cfg: Config, device: torch.device) -> Splits:
    """The data splits of cfg (read-only tensors), shared by trials in one process."""
    return cached_evaluator(cfg, device)[0]


def cached_evaluator(cfg: Config, device: torch.device) -> tuple[Splits, Evaluator]:
    """Splits and their Evaluator (noise floor: ~2 s for 5,000 points), built once per
    process for each (dataset, sizes, data_seed, device): every trial of a sweep reuses them."""
    return _cached(
        cfg.dataset, cfg.n_train, cfg.n_eval, cfg.data_seed, cfg.n_projections, str(device),
        torch.get_default_dtype(),
    )  # fmt: skip


def build(cfg: Config, device: str | torch.device = "cpu", seed: int = 0) -> State:
    """Data, schedule, denoiser, EMA copy and optimizer for `cfg`, seeded by `seed`."""
    device = torch.device(device)
    data = cached_splits(cfg, device)
    input_embedding = cfg.input_embedding
    if input_embedding == "auto":
        input_embedding = "none" if data.image_shape else "sinusoidal"
    torch.manual_seed(seed)  # weight init
    model = Denoiser(
        data.dim, cfg.T, width=cfg.width, depth=cfg.depth, input_embedding=input_embedding
    ).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    flat = flatten_parameters(model, with_grad=True)
    ema_flat = flatten_parameters(ema, with_grad=False).data
    opt = FlatAdamW(flat, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = make_schedule(cfg.schedule, cfg.T).to(device, data.train.dtype)
    return State(
        cfg=cfg, data=data, schedule=schedule,
        model=model, ema=ema, flat=flat, ema_flat=ema_flat, opt=opt,
        generator=torch.Generator(device).manual_seed(seed),
    )  # fmt: skip


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to 0 at n_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay(cfg: Config, step: int) -> float:
    """EMA decay with the usual warm-up (1 + n) / (10 + n), so early weights fade fast."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def diffusion_loss(state: State, x0: torch.Tensor) -> torch.Tensor:
    """L_simple on a batch x0 [B, D]: MSE between the target and the network's prediction."""
    s, g = state.schedule, state.generator
    t = torch.randint(0, s.T, (x0.shape[0],), generator=g, device=x0.device)  # [B]
    eps = torch.randn(x0.shape, generator=g, device=x0.device)  # [B, D]
    xt = s.q_sample(x0, t, eps)  # [B, D]
    target = training_target(
        state.cfg.prediction, x0, eps, s.sqrt_abar[t, None], s.sqrt_one_minus_abar[t, None]
    )
    return F.mse_loss(state.model(xt, t), target)


def train_step(state: State) -> torch.Tensor:
    """One optimizer step; returns the (detached, un-synced) loss."""
    cfg, train_x = state.cfg, state.data.train
    idx = torch.randint(
        0, train_x.shape[0], (cfg.batch_size,), generator=state.generator, device=train_x.device
    )
    loss = diffusion_loss(state, train_x[idx])
    state.opt.lr = learning_rate(cfg, state.step)
    state.flat.grad.zero_()  # not set_to_none: the parameters' grads are views of it
    loss.backward()
    if cfg.grad_clip > 0:
        clip_grad_norm_(state.flat.grad, cfg.grad_clip)
    state.opt.step()
    with torch.no_grad():
        state.ema_flat.lerp_(state.flat, 1 - ema_decay(cfg, state.step))
    state.step += 1
    return loss.detach()


def clip_grad_norm_(grad: torch.Tensor, max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ on one flat gradient, without its Python overhead:
    scale by min(1, max_norm / (|grad| + 1e-6)), computed on the device (no host sync)."""
    grad.mul_((max_norm / (grad.norm() + 1e-6)).clamp_(max=1.0))


def draw_samples(state: State, n: int, seed: int) -> torch.Tensor:
    """n samples [n, D] from the EMA denoiser with the configured sampler, fixed noise."""
    cfg, device = state.cfg, state.data.train.device
    generator = torch.Generator(device).manual_seed(seed)
    return sample(
        state.ema, state.schedule, n, state.data.dim, sampler=cfg.sampler,
        steps=cfg.sampling_steps, prediction=cfg.prediction, clip=state.data.clip,
        generator=generator,
    )  # fmt: skip


# ----------------------------------------------------------------------------- entry point


def train(
    config: Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    report: Callable[[int, dict[str, float]], None] | None = None,
    artifact_dir: str | None = None,
) -> dict[str, float]:
    """Train for n_steps; report loss and `swd`/`swd_ratio` every report_every steps and
    all metrics at the last step; return the final metrics (see module docstring)."""
    cfg = Config.from_dict(config)
    start = time.perf_counter()
    state = build(cfg, device, seed)
    evaluator = cached_evaluator(cfg, torch.device(device))[1]
    n_eval, eval_seed = state.data.heldout.shape[0], seed + EVAL_SEED_OFFSET
    loss_sum = torch.zeros((), device=state.data.train.device)
    n_losses, train_seconds, sample_seconds = 0, 0.0, 0.0
    metrics: dict[str, float] = {}
    samples = None
    step = 0

    def evaluate(step: int, final: bool) -> dict[str, float]:
        nonlocal n_losses, sample_seconds, samples
        loss = float(loss_sum) / n_losses if n_losses else math.nan  # the only sync
        loss_sum.zero_()
        n_losses = 0
        out = {"loss": loss}
        if step > 0 and not math.isfinite(loss):  # diverged: report NaN, no sampling
            return {**out, PRIMARY_METRIC: math.nan}
        t0 = time.perf_counter()
        samples = draw_samples(state, n_eval, eval_seed)
        sample_seconds += time.perf_counter() - t0
        out.update(
            evaluator(samples, metrics=("swd", "mmd", "energy") if final else REPORT_METRICS)
        )
        return out

    while True:
        final = step == cfg.n_steps
        if final or (step > 0 and step % cfg.report_every == 0):
            metrics = evaluate(step, final)
            if report is not None:
                report(step, metrics)  # may raise (pruning): let it propagate
            if final or not math.isfinite(metrics[PRIMARY_METRIC]):
                break
        t0 = time.perf_counter()
        loss_sum += train_step(state)
        n_losses += 1
        step += 1
        train_seconds += time.perf_counter() - t0

    if artifact_dir is not None and samples is not None:
        save_samples_png(samples, state.data, Path(artifact_dir) / "samples.png")
    return {
        **metrics,
        "steps": float(step),
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "total_seconds": time.perf_counter() - start,
    }


def save_samples_png(samples: torch.Tensor, data: Splits, path: Path) -> None:
    """Digits: a 10x10 grid of samples. 2-D toys: a scatter of samples over held-out data."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.detach().float().cpu().numpy()
    if data.image_shape is not None:
        h, w = data.image_shape
        tiles = np.pad(
            x[:100].reshape(10, 10, h, w), ((0, 0), (0, 0), (1, 1), (1, 1))
        )  # gray frame
        grid = tiles.transpose(0, 2, 1, 3).reshape(10 * (h + 2), 10 * (w + 2))
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
    else:
        ref = data.heldout.cpu().numpy()
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        ax.scatter(ref[:, 0], ref[:, 1], s=1, alpha=0.3, label="held-out")
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3, label="samples")
        ax.legend(markerscale=8)
        ax.set_aspect("equal")
    fig.savefig(path, dpi=100, bbox_inches="tight")


from .population import POPULATION  # noqa: E402  (it imports this module: keep it last)

train.population = POPULATION  # type: ignore[attr-defined]  # the population form (K trials)
