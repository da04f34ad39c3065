"""Sampling trajectories on the hypergrid, and a replay buffer of them.

A batch of trajectories is rolled out step by step with whole-batch tensor ops: each step is
one look-up of the policy's logits (no gradient) and Gumbel-max sampling with noise drawn once
per batch, which gives epsilon-uniform exploration and a temperature for free. The batch is kept
padded, ``[..., B, T, ...]``, with the lengths; the losses mask what lies past each trajectory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.gflownet.env import Hypergrid


@dataclass
class Trajectories:
    """A padded batch: states s_0..s_{T-1} (with the stop counter column), actions, lengths,
    and the flat index of the state each trajectory stopped in. Any leading dimensions ``[...]``
    (``[K, B]`` for a population's K members, ``[B]`` for one policy)."""

    states: Tensor  # [..., T, n+1] long
    actions: Tensor  # [..., T] long; the action at lengths-1 is the first stop
    lengths: Tensor  # [...] number of transitions, stop included (>= 1)
    terminal: Tensor  # [...] flat index of x = s_{L-1}

    def pad_to(self, t: int, stop: int) -> Trajectories:
        """Pad to T = t with the initial state and stop actions (masked by ``lengths``)."""
        extra = t - self.actions.shape[-1]
        return Trajectories(
            F.pad(self.states, (0, 0, 0, extra)), F.pad(self.actions, (0, extra), value=stop),
            self.lengths, self.terminal,
        )

    @staticmethod
    def cat(a: Trajectories, b: Trajectories, dim: int = 0) -> Trajectories:
        """Concatenate along a leading dimension (``dim`` counted from the left)."""
        fields = zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)
        return Trajectories(*(torch.cat(pair, dim) for pair in fields))


def exploration_noise(
    env: Hypergrid, batch_size: int, epsilon: float, temperature: float,
    generator: torch.Generator, dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None]:
    """Noise for Gumbel-max sampling of every step of a batch, drawn at once:
    ``noise [T, B, n+1]`` and ``keep [T, B, 1]`` (None when epsilon = 0, i.e. keep = 1).

    argmax(keep * logits + noise) over valid actions samples softmax(logits / temperature)
    where keep = 1 (noise = temperature * Gumbel), and the uniform law where keep = 0
    (noise = Gumbel), which happens with probability epsilon: the epsilon-uniform mixture.
    """
    shape = (env.max_actions, batch_size, env.n_actions)
    device = env.device
    uniform = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    gumbel = uniform.log_().neg_().log_().neg_()  # -log(-log U), [T, B, n+1]
    if epsilon == 0:
        return (gumbel if temperature == 1 else temperature * gumbel), None
    explore = torch.rand(shape[:2] + (1,), device=device, generator=generator) < epsilon  # [T, B, 1]
    noise = torch.where(explore, gumbel, temperature * gumbel)  # [T, B, n+1]
    return noise, (~explore).to(dtype)


@torch.no_grad()
def rollout(
    env: Hypergrid, logits_of: Callable[[Tensor], Tensor], noise: Tensor, keep: Tensor | None
) -> Trajectories:
    """Roll out trajectories from s0 until every one has stopped, with the noise of
    ``exploration_noise``: ``noise [T, ..., n+1]``, ``keep [T, ..., 1]`` or None.

    ``logits_of(s [..., n+1]) -> [..., n+1]``: the forward logits of the sampler states (a
    network's forward, or a look-up in its outputs on every state). Finished trajectories keep
    stepping (their steps past the first stop are masked by ``lengths``), so each step is a few
    whole-batch tensor ops. On CPU the loop ends when all have stopped; on a GPU it runs the
    n(H-1)+1 steps that bound any trajectory, so that the check never synchronizes.
    """
    n, lead = env.ndim, noise.shape[1:-1]
    s = torch.zeros(*lead, n + 1, dtype=torch.long, device=env.device)  # [..., n+1]
    one = torch.ones(*lead, 1, dtype=torch.long, device=env.device)
    stop_early, count = env.device.type == "cpu", s[..., n].numel()
    states, actions = [], []
    for t in range(env.max_actions):
        logits = logits_of(s)  # [..., n+1]
        scores = logits + noise[t] if keep is None else torch.addcmul(noise[t], logits, keep[t])
        a = scores.masked_fill_(env.forward_invalid(s), -math.inf).argmax(-1, keepdim=True)  # [..., 1]
        states.append(s)
        actions.append(a)
        s = s.scatter_add(-1, a, one)  # increment a coordinate, or the stop counter
        if stop_early and int(s[..., n].count_nonzero()) == count:
            break
    states_t, actions_t = torch.stack(states, -2), torch.cat(actions, -1)  # [..., T, n+1], [..., T]
    lengths = (actions_t == env.stop).int().argmax(-1) + 1  # [...]: first stop, inclusive
    last = states_t.gather(-2, (lengths - 1)[..., None, None].expand(*lead, 1, n + 1))  # [..., 1, n+1]
    return Trajectories(states_t, actions_t, lengths, env.index(last[..., 0, :n]))


def sample_trajectories(
    env: Hypergrid,
    policy: torch.nn.Module,
    batch_size: int,
    generator: torch.Generator,
    *,
    epsilon: float = 0.0,
    temperature: float = 1.0,
) -> Trajectories:
    """``batch_size`` trajectories of one policy module (``policy(x [..., n]) -> [..., 2n+2]``)."""
    noise, keep = exploration_noise(env, batch_size, epsilon, temperature, generator,
                                    policy.log_z.dtype)
    return rollout(env, lambda s: policy(s[..., : env.ndim])[..., : env.n_actions], noise, keep)


class ReplayBuffer:
    """A ring buffer of past trajectories, padded to the longest possible, drawn uniformly."""

    def __init__(self, capacity: int, env: Hypergrid) -> None:
        t, n, dev = env.max_actions, env.ndim, env.device
        self.env, self.capacity, self.size, self.ptr = env, capacity, 0, 0
        self.states = torch.zeros(capacity, t, n + 1, dtype=torch.long, device=dev)
        self.actions = torch.full((capacity, t), env.stop, dtype=torch.long, device=dev)
        self.lengths = torch.ones(capacity, dtype=torch.long, device=dev)
        self.terminal = torch.zeros(capacity, dtype=torch.long, device=dev)

    def add(self, traj: Trajectories) -> None:
        traj = traj.pad_to(self.env.max_actions, self.env.stop)
        b = traj.lengths.shape[0]
        idx = (self.ptr + torch.arange(b, device=self.env.device)) % self.capacity
        for store, value in zip(self._stores(), dataclasses.astuple(traj), strict=True):
            store[idx] = value
        self.ptr, self.size = (self.ptr + b) % self.capacity, min(self.size + b, self.capacity)

    def sample(self, k: int, generator: torch.Generator) -> Trajectories:
        idx = torch.randint(self.size, (k,), device=self.env.device, generator=generator)
        return Trajectories(*(store[idx] for store in self._stores()))

    def _stores(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.states, self.actions, self.lengths, self.terminal
