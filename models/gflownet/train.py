"""Train a GFlowNet on the hypergrid with FM, DB, TB or SubTB(lambda), judged exactly.

One training iteration:
1. sample a batch of trajectories with the current policy (no gradient), exploring by
   epsilon-uniform mixing and a temperature (Gumbel-max with noise drawn once per batch);
2. optionally mix in as many trajectories from a replay buffer;
3. one batched forward pass over every state of the batch, the loss, one backward, Adam
   (log Z with its own learning rate).
Every ``report_every`` iterations the exact terminal distribution is computed by dynamic
programming (metrics.py) and reported: loss, l1 (exact), logz_error, modes_found,
trajectories, l1_sampled.

    from models.gflownet.train import train
    train({"loss": "tb", "height": 8, "ndim": 2, "n_trajectories": 32000})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.config import config_from_mapping
from models.gflownet.env import Hypergrid
from models.gflownet.losses import (
    detailed_balance,
    flow_matching,
    subtrajectory_balance,
    trajectory_balance,
)
from models.gflownet.metrics import evaluate, policy_outputs, terminal_distribution
from models.gflownet.nets import (
    ACTIVATIONS,
    PolicyMLP,
    backward_log_probs,
    forward_log_probs,
    log_state_flow,
)
from models.gflownet.sampling import ReplayBuffer, Trajectories, sample_trajectories

LOSSES = ("tb", "db", "subtb", "fm")
BACKWARD_POLICIES = ("uniform", "learned")
MAX_STATES = 2**22  # the exact metric enumerates every state


@dataclass
class Config:
    # environment
    ndim: int = 2
    height: int = 8
    r0: float = 0.1
    r1: float = 0.5
    r2: float = 2.0
    # objective
    loss: str = "tb"  # tb | db | subtb | fm
    lambda_: float = 0.9  # SubTB only
    backward_policy: str = "uniform"  # uniform | learned
    # network and optimizer
    hidden: int = 256
    depth: int = 2
    activation: str = "leaky_relu"
    lr: float = 1e-3
    logz_lr: float = 0.1
    # sampling
    batch_size: int = 128
    epsilon: float = 0.0  # probability of a uniform random action
    temperature: float = 1.0  # sample from softmax(logits / temperature)
    replay_size: int = 0  # 0: off; else a buffer of that many trajectories, replayed 1:1
    # budget and evaluation
    n_trajectories: int = 32_000
    n_iterations: int = 0  # > 0 overrides n_trajectories
    report_every: int = 50
    n_eval_samples: int = 200_000  # for l1_sampled; 0 to skip

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("ndim", self.ndim >= 1, ">= 1"),
            ("height", self.height >= 2, ">= 2"),
            ("r0", self.r0 > 0, "> 0"),
            ("r1", self.r1 >= 0, ">= 0"),
            ("r2", self.r2 >= 0, ">= 0"),
            ("loss", self.loss in LOSSES, f"one of {list(LOSSES)}"),
            ("lambda_", self.lambda_ > 0, "> 0"),
            ("backward_policy", self.backward_policy in BACKWARD_POLICIES,
             f"one of {list(BACKWARD_POLICIES)}"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("depth", self.depth >= 0, ">= 0"),
            ("activation", self.activation in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}"),
            ("lr", self.lr > 0, "> 0"),
            ("logz_lr", self.logz_lr > 0, "> 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("epsilon", 0 <= self.epsilon <= 1, "in [0, 1]"),
            ("temperature", self.temperature > 0, "> 0"),
            ("replay_size", self.replay_size == 0 or self.replay_size >= self.batch_size,
             "0 or >= batch_size"),
            ("n_trajectories", self.n_trajectories >= 1, ">= 1"),
            ("n_iterations", self.n_iterations >= 0, ">= 0"),
            ("report_every", self.report_every >= 1, ">= 1"),
            ("n_eval_samples", 0 <= self.n_eval_samples <= 2**31 - 1, "in [0, 2^31)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"gflownet config: {name} must be {rule}, got {getattr(self, name)!r}")
        if self.height**self.ndim > MAX_STATES:
            raise ValueError(
                f"gflownet config: height**ndim must be <= {MAX_STATES} for the exact metric, "
                f"got {self.height}**{self.ndim}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Build from a flat dict; unknown keys and ill-typed values raise ValueError."""
        return config_from_mapping(cls, d, "gflownet")

    @property
    def iterations(self) -> int:
        return self.n_iterations or math.ceil(self.n_trajectories / self.batch_size)


