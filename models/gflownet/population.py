"""The population form of the GFlowNet trainer: up to K trials of one structure, one batched model.

``train.population = POPULATION`` (see models/population.py for the interface). The K policy
networks' parameters are stacked ``[K, ...]``; one ``advance()`` is one training iteration of
``train()`` for every running member:

1. each member draws its exploration noise from its own generator (``exploration_noise``,
   exactly train()'s call), the noise is stacked, and the K batches are rolled out together,
   one batched forward (``baddbmm``) per step; or, where the grid has no more states than a
   batch has rows (``use_table``: 8x8 has 64 states against 128 x 15 rows), the network runs
   once on every state and each row is looked up (the same per-row values; in the loss the
   gradients are summed per state before the weights' product). This, not the batching, is
   most of the CPU speed-up (benchmarks/population_gflownet_probe.py, ``--direct`` without);
2. replay (when on): a stacked ring buffer per member, indices drawn from each member's
   generator as train()'s ``ReplayBuffer.sample`` draws them;
3. the loss of every member by ``torch.func.vmap`` over train's own ``batch_loss`` (with
   ``functional_call`` on the stacked parameters), one backward for all, and a functional
   Adam (models/functional_optim.py) with ``[K]`` learning rates (``lr`` for the network,
   ``logz_lr`` for log Z, as train's two parameter groups).

Only the running members are computed (their rows gathered from the stack), so done, failed
and empty slots cost nothing. A member whose loss is NaN / inf fails alone: its update is
masked (parameters and optimizer state stay at their last finite values).

Same seed, same result: a member's network is initialised under ``torch.manual_seed(seed)``
(in a forked RNG state) as train() initialises it, its training generator is seeded with
``seed`` and its evaluation generator with ``seed + 1``, and every draw it makes comes from
them in train()'s order and shapes. Reports evaluate a copy of the member's network with
train's own ``evaluate``. In float64 on CPU a member's reports and final metrics equal
train()'s to rounding (the tests check 1e-6 relative); only the order of a few floating-point
sums differs (rollouts of the population last as long as its longest member's).

Structural keys (equal within a population): the environment (ndim, height, r0, r1, r2: the
problem itself, and the sampler and loss share one environment), the network (hidden, depth,
activation), the objective's code path (loss, backward_policy), and the shapes of a batch
(batch_size, replay_size). Everything else is per member: lr, logz_lr, lambda_, epsilon,
temperature, and the budget and reporting keys (n_trajectories, n_iterations, report_every,
n_eval_samples): each member counts its own iterations from its own step 0 anyway.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from models.functional_optim import adam_init, adam_reset, adam_step
from models.population import MemberEvent, PopulationForm

STRUCTURAL = (
    "ndim", "height", "r0", "r1", "r2",  # the environment
    "hidden", "depth", "activation",  # the network's shapes and code
    "loss", "backward_policy",  # the objective's code path
    "batch_size", "replay_size",  # the batch's and the buffer's shapes
)


@dataclass
class _Member:
    cfg: Any  # train.Config
    seed: int
    generator: torch.Generator  # training draws, as train()'s ``generator``
    eval_generator: torch.Generator  # l1_sampled, as train()'s ``eval_generator``
    policy: torch.nn.Module  # a PolicyMLP: the member's initial network, then a copy for evaluation
    artifact_dir: str | None
    step: int = 0
    since: int = 0  # iterations since the last report
    last_report: int = 0
    status: str = "running"  # running | done | failed
    buffer_ptr: int = 0
    buffer_size: int = 0


class _Policy:
    """One member's policy inside ``vmap``: the base module called on that member's tensors."""

    def __init__(self, base: torch.nn.Module, params: dict[str, Tensor]) -> None:
        self.base, self.params = base, params

    def __call__(self, x: Tensor) -> Tensor:
        return functional_call(self.base, self.params, (x,))

    @property
    def log_z(self) -> Tensor:
        return self.params["log_z"]


class _TablePolicy:
    """One member's policy inside ``vmap`` as a look-up in its outputs on every state."""

    def __init__(self, env: Any, table: Tensor, log_z: Tensor) -> None:
        self.env, self.table, self.log_z = env, table, log_z

    def __call__(self, x: Tensor) -> Tensor:
        return self.table[self.env.index(x)]


