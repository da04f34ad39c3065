"""Noise schedules, forward noising and the Gaussian posterior q(x_{t-1} | x_t, x_0).

Papers:
- DDPM, Ho et al. 2020, https://arxiv.org/abs/2006.11239 (eqs. 4, 6, 7)
- Improved DDPM, Nichol and Dhariwal 2021, https://arxiv.org/abs/2102.09672
  (cosine schedule, eq. 17; respacing for fewer sampling steps, section 4)

Indexing: the code's t = 0..T-1 is the paper's t = 1..T, so
abar[t] = prod_{s <= t} (1 - beta[s]) and abar_prev[0] = 1 (the paper's abar_0).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")
MAX_BETA = 0.999


def linear_betas(T: int) -> torch.Tensor:
    """DDPM's linear schedule, 1e-4 .. 0.02 at T = 1000, scaled by 1000 / T for other T
    (improved-diffusion's `get_named_beta_schedule`), so abar_T stays about the same. [T]"""
    scale = 1000.0 / T
    betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_betas(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol and Dhariwal's cosine schedule (eq. 17):
    abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2),
    beta_i = min(1 - abar(i + 1) / abar(i), 0.999). [T]"""

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), MAX_BETA) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


class Schedule:
    """All per-step coefficients of one beta schedule, as [T] tensors on one device."""

    def __init__(self, betas: torch.Tensor) -> None:
        betas = betas.to(torch.float64)  # coefficients are derived in float64
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.T = int(betas.shape[0])
        self.betas = betas
        self.alphas = 1 - betas
        self.abar = abar
        self.abar_prev = abar_prev
        self.sqrt_abar = abar.sqrt()
        self.sqrt_one_minus_abar = (1 - abar).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, var)  (DDPM eqs. 6, 7)
        self.posterior_var = betas * (1 - abar_prev) / (1 - abar)
        self.posterior_coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
        self.posterior_coef_xt = (1 - abar_prev) * self.alphas.sqrt() / (1 - abar)

    _FIELDS = (
        "betas", "alphas", "abar", "abar_prev", "sqrt_abar", "sqrt_one_minus_abar",
        "posterior_var", "posterior_coef_x0", "posterior_coef_xt",
    )  # fmt: skip

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> Schedule:
        """A copy with every coefficient on `device` as `dtype` (float32 for training)."""
        out = Schedule.__new__(Schedule)
        out.T = self.T
        for name in self._FIELDS:
            setattr(out, name, getattr(self, name).to(device=device, dtype=dtype))
        return out

    # --------------------------------------------------------------- forward process

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps  (DDPM eq. 4). x0, eps [B, D]; t [B]."""
        return _col(self.sqrt_abar[t]) * x0 + _col(self.sqrt_one_minus_abar[t]) * eps

    def q_posterior(
        self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [B, D] and variance [B, 1] of q(x_{t-1} | x_t, x_0)  (DDPM eqs. 6, 7)."""
        mean = _col(self.posterior_coef_x0[t]) * x0 + _col(self.posterior_coef_xt[t]) * xt
        return mean, _col(self.posterior_var[t])

    # --------------------------------------------------------------- fewer steps

    def respace(self, steps: int) -> tuple[torch.Tensor, Schedule]:
        """Keep `steps` of the T steps, evenly spaced and always including t = T-1.

        Returns the kept original steps (ascending, [steps] long) and the schedule of the
        shorter chain, beta'_i = 1 - abar[tau_i] / abar[tau_{i-1}] (Nichol and Dhariwal,
        section 4), which has the same abar at the kept steps.
        """
        if not 1 <= steps <= self.T:
            raise ValueError(f"sampling steps must be in [1, T={self.T}], got {steps}")
        # round half up, so that steps <= T never maps two points to one integer
        taus = np.floor(np.linspace(self.T - 1, 0, steps) + 0.5).astype(np.int64)[::-1].copy()
        kept = torch.as_tensor(taus, device=self.abar.device)
        abar = self.abar.to(torch.float64)[kept]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return kept, Schedule(1 - abar / abar_prev)


def make_schedule(name: str, T: int) -> Schedule:
    """The float64 schedule `name` ("linear" or "cosine") with T steps."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if name == "linear":
        return Schedule(linear_betas(T))
    if name == "cosine":
        return Schedule(cosine_betas(T))
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


def _col(v: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1], to broadcast a per-row coefficient over the data dimension."""
    return v.unsqueeze(-1)
