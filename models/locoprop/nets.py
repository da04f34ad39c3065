"""Fully connected networks with per-layer access to input, pre-activation and output.

LocoProp (Amid, Anil, Warmuth, AISTATS 2022, https://arxiv.org/abs/2106.06199) needs, for
every layer i, its input x_i, its pre-activation a_i = x_i W_i + b_i and its output
y_i = f_i(a_i). `Net.forward` returns all three (a `Trace`).

All parameters live in ONE flat tensor. Layers with the same weight shape form a `Group`
whose weights are one [G, fan_in, fan_out] block of it, so LocoProp's local phase can
update a whole group with one batched matmul (`torch.bmm`) and every optimizer is a handful
of element-wise ops on the flat tensor, whatever the number of layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda a: a,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda a: torch.softmax(a, dim=-1),
}
LOSSES = ("bce", "ce")

# The paper's deep autoencoder 784-1000-500-250-30-250-500-1000-784 scaled to 8x8 digits:
# tanh hidden layers, a linear bottleneck, a sigmoid output.
AUTOENCODER_SIZES = (64, 128, 64, 32, 8, 32, 64, 128, 64)
# A tanh MLP classifier; its three 64x64 layers form one batched group.
CLASSIFIER_SIZES = (64, 64, 64, 64, 10)


@dataclass(frozen=True)
class Group:
    """Layers that share the weight shape (fan_in, fan_out), stored as one block."""

    fan_in: int
    fan_out: int
    layers: tuple[int, ...]  # indices of the member layers, in network order
    acts: tuple[str, ...]  # their transfer functions


class Trace(NamedTuple):
    inputs: list[Tensor]  # x_i   [batch, fan_in_i]
    pre: list[Tensor]  # a_i = x_i W_i + b_i   [batch, fan_out_i]
    post: list[Tensor]  # y_i = f_i(a_i)   [batch, fan_out_i]


class Net:
    """A stack of dense layers x -> f(x W + b) whose parameters are one flat tensor."""

    def __init__(
        self,
        sizes: Sequence[int],
        acts: Sequence[str],
        loss: str,
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        batched: bool = True,
    ) -> None:
        if len(acts) != len(sizes) - 1:
            raise ValueError(f"need {len(sizes) - 1} activations, got {len(acts)}")
        if unknown := set(acts) - set(ACTIVATIONS):
            raise ValueError(f"unknown activation(s) {sorted(unknown)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}, expected one of {LOSSES}")
        self.sizes, self.acts, self.loss_kind = tuple(sizes), tuple(acts), loss
        shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
        members: dict[tuple[int, ...], list[int]] = {}
        for i, shape in enumerate(shapes):  # batched=False: one group per layer (for benchmarks)
            members.setdefault(shape if batched else (*shape, i), []).append(i)
        self.groups = [
            Group(key[0], key[1], tuple(ls), tuple(acts[i] for i in ls))
            for key, ls in members.items()
        ]
        # Flat layout: for each group, its weights [G, fan_in, fan_out] then biases [G, fan_out].
        self._chunks = [
            n
            for g in self.groups
            for n in (len(g.layers) * g.fan_in * g.fan_out, len(g.layers) * g.fan_out)
        ]
        self.params = self._init(generator).to(dtype=dtype, device=device)  # [n_params]

    @property
    def n_layers(self) -> int:
        return len(self.acts)

    def _init(self, generator: torch.Generator) -> Tensor:
        """Glorot-uniform weights (as the official notebook), zero biases; float64 on CPU."""
        flat = torch.zeros(sum(self._chunks), dtype=torch.float64)
        for w, _ in self.group_views(flat):
            limit = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
            w.copy_((2 * torch.rand(w.shape, generator=generator, dtype=torch.float64) - 1) * limit)
        return flat

    def group_views(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per group: (W [G, fan_in, fan_out], b [G, fan_out]), views into `flat`."""
        chunks = flat.split(self._chunks)
        return [
            (
                chunks[2 * j].view(len(g.layers), g.fan_in, g.fan_out),
                chunks[2 * j + 1].view(len(g.layers), g.fan_out),
            )
            for j, g in enumerate(self.groups)
        ]

    def layer_views(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per layer, in network order: (W [fan_in, fan_out], b [fan_out]), views into `flat`."""
        out: list[tuple[Tensor, Tensor]] = [None] * self.n_layers  # type: ignore[list-item]
        for g, (w, b) in zip(self.groups, self.group_views(flat), strict=True):
            for i, wi, bi in zip(g.layers, w.unbind(0), b.unbind(0), strict=True):
                out[i] = (wi, bi)
        return out

    def forward(self, x: Tensor, params: Tensor | None = None) -> Trace:
        """x [batch, sizes[0]] -> every layer's input, pre-activation and output."""
        trace = Trace([], [], [])
        for (w, b), act in zip(
            self.layer_views(self.params if params is None else params), self.acts, strict=True
        ):
            a = torch.addmm(b, x, w)  # [batch, fan_out]
            trace.inputs.append(x)
            trace.pre.append(a)
            x = ACTIVATIONS[act](a)
            trace.post.append(x)
        return trace

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over the batch of the per-example loss, from the last pre-activation.

        bce: sigmoid cross-entropy summed over pixels (the paper's autoencoder loss);
        ce: softmax cross-entropy against integer labels.
        """
        if self.loss_kind == "bce":
            return (
                F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
                / logits.shape[0]
            )
        return F.cross_entropy(logits, target)


def make_net(
    task: str,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    batched: bool = True,
) -> Net:
    """The digits autoencoder ("autoencoder") or the MLP classifier ("classifier")."""
    if task == "autoencoder":
        n = len(AUTOENCODER_SIZES) - 1
        acts = ["tanh"] * n
        acts[n // 2 - 1] = "linear"  # bottleneck
        acts[-1] = "sigmoid"
        return Net(
            AUTOENCODER_SIZES,
            acts,
            "bce",
            generator=generator,
            dtype=dtype,
            device=device,
            batched=batched,
        )
    if task == "classifier":
        acts = ["tanh"] * (len(CLASSIFIER_SIZES) - 2) + ["softmax"]
        return Net(
            CLASSIFIER_SIZES,
            acts,
            "ce",
            generator=generator,
            dtype=dtype,
            device=device,
            batched=batched,
        )
    raise ValueError(f"unknown task {task!r}")