class GFlowNetPopulation:
    """Up to ``capacity`` GFlowNet trials of one structure (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> None:
        from models.gflownet import train as gtrain  # lazy: train.py imports this module
        from models.gflownet.env import Hypergrid
        from models.gflownet.nets import ACTIVATIONS, PolicyMLP

        if capacity < 1:
            raise ValueError(f"gflownet population: capacity must be >= 1, got {capacity}")
        self._train = gtrain
        self._policy_cls = PolicyMLP
        cfg = gtrain.Config.from_dict(config)
        self.capacity, self.cfg, self.device = capacity, cfg, torch.device(device)
        self.dtype = torch.get_default_dtype()  # train() builds its network in the default dtype
        self.env = Hypergrid(cfg.ndim, cfg.height, cfg.r0, cfg.r1, cfg.r2, device=device)
        with torch.random.fork_rng(devices=[]):  # the template draws nothing from anyone's stream
            self.base = PolicyMLP(cfg.ndim, cfg.height, cfg.hidden, cfg.depth, cfg.activation)
        self.base = self.base.to(device=self.device, dtype=self.dtype)
        self.names = [name for name, _ in self.base.named_parameters()]  # log_z, mlp.*
        self.n_linear = sum(name.endswith(".weight") for name in self.names)
        self.params = {
            name: torch.zeros((capacity, *p.shape), dtype=p.dtype, device=self.device)
            for name, p in self.base.named_parameters()
        }
        self.opt = adam_init(list(self.params.values()))
        self.activation = ACTIVATIONS[cfg.activation]()
        self.members: list[_Member | None] = [None] * capacity
        k, n = capacity, self.env.n_states
        self.visits = torch.zeros(k, n, dtype=torch.long, device=self.device)  # terminal visits
        self.loss_sum = torch.zeros(k, dtype=self.dtype, device=self.device)
        self.lr = torch.zeros(k, dtype=self.dtype, device=self.device)
        self.logz_lr = torch.zeros(k, dtype=self.dtype, device=self.device)
        self.lambda_ = torch.zeros(k, dtype=self.dtype, device=self.device)
        if cfg.replay_size:
            t, c = self.env.max_actions, cfg.replay_size
            self.buf_states = torch.zeros(k, c, t, cfg.ndim + 1, dtype=torch.long, device=self.device)
            self.buf_actions = torch.full((k, c, t), self.env.stop, dtype=torch.long, device=self.device)
            self.buf_lengths = torch.ones(k, c, dtype=torch.long, device=self.device)
            self.buf_terminal = torch.zeros(k, c, dtype=torch.long, device=self.device)
        self._loss_fn = vmap(self._member_loss)
        self._table_loss_fn = vmap(self._member_table_loss)
        # the network's outputs depend on the state alone: where the grid has fewer states than
        # a batch has rows (8x8: 64 states, 128 trajectories of up to 15 steps), evaluate it once
        # on every state and look the rows up (same values per row; gradients summed per state)
        self.use_table = self.env.n_states <= cfg.batch_size * self.env.max_actions

    # ---- membership ---------------------------------------------------------------------

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        cfg = self._train.Config.from_dict(config)
        differ = [k for k in STRUCTURAL if getattr(cfg, k) != getattr(self.cfg, k)]
        if differ:
            raise ValueError(
                "gflownet population: structural keys differ from the population's: "
                + ", ".join(f"{k}={getattr(cfg, k)!r} (population: {getattr(self.cfg, k)!r})" for k in differ)
            )
        free = [i for i, m in enumerate(self.members) if m is None]
        if not free:
            raise ValueError(f"gflownet population: full ({self.capacity} members)")
        slot = free[0]
        # exactly train()'s seeding: the network from the global RNG seeded with ``seed``
        # (forked, so that nothing else sees it), the two generators from seed and seed + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy = self._policy_cls(cfg.ndim, cfg.height, cfg.hidden, cfg.depth, cfg.activation)
        policy = policy.to(device=self.device, dtype=self.dtype)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        eval_generator = torch.Generator(device=self.device)
        eval_generator.manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                self.params[name][slot] = p
        adam_reset(self.opt, slot)
        self.visits[slot] = 0
        self.loss_sum[slot] = 0
        self.lr[slot], self.logz_lr[slot], self.lambda_[slot] = cfg.lr, cfg.logz_lr, cfg.lambda_
        self.members[slot] = _Member(cfg, seed, generator, eval_generator, policy, artifact_dir)
        return slot

    def remove(self, slot: int) -> None:
        if not 0 <= slot < self.capacity or self.members[slot] is None:
            raise ValueError(f"gflownet population: slot {slot} holds no member")
        self.members[slot] = None

    def occupied(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m is not None]

    # ---- one iteration for everyone -----------------------------------------------------

    def advance(self) -> list[MemberEvent]:
        running = [i for i, m in enumerate(self.members) if m is not None and m.status == "running"]
        if not running:
            return []
        members = [self.members[i] for i in running]
        idx = torch.tensor(running, device=self.device)
        env, cfg = self.env, self.cfg
        params = {name: p.index_select(0, idx) for name, p in self.params.items()}  # [A, ...]

        traj = self._sample(params, members)  # [A, B, T, ...]
        flat = (idx[:, None] * env.n_states + traj.terminal).flatten()
        self.visits.view(-1).index_add_(0, flat, torch.ones_like(flat))
        if cfg.replay_size:
            traj = self._replay(idx, members, traj)

        leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
        lambda_ = self.lambda_.index_select(0, idx)
        if self.use_table:
            table = self._forward(leaves, self._all_states(len(running)))  # [A, H^n, 2n+2]
            losses = self._table_loss_fn(table, leaves["log_z"], traj.states, traj.actions,
                                         traj.lengths, traj.terminal, lambda_)  # [A]
        else:
            losses = self._loss_fn(leaves, traj.states, traj.actions, traj.lengths, traj.terminal,
                                   lambda_)  # [A]
        values = losses.detach().tolist()  # the one synchronization of an iteration
        finite = torch.isfinite(losses.detach())
        grads = torch.autograd.grad(torch.where(finite, losses, 0.0).sum(), list(leaves.values()),
                                    allow_unused=True)  # FM: log_z unused (train: grad None, no step)
        lrs = [self.logz_lr if name == "log_z" else self.lr for name in self.names]  # train's groups
        if len(running) == self.capacity and all(math.isfinite(v) for v in values):
            adam_step(list(self.params.values()), list(grads), self.opt, lr=lrs)  # everyone steps
        else:
            mask = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
            mask[idx] = finite
            full_grads = [None if g is None else torch.zeros_like(p).index_copy_(0, idx, g)
                          for p, g in zip(self.params.values(), grads, strict=True)]
            adam_step(list(self.params.values()), full_grads, self.opt, lr=lrs, mask=mask)
        self.loss_sum.index_add_(0, idx, losses.detach())

        reports: list[MemberEvent] = []
        ends: list[MemberEvent] = []
        for slot, m, value in zip(running, members, values, strict=True):
            if not math.isfinite(value):
                m.status = "failed"
                kind = "nan" if math.isnan(value) else "inf"
                ends.append(MemberEvent(slot, "failed", m.last_report, {},
                                        f"loss is {kind} at step {m.step + 1} (diverged)"))
                continue
            m.step += 1
            m.since += 1
            if m.step % m.cfg.report_every == 0 or m.step == m.cfg.iterations:
                metrics = self._report(slot, m)
                reports.append(MemberEvent(slot, "report", m.step, dict(metrics)))
                if m.step == m.cfg.iterations:
                    m.status = "done"
                    ends.append(MemberEvent(slot, "done", m.step, self._final(m, metrics)))
        return reports + sorted(ends, key=lambda e: e.slot)

    # ---- pieces -------------------------------------------------------------------------

    def _forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """The stacked networks on states ``x [A, ..., n]`` -> ``[A, ..., 2n+2]`` (PolicyMLP's
        forward, one ``baddbmm`` per layer for all members)."""
        a, lead = x.shape[0], x.shape[1:-1]
        h = (x[..., None] == self.base.values).flatten(-2).to(self.dtype).reshape(a, -1, x.shape[-1] * self.env.height)
        n_linear = self.n_linear
        for i in range(n_linear):
            w, bias = params[f"mlp.{2 * i}.weight"], params[f"mlp.{2 * i}.bias"]
            h = torch.baddbmm(bias[:, None, :], h, w.transpose(1, 2))
            if i < n_linear - 1:
                h = self.activation(h)
        return h.reshape(a, *lead, h.shape[-1])

    def _all_states(self, a: int) -> Tensor:
        return self.env.all_states().expand(a, -1, -1)  # [A, H^n, n]

    @torch.no_grad()
    def _sample(self, params: dict[str, Tensor], members: list[_Member]):
        """Every running member's batch, rolled out together (train's ``sample_trajectories``)."""
        from models.gflownet.sampling import Trajectories, exploration_noise

        env, b, n = self.env, self.cfg.batch_size, self.env.ndim
        noises, keeps = [], []
        for m in members:  # each from its own generator, in train()'s order and shapes
            noise, keep = exploration_noise(env, b, m.cfg.epsilon, m.cfg.temperature, m.generator, self.dtype)
            noises.append(torch.stack(noise))  # [T, B, n+1]
            keeps.append(torch.ones(env.max_actions, b, 1, dtype=self.dtype, device=self.device)
                         if keep is None else torch.stack(keep))
        noise_t, keep_t = torch.stack(noises, 1), torch.stack(keeps, 1)  # [T, A, B, n+1], [T, A, B, 1]
        a_count = len(members)
        s = torch.zeros(a_count, b, n + 1, dtype=torch.long, device=self.device)
        one = torch.ones(a_count, b, 1, dtype=torch.long, device=self.device)
        stop_early = self.device.type == "cpu"
        states, actions = [], []
        if self.use_table:
            table = self._forward(params, self._all_states(a_count))[..., : n + 1]  # [A, H^n, n+1]
        for t in range(env.max_actions):
            if self.use_table:
                logits = table.gather(1, env.index(s[..., :n])[..., None].expand(-1, -1, n + 1))
            else:
                logits = self._forward(params, s[..., :n])[..., : n + 1]  # [A, B, n+1]
            # keep = 1 where epsilon = 0: noise + logits * 1 is train's logits + noise, exactly
            scores = torch.addcmul(noise_t[t], logits, keep_t[t])
            act = scores.masked_fill_(env.forward_invalid(s), -math.inf).argmax(-1, keepdim=True)
            states.append(s)
            actions.append(act)
            s = s.scatter_add(2, act, one)
            if stop_early and int(s[..., n].count_nonzero()) == a_count * b:
                break
        states_t, actions_t = torch.stack(states, 2), torch.cat(actions, 2)  # [A, B, T, n+1], [A, B, T]
        lengths = (actions_t == env.stop).int().argmax(2) + 1  # [A, B]
        last = states_t.gather(2, (lengths - 1)[..., None, None].expand(-1, -1, 1, n + 1))
        return Trajectories(states_t, actions_t, lengths, env.index(last[:, :, 0, :n]))

    def _replay(self, idx: Tensor, members: list[_Member], traj):
        """Add each member's batch to its ring buffer, draw as many from it (train's
        ``ReplayBuffer.add`` then ``.sample``), and return both, padded to the longest path."""
        from models.gflownet.sampling import Trajectories

        env, b, cap = self.env, self.cfg.batch_size, self.cfg.replay_size
        traj = _pad(traj, env)
        ar = torch.arange(b, device=self.device)
        put = torch.stack([(m.buffer_ptr + ar) % cap for m in members])  # [A, B]
        rows = idx[:, None]
        self.buf_states[rows, put] = traj.states
        self.buf_actions[rows, put] = traj.actions
        self.buf_lengths[rows, put] = traj.lengths
        self.buf_terminal[rows, put] = traj.terminal
        draws = []
        for m in members:
            m.buffer_ptr, m.buffer_size = (m.buffer_ptr + b) % cap, min(m.buffer_size + b, cap)
            draws.append(torch.randint(m.buffer_size, (b,), device=self.device, generator=m.generator))
        take = torch.stack(draws)  # [A, B]
        replayed = Trajectories(self.buf_states[rows, take], self.buf_actions[rows, take],
                                self.buf_lengths[rows, take], self.buf_terminal[rows, take])
        return Trajectories(*(torch.cat(pair, 1) for pair in zip(
            dataclasses.astuple(traj), dataclasses.astuple(replayed), strict=True)))

    def _member_loss(self, params: dict[str, Tensor], states: Tensor, actions: Tensor,
                     lengths: Tensor, terminal: Tensor, lambda_: Tensor) -> Tensor:
        """train's ``batch_loss`` of one member (called under ``vmap``)."""
        from models.gflownet.sampling import Trajectories

        cfg = types.SimpleNamespace(loss=self.cfg.loss, backward_policy=self.cfg.backward_policy,
                                    lambda_=lambda_)
        return self._train.batch_loss(cfg, self.env, _Policy(self.base, params),  # type: ignore[arg-type]
                                      Trajectories(states, actions, lengths, terminal))

    def _member_table_loss(self, table: Tensor, log_z: Tensor, states: Tensor, actions: Tensor,
                           lengths: Tensor, terminal: Tensor, lambda_: Tensor) -> Tensor:
        """As ``_member_loss``, the network given by its outputs on every state."""
        from models.gflownet.sampling import Trajectories

        cfg = types.SimpleNamespace(loss=self.cfg.loss, backward_policy=self.cfg.backward_policy,
                                    lambda_=lambda_)
        return self._train.batch_loss(cfg, self.env, _TablePolicy(self.env, table, log_z),  # type: ignore[arg-type]
                                      Trajectories(states, actions, lengths, terminal))

    def _sync_policy(self, slot: int, m: _Member) -> torch.nn.Module:
        with torch.no_grad():
            for name, p in m.policy.named_parameters():
                p.copy_(self.params[name][slot])
        return m.policy

    def _report(self, slot: int, m: _Member) -> dict[str, float]:
        """train()'s report at the member's step: mean loss since the last, exact metrics."""
        from models.gflownet.metrics import evaluate

        metrics = {"loss": float(self.loss_sum[slot]) / m.since}
        metrics |= evaluate(self.env, self._sync_policy(slot, m), m.cfg.loss == "fm",
                            self.visits[slot], m.eval_generator, m.cfg.n_eval_samples)
        metrics["trajectories"] = float(m.step * m.cfg.batch_size)
        self.loss_sum[slot] = 0
        m.since, m.last_report = 0, m.step
        return metrics

    def _final(self, m: _Member, metrics: dict[str, float]) -> dict[str, float]:
        """train()'s return value: the last report's metrics, modes_total, logz_true."""
        final = dict(metrics)
        final["modes_total"] = float(self.env.n_modes())
        final["logz_true"] = self.env.log_partition()
        if m.artifact_dir is not None and m.cfg.ndim == 2:  # m.policy was synced by the report
            self._train.save_distribution_png(self.env, m.policy, Path(m.artifact_dir) / "distribution.png")
        return final


