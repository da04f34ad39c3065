"""The policy network and how its outputs are read as a GFlowNet.

One MLP over the one-hot encoding of a state gives every head at once (shared trunk):

    out[..., 0:n+1]      forward logits (n increments, stop); for FM, log edge flows
    out[..., n+1:2n+1]   backward logits (decrement coordinate i), used when P_B is learned
    out[..., 2n+1]       log state flow log F(s), used by DB and SubTB

plus a learned scalar ``log_z`` (its own learning rate in the optimizer). ``TabularPolicy``
has the same interface with a table instead of a network: exact policies for the tests.

P_F = softmax of the masked forward logits. For FM (Bengio et al. 2021,
https://arxiv.org/abs/2106.04399) the same n+1 outputs are the log edge flows
log F(s -> s + e_i) and log F(s -> s_f) (stop), so the policy is again their softmax,
P_F(a|s) = F(s, a) / sum_a' F(s, a'), and log Z = log F(s0) = logsumexp of the outputs at s0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.gflownet.env import Hypergrid

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "leaky_relu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def n_outputs(ndim: int) -> int:
    """Width of the output layer: n+1 forward logits, n backward logits, 1 log flow."""
    return 2 * ndim + 2


class PolicyMLP(nn.Module):
    """MLP on one-hot states: ``[..., n]`` long -> ``[..., 2n+2]`` (see the module docstring)."""

    def __init__(
        self, ndim: int, height: int, hidden: int = 256, depth: int = 2, activation: str = "leaky_relu"
    ) -> None:
        super().__init__()
        self.register_buffer("values", torch.arange(height), persistent=False)  # [H]
        layers: list[nn.Module] = []
        width = ndim * height  # one-hot input, H per coordinate
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, n_outputs(ndim)))
        self.mlp = nn.Sequential(*layers)
        self.log_z = nn.Parameter(torch.zeros(()))  # learned log Z, started at 0

    def forward(self, x: Tensor) -> Tensor:
        one_hot = (x[..., None] == self.values).flatten(-2).to(self.log_z.dtype)  # [..., n*H]
        return self.mlp(one_hot)  # [..., 2n+2]


class TabularPolicy(nn.Module):
    """A policy given by a table of outputs per state ``[H^n, 2n+2]`` (for exact tests)."""

    def __init__(self, env: Hypergrid, table: Tensor, log_z: float | Tensor) -> None:
        super().__init__()
        self.env = env
        self.table = nn.Parameter(table.clone())
        self.log_z = nn.Parameter(torch.as_tensor(log_z, dtype=table.dtype).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.table[self.env.index(x)]  # [..., 2n+2]


# ---- reading the outputs ------------------------------------------------------------------


def forward_logits(env: Hypergrid, out: Tensor, x: Tensor) -> Tensor:
    """Forward logits (for FM log edge flows) of states ``x [..., n]``, ``[..., n+1]``,
    -inf on invalid actions."""
    return out[..., : env.n_actions].masked_fill(~env.forward_mask(x), -math.inf)


def forward_log_probs(env: Hypergrid, out: Tensor, x: Tensor) -> Tensor:
    """log P_F(a | x) for every action, ``[..., n+1]`` (-inf on invalid actions)."""
    return forward_logits(env, out, x).log_softmax(-1)


def backward_log_probs(env: Hypergrid, out: Tensor, x: Tensor, learned: bool) -> Tensor:
    """log P_B(decrement i | x), ``[..., n]``: learned (masked softmax) or uniform over parents.

    The initial state has no parent; its row is filled with finite values that are never
    used, so that no softmax or logsumexp ever sees a row of -inf (NaN gradients).
    """
    valid = env.backward_mask(x)  # [..., n]
    valid = valid | ~valid.any(-1, keepdim=True)  # the initial state: all "valid", unused
    if learned:
        logits = out[..., env.n_actions : 2 * env.n_actions - 1]
        return logits.masked_fill(~valid, -math.inf).log_softmax(-1)
    n_valid = valid.sum(-1, keepdim=True).to(out.dtype)  # [..., 1]
    return (-n_valid.log()).expand(valid.shape).masked_fill(~valid, -math.inf)


def log_state_flow(out: Tensor) -> Tensor:
    """log F(s) from the flow head, ``[...]``."""
    return out[..., -1]
