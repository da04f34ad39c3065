"""The architectures: dense nets x -> f(x W + b), their initialization and flat layout.

LocoProp (Amid, Anil, Warmuth, AISTATS 2022, https://arxiv.org/abs/2106.06199) needs, for
every layer i, its input x_i, its pre-activation a_i = x_i W_i + b_i and its output
y_i = f_i(a_i); models/locoprop/locoprop.py computes them for R members at once.

All of one member's parameters live in ONE flat vector [n_params], so a population's are one
[R, n_params] tensor and every optimizer is a handful of element-wise ops on it, whatever the
number of layers. Layers with the same weight shape form a `Group` stored as one
[G, fan_in, fan_out] block (the order of the initialization's random draws); `Net.layers`
says where each layer's W [fan_in, fan_out] and b [fan_out] lie in the vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda a: a,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda a: torch.softmax(a, dim=-1),
}


def activate_(act: str, a: Tensor) -> Tensor:
    """a <- f(a), in place (a is a temporary, or rows of one)."""
    if act == "tanh":
        return a.tanh_()
    if act == "sigmoid":
        return a.sigmoid_()
    if act == "softmax":
        return a.copy_(torch.softmax(a, dim=-1))
    return a  # linear


# f'(a) from y = f(a), for the backward pass through hidden layers (the last layer's
# gradient comes from the loss on its pre-activation, so softmax needs none).
DERIVATIVES: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda y: torch.ones_like(y),
    "tanh": lambda y: 1 - y * y,
    "sigmoid": lambda y: y * (1 - y),
}
LOSSES = ("bce", "ce")  # sigmoid cross-entropy summed over outputs | softmax cross-entropy

# The paper's deep autoencoder 784-1000-500-250-30-250-500-1000-784 scaled to 8x8 digits:
# tanh hidden layers, a linear bottleneck, a sigmoid output.
AUTOENCODER_SIZES = (64, 128, 64, 32, 8, 32, 64, 128, 64)
# A tanh MLP classifier; its three 64x64 layers form one group.
CLASSIFIER_SIZES = (64, 64, 64, 64, 10)


@dataclass(frozen=True)
class Group:
    """Layers that share the weight shape (fan_in, fan_out), stored as one block."""

    fan_in: int
    fan_out: int
    layers: tuple[int, ...]  # indices of the member layers, in network order
    acts: tuple[str, ...]  # their transfer functions


@dataclass(frozen=True)
class Layer:
    """Where one layer lies in the flat vector: W = p[w].view(fan_in, fan_out), b = p[b]."""

    w: slice
    b: slice
    fan_in: int
    fan_out: int
    act: str


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
    ) -> None:
        if len(acts) != len(sizes) - 1:
            raise ValueError(f"need {len(sizes) - 1} activations, got {len(acts)}")
        if unknown := set(acts) - set(ACTIVATIONS):
            raise ValueError(f"unknown activation(s) {sorted(unknown)}")
        if hidden := set(acts[:-1]) - set(DERIVATIVES):
            raise ValueError(f"activation(s) {sorted(hidden)} only allowed on the last layer")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}, expected one of {LOSSES}")
        self.sizes, self.acts, self.loss_kind = tuple(sizes), tuple(acts), loss
        shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
        members: dict[tuple[int, ...], list[int]] = {}
        for i, shape in enumerate(shapes):
            members.setdefault(shape, []).append(i)
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
        self.layers = self._layers()

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
        out: list[tuple[Tensor, Tensor]] = [None] * len(self.acts)  # type: ignore[list-item]
        for g, (w, b) in zip(self.groups, self.group_views(flat), strict=True):
            for i, wi, bi in zip(g.layers, w.unbind(0), b.unbind(0), strict=True):
                out[i] = (wi, bi)
        return out

    def _layers(self) -> list[Layer]:
        """Each layer's slices of the flat vector, in network order."""
        offsets = torch.arange(sum(self._chunks))
        out = []
        for i, (w, b) in enumerate(self.layer_views(offsets)):
            w0, b0 = int(w.flatten()[0]), int(b[0])
            fi, fo = w.shape
            out.append(Layer(slice(w0, w0 + fi * fo), slice(b0, b0 + fo), fi, fo, self.acts[i]))
        return out


def make_net(
    task: str,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
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
        )
    raise ValueError(f"unknown task {task!r}")