# ---- the loss of a batch ------------------------------------------------------------------


def transition_log_pb(env: Hypergrid, out: Tensor, x: Tensor, a: Tensor, learned: bool) -> Tensor:
    """log P_B(s_t | s_{t+1}) of every transition, ``[B, T]``, read at s_{t+1}; 0 for stop."""
    if learned:
        log_pb = backward_log_probs(env, out[:, 1:], x[:, 1:], True)  # [B, T-1, n]
        log_pb = log_pb.gather(-1, a[:, :-1, None].clamp(max=env.ndim - 1)).squeeze(-1)  # [B, T-1]
    else:  # uniform: 1 / n_parents(s_{t+1})
        log_pb = -env.n_parents(x[:, 1:]).clamp(min=1).to(out.dtype).log()  # [B, T-1]
    return F.pad(log_pb, (0, 1)).masked_fill(a == env.stop, 0.0)  # [B, T]


def node_log_flows(log_z: Tensor, log_f: Tensor, log_r: Tensor, lengths: Tensor) -> Tensor:
    """``[B, T+1]``: log Z, then log F(s_1), ..., with log R(x) at column L (see losses.py)."""
    b = log_f.shape[0]
    flows = torch.cat([log_z.expand(b, 1), log_f[:, 1:], log_r.new_zeros(b, 1)], 1)  # [B, T+1]
    return flows.scatter(1, lengths[:, None], log_r[:, None])


def fm_batch_loss(env: Hypergrid, policy: torch.nn.Module, traj: Trajectories, valid: Tensor) -> Tensor:
    """Flow matching on s_1..s_{L-1} and the terminal copy of x, from one forward pass over
    the states of the batch and the n candidate parents of s_1..s_{T-1} together."""
    n, (b, t) = env.ndim, valid.shape
    x = traj.states[..., :n]  # [B, T, n]
    eye = torch.eye(n, dtype=torch.long, device=x.device)
    parents = (x[:, 1:, None, :] - eye).clamp(min=0)  # [B, T-1, n, n]: row i is s - e_i
    out = policy(torch.cat([x.reshape(-1, n), parents.reshape(-1, n)]))  # [BT + B(T-1)n, 2n+2]
    out_s, out_p = out[: b * t].view(b, t, -1), out[b * t :].view(b, t - 1, n, -1)
    log_out = out_s[..., : n + 1].masked_fill(env.forward_invalid(traj.states), -math.inf)
    has_parent = env.backward_mask(x[:, 1:])  # [B, T-1, n]
    has_parent = has_parent | ~has_parent.any(-1, keepdim=True)  # s0 rows: finite, unused
    log_in = out_p[..., :n].diagonal(dim1=-2, dim2=-1).masked_fill(~has_parent, -math.inf)
    log_stop = log_out[..., n].gather(1, (traj.lengths - 1)[:, None])[:, 0]  # [B]
    log_r = env.log_reward_at(traj.terminal, out.dtype)  # [B]
    return flow_matching(log_in, log_out[:, 1:], valid[:, 1:], log_stop, log_r)


def batch_loss(
    cfg: Config, env: Hypergrid, policy: torch.nn.Module, traj: Trajectories
) -> Tensor:
    """The configured loss on a batch, from one batched forward over all its states."""
    n, t = env.ndim, traj.actions.shape[1]
    x, a, lengths = traj.states[..., :n], traj.actions, traj.lengths
    valid = torch.arange(t, device=a.device) < lengths[:, None]  # [B, T]
    if cfg.loss == "fm":
        return fm_batch_loss(env, policy, traj, valid)
    out = policy(x)  # [B, T, 2n+2]
    log_pf = out[..., : n + 1].masked_fill(env.forward_invalid(traj.states), -math.inf)
    log_pf = log_pf.log_softmax(-1).gather(-1, a[..., None]).squeeze(-1)  # [B, T]
    log_pb = transition_log_pb(env, out, x, a, cfg.backward_policy == "learned")  # [B, T]
    log_r = env.log_reward_at(traj.terminal, out.dtype)  # [B]
    if cfg.loss == "tb":
        return trajectory_balance(policy.log_z, log_pf, log_pb, log_r, valid)
    log_flow = node_log_flows(policy.log_z, log_state_flow(out), log_r, lengths)  # [B, T+1]
    if cfg.loss == "db":
        return detailed_balance(log_flow, log_pf, log_pb, valid)
    return subtrajectory_balance(log_flow, log_pf, log_pb, lengths, cfg.lambda_)