def _pad(traj, env):
    """Pad stacked trajectories ``[A, B, T, ...]`` to T = the longest path (as ``pad_to``)."""
    import torch.nn.functional as F

    from models.gflownet.sampling import Trajectories

    extra = env.max_actions - traj.actions.shape[2]
    return Trajectories(F.pad(traj.states, (0, 0, 0, extra)), F.pad(traj.actions, (0, extra), value=env.stop),
                        traj.lengths, traj.terminal)


def member_bytes(config: Mapping[str, Any]) -> int:
    """A generous estimate of one member's device memory: parameters with their gradient and
    Adam moments, the replay buffer, and the activations of one batch (forward and backward)."""
    from models.gflownet.train import Config

    cfg = Config.from_dict(config)
    item = torch.tensor([], dtype=torch.get_default_dtype()).element_size()
    n_in, n_out = cfg.ndim * cfg.height, 2 * cfg.ndim + 2
    widths = [n_in] + [cfg.hidden] * cfg.depth + [n_out]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 1
    t = cfg.ndim * (cfg.height - 1) + 1
    rows = cfg.batch_size * (2 if cfg.replay_size else 1) * t
    if cfg.loss == "fm":
        rows *= 1 + cfg.ndim  # the parents' forward
    activations = rows * (n_in + 2 * cfg.hidden * cfg.depth + n_out) * item * 3
    if cfg.loss == "subtb":
        activations += rows * (t + 1) * item * 4  # the [B, T+1, T+1] pair tensors
    replay = cfg.replay_size * t * (cfg.ndim + 3) * 8
    visits = cfg.height**cfg.ndim * 8
    return int(n_params * item * 4 + activations + replay + visits + (1 << 20))


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> GFlowNetPopulation:
    return GFlowNetPopulation(config, capacity=capacity, device=device)


POPULATION = PopulationForm(structural=STRUCTURAL, make=make, member_bytes=member_bytes)
