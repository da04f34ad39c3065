"""Samplers: ancestral DDPM and deterministic DDIM, both on any subsequence of the T steps.

- DDPM ancestral step (Ho et al. 2020, https://arxiv.org/abs/2006.11239, Algorithm 2, in
  its x0 form): x0_hat from the model, then x_{t-1} ~ q(x_{t-1} | x_t, x0_hat), variance
  beta_tilde_t, no noise at the last step. With fewer than T steps the chain runs on the
  respaced schedule (Nichol and Dhariwal 2021, https://arxiv.org/abs/2102.09672, section 4).
- DDIM, eta = 0 (Song et al. 2021, https://arxiv.org/abs/2010.02502, eq. 12):
  x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps_hat.

A `model(x [B, D], t [1] long) -> [B, D]` predicts eps, x0 or v (`prediction`); t is the
original step index 0..T-1, shared by the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import Schedule

SAMPLERS = ("ddpm", "ddim")
PREDICTIONS = ("eps", "x0", "v")
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def training_target(
    prediction: str, x0: torch.Tensor, eps: torch.Tensor, sqrt_abar: torch.Tensor,
    sqrt_one_minus_abar: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """What the network regresses on: eps (DDPM), x0, or v = sqrt(abar) eps - sqrt(1-abar) x0
    (Salimans and Ho 2022, https://arxiv.org/abs/2202.00512). Coefficients [B, 1]."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return sqrt_abar * eps - sqrt_one_minus_abar * x0
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def eps_and_x0(
    prediction: str, out: torch.Tensor, xt: torch.Tensor, abar: torch.Tensor,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Both eps_hat and x0_hat from the model output, via x_t = sqrt(abar) x0 + sqrt(1-abar) eps.

    `clip` clips x0_hat to [-clip, clip] and recomputes eps_hat from it (images only).
    """
    sa, s1a = abar.sqrt(), (1 - abar).sqrt()
    if prediction == "eps":
        eps, x0 = out, (xt - s1a * out) / sa
    elif prediction == "x0":
        eps, x0 = (xt - sa * out) / s1a, out
    elif prediction == "v":
        eps, x0 = s1a * xt + sa * out, sa * xt - s1a * out
    else:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (xt - sa * x0) / s1a
    return eps, x0


@torch.no_grad()
def sample(
    model: ModelFn,
    schedule: Schedule,
    n: int,
    dim: int,
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    prediction: str = "eps",
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw n samples [n, dim] with `steps` (default T) network evaluations.

    `schedule` is the training schedule (any device / dtype); the chain runs in its dtype.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    kept, short = schedule.respace(schedule.T if steps is None else steps)
    short = short.to(schedule.betas.device, schedule.betas.dtype)
    x = _randn((n, dim), generator, schedule.betas)  # x_T [n, dim]
    for i in reversed(range(short.T)):
        i_t = torch.full((1,), i, dtype=torch.long, device=x.device)  # step of the short chain
        abar = short.abar[i]
        eps, x0 = eps_and_x0(prediction, model(x, kept[i : i + 1]), x, abar, clip)
        if sampler == "ddpm":
            mean, var = short.q_posterior(x0, x, i_t)
            if i > 0:
                mean = mean + var.sqrt() * _randn(x.shape, generator, x)
            x = mean
        else:  # ddim, eta = 0
            abar_prev = short.abar_prev[i]
            x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    return x


def _randn(
    shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Standard normal noise on like's device and dtype, drawn in float32 (on a CPU a
    float64 draw is ~10x slower and adds nothing at these sample sizes)."""
    z = torch.randn(shape, generator=generator, device=like.device, dtype=torch.float32)
    return z.to(like.dtype)
