"""Exact evaluation of a hypergrid sampler, by dynamic programming over the DAG.

The sampler's terminal distribution is exact for any grid that fits in memory:
u(s0) = 1, u(s') = sum_s u(s) P_F(s'|s) level by level (sum(x) = 0, 1, ...), and
P_T(x) = u(x) P_F(stop|x). Against the target R(x)/Z this gives the exact L1 (a sum over all
H^n states, range [0, 2]); a sampled L1 over a finite sample is given too, for comparison with
published numbers, which it can only match up to sampling noise.

``true_log_flows`` and ``exact_policy_table`` build the policy of the true flows (uniform P_B):
F(s) = R(s) + sum_c F(c) / n_parents(c), P_F(c|s) = F(c) / (n_parents(c) F(s)),
P_F(stop|s) = R(s) / F(s) and Z = F(s0). Its terminal distribution is exactly R/Z.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.gflownet.env import Hypergrid
from models.gflownet.nets import forward_log_probs, forward_logits

EVAL_CHUNK = 65536  # states per forward pass when evaluating the whole grid


def _children(env: Hypergrid, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices of the n children of states ``idx [m]`` -> ``[m, n]``, and which exist."""
    x = env.all_states()[idx]  # [m, n]
    exists = x < env.height - 1  # [m, n]
    child = torch.where(exists, idx[:, None] + env.strides, 0)  # [m, n]
    return child, exists


def terminal_distribution(env: Hypergrid, log_pf: Tensor) -> Tensor:
    """P_T(x) for every state, ``[H^n]`` float64, from log P_F of every state ``[H^n, n+1]``."""
    pf = log_pf.to(torch.float64).exp()  # [N, n+1]
    u = torch.zeros(env.n_states, dtype=torch.float64, device=pf.device)  # reach probability
    u[0] = 1.0
    for idx in env.levels():  # topological order: parents before children
        child, exists = _children(env, idx)  # [m, n]
        flow = torch.where(exists, u[idx, None] * pf[idx, :-1], 0.0)  # [m, n]
        u.index_add_(0, child.flatten(), flow.flatten())
    return u * pf[:, -1]  # [N]


def true_log_flows(env: Hypergrid) -> Tensor:
    """log F(s) of the true flows under a uniform backward policy, ``[H^n]`` float64."""
    reward = env.reward(env.all_states())  # [N]
    n_parents = env.n_parents(env.all_states()).clamp(min=1).to(torch.float64)  # [N]
    flow = torch.zeros_like(reward)
    for idx in reversed(env.levels()):  # children before parents
        child, exists = _children(env, idx)  # [m, n]
        inflow = torch.where(exists, flow[child] / n_parents[child], 0.0).sum(-1)  # [m]
        flow[idx] = reward[idx] + inflow
    return flow.log()


def exact_policy_table(env: Hypergrid) -> tuple[Tensor, float]:
    """Network outputs ``[H^n, 2n+2]`` (float64) and log Z of the true-flow policy.

    Forward logits = log edge flows log F(c) - log n_parents(c), and log R(s) for stop (so
    they are the FM edge flows too); backward logits = 0 (uniform); state flow = log F(s).
    """
    x = env.all_states()
    log_flow = true_log_flows(env)  # [N]
    idx = torch.arange(env.n_states, device=x.device)
    child, exists = _children(env, idx)  # [N, n]
    log_n_parents = env.n_parents(x).clamp(min=1).to(torch.float64).log()  # [N]
    log_edge = torch.where(exists, log_flow[child] - log_n_parents[child], -math.inf)  # [N, n]
    log_stop = env.reward(x).log()[:, None]  # [N, 1]
    backward = torch.zeros_like(log_edge)  # [N, n]
    table = torch.cat([log_edge, log_stop, backward, log_flow[:, None]], -1)  # [N, 2n+2]
    return table, float(log_flow[0])


@torch.no_grad()
def policy_outputs(policy: torch.nn.Module, env: Hypergrid) -> Tensor:
    """The policy's outputs on every state, ``[H^n, 2n+2]``, in chunks."""
    x = env.all_states()
    return torch.cat([policy(chunk) for chunk in torch.split(x, EVAL_CHUNK)])


def learned_log_z(env: Hypergrid, log_z: float, out: Tensor, fm: bool) -> float:
    """The learned log Z: the scalar, or for FM log F(s0) = log of the sum of its out-flows."""
    if not fm:
        return log_z
    return float(forward_logits(env, out[:1], env.all_states()[:1]).logsumexp(-1))


def sampled_l1(p: Tensor, target: Tensor, n_samples: int, generator: torch.Generator) -> float:
    """L1 between the histogram of ``n_samples`` draws from ``p`` and ``target`` (both ``[N]``).

    Drawn from the exact terminal distribution, which is the sampler's own distribution, so
    this equals in law the sampled L1 of published code (torchgfn validates on 200k samples).
    """
    draws = torch.multinomial(p, n_samples, replacement=True, generator=generator)
    hist = torch.bincount(draws, minlength=p.numel()).to(torch.float64) / n_samples
    return float((hist - target).abs().sum())


def modes_found(env: Hypergrid, visits: Tensor) -> int:
    """Corner regions of which some maximum-reward state has been sampled (``visits [H^n]``)."""
    x = env.all_states()
    hit = env.is_mode(x) & (visits > 0)  # [N]
    return int(env.corner(x[hit]).unique().numel())


@torch.no_grad()
def evaluate(
    env: Hypergrid,
    out: Tensor,
    log_z: float,
    fm: bool,
    visits: Tensor,
    generator: torch.Generator,
    n_samples: int,
) -> dict[str, float]:
    """Exact L1, |log Z error|, log Z, modes found and sampled L1 of the sampler whose network
    outputs on every state are ``out [H^n, 2n+2]`` (``log_z``: its learned scalar)."""
    x = env.all_states()
    reward = env.reward(x)  # [N] float64
    p = terminal_distribution(env, forward_log_probs(env, out, x))  # [N]
    learned = learned_log_z(env, log_z, out, fm)
    true_log_z = float(reward.sum().log())
    target = reward / reward.sum()
    metrics = {
        "l1": float((p - target).abs().sum()),
        "logz_error": abs(learned - true_log_z),
        "logz": learned,
        "modes_found": float(modes_found(env, visits)),
    }
    if n_samples > 0:
        metrics["l1_sampled"] = sampled_l1(p, target, n_samples, generator)
    return metrics