# ---- training -----------------------------------------------------------------------------


def build(cfg: Config, device: str) -> tuple[Hypergrid, PolicyMLP, torch.optim.Optimizer]:
    """The environment, the policy and Adam with log Z in its own parameter group."""
    env = Hypergrid(cfg.ndim, cfg.height, cfg.r0, cfg.r1, cfg.r2, device=device)
    policy = PolicyMLP(cfg.ndim, cfg.height, cfg.hidden, cfg.depth, cfg.activation).to(device)
    optimizer = torch.optim.Adam(
        [{"params": list(policy.mlp.parameters()), "lr": cfg.lr},
         {"params": [policy.log_z], "lr": cfg.logz_lr}],
        fused=True,  # one kernel per parameter group: the step costs little beside the network
    )
    return env, policy, optimizer


def train_step(
    cfg: Config, env: Hypergrid, policy: PolicyMLP, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, visits: Tensor, buffer: ReplayBuffer | None = None,
) -> Tensor:
    """One iteration: sample (counting terminal visits), replay, loss, backward, step.
    Returns the loss, without synchronizing."""
    traj = sample_trajectories(env, policy, cfg.batch_size, generator, epsilon=cfg.epsilon,
                               temperature=cfg.temperature)
    visits.index_add_(0, traj.terminal, torch.ones_like(traj.terminal))
    batch = traj
    if buffer is not None:
        buffer.add(traj)
        batch = Trajectories.cat(traj.pad_to(env.max_actions, env.stop),
                                 buffer.sample(cfg.batch_size, generator))
    loss = batch_loss(cfg, env, policy, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train(
    config: Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    report: Callable[[int, dict[str, float]], None] | None = None,
    artifact_dir: str | None = None,
) -> dict[str, float]:
    """Train and return the final metrics; ``l1`` (exact) is the primary one, minimized."""
    cfg = Config.from_dict(config)
    torch.manual_seed(seed)
    np.random.seed(seed)
    generator = torch.Generator(device=device)  # training samples
    generator.manual_seed(seed)
    eval_generator = torch.Generator(device=device)  # l1_sampled: reports never shift training
    eval_generator.manual_seed(seed + 1)
    env, policy, optimizer = build(cfg, device)
    buffer = ReplayBuffer(cfg.replay_size, env) if cfg.replay_size else None
    visits = torch.zeros(env.n_states, dtype=torch.long, device=env.device)  # terminal visits
    loss_sum, since = torch.zeros((), device=env.device), 0
    metrics: dict[str, float] = {}
    for it in range(1, cfg.iterations + 1):
        loss_sum += train_step(cfg, env, policy, optimizer, generator, visits, buffer)
        since += 1
        if it % cfg.report_every == 0 or it == cfg.iterations:
            metrics = {"loss": float(loss_sum) / since}
            metrics |= evaluate(env, policy, cfg.loss == "fm", visits, eval_generator,
                                cfg.n_eval_samples)
            metrics["trajectories"] = float(it * cfg.batch_size)
            loss_sum.zero_()
            since = 0
            if report is not None:
                report(it, metrics)  # may raise (pruning): let it propagate
    metrics["modes_total"] = float(env.n_modes())
    metrics["logz_true"] = env.log_partition()
    if artifact_dir is not None and cfg.ndim == 2:
        save_distribution_png(env, policy, Path(artifact_dir) / "distribution.png")
    return metrics


def save_distribution_png(env: Hypergrid, policy: torch.nn.Module, path: Path) -> None:
    """Target R/Z beside the learned terminal distribution, for 2-D grids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = env.all_states()
    p = terminal_distribution(env, forward_log_probs(env, policy_outputs(policy, env), x))
    reward = env.reward(x)
    shape = (env.height, env.height)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, grid, title in ((axes[0], reward / reward.sum(), "target R/Z"), (axes[1], p, "learned")):
        ax.imshow(grid.view(shape).T.cpu().numpy(), origin="lower")  # x_0 across, x_1 up
        ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# the population form (models/population.py); imported last: population.py imports this module lazily
from models.gflownet.population import POPULATION  # noqa: E402

train.population = POPULATION  # type: ignore[attr-defined]
