"""The denoiser: a residual MLP with a sinusoidal time embedding, written once as a function of
its parameters, so one member (a plain call) and K members padded to one shape (``vmap``) run
the same code.

x [B, D], t [B] (or [1], shared by the batch) -> prediction [B, D] of eps, x0 or v.

- Time: sinusoidal features of t (Vaswani et al. 2017; as in DDPM, Ho et al. 2020) through
  a 2-layer MLP, then one projection per residual block, added inside the block.
- Input: optionally sinusoidal features of each coordinate ("Fourier features", Tancik
  et al. 2020, https://arxiv.org/abs/2006.10739), which let a small MLP draw the sharp
  edges of 2-D toys; off by default for images.
- Blocks: h + W2 silu(W1 LN(h) + time_b), with W2 zero-initialized so every block starts
  as the identity.

Padding (a population of members with different widths and depths in one shape): a member of
width w and depth d lives in a [W, D]-shaped parameter set (W >= w, D >= d) with its own
weights in the leading rows / columns (``pack``) and exact zeros elsewhere; the time
projection is packed chunk by chunk (one chunk of W per block). Then every padded unit is an
exact zero through the whole network: zero incoming rows and biases give 0, SiLU(0) = 0, and
zero outgoing columns add +0.0. LayerNorm is the one place where the padded zeros would
count: ``layer_norm`` takes the mean and variance over the member's own ``width`` only.
Blocks past a member's depth are bypassed: ``h = where(block < depth, block(h), h)``.
The trainer masks the gradients of the padded entries (``pack`` of ones), so they stay zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

INPUT_EMBEDDINGS = ("none", "sinusoidal")
N_FREQ = 32  # sinusoidal frequencies of the time (and input) embedding
INPUT_SCALE = 25.0  # x is multiplied by this before its sinusoidal features
LN_EPS = 1e-5  # nn.LayerNorm's default

Params = dict[str, torch.Tensor]


def sinusoidal_features(x: torch.Tensor, n_freq: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[...] -> [..., 2 n_freq]: cos and sin of x at geometric frequencies 1 .. 1/max_period."""
    # float32, or float64 under torch.set_default_dtype(torch.float64) (exactness tests)
    dtype = torch.promote_types(torch.float32, torch.get_default_dtype())
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(n_freq, device=x.device, dtype=dtype) / n_freq
    )  # [n_freq]
    args = x.unsqueeze(-1).to(dtype) * freqs  # [..., n_freq]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


# ----------------------------------------------------------------------------- shapes


