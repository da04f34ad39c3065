"""The denoiser: a residual MLP with a sinusoidal time embedding.

x [B, D], t [B] (or [1], shared by the batch) -> prediction [B, D] of eps, x0 or v.

- Time: sinusoidal features of t (Vaswani et al. 2017; as in DDPM, Ho et al. 2020) through
  a 2-layer MLP, then one projection per residual block, added inside the block.
- Input: optionally sinusoidal features of each coordinate ("Fourier features", Tancik
  et al. 2020, https://arxiv.org/abs/2006.10739), which let a small MLP draw the sharp
  edges of 2-D toys; off by default for images.
- Blocks: h + W2 silu(W1 LN(h) + time_b), with W2 zero-initialized so every block starts
  as the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INPUT_EMBEDDINGS = ("none", "sinusoidal")


def sinusoidal_features(x: torch.Tensor, n_freq: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[...] -> [..., 2 n_freq]: cos and sin of x at geometric frequencies 1 .. 1/max_period."""
    # float32, or float64 under torch.set_default_dtype(torch.float64) (exactness tests)
    dtype = torch.promote_types(torch.float32, torch.get_default_dtype())
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(n_freq, device=x.device, dtype=dtype) / n_freq
    )  # [n_freq]
    args = x.unsqueeze(-1).to(dtype) * freqs  # [..., n_freq]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # h [B, W], temb [B or 1, W]
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + temb))


class Denoiser(nn.Module):
    def __init__(
        self,
        dim: int,
        T: int,
        width: int = 128,
        depth: int = 3,
        input_embedding: str = "none",
        input_scale: float = 25.0,
        n_freq: int = 32,
    ) -> None:
        super().__init__()
        if input_embedding not in INPUT_EMBEDDINGS:
            raise ValueError(f"unknown input_embedding {input_embedding!r}")
        self.T, self.width, self.depth = T, width, depth
        self.input_embedding, self.input_scale, self.n_freq = input_embedding, input_scale, n_freq
        in_features = dim * 2 * n_freq if input_embedding == "sinusoidal" else dim
        self.in_proj = nn.Linear(in_features, width)
        self.time_mlp = nn.Sequential(
            nn.Linear(2 * n_freq, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.time_proj = nn.Linear(width, width * (depth + 1))  # input + one per block
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] integer steps -> [B, (depth + 1) W]. t is rescaled to 0..1000 for any T."""
        feats = sinusoidal_features(t * (1000.0 / self.T), self.n_freq)  # [B, 2F]
        return self.time_proj(self.time_mlp(feats))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x [B, D]; t [B] or [1]
        if t.shape[0] > self.T:
            # fewer distinct steps than rows: embed all T steps once, then gather
            table = self.time_embedding(torch.arange(self.T, device=t.device))  # [T, (depth+1) W]
            temb = nn.functional.embedding(t, table)  # [B, (depth+1) W]; faster than table[t]
        else:
            temb = self.time_embedding(t)  # [B or 1, (depth+1) W]
        temb_in, *temb_blocks = temb.chunk(self.depth + 1, dim=1)  # depth+1 x [B or 1, W]
        if self.input_embedding == "sinusoidal":
            x = sinusoidal_features(x * self.input_scale, self.n_freq).flatten(1)  # [B, D*2F]
        h = self.in_proj(x) + temb_in  # [B, W]
        for block, temb_b in zip(self.blocks, temb_blocks, strict=True):
            h = block(h, temb_b)
        return self.out(h)  # [B, D]
