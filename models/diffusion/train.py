"""Train a DDPM on a 2-D toy or 8x8 digits and judge its samples against held-out data: the
whole training math, written once, for one trial (`train`) and for a population of K trials
trained as one batched model (`DiffusionPopulation`; `train` is a population of one).

Loss (Ho et al. 2020, https://arxiv.org/abs/2006.11239, eq. 14, "L_simple"):
    E_{x0, eps, t uniform} || target - net(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2
with target eps, x0 or v (Salimans and Ho 2022). Linear or cosine schedule (Nichol and
Dhariwal 2021, https://arxiv.org/abs/2102.09672). AdamW (Loshchilov and Hutter 2019),
gradient clipping by the global norm, a linear warm-up then cosine decay of the learning rate,
an EMA of the weights that samples with DDPM (ancestral) or DDIM (Song et al. 2021,
https://arxiv.org/abs/2010.02502); see sampling.py, schedule.py, denoiser.py.

One training step for the K members of a row group, top to bottom (`_Rows.train_step`):
    idx, t, eps  <- each member's own generator, in train()'s order and shapes   [K, B], [K, B, D]
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps    (per-member [K, T] tables)   [K, B, D]
    loss_k = masked mean || target - denoise(params_k, x_t, t) ||^2    (vmap)    [K]
    grad = d sum_k loss_k / d params; zero on padded entries; clipped per row      [K, P]
    AdamW per row (each member's lr, weight decay, step count); EMA per row        [K, P]
One row (a lone trial) takes the same code without vmap.

Populations: members differ freely in PER_MEMBER keys (learning rate, schedule, sampler, ...),
and in PADDED keys (width, depth, batch size, T) by exact padding to their row group's largest
member (denoiser.py: zero rows and columns, masked LayerNorm, depth by masked bypass; masked
samples for smaller batches; [K, T] tables padded to the largest T). Only STRUCTURAL keys (the
data and the input embedding) and `bucket` (width and batch size by octave) split populations,
which bounds the padding's worst case. Inside a population, members are placed in row groups
by a cost model (a group's fixed cost against the padding a member adds): on an accelerator
one group takes everyone; on a CPU, where padded arithmetic costs its time, only members whose
padding is free share. Rows hold occupied places only: a member leaving compacts them, one
joining appends (re-padding when it is the largest), so a population of one costs what a lone
trial costs. Every member draws exactly its solo run's random numbers and its weights are drawn
at its own shape from its own seed, so a member equals its solo run up to rounding (float64:
1e-11..1e-15; tests/unit/models/test_diffusion_population.py). A member whose loss turns
non-finite, or whose evaluation or artifact raises, fails alone.

Entry point for the harness: `train(config, *, device, seed, report, artifact_dir)`.
Primary metric: `swd_ratio`, the sliced Wasserstein-2 distance of 5,000 samples to 5,000
held-out points over its noise floor (minimize; 1.0 = indistinguishable from data).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.optim.adamw import adamw

from ..config import config_from_mapping
from ..functional_optim import AdamState, adam_step
from ..population import MemberEvent, PopulationForm
from .data import DATASETS, Splits, load_splits
from .denoiser import (
    INPUT_EMBEDDINGS,
    N_FREQ,
    Denoiser,
    Padding,
    Params,
    Shape,
    denoise,
    pack,
    unpack,
)
from .metrics import Evaluator
from .sampling import PREDICTIONS, SAMPLERS, sample
from .schedule import SCHEDULES, Schedule, make_schedule

PRIMARY_METRIC = "swd_ratio"
REPORT_METRICS = ("swd",)  # cheap metrics at intermediate reports; the final step has all
N_FLOOR_DRAWS = 3
EVAL_SEED_OFFSET = 1_000_003  # eval sampling noise: fixed per run, independent of training noise
# A row group's fixed cost per step on a CPU, in the denoiser's multiply-adds (_flops), beyond
# what its members would cost alone. Measured here (one thread, float32): a lone step costs
# ~1.0 ms + 0.12 ms per million multiply-adds, a vmapped group ~2.8 ms + 0.17 ms per million
# (padded): batching saves nothing a padding could spend, so on a CPU only members whose
# padding is free (equal shapes) share a group. benchmarks/diffusion.py --population measures it.
CPU_GROUP_OVERHEAD = 0.0


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
        def bad(key: str, rule: str) -> ValueError:
            return ValueError(f"diffusion config: {key} {rule}, got {getattr(self, key)!r}")

        choices = {
            "dataset": DATASETS, "schedule": SCHEDULES, "prediction": PREDICTIONS,
            "sampler": SAMPLERS, "input_embedding": ("auto", *INPUT_EMBEDDINGS),
        }  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise bad(key, f"must be one of {list(allowed)}")
        minimum = {
            "T": 1, "width": 1, "depth": 0, "batch_size": 1, "n_steps": 0, "warmup_steps": 0,
            "n_train": 2, "n_eval": 2, "n_projections": 1, "report_every": 1,
        }  # fmt: skip
        for key, low in minimum.items():
            if getattr(self, key) < low:
                raise bad(key, f"must be >= {low}")
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


# How a population treats each Config field (tests/unit/models/test_diffusion_population.py
# fails when a field is in none or in two of these).
STRUCTURAL = ("dataset", "n_train", "n_eval", "data_seed", "n_projections", "input_embedding")
PADDED = ("width", "depth", "batch_size", "T")  # padded to the population's largest member
PER_MEMBER = (
    "schedule", "prediction", "lr", "weight_decay", "n_steps", "warmup_steps", "grad_clip",
    "ema_decay", "sampler", "sampling_steps", "report_every",
)  # fmt: skip


def bucket(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """Members share a population only within one bucket, which bounds the padding's worst case:
    widths by octave above 64 (<= 64, 65..128, 129..256, ...), batch sizes by octave above 128,
    depths in threes (1..3, 4..6, ...). T is padded freely (it only sizes [K, T] tables).
    An invalid config gets a bucket of its own (-1, -1, -1): routing never raises; the trial
    then fails alone when its population adds it, with the config's one-line error."""
    try:
        cfg = Config.from_dict(config)
    except ValueError:
        return -1, -1, -1
    return _octave(cfg.width, 64), _octave(cfg.batch_size, 128), (max(cfg.depth, 1) - 1) // 3


