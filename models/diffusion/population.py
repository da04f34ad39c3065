"""The population form of the diffusion trainer: up to K trials of one structure as one model.

Members share everything that fixes shapes or code paths (``STRUCTURAL``: the data, the
schedule, the denoiser's architecture, the batch size, the parameterization, the sampler);
everything else is per member: ``lr``, ``weight_decay``, ``warmup_steps``, ``grad_clip``,
``ema_decay`` as ``[K]`` tensors (or per-member Python numbers for the learning-rate and EMA
warm-ups), and ``n_steps`` / ``report_every``, which only decide when a member reports and stops.

The K denoisers' weights are one ``[K, P]`` buffer (``flatten_parameters``'s layout, member by
member), run through the module with ``torch.func.functional_call`` under ``vmap``: one forward
and one backward per training step for everyone. Then, per member and on the device: gradient
clipping by the norm of the member's own row, AdamW (models/functional_optim.py, [K]
learning rates and weight decays, per-member step counts), the EMA with the member's own decay.
Sampling at report points is batched too: the members due a report run one vmapped sampler.

Exactness: every member draws from its own ``torch.Generator`` seeded as ``train`` seeds its
own (batch indices, t, eps, in that order and with those shapes, every step), its weights are
initialized as ``build`` does (``torch.manual_seed(seed)``, here inside ``fork_rng``), and the
sampler's noise comes from a fresh generator seeded ``seed + EVAL_SEED_OFFSET`` at each report,
as in ``draw_samples``. So a member's reports and result equal ``train``'s with the same seed up
to floating-point reassociation (float64: ~1e-12; tests/unit/models/test_diffusion_population.py).

Divergence: a member whose training loss is not finite fails at that step (``train`` would
report NaN at its next report point and stop); its update at that step and after is masked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ..functional_optim import adam_init, adam_reset, adam_step
from ..population import MemberEvent, PopulationForm
from .denoiser import Denoiser
from .sampling import _randn, eps_and_x0, training_target
from .schedule import make_schedule

if TYPE_CHECKING:
    from .train import Config

# train.py attaches POPULATION at its end (train.population), so this module takes what it
# needs from train.py when it runs, not when it is imported (either may be imported first).

# Keys whose values must be equal within a population. Data (dataset, sizes, seed, the
# evaluator's projections), the diffusion process (T, schedule; a per-member schedule would
# need [K, T] tables and K respacings), the network's shapes (width, depth, input embedding),
# the batch's shape, and the code paths (prediction, sampler and its step count).
STRUCTURAL = (
    "dataset", "n_train", "n_eval", "data_seed", "n_projections", "T", "schedule",
    "prediction", "width", "depth", "input_embedding", "batch_size", "sampler",
    "sampling_steps",
)  # fmt: skip


@dataclass
class _Member:
    cfg: Config
    seed: int
    generator: torch.Generator  # training noise, as State.generator
    artifact_dir: str | None
    start: float = field(default_factory=time.perf_counter)
    step: int = 0
    n_losses: int = 0
    train_seconds: float = 0.0
    sample_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    last_report: int = 0
    finished: bool = False  # done or failed: masked until remove


def _denoiser(cfg: Config, dim: int, image: bool) -> Denoiser:
    embedding = cfg.input_embedding
    if embedding == "auto":  # as build
        embedding = "none" if image else "sinusoidal"
    return Denoiser(dim, cfg.T, width=cfg.width, depth=cfg.depth, input_embedding=embedding)


class DiffusionPopulation:
    """Up to ``capacity`` diffusion trials with equal ``STRUCTURAL`` values, one step at a time."""

    def __init__(self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"population capacity must be >= 1, got {capacity}")
        from . import train as tr

        self._tr = tr
        self.capacity = capacity
        self.cfg = tr.Config.from_dict(config)
        self.device = torch.device(device)
        self.data, self.evaluator = tr.cached_evaluator(self.cfg, self.device)
        self.dtype = self.data.train.dtype
        self.schedule = make_schedule(self.cfg.schedule, self.cfg.T).to(self.device, self.dtype)
        image = self.data.image_shape is not None
        with torch.device("meta"):  # shapes and code only; no RNG drawn
            self.template = _denoiser(self.cfg, self.data.dim, image)
        named = list(self.template.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        K, P, B, D = capacity, sum(self.numels), self.cfg.batch_size, self.data.dim
        kw = {"device": self.device, "dtype": self.dtype}
        self.flat = torch.zeros(K, P, **kw)  # every member's weights, flatten_parameters' layout
        self.ema = torch.zeros(K, P, **kw)  # the weights that sample
        self.opt = adam_init([self.flat])
        self.weight_decay = torch.zeros(K, **kw)
        self.grad_clip = torch.zeros(K, **kw)
        self.loss_sum = torch.zeros(K, **kw)  # losses since the member's last report
        self.idx = torch.zeros(K, B, dtype=torch.long, device=self.device)
        self.t = torch.zeros(K, B, dtype=torch.long, device=self.device)
        self.eps = torch.zeros(K, B, D, **kw)
        self.members: list[_Member | None] = [None] * K
        self._structure = self._structural(self.cfg)

        def denoise(params: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor):
            return functional_call(self.template, params, (x, t))

        def loss(params: dict[str, torch.Tensor], xt, t, target) -> torch.Tensor:
            return F.mse_loss(denoise(params, xt, t), target)

        self._loss = vmap(loss)  # [K] losses
        self._denoise = denoise
        # on a CPU, sampling one member at a time without vmap is faster (its activations stay
        # in cache; K = 16 at the quick defaults: 5.6 s batched, 2.5 s one by one)
        self.batch_sampling = self.device.type != "cpu"
        self._denoise_shared_t = vmap(denoise, in_dims=(0, 0, None))  # sampler: t [1] shared

    # ------------------------------------------------------------------ membership

    @staticmethod
    def _structural(cfg: Config) -> tuple[Any, ...]:
        return tuple(getattr(cfg, k) for k in STRUCTURAL)

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        cfg = self._tr.Config.from_dict(config)
        if self._structural(cfg) != self._structure:
            diff = [
                f"{k}={getattr(cfg, k)!r} (population: {getattr(self.cfg, k)!r})"
                for k in STRUCTURAL
                if getattr(cfg, k) != getattr(self.cfg, k)
            ]
            raise ValueError(f"diffusion population: structural keys differ: {', '.join(diff)}")
        free = [i for i, m in enumerate(self.members) if m is None]
        if not free:
            raise ValueError(f"diffusion population: full ({self.capacity} members)")
        slot = free[0]
        # the weights exactly as build() draws them: the global RNG seeded with `seed`
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            model = _denoiser(cfg, self.data.dim, self.data.image_shape is not None)
        row = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        with torch.no_grad():
            self.flat[slot] = row.to(self.device, self.dtype)
            self.ema[slot] = self.flat[slot]
            adam_reset(self.opt, slot)
            self.weight_decay[slot] = cfg.weight_decay
            self.grad_clip[slot] = cfg.grad_clip
            self.loss_sum[slot] = 0
        generator = torch.Generator(self.device).manual_seed(seed)
        self.members[slot] = _Member(cfg, seed, generator, artifact_dir)
        return slot

    def remove(self, slot: int) -> None:
        if self.members[slot] is None:
            raise ValueError(f"diffusion population: slot {slot} is empty")
        self.members[slot] = None
        with torch.no_grad():  # keep the stacked tensors finite (a failed member may be NaN)
            self.flat[slot] = 0
            self.ema[slot] = 0

    def occupied(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m is not None]

    # ------------------------------------------------------------------ one step

    def advance(self) -> list[MemberEvent]:
        live = [(i, m) for i, m in enumerate(self.members) if m is not None and not m.finished]
        training = [i for i, m in live if m.step < m.cfg.n_steps]
        failed: dict[int, str] = {}
        if training:
            failed = self._train_step(training)
        reports: list[MemberEvent] = []
        ends: list[MemberEvent] = []
        due: list[int] = []
        for i, m in live:
            if i in failed:
                m.finished = True
                ends.append(MemberEvent(i, "failed", m.last_report, {"loss": math.nan}, failed[i]))
            elif m.step == m.cfg.n_steps or (m.step > 0 and m.step % m.cfg.report_every == 0):
                due.append(i)
        for i, metrics in zip(due, self._evaluate(due), strict=True):
            m = self.members[i]
            assert m is not None
            m.metrics, m.last_report = metrics, m.step
            reports.append(MemberEvent(i, "report", m.step, dict(metrics)))
            final = m.step == m.cfg.n_steps
            if final or not math.isfinite(metrics[self._tr.PRIMARY_METRIC]):
                m.finished = True
                result = {
                    **metrics,
                    "steps": float(m.step),
                    "train_seconds": m.train_seconds,
                    "sample_seconds": m.sample_seconds,
                    "total_seconds": time.perf_counter() - m.start,
                }
                if final and math.isfinite(metrics[self._tr.PRIMARY_METRIC]):
                    ends.append(MemberEvent(i, "done", m.step, result))
                else:  # train() stops here too, with NaN metrics
                    why = f"{self._tr.PRIMARY_METRIC} is {metrics[self._tr.PRIMARY_METRIC]} at step {m.step}"
                    ends.append(MemberEvent(i, "failed", m.step, result, why + " (diverged)"))
        ends.sort(key=lambda e: e.slot)
        return reports + ends

    def _params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[K', P] -> the module's parameters, each [K', *shape] (views)."""
        parts = flat.split(self.numels, dim=1)
        k = flat.shape[0]
        return {n: p.view(k, *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def _train_step(self, rows: list[int]) -> dict[int, str]:
        """train_step for the members in `rows`; returns {slot: reason} for those that diverged."""
        t0 = time.perf_counter()
        cfg, s, train_x = self.cfg, self.schedule, self.data.train
        members = [self.members[i] for i in rows]
        lrs = [0.0] * self.capacity
        ema_w = [0.0] * self.capacity
        on = [False] * self.capacity
        for i, m in zip(rows, members, strict=True):
            assert m is not None
            g = m.generator  # the order and shapes of train_step / diffusion_loss
            torch.randint(0, train_x.shape[0], (cfg.batch_size,), generator=g, out=self.idx[i])
            torch.randint(0, s.T, (cfg.batch_size,), generator=g, out=self.t[i])
            torch.randn((cfg.batch_size, self.data.dim), generator=g, out=self.eps[i])
            lrs[i] = self._tr.learning_rate(m.cfg, m.step)
            ema_w[i] = 1 - self._tr.ema_decay(m.cfg, m.step)
            on[i] = True
        hyper = torch.tensor([lrs, ema_w, on], dtype=torch.float64).to(self.device)
        lr, w, active = hyper[0], hyper[1].to(self.dtype), hyper[2].bool()

        x0, t, eps = train_x[self.idx], self.t, self.eps  # [K, B, D], [K, B], [K, B, D]
        xt = s.q_sample(x0, t, eps)
        target = training_target(
            cfg.prediction, x0, eps, s.sqrt_abar[t][..., None], s.sqrt_one_minus_abar[t][..., None]
        )
        flat = self.flat.detach().requires_grad_(True)
        losses = self._loss(self._params(flat), xt, t, target)  # [K]
        total = torch.where(active, losses, torch.zeros_like(losses)).sum()
        (grad,) = torch.autograd.grad(total, flat)
        with torch.no_grad():
            losses = losses.detach()
            finite = torch.isfinite(losses)
            step_on = active & finite  # a diverged member does not update
            clip = self.grad_clip
            scale = (clip / (grad.norm(dim=1) + 1e-6)).clamp(max=1.0)  # clip_grad_norm_
            grad.mul_(torch.where(clip > 0, scale, torch.ones_like(scale))[:, None])
            adam_step(
                [self.flat], [grad], self.opt, lr=lr, weight_decay=self.weight_decay,
                decoupled_weight_decay=True, mask=step_on,
            )  # fmt: skip
            ema = self.ema.lerp(self.flat, w[:, None])
            self.ema.copy_(torch.where(step_on[:, None], ema, self.ema))
            self.loss_sum.add_(torch.where(active, losses, torch.zeros_like(losses)))
            bad = (active & ~finite).tolist()  # the one host sync of a step
        failed: dict[int, str] = {}
        elapsed = time.perf_counter() - t0
        for i, m in zip(rows, members, strict=True):
            assert m is not None
            if bad[i]:
                value = float(losses[i])
                failed[i] = f"loss is {value} at step {m.step} (diverged)"
            m.step += 1
            m.n_losses += 1
            m.train_seconds += elapsed
        return failed

    # ------------------------------------------------------------------ reports

    def _evaluate(self, rows: list[int]) -> list[dict[str, float]]:
        """train()'s evaluate() for the members in `rows`; their sampling runs batched."""
        if not rows:
            return []
        sums = self.loss_sum.tolist()
        out: list[dict[str, float]] = []
        sampled: list[int] = []
        for i in rows:
            m = self.members[i]
            assert m is not None
            loss = sums[i] / m.n_losses if m.n_losses else math.nan
            self.loss_sum[i] = 0
            m.n_losses = 0
            out.append({"loss": loss})
            if m.step > 0 and not math.isfinite(loss):
                out[-1][self._tr.PRIMARY_METRIC] = math.nan
            else:
                sampled.append(i)
        if sampled:
            t0 = time.perf_counter()
            samples = self._sample(sampled)
            elapsed = time.perf_counter() - t0
            for j, i in enumerate(sampled):
                m = self.members[i]
                assert m is not None
                m.sample_seconds += elapsed
                final = m.step == m.cfg.n_steps
                metrics = ("swd", "mmd", "energy") if final else self._tr.REPORT_METRICS
                out[rows.index(i)].update(self.evaluator(samples[j], metrics=metrics))
                if final and m.artifact_dir is not None:
                    path = Path(m.artifact_dir) / "samples.png"
                    self._tr.save_samples_png(samples[j], self.data, path)
        return out

    @torch.no_grad()
    def _sample(self, rows: list[int]) -> torch.Tensor:
        """sampling.sample for the EMA weights of `rows` at once: [len(rows), n_eval, D]."""
        if not self.batch_sampling and len(rows) > 1:
            return torch.cat([self._sample([i]) for i in rows])
        cfg, schedule = self.cfg, self.schedule
        n, dim = self.data.heldout.shape[0], self.data.dim
        params = self._params(self.ema[torch.tensor(rows, device=self.device)])
        if len(rows) == 1:  # the module's own path (addmm, fused layer norm)
            one = {name: p[0] for name, p in params.items()}

            def model(_: Any, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self._denoise(one, x[0], t)[None]
        else:
            model = self._denoise_shared_t
        generators = []
        for i in rows:
            m = self.members[i]
            assert m is not None
            generators.append(
                torch.Generator(self.device).manual_seed(m.seed + self._tr.EVAL_SEED_OFFSET)
            )
        kept, short = schedule.respace(
            schedule.T if cfg.sampling_steps is None else cfg.sampling_steps
        )
        short = short.to(schedule.betas.device, schedule.betas.dtype)
        x = torch.stack([_randn((n, dim), g, schedule.betas) for g in generators])  # x_T
        for i in reversed(range(short.T)):
            i_t = torch.full((1,), i, dtype=torch.long, device=x.device)
            out = model(params, x, kept[i : i + 1])
            eps, x0 = eps_and_x0(cfg.prediction, out, x, short.abar[i], self.data.clip)
            if cfg.sampler == "ddpm":
                mean, var = short.q_posterior(x0, x, i_t)
                if i > 0:
                    noise = torch.stack([_randn((n, dim), g, x) for g in generators])
                    mean = mean + var.sqrt() * noise
                x = mean
            else:  # ddim, eta = 0
                abar_prev = short.abar_prev[i]
                x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
        return x


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> DiffusionPopulation:
    return DiffusionPopulation(config, capacity=capacity, device=device)


def member_bytes(config: Mapping[str, Any]) -> int:
    """A generous estimate of one member's device memory: weights, gradient, EMA and the two
    Adam moments (5 x P), the training step's activations and the sampler's batch."""
    from .train import Config

    cfg = Config.from_dict(config)
    dim = 64 if cfg.dataset == "digits" else 2
    n_eval = 599 if cfg.dataset == "digits" else cfg.n_eval
    with torch.device("meta"):
        n_params = sum(p.numel() for p in _denoiser(cfg, dim, cfg.dataset == "digits").parameters())
    itemsize = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    width = cfg.width * (cfg.depth + 2)
    activations = 8 * cfg.batch_size * width + 4 * n_eval * width  # forward + backward; sampler
    return itemsize * (5 * n_params + activations + 2 * n_eval * dim)


POPULATION = PopulationForm(structural=STRUCTURAL, make=make, member_bytes=member_bytes)
