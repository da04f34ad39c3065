"""GFlowNet objectives, in log space, on padded batches of trajectories of K members at once.

A batch holds, per member, B trajectories of at most T transitions (any leading dimensions
``[...]``: ``[K]`` in a population, none for one policy); trajectory b has ``lengths[b]`` = L
transitions, the last one the stop action, and ``valid[b, t] = t < L``. Along a trajectory
the nodes are s_0 .. s_{L-1} and the terminal node after stop, so a node tensor has T+1
columns and is read up to column L:

    log_flow[b, 0] = log Z,  log_flow[b, k] = log F(s_k) (0 < k < L),  log_flow[b, L] = log R(x)

``log_pf[b, t]`` = log P_F(s_{t+1} | s_t) and ``log_pb[b, t]`` = log P_B(s_t | s_{t+1}), with
log P_B = 0 on the stop transition (the terminal node has one parent). Entries past the end
of a trajectory are arbitrary finite numbers and are masked here with ``torch.where``.

``rows [..., B]`` bool marks the member's own trajectories: a member whose batch is smaller than
its population's widest is padded with trajectories that count nowhere (masked means), so each
loss is the mean over the member's own B_k trajectories, as alone. Every loss returns ``[...]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(x: Tensor, rows: Tensor) -> Tensor:
    """Mean of ``x [..., B]`` over the rows where ``rows`` is set -> ``[...]``."""
    return torch.where(rows, x, 0.0).sum(-1) / rows.sum(-1)


def trajectory_balance(
    log_z: Tensor, log_pf: Tensor, log_pb: Tensor, log_reward: Tensor, valid: Tensor, rows: Tensor
) -> Tensor:
    """TB (Malkin et al. 2022, https://arxiv.org/abs/2201.13259):
    (log Z + sum_t log P_F - log R(x) - sum_t log P_B)^2, mean over trajectories."""
    log_ratio = torch.where(valid, log_pf - log_pb, 0.0).sum(-1)  # [..., B]
    return masked_mean((log_z[..., None] + log_ratio - log_reward).pow(2), rows)


def detailed_balance(
    log_flow: Tensor, log_pf: Tensor, log_pb: Tensor, valid: Tensor, rows: Tensor
) -> Tensor:
    """DB (Bengio et al. 2023, GFlowNet Foundations, https://arxiv.org/abs/2111.09266):
    (log F(s) + log P_F(s'|s) - log F(s') - log P_B(s|s'))^2 for every transition, where the
    flow after the stop transition is R(x); mean over the transitions of the batch."""
    residual = log_flow[..., :-1] + log_pf - log_flow[..., 1:] - log_pb  # [..., B, T]
    counted = valid & rows[..., None]  # [..., B, T]
    return torch.where(counted, residual, 0.0).pow(2).sum((-2, -1)) / counted.sum((-2, -1))


def subtrajectory_balance(
    log_flow: Tensor, log_pf: Tensor, log_pb: Tensor, lengths: Tensor, lambda_: float | Tensor,
    rows: Tensor,
) -> Tensor:
    """SubTB(lambda) (Madan et al. 2023, https://arxiv.org/abs/2209.12782): for every
    pair of nodes i < j <= L the TB residual of the piece s_i..s_j,
    log F(s_i) + sum_{i<=t<j} (log P_F - log P_B) - log F(s_j), squared and weighted by
    lambda^(j-i); normalized by the weights' sum per trajectory, then averaged.
    j - i = 1 alone is DB, (i, j) = (0, L) alone is TB. ``lambda_``: a number or ``[...]``."""
    t = log_pf.shape[-1]
    k = torch.arange(t + 1, device=log_pf.device)  # node index
    valid = k[:-1] < lengths[..., None]  # [..., B, T]
    cum = F.pad(torch.where(valid, log_pf - log_pb, 0.0).cumsum(-1), (1, 0))  # [..., B, T+1]
    d = log_flow - cum  # [..., B, T+1]: the residual of (i, j) is d_i - d_j
    residual = d[..., :, None] - d[..., None, :]  # [..., B, i, j]
    span = k[None, :] - k[:, None]  # [i, j]: j - i
    pair = (span > 0) & (k <= lengths[..., None, None])  # [..., B, i, j]: i < j <= L
    if isinstance(lambda_, Tensor):
        lambda_ = lambda_[..., None, None, None]  # [..., 1, 1, 1]
    weight = torch.where(pair, lambda_ ** span.clamp(min=0).to(log_pf.dtype), 0.0)  # [..., B, i, j]
    per_traj = (weight * residual.pow(2)).sum((-2, -1)) / weight.sum((-2, -1))  # [..., B]
    return masked_mean(per_traj, rows)


def flow_matching(
    log_in_flows: Tensor, log_out_flows: Tensor, valid: Tensor, log_stop_flow: Tensor,
    log_reward: Tensor, rows: Tensor,
) -> Tensor:
    """FM (Bengio et al. 2021, https://arxiv.org/abs/2106.04399, in log form): for each visited
    non-initial state s', (log sum_s F(s -> s') - log(R(s') + sum_a F(s', a)))^2, where R is
    nonzero only at the terminal copy s_f(x) that stop leads to, and the out-flows of s_f(x)
    are none: interior states balance in- and out-flows (stop edge included), and the stop
    edge of each trajectory's x matches R(x). Mean over all these states.

    log_in_flows  [..., B, T-1, n]  : log F(s - e_i -> s) into s_1..s_{T-1}, -inf without parent i
    log_out_flows [..., B, T-1, n+1]: log F(s, a) out of them, -inf on invalid actions
    valid         [..., B, T-1]     : s_t with 0 < t < L (a visited interior state)
    log_stop_flow [..., B]          : log F(x -> s_f(x)) at the state x the trajectory stopped in
    log_reward    [..., B]          : log R(x)
    """
    log_in = log_in_flows.logsumexp(-1)  # [..., B, T-1]
    log_out = log_out_flows.logsumexp(-1)  # [..., B, T-1]
    counted = valid & rows[..., None]
    interior = torch.where(counted, log_in - log_out, 0.0).pow(2).sum((-2, -1))
    terminal = torch.where(rows, log_stop_flow - log_reward, 0.0).pow(2).sum(-1)
    return (interior + terminal) / (counted.sum((-2, -1)) + rows.sum(-1))
