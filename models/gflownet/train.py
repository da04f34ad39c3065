"""Train GFlowNets on the hypergrid with FM, DB, TB or SubTB(lambda), judged exactly: one trial
or a population of K trials, by one implementation.

``train(config)`` runs a population of one. A population (models/population.py) holds up to K
trials, each with its own configuration and seed, as one model: their policy networks stacked
``[K, ...]`` and padded to the widest and deepest member, their batches padded to the largest.
One ``advance()`` is one training iteration for every member (Bengio et al. 2021,
https://arxiv.org/abs/2106.04399; Malkin et al. 2022, https://arxiv.org/abs/2201.13259):

1. each member draws its exploration noise from its own generator (epsilon-uniform mixing and a
   temperature by Gumbel-max, sampling.py), padded to the population's largest batch;
2. the policy: where the grid has no more states than a batch has rows (8x8: 64 states against
   128 trajectories x 15 steps), ONE pass of the stacked networks over every state serves both
   the rollouts (its outputs, detached, looked up per row) and the loss (looked up with
   gradient: the gradient is summed per state, then goes once through the network). Otherwise
   the networks run on the rows themselves: per rollout step without gradient, then on the
   whole batch with it;
3. the rollouts of all members together (sampling.rollout), replay (a ring buffer per member);
4. each member's loss (losses.py; its own loss type, P_B, lambda), mean over its own
   trajectories only; one backward for all; Adam (models/functional_optim.py) with [K] learning
   rates: ``lr`` for the network, ``logz_lr`` for log Z;
5. every ``report_every`` of its own iterations a member's exact terminal distribution is
   computed by dynamic programming (metrics.py) and reported: loss (mean since the last
   report), l1 (exact), logz_error, logz, modes_found, l1_sampled, trajectories.

Exactness. A member's network is initialised as ``PolicyMLP`` at its own width and depth under
``torch.manual_seed(seed)`` (forked RNG) and copied into its padded row; padded units have zero
incoming rows, biases and outgoing columns, act(0) = 0 for every activation offered, so they add
exact zeros and get zero (and masked) gradients, and Adam keeps them at zero; rows are kept
sorted by depth, deepest first, so a hidden layer runs on the prefix of the rows deep enough
for it and a shallower member skips it (no compute spent, no gradient); padded trajectories are
rolled out with zero noise and masked in every mean. So a member reports what it reports alone, up to the order of a few floating-point
sums (float64: ~1e-15 relative; the tests check 1e-10; float32 drift: see the README).

Isolation: a member whose loss is NaN / inf fails alone (its update masked); an exception in a
member's report fails that member; an exception in the batched step is retried member by
member (each member's generators rewound), so only the member that raises fails. Only running
members are computed: rows are kept compact (the rows after one that leaves move up) and the
padding shrinks when the widest or deepest member leaves.

    from models.gflownet.train import train
    train({"loss": "tb", "height": 8, "ndim": 2, "n_trajectories": 32000})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import config_from_mapping
from models.functional_optim import AdamState, adam_init, adam_reset, adam_step
from models.gflownet.env import Hypergrid
from models.gflownet.losses import (
    detailed_balance,
    flow_matching,
    subtrajectory_balance,
    trajectory_balance,
)
from models.gflownet.metrics import EVAL_CHUNK, evaluate, terminal_distribution
from models.gflownet.nets import ACTIVATIONS, PolicyMLP, backward_log_probs, forward_log_probs
from models.gflownet.sampling import ReplayBuffer, Trajectories, exploration_noise, rollout
from models.population import MemberEvent, PopulationForm

LOSSES = ("tb", "db", "subtb", "fm")
BACKWARD_POLICIES = ("uniform", "learned")
MAX_STATES = 2**22  # the exact metric enumerates every state
ADAM_CHUNK = 2**17  # parameters per Adam call (rows of K members taken together up to this)


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

    @property
    def uses_table(self) -> bool:
        """One network pass over every state per iteration, when they are fewer than the rows."""
        rows = self.batch_size * (2 if self.replay_size else 1)
        return self.height**self.ndim <= rows * (self.ndim * (self.height - 1) + 1)


# Every Config field in exactly one class (tests/unit/models/test_gflownet_population.py checks):
# equal within a population / free per member / padded to the population's largest
STRUCTURAL = ("ndim", "height", "r0", "r1", "r2",  # the environment all members share
              "activation")  # the network's code
PER_MEMBER = ("loss", "lambda_", "backward_policy",  # losses chosen per member (row groups)
              "lr", "logz_lr",  # [K] learning rates
              "epsilon", "temperature",  # [K] exploration, each member's own noise
              "n_trajectories", "n_iterations", "report_every", "n_eval_samples")  # own budget
PADDED = ("hidden", "depth", "batch_size", "replay_size")


def bucket(config: Mapping[str, Any]) -> tuple[Any, ...]:
    """Members share a population only within one bucket, which bounds the padding's waste.

    Depth costs nothing (a member skips the layers past its own depth), but depth 0 (no hidden
    layer) is apart. With the table (step 2 of the module docstring) a member's network runs on
    every state, whatever its batch: the batch size costs only rollout look-ups, the width costs
    the network. Widths up to 128 are cheap beside an iteration's fixed costs and share one
    bucket; wider ones are split by factors of sqrt(2) (up to 2x multiply-adds per padded
    hidden-to-hidden layer). Without the table the rows cost the network too: powers of two of
    width and rows, FM apart (its parents' pass)."""
    cfg = Config.from_dict(config)
    replay, deep = cfg.replay_size > 0, cfg.depth > 0
    if cfg.uses_table:
        width = 0 if cfg.hidden <= 128 else math.ceil(2 * math.log2(cfg.hidden / 128))
        return ("table", replay, deep, width)
    rows = cfg.batch_size * (2 if replay else 1)
    return ("rows", replay, deep, cfg.loss == "fm", math.ceil(math.log2(cfg.hidden)),
            math.ceil(math.log2(rows)))


# ---- the loss of a batch, for K members at once -------------------------------------------

Outputs = Callable[[Tensor, Tensor | None], Tensor]  # (states [k, ..., n], members [k] | None)


def transition_log_pb(env: Hypergrid, out: Tensor, x: Tensor, a: Tensor, learned: bool | Tensor) -> Tensor:
    """log P_B(s_t | s_{t+1}) of every transition, ``[..., B, T]``, read at s_{t+1}; 0 for stop.
    ``learned``: one bool for all, or ``[K]`` (then ``out`` is ``[K, B, T, 2n+2]``)."""
    uniform = -env.n_parents(x[..., 1:, :]).clamp(min=1).to(out.dtype).log()  # [..., T-1]: 1/n_parents
    log_pb = uniform
    if learned is not False:
        lp = backward_log_probs(env, out[..., 1:, :], x[..., 1:, :], True)  # [..., T-1, n]
        lp = lp.gather(-1, a[..., :-1, None].clamp(max=env.ndim - 1)).squeeze(-1)  # [..., T-1]
        log_pb = lp if learned is True else torch.where(learned[:, None, None], lp, uniform)
    return F.pad(log_pb, (0, 1)).masked_fill(a == env.stop, 0.0)  # [..., T]


def node_log_flows(log_z: Tensor, log_f: Tensor, log_r: Tensor, lengths: Tensor) -> Tensor:
    """``[..., B, T+1]``: log Z, then log F(s_1), ..., with log R(x) at column L (see losses.py)."""
    lead = log_f.shape[:-1]
    flows = torch.cat([log_z[..., None, None].expand(*lead, 1), log_f[..., 1:],
                       log_r.new_zeros(*lead, 1)], -1)  # [..., B, T+1]
    return flows.scatter(-1, lengths[..., None], log_r[..., None])


def batch_losses(
    env: Hypergrid, outputs_at: Outputs, log_z: Tensor, traj: Trajectories,
    rows: Tensor, kinds: list[str], learned: list[bool], lambda_: Tensor,
) -> Tensor:
    """Each member's loss on its batch, ``[K]``.

    ``outputs_at(x [K, ..., n], None) -> [K, ..., 2n+2]``: the members' network outputs on
    states (``outputs_at(x [k, ...], members [k])``: of the members listed); ``log_z [K]``;
    ``traj`` ``[K, B, T, ...]``; ``rows [K, B]`` the members' own trajectories; ``kinds``,
    ``learned``: each member's loss and backward policy; ``lambda_ [K]`` (SubTB).
    Each loss type is computed on the rows of its members only (row groups)."""
    n = env.ndim
    x, a, lengths = traj.states[..., :n], traj.actions, traj.lengths
    valid = torch.arange(a.shape[-1], device=a.device) < lengths[..., None]  # [K, B, T]
    out = outputs_at(x, None)  # [K, B, T, 2n+2]
    log_r = env.log_reward_at(traj.terminal, out.dtype)  # [K, B]
    groups = {k: [i for i, kind in enumerate(kinds) if kind == k] for k in LOSSES}
    groups = {k: ix for k, ix in groups.items() if ix}
    index = {k: None if len(ix) == len(kinds) else torch.tensor(ix, device=a.device)
             for k, ix in groups.items()}

    def sel(kind: str, t: Tensor) -> Tensor:
        ix = index[kind]
        return t if ix is None else t.index_select(0, ix)

    parts: dict[str, Tensor] = {}
    if set(groups) - {"fm"}:
        log_pf = out[..., : n + 1].masked_fill(env.forward_invalid(traj.states), -math.inf)
        log_pf = log_pf.log_softmax(-1).gather(-1, a[..., None]).squeeze(-1)  # [K, B, T]
        flag: bool | Tensor = all(learned)  # or, when the members differ, [K]
        if any(learned) and not flag:
            flag = torch.tensor(learned, device=a.device)
        log_pb = transition_log_pb(env, out, x, a, flag)  # [K, B, T]
        if "tb" in groups:
            parts["tb"] = trajectory_balance(
                *(sel("tb", t) for t in (log_z, log_pf, log_pb, log_r, valid, rows)))
        if groups.keys() & {"db", "subtb"}:
            log_flow = node_log_flows(log_z, out[..., -1], log_r, lengths)  # [K, B, T+1]
            if "db" in groups:
                parts["db"] = detailed_balance(
                    *(sel("db", t) for t in (log_flow, log_pf, log_pb, valid, rows)))
            if "subtb" in groups:
                parts["subtb"] = subtrajectory_balance(
                    *(sel("subtb", t) for t in (log_flow, log_pf, log_pb, lengths, lambda_, rows)))
    if "fm" in groups:
        parts["fm"] = fm_losses(env, outputs_at, sel("fm", out), *(sel("fm", t) for t in (
            traj.states, lengths, traj.terminal, valid, rows)), index["fm"])
    if len(parts) == 1:
        return next(iter(parts.values()))
    losses = log_z.new_zeros(len(kinds))
    for kind, part in parts.items():
        losses = losses.index_put((index[kind],), part)
    return losses


def fm_losses(env: Hypergrid, outputs_at: Outputs, out: Tensor, states: Tensor,
              lengths: Tensor, terminal: Tensor, valid: Tensor, rows: Tensor,
              members: Tensor | None) -> Tensor:
    """Flow matching on s_1..s_{L-1} and the terminal copy of x (losses.flow_matching): the
    in-flows of s are the outputs of its n candidate parents s - e_i, read at action i.
    ``members``: which of ``outputs_at``'s members these rows are (None: all)."""
    n = env.ndim
    x = states[..., :n]  # [K, B, T, n]
    eye = torch.eye(n, dtype=torch.long, device=x.device)
    parents = (x[..., 1:, None, :] - eye).clamp(min=0)  # [K, B, T-1, n, n]: row i is s - e_i
    out_p = outputs_at(parents, members)  # [K, B, T-1, n, 2n+2]
    log_out = out[..., : n + 1].masked_fill(env.forward_invalid(states), -math.inf)
    has_parent = env.backward_mask(x[..., 1:, :])  # [K, B, T-1, n]
    has_parent = has_parent | ~has_parent.any(-1, keepdim=True)  # s0 rows: finite, unused
    log_in = out_p[..., :n].diagonal(dim1=-2, dim2=-1).masked_fill(~has_parent, -math.inf)
    log_stop = log_out[..., n].gather(-1, (lengths - 1)[..., None])[..., 0]  # [K, B]
    log_r = env.log_reward_at(terminal, out.dtype)  # [K, B]
    return flow_matching(log_in, log_out[..., 1:, :], valid[..., 1:], log_stop, log_r, rows)


def batch_loss(cfg: Config, env: Hypergrid, policy: nn.Module, traj: Trajectories) -> Tensor:
    """The configured loss of one policy module on a batch ``[B, T, ...]`` (a population of one;
    ``policy(x [..., n]) -> [..., 2n+2]`` with a ``log_z``)."""
    one = Trajectories(*(t[None] for t in (traj.states, traj.actions, traj.lengths, traj.terminal)))
    rows = torch.ones_like(traj.lengths[None], dtype=torch.bool)
    lam = torch.tensor([cfg.lambda_], dtype=policy.log_z.dtype, device=traj.lengths.device)
    return batch_losses(env, lambda x, _: policy(x[0])[None], policy.log_z.reshape(1), one, rows,
                        [cfg.loss], [cfg.backward_policy == "learned"], lam)[0]


# ---- the members' networks, stacked and padded --------------------------------------------
#
# PolicyMLP (nets.py) per member: one-hot state [n*H] -> D hidden layers of width h -> 2n+2
# outputs, and a scalar log Z. Stacked over the population's rows with every member padded to
# the widest width Hm and the deepest depth D, rows sorted deepest first, so that the rows of
# hidden layer l are a prefix (the members with depth > l): only they are computed and updated.
#   w0 [S, Hm, nH], b0 [S, Hm]                first layer (D >= 1)
#   wh1 [S, Hm, Hm], bh1 [S, Hm], ...         hidden layers l = 1..D-1 (the 2nd..D-th)
#   wo [S, 2n+2, Hm or nH], bo [S, 2n+2]      output layer
#   log_z [S]


def param_shapes(ndim: int, height: int, width: int, deep: int) -> dict[str, tuple[int, ...]]:
    """Per-row shapes of the stacked parameters (see above)."""
    n_in, n_out = ndim * height, 2 * ndim + 2
    shapes: dict[str, tuple[int, ...]] = {}
    if deep >= 1:
        shapes |= {"w0": (width, n_in), "b0": (width,)}
    for layer in range(1, deep):
        shapes |= {f"wh{layer}": (width, width), f"bh{layer}": (width,)}
    return shapes | {"wo": (n_out, width if deep else n_in), "bo": (n_out,), "log_z": ()}


def layer_of(name: str) -> int:
    """The hidden layer a stacked parameter belongs to (wh3 -> 3), 0 for the others."""
    return int(name[2:]) if name[:2] in ("wh", "bh") else 0


def stacked_forward(p: dict[str, Tensor], h: Tensor, act: nn.Module) -> Tensor:
    """The stacked networks on one-hot states ``h [K, R, nH]`` -> ``[K, R, 2n+2]``, one
    ``baddbmm`` per layer for all members. ``p[f"wh{l}"]`` holds the first c rows only, those
    deep enough for hidden layer l; the others pass h on as it is (their network has no such
    layer)."""
    if "w0" in p:
        h = act(linear(p["b0"], h, p["w0"]))  # [K, R, Hm]
    layer = 1
    while f"wh{layer}" in p:
        w, b = p[f"wh{layer}"], p[f"bh{layer}"]  # [c, Hm, Hm], [c, Hm]
        c = w.shape[0]
        f = act(linear(b, h[:c], w))
        h = f if c == h.shape[0] else torch.cat([f, h[c:]])
        layer += 1
    return linear(p["bo"], h, p["wo"])  # [K, R, 2n+2]


def linear(b: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """h W^T + b of each member: ``h [K, R, in]``, ``w [K, out, in]``, ``b [K, out]`` ->
    ``[K, R, out]``. One ``baddbmm``; one ``addmm`` when K = 1 (its backward's matrix products
    are ~1.3x faster than bmm's on CPU: a solo run stays as fast as a plain ``nn.Linear``)."""
    if h.shape[0] == 1:
        return torch.addmm(b[0], h[0], w[0].t())[None]
    return torch.baddbmm(b[:, None], h, w.transpose(1, 2))


# ---- the population ------------------------------------------------------------------------


@dataclass
class _Member:
    slot: int
    cfg: Config
    generator: torch.Generator  # training draws (noise, replay)
    eval_generator: torch.Generator  # l1_sampled, so that reports never shift training
    buffer: ReplayBuffer | None
    artifact_dir: str | None
    step: int = 0
    since: int = 0  # iterations since the last report
    last_report: int = 0
    status: str = "running"  # running | done | failed


@dataclass
class _Rows:
    """Per-row hyperparameters of a contiguous run of rows, as tensors."""

    lr: Tensor  # [k]
    logz_lr: Tensor  # [k]
    lambda_: Tensor  # [k]
    batch: Tensor  # [k] long
    units: Tensor | None  # [k, Hm] 1 on a member's own units, None when all have width Hm
    kinds: list[str] = field(default_factory=list)
    learned: list[bool] = field(default_factory=list)


@dataclass
class _Step:
    """What one iteration computed, before anything is changed (so that it can be retried)."""

    losses: Tensor  # [k], detached
    values: list[float]
    grads: dict[str, Tensor | None]  # per stacked parameter, its own rows
    terminal: Tensor  # [k, B] sampled (not replayed) terminal states
    rows: Tensor  # [k, B] bool


class GFlowNetPopulation:
    """Up to ``capacity`` GFlowNet trials of one signature (see the module docstring).

    ``table``: evaluate the networks once on every state (None: when the grid has no more
    states than a batch has rows, as ``Config.uses_table``). ``isolate``: a member's exception
    fails that member (an event); off for ``train()``, where it propagates."""

    def __init__(self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu",
                 table: bool | None = None, isolate: bool = True) -> None:
        if capacity < 1:
            raise ValueError(f"gflownet population: capacity must be >= 1, got {capacity}")
        cfg = Config.from_dict(config)
        self.capacity, self.device, self.isolate = capacity, torch.device(device), isolate
        self.key = self._key(cfg)
        self.dtype = torch.get_default_dtype()  # as a plain module would be built
        self.env = Hypergrid(cfg.ndim, cfg.height, cfg.r0, cfg.r1, cfg.r2, device=device)
        self.act = ACTIVATIONS[cfg.activation]()
        self.table = cfg.uses_table if table is None else table
        self.values = torch.arange(cfg.height, device=self.device)  # [H] for the one-hot
        self.one_hot_all = self._one_hot(self.env.all_states())  # [N, nH]
        self.members: list[_Member | None] = [None] * capacity  # by slot
        self.rows: list[_Member] = []  # the running members, row i of every stacked tensor
        self.width, self.deep, self.size = 0, 0, 0
        self.params: dict[str, Tensor] = {}
        self._cache: _Rows | None = None
        self._resize(1, cfg.hidden, cfg.depth)

    @staticmethod
    def _key(cfg: Config) -> tuple[Any, ...]:
        return tuple(getattr(cfg, k) for k in STRUCTURAL) + (bucket(vars(cfg)),)

    # ---- membership ---------------------------------------------------------------------

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        cfg = Config.from_dict(config)
        if self._key(cfg) != self.key:
            mine = dict(zip(STRUCTURAL, self.key, strict=False))
            differ = [f"{k}={getattr(cfg, k)!r} (population: {mine[k]!r})" for k in STRUCTURAL
                      if getattr(cfg, k) != mine[k]]
            differ = differ or [f"bucket {bucket(vars(cfg))} (population: {self.key[-1]}): "
                                f"hidden, depth, batch_size or replay_size out of its range"]
            raise ValueError("gflownet population: the signature differs: " + ", ".join(differ))
        free = [i for i, m in enumerate(self.members) if m is None]
        if not free:
            raise ValueError(f"gflownet population: full ({self.capacity} members)")
        slot = free[0]
        row = sum(m.cfg.depth >= cfg.depth for m in self.rows)  # rows stay sorted, deepest first
        # the member's own network, drawn at its own shape as train() alone draws it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = PolicyMLP(cfg.ndim, cfg.height, cfg.hidden, cfg.depth, cfg.activation)
        k = len(self.rows)
        size = self.size if k < self.size else min(self.capacity, max(2 * self.size, k + 1))
        self._resize(size, max(self.width, cfg.hidden), max(self.deep, cfg.depth))
        for t in self._row_tensors():  # rows row.. move down one
            t[row + 1 : k + 1] = t[row:k].clone()
        self._write_row(row, net, cfg)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        eval_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        buffer = ReplayBuffer(cfg.replay_size, self.env) if cfg.replay_size else None
        member = _Member(slot, cfg, generator, eval_generator, buffer, artifact_dir)
        self.members[slot] = member
        self.rows.insert(row, member)
        self._cache = None
        return slot

    def remove(self, slot: int) -> None:
        m = self.members[slot] if 0 <= slot < self.capacity else None
        if m is None:
            raise ValueError(f"gflownet population: slot {slot} holds no member")
        if m.status == "running":
            self._release(self.rows.index(m))
        self.members[slot] = None

    def occupied(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m is not None]

    # ---- one iteration for everyone -----------------------------------------------------

    def advance(self) -> list[MemberEvent]:
        """One training iteration for every running member (see the module docstring)."""
        k = len(self.rows)
        if not k:
            return []
        saved = [self._save(m) for m in self.rows] if self.isolate else []
        steps: list[tuple[int, _Step]] = []
        broken: dict[int, str] = {}
        try:
            steps.append((0, self._compute(0, k)))
        except Exception:
            if not self.isolate:
                raise
            for i, m in enumerate(self.rows):  # find the member that raises: each one alone
                self._restore(m, saved[i])
                try:
                    steps.append((i, self._compute(i, i + 1)))
                except Exception as exc:
                    broken[i] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        values: dict[int, float] = {}
        for lo, step in steps:
            self._commit(lo, step)
            values.update(zip(range(lo, lo + len(step.values)), step.values, strict=True))
        reports: list[MemberEvent] = []
        ends: list[MemberEvent] = []
        for i, m in enumerate(self.rows):
            value = values.get(i, math.nan)
            if i in broken or not math.isfinite(value):
                kind = "nan" if math.isnan(value) else "inf"
                reason = (f"{broken[i]} at step {m.step + 1}" if i in broken
                          else f"loss is {kind} at step {m.step + 1} (diverged)")
                ends.append(self._fail(m, reason))
                continue
            m.step += 1
            m.since += 1
            if m.step % m.cfg.report_every == 0 or m.step == m.cfg.iterations:
                try:
                    metrics = self._report(i, m)
                    reports.append(MemberEvent(m.slot, "report", m.step, dict(metrics)))
                    if m.step == m.cfg.iterations:
                        m.status = "done"
                        ends.append(MemberEvent(m.slot, "done", m.step, self._final(i, m, metrics)))
                except Exception as exc:
                    if not self.isolate:
                        raise
                    ends.append(self._fail(m, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                                           + f" at step {m.step}"))
        for i in reversed(range(k)):  # done and failed members leave the compute
            if self.rows[i].status != "running":
                self._release(i)
        return sorted(reports, key=lambda e: e.slot) + sorted(ends, key=lambda e: e.slot)

    def _compute(self, lo: int, hi: int) -> _Step:
        """Rows lo..hi: draws, rollouts, replay, losses and gradients; changes no state but the
        members' generators and replay buffers (``_save`` / ``_restore`` rewind them)."""
        env, n, k = self.env, self.env.ndim, hi - lo
        members, hyper = self.rows[lo:hi], self._hyper(lo, hi)
        b = max(m.cfg.batch_size for m in members)
        # 1. each member's noise from its own generator, padded to the largest batch
        drawn = [exploration_noise(env, m.cfg.batch_size, m.cfg.epsilon, m.cfg.temperature,
                                   m.generator, self.dtype) for m in members]
        if k == 1:
            noise, keep = drawn[0][0][:, None], drawn[0][1]  # [T, 1, B, n+1]
            keep = None if keep is None else keep[:, None]
        else:
            noise = torch.zeros(env.max_actions, k, b, n + 1, dtype=self.dtype, device=self.device)
            keep = None
            for i, (nz, kp) in enumerate(drawn):
                noise[:, i, : nz.shape[1]] = nz
                if kp is not None:
                    if keep is None:
                        keep = torch.ones(env.max_actions, k, b, 1, dtype=self.dtype, device=self.device)
                    keep[:, i, : kp.shape[1]] = kp
        rows = torch.arange(b, device=self.device) < hyper.batch[:, None]  # [k, B]
        # 2. the policy: one pass over every state (table), or the networks on the rows
        leaves = {name: p.detach().requires_grad_() for name, p in self._view(lo, hi).items()}
        if self.table:
            table = stacked_forward(leaves, self.one_hot_all.expand(k, -1, -1), self.act)  # [k, N, 2n+2]
            logits = table.detach()[..., : n + 1]

            def logits_of(s: Tensor) -> Tensor:
                return _look_up(logits, env.index(s[..., :n]))

            def outputs_at(x: Tensor, which: Tensor | None) -> Tensor:
                return _look_up(table if which is None else table.index_select(0, which), env.index(x))
        else:
            fixed = {name: p.detach() for name, p in leaves.items()}

            def logits_of(s: Tensor) -> Tensor:
                return self._forward_rows(fixed, s[..., :n])[..., : n + 1]

            def outputs_at(x: Tensor, which: Tensor | None) -> Tensor:
                if which is None:
                    return self._forward_rows(leaves, x)
                sub = {name: p.index_select(0, which[which < p.shape[0]]) for name, p in leaves.items()}
                return self._forward_rows({name: p for name, p in sub.items() if p.shape[0]}, x)
        # 3. rollouts of all members together; replay
        traj = rollout(env, logits_of, noise, keep)  # [k, B, T, ...]
        batch, batch_rows = traj, rows
        if members[0].buffer is not None:
            batch, batch_rows = self._replay(members, traj, rows)
        # 4. each member's loss, one backward
        losses = batch_losses(env, outputs_at, leaves["log_z"], batch, batch_rows, hyper.kinds,
                              hyper.learned, hyper.lambda_)  # [k]
        finite = torch.isfinite(losses.detach())
        grads = torch.autograd.grad(torch.where(finite, losses, 0.0).sum(), list(leaves.values()),
                                    allow_unused=True)  # FM alone: log Z unused, no step
        return _Step(losses.detach(), losses.detach().tolist(), dict(zip(leaves, grads, strict=True)),
                     traj.terminal, rows)

    def _replay(self, members: list[_Member], traj: Trajectories, rows: Tensor
                ) -> tuple[Trajectories, Tensor]:
        """Each member's batch into its ring buffer, as many drawn from it (its generator), both
        padded to the longest path: ``[k, 2B, T, ...]`` (as ReplayBuffer alone)."""
        env = self.env
        traj = traj.pad_to(env.max_actions, env.stop)
        drawn = Trajectories(torch.zeros_like(traj.states), torch.full_like(traj.actions, env.stop),
                             torch.ones_like(traj.lengths), torch.zeros_like(traj.terminal))
        for i, m in enumerate(members):
            bk = m.cfg.batch_size
            assert m.buffer is not None
            m.buffer.add(Trajectories(traj.states[i, :bk], traj.actions[i, :bk], traj.lengths[i, :bk],
                                      traj.terminal[i, :bk]))
            sample = m.buffer.sample(bk, m.generator)
            for store, value in zip((drawn.states, drawn.actions, drawn.lengths, drawn.terminal),
                                    (sample.states, sample.actions, sample.lengths, sample.terminal),
                                    strict=True):
                store[i, :bk] = value
        return Trajectories.cat(traj, drawn, dim=1), torch.cat([rows, rows], 1)

    def _commit(self, lo: int, step: _Step) -> None:
        """Apply one computed iteration: terminal visits, loss sums, Adam."""
        k, hyper = len(step.values), self._hyper(lo, lo + len(step.values))
        n_states = self.env.n_states
        flat = (torch.arange(k, device=self.device)[:, None] * n_states + step.terminal).flatten()
        self.visits[lo : lo + k].view(-1).index_add_(0, flat, step.rows.flatten().long())
        finite = torch.isfinite(step.losses)
        self.loss_sum[lo : lo + k] += torch.where(finite, step.losses, 0.0)
        mask = None if all(math.isfinite(v) for v in step.values) else finite
        # Adam on each parameter's own rows: the deeper layers' prefixes in calls of their own,
        # which start from the step counts before this step (the first call counts it)
        params, moments = self._view(lo, lo + k), self._view(lo, lo + k, self._moments())
        # (and in chunks of rows, so that each chunk's moments stay in the cache for all passes)
        before = self.opt.step[lo : lo + k].clone()
        for c in sorted({p.shape[0] for p in params.values()}, reverse=True):
            names = [name for name, p in params.items() if p.shape[0] == c]
            grads = [step.grads[name] for name in names]
            if hyper.units is not None:  # padded units: their gradients are exact zeros; kept so
                for name, g in zip(names, grads, strict=True):
                    for factor in () if g is None else _unit_mask(name, hyper.units[:c]):
                        g.mul_(factor)
            chunk = max(1, ADAM_CHUNK // sum(params[name][0].numel() for name in names))
            for r0 in range(0, c, chunk):
                rs = slice(r0, min(c, r0 + chunk))
                count = self.opt.step[lo : lo + k][rs] if c == k else before[rs].clone()
                state = AdamState([moments[f"m.{name}"][rs] for name in names],
                                  [moments[f"v.{name}"][rs] for name in names], count)
                adam_step([params[name][rs] for name in names],
                          [None if g is None else g[rs] for g in grads], state,
                          lr=[(hyper.logz_lr if name == "log_z" else hyper.lr)[: c][rs] for name in names],
                          mask=None if mask is None else mask[rs])

    # ---- reports ------------------------------------------------------------------------

    @torch.no_grad()
    def outputs(self, row: int) -> Tensor:
        """Row ``row``'s network on every state, ``[H^n, 2n+2]`` (in chunks)."""
        p = self._view(row, row + 1)
        return torch.cat([stacked_forward(p, chunk[None], self.act)[0]
                          for chunk in torch.split(self.one_hot_all, EVAL_CHUNK)])

    def _report(self, row: int, m: _Member) -> dict[str, float]:
        """The member's report at its step: mean loss since the last, exact metrics."""
        metrics = {"loss": float(self.loss_sum[row]) / m.since}
        metrics |= evaluate(self.env, self.outputs(row), float(self.params["log_z"][row]),
                            m.cfg.loss == "fm", self.visits[row], m.eval_generator, m.cfg.n_eval_samples)
        metrics["trajectories"] = float(m.step * m.cfg.batch_size)
        self.loss_sum[row] = 0
        m.since, m.last_report = 0, m.step
        return metrics

    def _final(self, row: int, m: _Member, metrics: dict[str, float]) -> dict[str, float]:
        """What train() returns: the last report's metrics, modes_total, logz_true."""
        final = dict(metrics)
        final["modes_total"] = float(self.env.n_modes())
        final["logz_true"] = self.env.log_partition()
        if m.artifact_dir is not None and m.cfg.ndim == 2:
            save_distribution_png(self.env, self.outputs(row), Path(m.artifact_dir) / "distribution.png")
        return final

    def _fail(self, m: _Member, reason: str) -> MemberEvent:
        m.status = "failed"
        return MemberEvent(m.slot, "failed", m.last_report, {}, reason)

    # ---- rows: hyperparameters, compaction, padding -------------------------------------

    def _hyper(self, lo: int, hi: int) -> _Rows:
        whole = lo == 0 and hi == len(self.rows)
        if whole and self._cache is not None:
            return self._cache
        ms = self.rows[lo:hi]

        def vec(values: list[Any], dtype: torch.dtype = self.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        widths = [m.cfg.hidden for m in ms]
        units = None
        if min(widths) < self.width:
            units = (torch.arange(self.width, device=self.device) < vec(widths, torch.long)[:, None])
            units = units.to(self.dtype)
        rows = _Rows(vec([m.cfg.lr for m in ms]), vec([m.cfg.logz_lr for m in ms]),
                     vec([m.cfg.lambda_ for m in ms]), vec([m.cfg.batch_size for m in ms], torch.long),
                     units,
                     [m.cfg.loss for m in ms], [m.cfg.backward_policy == "learned" for m in ms])
        if whole:
            self._cache = rows
        return rows

    def _view(self, lo: int, hi: int, tensors: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Rows lo..hi of the stacked parameters (or of ``tensors``, keyed like ``_moments``), the
        hidden layer l's only as far as the members deep enough for it (a prefix)."""
        depths = [m.cfg.depth for m in self.rows[lo:hi]]
        out = {}
        for name, t in (self.params if tensors is None else tensors).items():
            layer = layer_of(name.partition(".")[2] or name)
            c = hi - lo if not layer else sum(d > layer for d in depths)
            if c:
                out[name] = t[lo : lo + c]
        return out

    def _moments(self) -> dict[str, Tensor]:
        """Adam's moments by parameter: ``m.<name>``, ``v.<name>``."""
        names = list(self.params)
        return ({f"m.{n}": t for n, t in zip(names, self.opt.exp_avg, strict=True)}
                | {f"v.{n}": t for n, t in zip(names, self.opt.exp_avg_sq, strict=True)})

    def _row_tensors(self) -> list[Tensor]:
        return [*self.params.values(), *self.opt.exp_avg, *self.opt.exp_avg_sq, self.opt.step,
                self.visits, self.loss_sum]

    def _resize(self, size: int, width: int, deep: int) -> None:
        """Storage for ``size`` rows of networks padded to ``width`` x ``deep``; what fits is kept
        (padding is zeros, so growing and shrinking are exact)."""
        if (size, width, deep) == (self.size, self.width, self.deep):
            return
        env = self.env
        shapes = param_shapes(env.ndim, env.height, width, deep)
        params = {name: torch.zeros(size, *s, dtype=self.dtype, device=self.device)
                  for name, s in shapes.items()}
        opt = adam_init(list(params.values()))
        visits = torch.zeros(size, env.n_states, dtype=torch.long, device=self.device)
        loss_sum = torch.zeros(size, dtype=self.dtype, device=self.device)
        if self.params:
            for old, new in ((self.params, params),
                             (dict(zip(self.params, self.opt.exp_avg, strict=True)),
                              dict(zip(params, opt.exp_avg, strict=True))),
                             (dict(zip(self.params, self.opt.exp_avg_sq, strict=True)),
                              dict(zip(params, opt.exp_avg_sq, strict=True)))):
                for name, t in new.items():
                    if name in old:
                        _copy_overlap(old[name], t)
            for src, dst in ((self.opt.step, opt.step), (self.visits, visits), (self.loss_sum, loss_sum)):
                _copy_overlap(src, dst)
        self.params, self.opt, self.visits, self.loss_sum = params, opt, visits, loss_sum
        self.size, self.width, self.deep = size, width, deep
        self._cache = None

    def _write_row(self, row: int, net: PolicyMLP, cfg: Config) -> None:
        """A new member's own network into row ``row`` (zero elsewhere), at its step 0."""
        for t in self.params.values():
            t[row] = 0
        adam_reset(self.opt, row)
        self.visits[row] = 0
        self.loss_sum[row] = 0
        linear = [m for m in net.mlp if isinstance(m, nn.Linear)]
        h, p = cfg.hidden, self.params
        with torch.no_grad():
            if cfg.depth >= 1:
                p["w0"][row, :h] = linear[0].weight
                p["b0"][row, :h] = linear[0].bias
            for layer in range(1, cfg.depth):
                p[f"wh{layer}"][row, :h, :h] = linear[layer].weight
                p[f"bh{layer}"][row, :h] = linear[layer].bias
            p["wo"][row, :, : linear[-1].weight.shape[1]] = linear[-1].weight
            p["bo"][row] = linear[-1].bias
            p["log_z"][row] = net.log_z

    def _release(self, row: int) -> None:
        """Row ``row`` leaves the compute: the rows after it move up one (they stay sorted by
        depth); the padding shrinks when the widest or deepest member left, the storage when it
        is a quarter full."""
        k = len(self.rows)
        for t in self._row_tensors():
            t[row : k - 1] = t[row + 1 : k].clone()
        self.rows.pop(row)
        self._cache = None
        if self.rows:
            width = max(m.cfg.hidden for m in self.rows)
            deep = max(m.cfg.depth for m in self.rows)
            size = self.size // 2 if len(self.rows) <= self.size // 4 else self.size
            self._resize(size, width, deep)

    # ---- small pieces -------------------------------------------------------------------

    def _one_hot(self, x: Tensor) -> Tensor:
        return (x[..., None] == self.values).flatten(-2).to(self.dtype)  # [..., n*H]

    def _forward_rows(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """The stacked networks on states ``x [k, ..., n]`` -> ``[k, ..., 2n+2]``."""
        k, lead = x.shape[0], x.shape[1:-1]
        out = stacked_forward(p, self._one_hot(x).reshape(k, -1, self.one_hot_all.shape[-1]),
                              self.act)
        return out.reshape(k, *lead, out.shape[-1])

    def _save(self, m: _Member) -> tuple[Tensor, tuple[int, int] | None]:
        buf = None if m.buffer is None else (m.buffer.ptr, m.buffer.size)
        return m.generator.get_state(), buf

    def _restore(self, m: _Member, saved: tuple[Tensor, tuple[int, int] | None]) -> None:
        m.generator.set_state(saved[0])
        if m.buffer is not None and saved[1] is not None:
            m.buffer.ptr, m.buffer.size = saved[1]


def _look_up(table: Tensor, index: Tensor) -> Tensor:
    """Rows ``index [k, ...]`` of ``table [k, N, C]`` -> ``[k, ..., C]`` (gradient summed per state)."""
    k, c = table.shape[0], table.shape[-1]
    flat = index.reshape(k, -1, 1).expand(-1, -1, c)
    return table.gather(1, flat).reshape(*index.shape, c)


def _unit_mask(name: str, units: Tensor) -> tuple[Tensor, ...]:
    """The 0/1 factors of a member's own units in a stacked parameter's gradient (``units [c, Hm]``)."""
    if name.startswith("wh"):
        return units[:, :, None], units[:, None, :]
    if name.startswith("bh") or name == "b0":
        return (units,)
    return {"w0": (units[:, :, None],), "wo": (units[:, None, :],)}.get(name, ())


def _copy_overlap(src: Tensor, dst: Tensor) -> None:
    region = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, dst.shape, strict=True))
    dst[region] = src[region]


# ---- one trial -----------------------------------------------------------------------------


def train(
    config: Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    report: Callable[[int, dict[str, float]], None] | None = None,
    artifact_dir: str | None = None,
) -> dict[str, float]:
    """Train and return the final metrics; ``l1`` (exact) is the primary one, minimized.
    A population of one: exceptions propagate; a diverging loss raises FloatingPointError."""
    pop = GFlowNetPopulation(config, capacity=1, device=device, isolate=False)
    pop.add(config, seed, artifact_dir)
    while True:
        for ev in pop.advance():
            if ev.kind == "report":
                if report is not None:
                    report(ev.step, ev.metrics)  # may raise (pruning): let it propagate
            elif ev.kind == "done":
                return ev.metrics
            else:
                raise FloatingPointError(f"gflownet: {ev.reason}")


def save_distribution_png(env: Hypergrid, out: Tensor, path: Path) -> None:
    """Target R/Z beside the learned terminal distribution (network outputs ``out [H^n, 2n+2]``),
    for 2-D grids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = env.all_states()
    p = terminal_distribution(env, forward_log_probs(env, out, x))
    reward = env.reward(x)
    shape = (env.height, env.height)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, grid, title in ((axes[0], reward / reward.sum(), "target R/Z"), (axes[1], p, "learned")):
        ax.imshow(grid.view(shape).T.cpu().numpy(), origin="lower")  # x_0 across, x_1 up
        ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- the population form (models/population.py) --------------------------------------------


def member_bytes(config: Mapping[str, Any]) -> int:
    """A generous estimate of one member's device memory, padded to the widest and deepest its
    bucket admits: parameters with gradient and Adam moments, the replay buffer, and the
    activations of one iteration (forward and backward)."""
    cfg = Config.from_dict(config)
    item = torch.tensor([], dtype=torch.get_default_dtype()).element_size()
    hidden, depth = cfg.hidden, cfg.depth
    if cfg.uses_table:  # the bucket's widest (bucket()), and deep
        width = bucket(config)[-1]
        hidden = 128 if width == 0 else math.floor(128 * 2 ** (width / 2))
        depth = max(depth, 4) if depth > 0 else 0
    else:
        hidden = 2 ** math.ceil(math.log2(hidden))
    n_in, n_out = cfg.ndim * cfg.height, 2 * cfg.ndim + 2
    widths = [n_in] + [hidden] * depth + [n_out]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 1
    t = cfg.ndim * (cfg.height - 1) + 1
    rows = max(cfg.batch_size, 256) * (2 if cfg.replay_size else 1) * t
    net_rows = cfg.height**cfg.ndim if cfg.uses_table else rows * (1 + cfg.ndim)  # FM: parents
    activations = net_rows * (n_in + 2 * hidden * depth + n_out) * item * 3
    activations += rows * (t + 1) * item * 4  # SubTB's [B, T+1, T+1] pair tensors
    replay = cfg.replay_size * t * (cfg.ndim + 3) * 8
    visits = cfg.height**cfg.ndim * 8
    return int(n_params * item * 4 + activations + replay + visits + (1 << 20))


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> GFlowNetPopulation:
    return GFlowNetPopulation(config, capacity=capacity, device=device)


POPULATION = PopulationForm(structural=STRUCTURAL, make=make, member_bytes=member_bytes,
                            per_member=PER_MEMBER, padded=PADDED, bucket=bucket)
train.population = POPULATION  # type: ignore[attr-defined]
