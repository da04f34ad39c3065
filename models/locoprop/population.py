"""LocoProp trials as a population: up to K members trained as one batched model.

``train()`` (train.py) is a population of one; the harness runs up to K trials in one
(``train.population``, models/population.py). The math is models/locoprop/locoprop.py's
``Stack``: one row per running member, one batched matmul per layer for all of them.

Each member is the trial ``train`` would run with its config and seed: its network is drawn by
``make_net`` from ``torch.Generator().manual_seed(seed)`` and its epoch shuffles by
``torch.randperm`` from its own ``torch.Generator(device).manual_seed(seed)``; its step counts
and learning-rate schedule are its own (a member added later starts at its own epoch 0). One
``advance()`` is one epoch for every running member; reports come at the member's own report
epochs, ``done`` carries ``train``'s return (the last report's metrics).

What may differ between members (``FIELDS``): everything but the data (task, test_fraction,
dtype) and the batch size (it sets the number of steps per epoch). The method, the optimizer,
K, gamma, the learning rate and its schedule (epochs, warm-up), the optimizer's constants and
the report interval are per member: rows are sorted so each optimizer updates a contiguous
block and a member past its K stops taking local steps (see ``Stack``). So every configuration
of a search space with a fixed batch size has one signature.

No cost for empty places: the stack holds the running members only. A member that leaves
(removed, done or failed) is dropped from it at once, and new ones join it at the next
``advance`` (the rows are gathered anew: compaction); the capacity is only a bound.

Isolation: a member whose train_loss is not finite at a report fails after that report (as
``train`` would return those metrics and the harness would mark the trial failed); one whose
parameters are not finite at the end of an epoch fails then. An exception in one member's own
part (its shuffle, its schedule) fails that member only; an exception in the batched epoch
makes the population rerun that epoch member by member from the epoch's start, so only the
members that raise alone fail (their ``reason`` names the exception; ``errors[slot]`` keeps it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..population import MemberEvent, PopulationForm
from .config import DTYPES, Config, _bad
from .data import load
from .locoprop import Hyper, Stack, evaluate, lr_at
from .nets import Net, make_net

Tensor = torch.Tensor

# Every Config field, classified (tests/unit/models/test_locoprop_population.py checks that
# each field is in exactly one of them).
STRUCTURAL = ("task", "batch_size", "dtype", "test_fraction")
PER_MEMBER = (
    "method", "optimizer", "lr", "gamma", "K", "epochs", "warmup_epochs",
    "beta1", "beta2", "eps", "report_every",
)  # fmt: skip
PADDED: tuple[str, ...] = ()


def hyper_of(cfg: Config) -> Hyper:
    assert cfg.beta1 is not None and cfg.beta2 is not None and cfg.eps is not None
    return Hyper(cfg.method, cfg.optimizer, cfg.K, cfg.gamma, cfg.beta1, cfg.beta2, cfg.eps)


@dataclass
class _Member:
    cfg: Config
    seed: int
    shuffle: torch.Generator
    total: int  # steps of the whole run (lr schedule)
    warmup: int
    fresh: tuple[Tensor, Tensor, Tensor, Tensor] | None  # (params, buf1, buf2, step) until stacked
    epoch: int = 0
    step: int = 0
    status: str = "running"  # running | done | failed
    metrics: dict[str, float] = field(default_factory=dict)


class LocoPropPopulation:
    """Up to ``capacity`` LocoProp trials of one structure (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.cfg = Config.from_dict(config)
        self.capacity, self.device = capacity, device
        self.dtype = DTYPES[self.cfg.dtype]
        self.data = load(test_fraction=self.cfg.test_fraction, dtype=self.dtype, device=device)
        self.n_train = self.data.x_train.shape[0]
        if self.cfg.batch_size > self.n_train:
            raise _bad(
                "batch_size", f"must be <= the {self.n_train} training images", self.cfg.batch_size
            )
        self.per_epoch = self.n_train // self.cfg.batch_size
        auto = self.cfg.task == "autoencoder"
        self.target = self.data.x_train if auto else self.data.y_train
        self.test_target = self.data.x_test if auto else self.data.y_test
        self.net: Net = make_net(self.cfg.task, generator=torch.Generator().manual_seed(0))
        self.members: list[_Member | None] = [None] * capacity
        self.stack: Stack | None = None
        self.rows: list[int] = []  # the slot of each stack row
        self._dirty = False
        self.errors: dict[int, BaseException] = {}

    # ------------------------------------------------------------ membership

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        cfg = Config.from_dict(config)
        for key in STRUCTURAL:
            if getattr(cfg, key) != getattr(self.cfg, key):
                raise ValueError(
                    f"locoprop population: {key} = {getattr(cfg, key)!r} differs from the "
                    f"population's {getattr(self.cfg, key)!r}"
                )
        free = [i for i, m in enumerate(self.members) if m is None]
        if not free:
            raise ValueError(f"locoprop population: all {self.capacity} slots are taken")
        with torch.random.fork_rng(devices=[]):  # as train(): the global seed, restored after
            torch.manual_seed(seed)
            net = make_net(
                cfg.task,
                generator=torch.Generator().manual_seed(seed),
                dtype=self.dtype,
                device=self.device,
            )
        params = net.params.unsqueeze(0)  # [1, n]
        shuffle = torch.Generator(device=self.device)
        shuffle.manual_seed(seed)
        slot = free[0]
        self.members[slot] = _Member(
            cfg=cfg,
            seed=seed,
            shuffle=shuffle,
            total=cfg.epochs * self.per_epoch,
            warmup=cfg.warmup_epochs * self.per_epoch,
            fresh=(params, *Stack.fresh_state(hyper_of(cfg), params)),
        )
        self._dirty = True
        return slot

    def remove(self, slot: int) -> None:
        self.members[slot] = None
        self.errors.pop(slot, None)
        self._dirty = True
        if slot in self.rows:
            self._restack()  # its row goes now (compaction)

    def occupied(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m is not None]

    def _restack(self) -> None:
        """Rebuild the stack from the running members: kept rows, then newcomers."""
        if not self._dirty:
            return
        self._dirty = False
        keep = [
            i for i, s in enumerate(self.rows)
            if (m := self.members[s]) is not None and m.status == "running" and m.fresh is None
        ]  # fmt: skip
        slots = [self.rows[i] for i in keep]
        parts: list[tuple[list[Hyper], Tensor, Tensor, Tensor, Tensor]] = []
        if keep and self.stack is not None:
            parts.append(self.stack.rows(keep))
        for s, m in enumerate(self.members):
            if m is not None and m.fresh is not None and m.status == "running":
                parts.append(([hyper_of(m.cfg)], *m.fresh))
                m.fresh = None
                slots.append(s)
        if not parts:
            self.stack, self.rows = None, []
            return
        hypers = [h for part in parts for h in part[0]]
        tensors = [torch.cat([part[j] for part in parts]) for j in range(1, 5)]
        self.stack = Stack(self.net, hypers, *tensors)
        self.rows = [slots[i] for i in self.stack.order]

    # ------------------------------------------------------------ one epoch

    def advance(self) -> list[MemberEvent]:
        """One epoch for every running member; their reports, then done / failed members."""
        self._restack()
        ends: list[MemberEvent] = []
        perms: dict[int, Tensor] = {}
        for slot in list(self.rows):  # each member's own draw, as train()'s
            m = self.members[slot]
            assert m is not None
            try:
                perms[slot] = torch.randperm(self.n_train, generator=m.shuffle, device=self.device)
            except Exception as exc:  # noqa: BLE001  (this member only)
                ends.append(self._fail(slot, exc, "drawing its epoch's shuffle"))
        self._restack()
        if self.stack is None:
            return ends
        slots = list(self.rows)
        # the epoch updates the stack in place: keep its start, to rerun it member by member
        start = self.stack.rows(range(len(slots))) if len(slots) > 1 else None
        try:
            self._epoch(self.stack, slots, perms)
        except Exception:
            if start is None:
                raise  # a population of one: its member's exception is the population's
            ends += self._epoch_one_by_one(slots, perms, start)
            if self.stack is None:
                return ends
        events = self._events(ends)
        self._restack()  # done and failed members leave the stack now
        return events

    def _epoch(self, stack: Stack, slots: list[int], perms: dict[int, Tensor]) -> None:
        """One pass over each member's shuffled training set in full batches."""
        members = [self.members[s] for s in slots]
        perm = torch.stack([perms[s] for s in slots])  # [R, n_train]
        bs = self.cfg.batch_size
        for j in range(self.per_epoch):
            idx = perm[:, j * bs : (j + 1) * bs]  # [R, batch]
            lrs = [lr_at(m.step + j, m.total, m.warmup, m.cfg.lr) for m in members]  # type: ignore[union-attr]
            stack.train_batch(self.data.x_train[idx], self.target[idx], lrs)

    def _epoch_one_by_one(
        self, slots: list[int], perms: dict[int, Tensor], start: tuple[Any, ...]
    ) -> list[MemberEvent]:
        """The batched epoch raised: rerun it for each member alone, from the epoch's start."""
        hypers, *tensors = start
        ends, singles = [], []
        for row, slot in enumerate(slots):
            one = Stack(self.net, [hypers[row]], *(t[row : row + 1] for t in tensors))
            try:
                self._epoch(one, [slot], perms)
                singles.append((slot, one))
            except Exception as exc:  # noqa: BLE001  (this member only)
                ends.append(self._fail(slot, exc, "its epoch"))
        self._dirty = False
        if not singles:
            self.stack, self.rows = None, []
            return ends
        tensors = [
            torch.cat([getattr(one, k) for _, one in singles])
            for k in ("params", "buf1", "buf2", "step")
        ]
        self.stack = Stack(self.net, [one.hypers[0] for _, one in singles], *tensors)
        self.rows = [singles[i][0] for i in self.stack.order]
        return ends

    def _fail(self, slot: int, exc: BaseException, where: str) -> MemberEvent:
        m = self.members[slot]
        assert m is not None
        m.status = "failed"
        self.errors[slot] = exc
        self._dirty = True
        reason = f"{type(exc).__name__} in {where}: {exc}".splitlines()[0][:500]
        return MemberEvent(slot, "failed", m.epoch, {}, reason)

    # ------------------------------------------------------------ reports

    def _metrics(self, rows: list[int]) -> list[dict[str, float]]:
        """train()'s report metrics for the given stack rows."""
        assert self.stack is not None
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        p = self.stack.params.index_select(0, idx)
        d, task = self.data, self.cfg.task
        tr = evaluate(self.net, p, d.x_train, self.target, task)
        te = evaluate(self.net, p, d.x_test, self.test_target, task)
        out = []
        for i in range(len(rows)):
            m = {"train_loss": tr["loss"][i], "test_loss": te["loss"][i]}
            if task == "classifier":
                m |= {"train_acc": tr["acc"][i], "test_acc": te["acc"][i]}
            out.append(m)
        return out

    def _events(self, ends: list[MemberEvent]) -> list[MemberEvent]:
        assert self.stack is not None
        members = [self.members[s] for s in self.rows]
        for m in members:
            m.epoch += 1  # type: ignore[union-attr]
            m.step += self.per_epoch  # type: ignore[union-attr]
        finite = torch.isfinite(self.stack.params).all(dim=1).tolist()
        due = [
            i for i, m in enumerate(members)
            if m.epoch % m.cfg.report_every == 0 or m.epoch == m.cfg.epochs or not finite[i]  # type: ignore[union-attr]
        ]  # fmt: skip
        metrics = dict(zip(due, self._metrics(due), strict=True)) if due else {}
        reports = []
        for i, (slot, m) in enumerate(zip(self.rows, members, strict=True)):
            assert m is not None
            if i not in metrics:
                continue
            reported = m.epoch % m.cfg.report_every == 0 or m.epoch == m.cfg.epochs
            if reported:
                reports.append(MemberEvent(slot, "report", m.epoch, metrics[i]))
            loss = metrics[i]["train_loss"]
            if not finite[i] or not math.isfinite(loss):
                m.status, self._dirty = "failed", True
                why = (
                    f"train_loss is {loss} at epoch {m.epoch} (diverged)" if reported
                    else f"parameters are not finite at epoch {m.epoch} (diverged)"
                )  # fmt: skip
                ends.append(MemberEvent(slot, "failed", m.epoch, metrics[i], why))
            elif m.epoch == m.cfg.epochs:
                m.status, self._dirty = "done", True
                ends.append(MemberEvent(slot, "done", m.epoch, metrics[i]))
        return reports + ends


def member_bytes(config: Mapping[str, Any]) -> int:
    """One member's device memory at most: its rows of params, gradient and the two optimizer
    buffers (4 n), one batch's activations, gradients and local targets (6 per unit and
    example), and the whole-set evaluation's activations (2 per unit and image); plus the
    shuffle (8 bytes per training image)."""
    cfg = Config.from_dict(config)
    item = torch.empty((), dtype=DTYPES[cfg.dtype]).element_size()
    net = make_net(cfg.task, generator=torch.Generator().manual_seed(0))
    n, width = net.params.numel(), sum(net.sizes)
    n_images = 1797
    return item * (4 * n + 6 * cfg.batch_size * width + 2 * n_images * width) + 8 * n_images


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> LocoPropPopulation:
    return LocoPropPopulation(config, capacity=capacity, device=device)


POPULATION = PopulationForm(
    structural=STRUCTURAL,
    make=make,
    member_bytes=member_bytes,
    per_member=PER_MEMBER,
    padded=PADDED,
)