class Shape(NamedTuple):
    """The sizes of one denoiser (one member's own, or a population's padded one)."""

    dim: int  # data dimension D
    width: int  # hidden units W
    depth: int  # residual blocks
    input_embedding: str  # none | sinusoidal

    @property
    def in_features(self) -> int:
        return self.dim * 2 * N_FREQ if self.input_embedding == "sinusoidal" else self.dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name (nn.Module's names, in its order) and shape."""
        w, f = self.width, 2 * N_FREQ
        shapes: dict[str, tuple[int, ...]] = {
            "in_proj.weight": (w, self.in_features), "in_proj.bias": (w,),
            "time_mlp.0.weight": (w, f), "time_mlp.0.bias": (w,),
            "time_mlp.2.weight": (w, w), "time_mlp.2.bias": (w,),
            "time_proj.weight": ((self.depth + 1) * w, w), "time_proj.bias": ((self.depth + 1) * w,),
        }  # fmt: skip
        for j in range(self.depth):
            b = f"blocks.{j}."
            shapes |= {
                b + "norm.weight": (w,), b + "norm.bias": (w,), b + "fc1.weight": (w, w),
                b + "fc1.bias": (w,), b + "fc2.weight": (w, w), b + "fc2.bias": (w,),
            }  # fmt: skip
        shapes |= {"out.0.weight": (w,), "out.0.bias": (w,), "out.2.weight": (self.dim, w),
                   "out.2.bias": (self.dim,)}  # fmt: skip
        return shapes


def _chunked(name: str, x: torch.Tensor, depth: int) -> torch.Tensor:
    """The time projection as one chunk per block: [(d+1) W, ...] -> [d+1, W, ...]."""
    return x.view(depth + 1, -1, *x.shape[1:]) if name.startswith("time_proj.") else x


def pack(own: Params, shape: Shape, padded: Shape) -> Params:
    """A member's parameters (its own `shape`) in the population's `padded` shape: its values
    in the leading entries of every dimension, exact zeros elsewhere (see the module doc)."""
    like = next(iter(own.values()))
    out: Params = {}
    for name, size in padded.param_shapes().items():
        big = like.new_zeros(size)
        if name in own:
            src = _chunked(name, own[name], shape.depth)
            _chunked(name, big, padded.depth)[tuple(slice(0, n) for n in src.shape)] = src
        out[name] = big
    return out


def unpack(params: Params, padded: Shape, shape: Shape) -> Params:
    """The inverse of `pack`: a member's own parameters out of the padded ones (copies)."""
    out: Params = {}
    for name, size in shape.param_shapes().items():
        src = _chunked(name, params[name], padded.depth)
        own = (shape.depth + 1, size[0] // (shape.depth + 1), *size[1:]) if src.dim() > len(size) else size
        out[name] = src[tuple(slice(0, n) for n in own)].reshape(size).clone()
    return out


# ----------------------------------------------------------------------------- forward


class Padding(NamedTuple):
    """One member's place in a padded shape (tensors: under vmap, one value per member)."""

    width: torch.Tensor  # [] its width w (as a float, the LayerNorm's divisor)
    width_mask: torch.Tensor  # [W] 1.0 for its own units, 0.0 for the padded ones
    depth: torch.Tensor  # [] long, its number of blocks (later ones are bypassed)


def layer_norm(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pad: Padding | None
) -> torch.Tensor:
    """nn.LayerNorm over the last dimension; with `pad`, over the member's own units only (mean
    and biased variance over its width; the padded units give exact zeros: weight 0, bias 0)."""
    if pad is None:
        return F.layer_norm(h, weight.shape, weight, bias, LN_EPS)
    mean = (h * pad.width_mask).sum(-1, keepdim=True) / pad.width  # [B, 1]
    centered = (h - mean) * pad.width_mask  # [B, W]
    var = (centered * centered).sum(-1, keepdim=True) / pad.width  # [B, 1]
    return centered * torch.rsqrt(var + LN_EPS) * weight + bias


def time_embedding(p: Params, t: torch.Tensor, t_scale: torch.Tensor | float) -> torch.Tensor:
    """t [B] integer steps -> [B, (depth + 1) W]; t * t_scale (= 1000 / T) spans 0..1000."""
    feats = sinusoidal_features(t * t_scale, N_FREQ)  # [B, 2F]
    h = F.silu(F.linear(feats, p["time_mlp.0.weight"], p["time_mlp.0.bias"]))  # [B, W]
    h = F.silu(F.linear(h, p["time_mlp.2.weight"], p["time_mlp.2.bias"]))  # [B, W]
    return F.linear(h, p["time_proj.weight"], p["time_proj.bias"])  # [B, (depth+1) W]


def denoise(
    p: Params, x: torch.Tensor, t: torch.Tensor, *, shape: Shape, T: int,
    t_scale: torch.Tensor | float, pad: Padding | None = None,
) -> torch.Tensor:  # fmt: skip
    """The network: x [B, D], t [B] or [1] -> [B, D]. `T` is the number of distinct steps t
    can take (the table size), `t_scale` = 1000 / the member's T; `pad` places a member in a
    padded `shape` (None: the parameters are the member's own)."""
    if t.shape[0] > T:
        # fewer distinct steps than rows: embed all T steps once, then gather
        table = time_embedding(p, torch.arange(T, device=t.device), t_scale)  # [T, (d+1) W]
        temb = F.embedding(t, table)  # [B, (depth+1) W]; faster than table[t]
    else:
        temb = time_embedding(p, t, t_scale)  # [B or 1, (depth+1) W]
    temb_in, *temb_blocks = temb.chunk(shape.depth + 1, dim=-1)  # depth+1 x [B or 1, W]
    if shape.input_embedding == "sinusoidal":
        x = sinusoidal_features(x * INPUT_SCALE, N_FREQ).flatten(-2)  # [B, D*2F]
    h = F.linear(x, p["in_proj.weight"], p["in_proj.bias"]) + temb_in  # [B, W]
    for j, temb_b in enumerate(temb_blocks):
        b = f"blocks.{j}."
        a = F.linear(layer_norm(h, p[b + "norm.weight"], p[b + "norm.bias"], pad),
                     p[b + "fc1.weight"], p[b + "fc1.bias"])  # fmt: skip
        out = h + F.linear(F.silu(a + temb_b), p[b + "fc2.weight"], p[b + "fc2.bias"])  # [B, W]
        h = out if pad is None else torch.where(j < pad.depth, out, h)  # bypass past its depth
    h = F.silu(layer_norm(h, p["out.0.weight"], p["out.0.bias"], pad))
    return F.linear(h, p["out.2.weight"], p["out.2.bias"])  # [B, D]


class Denoiser(nn.Module):
    """The network as a module: it draws the initialization (nn.Linear / nn.LayerNorm defaults,
    fc2 zeroed) and runs `denoise` on its own parameters."""

    def __init__(
        self, dim: int, T: int, width: int = 128, depth: int = 3, input_embedding: str = "none"
    ) -> None:
        super().__init__()
        if input_embedding not in INPUT_EMBEDDINGS:
            raise ValueError(f"unknown input_embedding {input_embedding!r}")
        self.T, self.shape = T, Shape(dim, width, depth, input_embedding)
        self.in_proj = nn.Linear(self.shape.in_features, width)
        self.time_mlp = nn.Sequential(
            nn.Linear(2 * N_FREQ, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.time_proj = nn.Linear(width, width * (depth + 1))  # input + one per block
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = dict(self.named_parameters())
        return denoise(p, x, t, shape=self.shape, T=self.T, t_scale=1000.0 / self.T)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