def _octave(n: int, floor: int) -> int:
    return max(0, math.ceil(math.log2(n / floor)))


def bucket_limits(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """The largest width, batch size and depth a member of config's bucket can be padded to."""
    w, b, d = (max(0, x) for x in bucket(config))
    return 64 * 2**w, 128 * 2**b, 3 * (d + 1)


# ----------------------------------------------------------------------------- data


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


def cached_evaluator(cfg: Config, device: torch.device) -> tuple[Splits, Evaluator]:
    """Splits and their Evaluator (noise floor: ~2 s for 5,000 points), built once per
    process for each (dataset, sizes, data_seed, device): every trial of a sweep reuses them."""
    return _cached(
        cfg.dataset, cfg.n_train, cfg.n_eval, cfg.data_seed, cfg.n_projections, str(device),
        torch.get_default_dtype(),
    )  # fmt: skip


def member_shape(cfg: Config, data: Splits) -> Shape:
    embedding = cfg.input_embedding
    if embedding == "auto":  # sinusoidal for 2-D toys, none for digits
        embedding = "none" if data.image_shape else "sinusoidal"
    return Shape(data.dim, cfg.width, cfg.depth, embedding)


# ----------------------------------------------------------------------------- per-step rules


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to 0 at n_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay(cfg: Config, step: int) -> float:
    """EMA decay with the usual warm-up (1 + n) / (10 + n), so early weights fade fast."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def target_coefficients(prediction: str, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(a [T], b [T]) with target = a_t eps + b_t x0: eps (1, 0), x0 (0, 1), or
    v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans and Ho 2022, https://arxiv.org/abs/2202.00512).
    The same floating-point products as the direct formulas (b = -sqrt(1 - abar) is exact)."""
    one, zero = torch.ones_like(schedule.abar), torch.zeros_like(schedule.abar)
    if prediction == "eps":
        return one, zero
    if prediction == "x0":
        return zero, one
    if prediction == "v":
        return schedule.sqrt_abar, -schedule.sqrt_one_minus_abar
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def clip_rows_(grad: torch.Tensor, max_norm: list[float]) -> None:
    """torch.nn.utils.clip_grad_norm_ for each row of grad [K, P]: scale by
    min(1, max_norm / (|row| + 1e-6)); a max_norm of 0 disables. On the device (no host sync)."""
    if all(c == max_norm[0] for c in max_norm):  # one value for every row (a lone trial)
        if max_norm[0] > 0:
            grad.mul_((max_norm[0] / (grad.norm(dim=1, keepdim=True) + 1e-6)).clamp_(max=1.0))
        return
    c = torch.tensor(max_norm, dtype=grad.dtype).to(grad.device)  # [K]
    scale = (c / (grad.norm(dim=1) + 1e-6)).clamp_(max=1.0)  # [K]
    grad.mul_(torch.where(c > 0, scale, torch.ones_like(scale))[:, None])


def adamw_rows_(
    flat: torch.Tensor, grad: torch.Tensor, state: AdamState, rows: list[int], lr: list[float],
    weight_decay: list[float], per_row: bool | None = None,
) -> None:
    """AdamW (Loshchilov and Hutter 2019, https://arxiv.org/abs/1711.05101) on the given rows
    of flat [K, P], each with its own lr, weight decay and step count (state.step [K]).

    On a CPU (and for one row anywhere) each row takes torch's fused AdamW kernel, the kernel
    of torch.optim.AdamW(fused=True): one pass over the row, and the same arithmetic for a
    member alone and in a population. On an accelerator, K rows take models/functional_optim's
    adam_step with [K] hyperparameters: one set of kernels for all rows instead of K.
    `per_row` forces one way (tests check both against torch.optim.AdamW)."""
    if per_row is None:
        per_row = flat.device.type == "cpu" or len(rows) == 1
    if per_row:
        for i in rows:
            adamw(
                [flat[i]], [grad[i]], [state.exp_avg[0][i]], [state.exp_avg_sq[0][i]], [],
                [state.step[i]], fused=True, amsgrad=False, beta1=0.9, beta2=0.999, lr=lr[i],
                weight_decay=weight_decay[i], eps=1e-8, maximize=False,
            )  # fmt: skip
        return
    on = torch.zeros(flat.shape[0], dtype=torch.bool)
    on[rows] = True
    hyper = torch.tensor([lr, weight_decay], dtype=torch.float64).to(flat.device)
    adam_step(
        [flat], [grad], state, lr=hyper[0], weight_decay=hyper[1].to(flat.dtype),
        decoupled_weight_decay=True, mask=None if len(rows) == flat.shape[0] else on.to(flat.device),
    )  # fmt: skip


# ----------------------------------------------------------------------------- population


@dataclass
class _Member:
    """One trial: its config, its random stream, its own shapes, and its bookkeeping."""

    slot: int
    cfg: Config
    seed: int
    shape: Shape  # its own denoiser shape (the population's may be padded wider / deeper)
    schedule: Schedule  # its own schedule, in the population's dtype
    generator: torch.Generator  # training noise: batch indices, t, eps
    artifact_dir: str | None
    init: Params  # its initial weights at its own shape (consumed when it joins the rows)
    start: float = field(default_factory=time.perf_counter)
    step: int = 0
    n_losses: int = 0
    train_seconds: float = 0.0
    sample_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    last_report: int = 0
    finished: bool = False  # done or failed: masked until remove
    error: BaseException | None = None  # what made it fail (train() re-raises it)


class _Rows:
    """Members trained as one padded batch: their weights are rows of flat [K, P] in one
    padded shape (the largest width, depth, batch and T among them). Rows = members, in join
    order; `layout` re-packs them whenever one joins or leaves."""

    def __init__(self, data: Splits, embedding: str, device: torch.device) -> None:
        self.data, self.embedding, self.device = data, embedding, device
        self.dtype = data.train.dtype
        self.members: list[_Member] = []
        self.updating = False
        self.layout([])

    def layout_from(self, other: _Rows, m: _Member) -> None:
        """Take member m, with its weights, EMA, Adam state and running loss, from `other`."""
        keys = ("members", "shape", "names", "shapes", "numels", "flat", "ema", "opt", "loss_sum")
        self.__dict__.update({k: other.__dict__[k] for k in keys})
        self.layout([m])  # re-packs m's row of `other` into m's own shape

    def _row_params(self, flat_row: torch.Tensor) -> Params:
        """[P] -> the padded denoiser's parameters (views)."""
        parts = flat_row.split(self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def _own(self, buf: torch.Tensor, row: int, m: _Member) -> Params:
        """Member m's parameters at its own shape, out of row `row` of buf [K, P] (copies)."""
        return unpack(self._row_params(buf[row]), self.shape, m.shape)

    def layout(self, members: list[_Member]) -> None:
        """Rebuild the rows for `members` (kept in order, newcomers appended): the padded shape
        (the largest width, depth, batch and T among them), every member's weights, EMA and Adam
        moments re-packed into it, and the per-member tables of one training step."""
        old = {id(m): i for i, m in enumerate(self.members)}
        dim = self.data.dim
        shape = padded_shape([m.shape for m in members], dim, self.embedding)
        width = shape.width
        rows: dict[str, list[torch.Tensor]] = {"flat": [], "ema": [], "m": [], "v": []}
        for m in members:
            if id(m) in old:
                i = old[id(m)]
                bufs = {"flat": self.flat, "ema": self.ema, "m": self.opt.exp_avg[0],
                        "v": self.opt.exp_avg_sq[0]}  # fmt: skip
                own = {k: self._own(b, i, m) for k, b in bufs.items()}
            else:
                zeros = {k: torch.zeros_like(v) for k, v in m.init.items()}
                own = {"flat": m.init, "ema": m.init, "m": zeros, "v": zeros}
            for k, params in own.items():
                rows[k].append(torch.cat([p.reshape(-1) for p in pack(params, m.shape, shape).values()]))
        steps = [float(self.opt.step[old[id(m)]]) if id(m) in old else 0.0 for m in members]
        for m in members:
            m.init = {}  # consumed
        self.members, self.shape = members, shape
        named = shape.param_shapes()
        self.names, self.shapes = list(named), list(named.values())
        self.numels = [math.prod(s) for s in self.shapes]
        kw = {"device": self.device, "dtype": self.dtype}
        k, n_params = len(members), sum(self.numels)

        def stack(key: str) -> torch.Tensor:
            return torch.stack(rows[key]) if rows[key] else torch.zeros(0, n_params, **kw)

        self.flat, self.ema = stack("flat"), stack("ema")
        self.opt = AdamState([stack("m")], [stack("v")], torch.tensor(steps, dtype=torch.float64, device=self.device))
        loss_sum = torch.zeros(k, **kw)  # losses since each member's last report
        for j, m in enumerate(members):
            if id(m) in old:
                loss_sum[j] = self.loss_sum[old[id(m)]]
        self.loss_sum = loss_sum
        # padding: only where some member is narrower / shallower / smaller than the largest
        self.padded = any(m.shape != shape for m in members)
        self.grad_mask = None
        self.pad = None
        if self.padded:
            ones = [{n: torch.ones_like(p) for n, p in self._own_zeros(m).items()} for m in members]
            self.grad_mask = torch.stack([
                torch.cat([p.reshape(-1) for p in pack(o, m.shape, shape).values()])
                for o, m in zip(ones, members, strict=True)
            ])  # fmt: skip
            units = torch.arange(width, device=self.device)
            self.pad = Padding(
                torch.tensor([float(m.shape.width) for m in members], **kw),
                torch.stack([(units < m.shape.width).to(self.dtype) for m in members]),
                torch.tensor([m.shape.depth for m in members], device=self.device),
            )
        self.T = max((m.cfg.T for m in members), default=1)  # tables padded to the largest T
        self.batch = max((m.cfg.batch_size for m in members), default=1)

        def table(values: Callable[[_Member], torch.Tensor]) -> torch.Tensor:  # [K, T]
            out = torch.zeros(k, self.T, **kw)
            for i, m in enumerate(members):
                out[i, : m.cfg.T] = values(m)
            return out

        self.coef = torch.stack([  # [K, T, 4]: what one training step looks up at t
            table(lambda m: m.schedule.sqrt_abar), table(lambda m: m.schedule.sqrt_one_minus_abar),
            table(lambda m: target_coefficients(m.cfg.prediction, m.schedule)[0]),
            table(lambda m: target_coefficients(m.cfg.prediction, m.schedule)[1]),
        ], dim=-1)  # fmt: skip
        self._row_ids = torch.arange(k, device=self.device)[:, None]  # [K, 1]
        self.t_scale = torch.tensor([1000.0 / m.cfg.T for m in members], **kw)
        self.sample_mask = None
        if any(m.cfg.batch_size != self.batch for m in members):
            self.sample_mask = torch.stack([
                (torch.arange(self.batch, device=self.device) < m.cfg.batch_size).to(self.dtype)
                for m in members
            ])  # fmt: skip
        self.idx = torch.zeros(k, self.batch, dtype=torch.long, device=self.device)
        self.t = torch.zeros(k, self.batch, dtype=torch.long, device=self.device)
        self.eps = torch.zeros(k, self.batch, dim, **kw)
        dummy = torch.zeros(k, **kw)
        pad = self.pad or Padding(dummy, dummy, dummy)
        smask = dummy if self.sample_mask is None else self.sample_mask
        self._extras = (self.t_scale, pad.width, pad.width_mask, pad.depth, smask)  # each [K, ...]
        self._loss = vmap(self._member_loss) if k > 1 else None
        # the parameters as leaves that are views of the rows (flat [K, P]), and their
        # gradients views of one [K, P] buffer: backward writes the rows' gradients in place,
        # and clipping, AdamW and the EMA then run on whole rows (a lone trial: [P] leaves)
        self.grad = torch.zeros_like(self.flat)
        self._leaves: Params = {}
        offset = 0
        for name, size, n in zip(self.names, self.shapes, self.numels, strict=True):
            leaf = torch.nn.Parameter(torch.empty(0, device=self.device, dtype=self.dtype))
            leaf.data = _rows(self.flat, offset, size)
            leaf.grad = _rows(self.grad, offset, size)
            self._leaves[name] = leaf
            offset += n
        self._extras_one = tuple(e[0] for e in self._extras) if k == 1 else ()

    def _own_zeros(self, m: _Member) -> Params:
        return {n: torch.zeros(s, device=self.device, dtype=self.dtype)
                for n, s in m.shape.param_shapes().items()}  # fmt: skip

    # ------------------------------------------------------------------ one step

    def _member_loss(
        self, p: Params, xt: torch.Tensor, t: torch.Tensor, target: torch.Tensor,
        t_scale: torch.Tensor, width: torch.Tensor, width_mask: torch.Tensor, depth: torch.Tensor,
        sample_mask: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """L_simple of ONE member (vmapped over the rows): xt, target [B, D], t [B] -> []. With
        padding, its own units (width, width_mask, depth) and samples (sample_mask [B]) only."""
        pad = None if self.pad is None else Padding(width, width_mask, depth)
        pred = denoise(p, xt, t, shape=self.shape, T=self.T, t_scale=t_scale, pad=pad)  # [B, D]
        if self.sample_mask is None:
            return F.mse_loss(pred, target)
        per_sample = (pred - target).square().sum(-1)  # [B]
        return (per_sample * sample_mask).sum() / (sample_mask.sum() * pred.shape[-1])

    def training(self) -> list[int]:
        """The rows of the members still training."""
        return [i for i, m in enumerate(self.members) if not m.finished and m.step < m.cfg.n_steps]

    def train_step(self, rows: list[int]) -> None:
        """One optimizer step for the members in `rows` (the others keep their state)."""
        t0 = time.perf_counter()
        train_x, dim, k = self.data.train, self.data.dim, len(self.members)
        lr, weight_decay, ema_w = [0.0] * k, [0.0] * k, [0.0] * k
        for i in rows:  # each member's random numbers, in train()'s order and shapes
            m = self.members[i]
            g, b = m.generator, m.cfg.batch_size
            torch.randint(0, train_x.shape[0], (b,), generator=g, out=self.idx[i, :b])
            torch.randint(0, m.cfg.T, (b,), generator=g, out=self.t[i, :b])
            torch.randn((b, dim), generator=g, out=self.eps[i, :b])
            lr[i], weight_decay[i] = learning_rate(m.cfg, m.step), m.cfg.weight_decay
            ema_w[i] = 1 - ema_decay(m.cfg, m.step)

        x0, t, eps = train_x[self.idx], self.t, self.eps  # [K, B, D], [K, B], [K, B, D]
        c = self.coef[self._row_ids, t]  # [K, B, 4]: each row's coefficients at its t
        xt = c[..., 0:1] * x0 + c[..., 1:2] * eps  # DDPM eq. 4: sqrt(abar) x0 + sqrt(1-abar) eps
        target = c[..., 2:3] * eps + c[..., 3:4] * x0  # eps, x0 or v (target_coefficients)
        self.grad.zero_()  # not set_to_none: the leaves' gradients are views of it
        if self._loss is None:  # one row: the plain call, no vmap
            loss = self._member_loss(self._leaves, xt[0], t[0], target[0], *self._extras_one)
            loss.backward()
            losses = loss.detach().unsqueeze(0)  # [1]
        else:
            losses = self._loss(self._leaves, xt, t, target, *self._extras)  # [K]
            with warnings.catch_warnings():  # the leaves are strided views of the rows
                warnings.filterwarnings("ignore", "grad and param do not obey the gradient layout")
                losses.sum().backward()  # rows are independent: each gets its member's gradient
            losses = losses.detach()
        grad = self.grad  # [K, P]
        self.updating = True  # from here on an exception leaves the rows half updated
        with torch.no_grad():
            if self.grad_mask is not None:
                grad.mul_(self.grad_mask)  # padded entries stay exact zeros
            clip_rows_(grad, [m.cfg.grad_clip for m in self.members])
            adamw_rows_(self.flat, grad, self.opt, rows, lr, weight_decay)
            if k == 1:
                self.ema.lerp_(self.flat, ema_w[0])
            else:
                self.ema.lerp_(self.flat, torch.tensor(ema_w, dtype=self.dtype).to(self.device)[:, None])
            if len(rows) == k:
                self.loss_sum.add_(losses)
            else:
                on = torch.tensor(rows, device=self.device)
                self.loss_sum.index_add_(0, on, losses[on])
        self.updating = False
        share = (time.perf_counter() - t0) / len(rows)  # a member's share of the batched step
        for i in rows:
            m = self.members[i]
            m.step += 1
            m.n_losses += 1
            m.train_seconds += share

    def take_loss(self, m: _Member) -> float:
        """m's mean training loss since its last report (NaN before any step); resets it."""
        i = self.members.index(m)
        loss = float(self.loss_sum[i]) / m.n_losses if m.n_losses else math.nan
        self.loss_sum[i] = 0
        m.n_losses = 0
        return loss

    def own(self, m: _Member, *, ema: bool = False) -> Params:
        """m's weights (or their EMA) at its own shape (copies)."""
        return self._own(self.ema if ema else self.flat, self.members.index(m), m)

    def cost(self, extra: _Member | None = None) -> float:
        """The padded multiply-adds of one step (with `extra` joining)."""
        members = self.members + ([] if extra is None else [extra])
        if not members:
            return 0.0
        shape = padded_shape([m.shape for m in members], self.data.dim, self.embedding)
        batch, T = max(m.cfg.batch_size for m in members), max(m.cfg.T for m in members)
        return len(members) * _flops(shape, batch, T)

    def waste(self) -> float:
        """Compute spent on padding: the padded multiply-adds over the members' own (1 = none)."""
        own = sum(_flops(m.shape, m.cfg.batch_size, m.cfg.T) for m in self.members)
        return self.cost() / own if own else 1.0


def padded_shape(shapes: list[Shape], dim: int, embedding: str) -> Shape:
    """The smallest shape that holds every one of `shapes`."""
    width = max((s.width for s in shapes), default=1)
    return Shape(dim, width, max((s.depth for s in shapes), default=0), embedding)


def default_group_overhead(device: torch.device) -> float:
    """CPU_GROUP_OVERHEAD on a CPU; unbounded on an accelerator, where a step's small kernels
    cost their launches, not their arithmetic (one row group takes everyone)."""
    return CPU_GROUP_OVERHEAD if device.type == "cpu" else math.inf


class DiffusionPopulation:
    """Up to ``capacity`` diffusion trials of one STRUCTURAL signature, one step at a time
    (models/population.py's protocol); slots are the stable names the harness knows them by.

    Members are placed in row groups (`_Rows`, each one padded batch) by a cost model: a
    group's step costs `group_overhead` plus its padded multiply-adds; a newcomer joins the
    group that it makes the least dearer, or opens its own when that is cheaper. On a CPU
    (CPU_GROUP_OVERHEAD, measured) only members whose padding is free share a group; on an
    accelerator the overhead is unbounded: one group takes everyone."""

    def __init__(
        self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu",
        group_overhead: float | None = None,
    ) -> None:  # fmt: skip
        if capacity < 1:
            raise ValueError(f"population capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.cfg = Config.from_dict(config)
        self.device = torch.device(device)
        self.data, self.evaluator = cached_evaluator(self.cfg, self.device)
        self.dtype = self.data.train.dtype
        self.embedding = member_shape(self.cfg, self.data).input_embedding
        self.group_overhead = (
            default_group_overhead(self.device) if group_overhead is None else group_overhead
        )
        self.groups: list[_Rows] = []

    @property
    def members(self) -> list[_Member]:
        return [m for g in self.groups for m in g.members]

    # ------------------------------------------------------------------ membership

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        cfg = Config.from_dict(config)
        differ = [k for k in STRUCTURAL if getattr(cfg, k) != getattr(self.cfg, k)]
        if differ:
            diff = [f"{k}={getattr(cfg, k)!r} (population: {getattr(self.cfg, k)!r})" for k in differ]
            raise ValueError(f"diffusion population: structural keys differ: {', '.join(diff)}")
        members = self.members
        if len(members) >= self.capacity:
            raise ValueError(f"diffusion population: full ({self.capacity} members)")
        used = {m.slot for m in members}
        slot = min(s for s in range(self.capacity) if s not in used)
        shape = member_shape(cfg, self.data)
        # the weights at the member's own shape, from the global RNG seeded with its seed (as
        # every earlier version of this trainer drew them), without touching the caller's RNG
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            net = Denoiser(shape.dim, cfg.T, shape.width, shape.depth, shape.input_embedding)
        init = {k: v.detach().to(self.device, self.dtype) for k, v in net.named_parameters()}
        member = _Member(
            slot, cfg, seed, shape, make_schedule(cfg.schedule, cfg.T).to(self.device, self.dtype),
            torch.Generator(self.device).manual_seed(seed), artifact_dir, init,
        )  # fmt: skip
        alone = self.group_overhead + _flops(shape, cfg.batch_size, cfg.T)
        extra = [(g.cost(member) - g.cost(), i) for i, g in enumerate(self.groups)]
        if extra and min(extra)[0] <= alone:
            group = self.groups[min(extra)[1]]
        else:
            group = _Rows(self.data, self.embedding, self.device)
            self.groups.append(group)
        group.layout([*group.members, member])
        return slot

    def remove(self, slot: int) -> None:
        group, m = self._find(slot)
        group.layout([x for x in group.members if x is not m])
        if not group.members:
            self.groups.remove(group)

    def occupied(self) -> list[int]:
        return sorted(m.slot for m in self.members)

    def _find(self, slot: int) -> tuple[_Rows, _Member]:
        for g in self.groups:
            for m in g.members:
                if m.slot == slot:
                    return g, m
        raise ValueError(f"diffusion population: slot {slot} is empty")

    def weights(self, slot: int, *, ema: bool = False) -> Params:
        """The weights (or their EMA) of the member in `slot`, at its own shape (copies)."""
        group, m = self._find(slot)
        return group.own(m, ema=ema)

    def train_step(self) -> None:
        """One optimizer step for every member still training (no reports)."""
        for g in self.groups:
            rows = g.training()
            if rows:
                g.train_step(rows)

    def waste(self) -> float:
        """Compute spent on padding over all groups (1.0 = none)."""
        own = sum(_flops(m.shape, m.cfg.batch_size, m.cfg.T) for m in self.members)
        return sum(g.cost() for g in self.groups) / own if own else 1.0

    # ------------------------------------------------------------------ reports

    def advance(self) -> list[MemberEvent]:
        """One training step for every member still training, then the reports due (slot
        order), then the members that finished or failed (models/population.py)."""
        live = [m for m in self.members if not m.finished]
        ends: list[MemberEvent] = []
        for g in list(self.groups):
            rows = g.training()
            if rows:
                ends.extend(self._step_isolated(g, rows))
        reports: list[MemberEvent] = []
        for m in live:
            due = m.step == m.cfg.n_steps or (m.step > 0 and m.step % m.cfg.report_every == 0)
            if m.finished or not due:
                continue
            try:
                metrics = self._evaluate(m)
            except Exception as exc:  # its sampling, metrics or artifact: it fails alone
                ends.append(self._fail(m, exc))
                continue
            m.metrics, m.last_report = metrics, m.step
            reports.append(MemberEvent(m.slot, "report", m.step, dict(metrics)))
            final = m.step == m.cfg.n_steps
            primary = metrics[PRIMARY_METRIC]
            if final or not math.isfinite(primary):
                m.finished = True
                result = {
                    **metrics, "steps": float(m.step), "train_seconds": m.train_seconds,
                    "sample_seconds": m.sample_seconds,
                    "total_seconds": time.perf_counter() - m.start,
                }  # fmt: skip
                if math.isfinite(primary):
                    ends.append(MemberEvent(m.slot, "done", m.step, result))
                else:  # train() stops here too, with NaN metrics
                    why = f"{PRIMARY_METRIC} is {primary} at step {m.step} (diverged)"
                    ends.append(MemberEvent(m.slot, "failed", m.step, result, why))
        return sorted(reports, key=lambda e: e.slot) + sorted(ends, key=lambda e: e.slot)

    def _step_isolated(self, g: _Rows, rows: list[int]) -> list[MemberEvent]:
        """g.train_step(rows); when it raises before any update, the group is split into one
        group per member, each member's generator rewound, and each retried alone: the ones
        that raise again fail, the others take their step (with the numbers they drew)."""
        states = [g.members[i].generator.get_state() for i in rows] if len(g.members) > 1 else []
        try:
            g.train_step(rows)
            return []
        except Exception as exc:
            if not states or g.updating:  # one member, or state half updated: all its rows fail
                return [self._fail(g.members[i], exc) for i in rows]
        members = g.members
        for i, state in zip(rows, states, strict=True):
            members[i].generator.set_state(state)
        self.groups.remove(g)
        ends = []
        for m in members:
            alone = _Rows(self.data, self.embedding, self.device)
            self.groups.append(alone)
            try:
                alone.layout_from(g, m)
                if not m.finished and m.step < m.cfg.n_steps:
                    alone.train_step([0])
            except Exception as exc:
                alone.members = [m]  # kept (finished) until the harness removes it
                ends.append(self._fail(m, exc))
        return ends

    def _fail(self, m: _Member, exc: BaseException) -> MemberEvent:
        m.finished, m.error = True, exc
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        return MemberEvent(m.slot, "failed", m.last_report, {"loss": math.nan}, reason)

    def _evaluate(self, m: _Member) -> dict[str, float]:
        """The mean training loss since m's last report and its samples' metrics (all of
        them at its last step), as train() reports them."""
        group, _ = self._find(m.slot)
        out = {"loss": group.take_loss(m)}
        if m.step > 0 and not math.isfinite(out["loss"]):  # diverged: report NaN, no sampling
            return {**out, PRIMARY_METRIC: math.nan}
        t0 = time.perf_counter()
        samples = self.samples(m.slot)
        m.sample_seconds += time.perf_counter() - t0
        final = m.step == m.cfg.n_steps
        out.update(self.evaluator(samples, metrics=("swd", "mmd", "energy") if final else REPORT_METRICS))
        if final and m.artifact_dir is not None:
            save_samples_png(samples, self.data, Path(m.artifact_dir) / "samples.png")
        return out

    @torch.no_grad()
    def samples(self, slot: int, n: int | None = None, seed: int | None = None) -> torch.Tensor:
        """n samples [n, D] (default: as many as held-out points) from the EMA weights of the
        member in `slot`, at its own shape, with its sampler; noise seeded by `seed` (default
        its seed + EVAL_SEED_OFFSET: the same noise at every report)."""
        group, m = self._find(slot)
        cfg, own = m.cfg, group.own(m, ema=True)

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return denoise(own, x, t, shape=m.shape, T=cfg.T, t_scale=1000.0 / cfg.T)

        seed = m.seed + EVAL_SEED_OFFSET if seed is None else seed
        return sample(
            model, m.schedule, self.data.heldout.shape[0] if n is None else n, self.data.dim,
            sampler=cfg.sampler, steps=cfg.sampling_steps, prediction=cfg.prediction,
            clip=self.data.clip, generator=torch.Generator(self.device).manual_seed(seed),
        )  # fmt: skip


def _rows(buf: torch.Tensor, offset: int, size: tuple[int, ...]) -> torch.Tensor:
    """One parameter's entries in every row of buf [K, P] as a view [K, *size] ([*size] for
    one row)."""
    rows = buf[:, offset : offset + math.prod(size)]
    return rows[0].view(size) if buf.shape[0] == 1 else rows.view(buf.shape[0], *size)


def _flops(shape: Shape, batch: int, T: int) -> int:
    """Multiply-adds of one forward pass of the denoiser on a batch (time rows: min(batch, T))."""
    w, d = shape.width, shape.depth
    rows_t = T if batch > T else batch
    return batch * (shape.in_features * w + 2 * d * w * w + w * shape.dim) + rows_t * (
        2 * N_FREQ * w + w * w + (d + 1) * w * w
    )


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> DiffusionPopulation:
    return DiffusionPopulation(config, capacity=capacity, device=device)


def member_bytes(config: Mapping[str, Any]) -> int:
    """A generous estimate of one member's device memory in the worst case its bucket allows
    (padded to the bucket's largest width, batch and depth): weights, gradient, gradient mask,
    EMA and the two Adam moments (6 x P), the step's activations and the sampler's batch."""
    cfg = Config.from_dict(config)
    width, batch, depth = bucket_limits(config)
    dim = 64 if cfg.dataset == "digits" else 2
    n_eval = 599 if cfg.dataset == "digits" else cfg.n_eval
    embedding = cfg.input_embedding
    if embedding == "auto":
        embedding = "none" if cfg.dataset == "digits" else "sinusoidal"
    shape = Shape(dim, width, depth, embedding)
    n_params = sum(math.prod(s) for s in shape.param_shapes().values())
    itemsize = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    units = width * (depth + 2)
    activations = (8 * batch + 4 * n_eval) * units  # the step; the sampler
    return itemsize * (6 * n_params + activations + 2 * n_eval * dim + 4 * cfg.T)


# ----------------------------------------------------------------------------- entry point


def train(
    config: Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    report: Callable[[int, dict[str, float]], None] | None = None,
    artifact_dir: str | None = None,
) -> dict[str, float]:
    """Train for n_steps as a population of one; report loss and `swd`/`swd_ratio` every
    report_every steps and all metrics at the last step; return the final metrics (NaN
    metrics when the loss diverged, as reported)."""
    pop = DiffusionPopulation(config, capacity=1, device=device)
    pop.add(config, seed, artifact_dir)
    member = pop.members[0]
    while True:
        for ev in pop.advance():
            if ev.kind == "report":
                if report is not None:
                    report(ev.step, ev.metrics)  # may raise (pruning): let it propagate
            elif member.error is not None:
                raise member.error
            else:
                return ev.metrics


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



train.population = PopulationForm(  # type: ignore[attr-defined]  # the population form (K trials)
    structural=STRUCTURAL, make=make, member_bytes=member_bytes, per_member=PER_MEMBER,
    padded=PADDED, bucket=bucket,
)
