"""The population form of the LocoProp trainer: up to K trials as one batched model.

``train.population`` (models/population.py): members whose structural keys agree train as ONE
model whose flat parameter vectors are stacked [K, n_params]. Per mini-batch there is one
batched forward and backward for all members ([K, batch, width] activations, ``torch.bmm``),
then (LocoProp) one batched local phase: every layer of every member in one ``bmm`` per
weight-shape group, K_local steps, each a functional optimizer step (models/functional_optim.py,
TF1 update rules as models/locoprop/optim.py) with per-member [K] hyperparameters.

One ``advance()`` is one epoch for every running member. Each member is the trial ``train``
would run with its config and seed: its network is drawn by ``make_net`` from
``torch.Generator().manual_seed(seed)`` and its epoch shuffles by ``torch.randperm`` from its
own ``torch.Generator(device).manual_seed(seed)``, the same draws in the same order as
``train``; its step counts and learning-rate schedule are its own (continuous batching: a member
added later starts at its own epoch 0). Reports come at the member's own report epochs with
``evaluate``'s metrics; ``done`` carries ``train``'s return (the last report's metrics).

Structural (equal within a population): task, method, optimizer, batch_size, dtype,
test_fraction: they change shapes (network, batch, data split), code paths (bp vs S vs M) or
the optimizer state. Everything else is per member: lr, gamma, beta1, beta2, eps, and also
epochs, warmup_epochs and report_every (each member keeps its own epoch counter and schedule
anyway), and K, the number of local steps: the local loop runs max K over the members, and
step k is masked out (parameters, optimizer state and Adam's step count untouched) for a
member with K <= k, with lr * max(1 - k/K, 0.25) from its own K. Making K structural would
split a search over K in 1..10 into ten populations.

Divergence: a member whose train_loss is not finite at a report fails after that report (the
report ``train`` would make, then ``train`` would return those metrics and the harness would
mark the trial failed); one whose parameters are not finite at the end of any epoch fails then
(``train`` would report NaN at its next report epoch). A failed, done or removed member is out
of the batched computation: its rows are frozen; the others never read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..functional_optim import (
    adam_init,
    adam_reset,
    adam_tf1_step,
    rmsprop_init,
    rmsprop_reset,
    rmsprop_step,
    sgd_step,
)
from ..population import MemberEvent, PopulationForm
from .data import load
from .locoprop import local_lr_decay
from .nets import ACTIVATIONS, Net, make_net

if TYPE_CHECKING:
    from .train import Config

Tensor = torch.Tensor
# train.py attaches POPULATION to train() at its end, so this module imports train.py inside
# functions only: either module may be imported first.

STRUCTURAL = ("task", "method", "optimizer", "batch_size", "dtype", "test_fraction")


@dataclass
class _Member:
    cfg: Config
    seed: int
    shuffle: torch.Generator
    total: int  # steps of the whole run (lr schedule)
    warmup: int
    epoch: int = 0
    step: int = 0
    status: str = "running"  # running | done | failed


class _Layout:
    """Where each layer's W [fan_in, fan_out] and b [fan_out] lie in a Net's flat vector."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.groups: list[tuple[slice, slice, int, int, int]] = []  # (w, b, G, fan_in, fan_out)
        self.layers: list[tuple[slice, slice, int, int]] = [None] * net.n_layers  # type: ignore[list-item]
        offset = 0
        for g in net.groups:
            n_g, fi, fo = len(g.layers), g.fan_in, g.fan_out
            w = slice(offset, offset + n_g * fi * fo)
            b = slice(w.stop, w.stop + n_g * fo)
            self.groups.append((w, b, n_g, fi, fo))
            for j, i in enumerate(g.layers):
                self.layers[i] = (
                    slice(w.start + j * fi * fo, w.start + (j + 1) * fi * fo),
                    slice(b.start + j * fo, b.start + (j + 1) * fo),
                    fi,
                    fo,
                )
            offset = b.stop
        assert offset == net.params.numel()

    def forward(self, p: Tensor, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """p [R, n_params], x [R, batch, in] -> per layer inputs, pre-activations, outputs."""
        inputs, pre, post = [], [], []
        r = p.shape[0]
        for (ws, bs, fi, fo), act in zip(self.layers, self.net.acts, strict=True):
            a = torch.baddbmm(p[:, bs].view(r, 1, fo), x, p[:, ws].view(r, fi, fo))
            inputs.append(x)
            pre.append(a)
            x = ACTIVATIONS[act](a)
            post.append(x)
        return inputs, pre, post

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per member [R]: Net.loss of each member's batch."""
        if self.net.loss_kind == "bce":
            per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            return per.sum(dim=(1, 2)) / logits.shape[1]
        r, b, c = logits.shape
        return (
            F.cross_entropy(logits.reshape(r * b, c), target.reshape(r * b), reduction="none")
            .view(r, b)
            .mean(1)
        )


class LocoPropPopulation:
    """Up to ``capacity`` LocoProp trials of one structure (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        from .train import DTYPES, Config, _bad, lr_at

        self._lr_at = lr_at
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
        self.target = self.data.x_train if self.cfg.task == "autoencoder" else self.data.y_train
        template = make_net(
            self.cfg.task,
            generator=torch.Generator().manual_seed(0),
            dtype=self.dtype,
            device=device,
        )
        self.layout = _Layout(template)
        self.params = torch.zeros(
            capacity, template.params.numel(), dtype=self.dtype, device=device
        )
        name = self.cfg.optimizer
        self.opt_state = (
            rmsprop_init([self.params], flavor="tf1") if name == "rmsprop"
            else adam_init([self.params]) if name == "adam"
            else None
        )  # fmt: skip
        self.members: list[_Member | None] = [None] * capacity

    # ------------------------------------------------------------ membership

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        from .train import Config

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
        slot = free[0]
        with torch.random.fork_rng(devices=[]):  # as train(): the global seed, restored after
            torch.manual_seed(seed)
            net = make_net(
                cfg.task,
                generator=torch.Generator().manual_seed(seed),
                dtype=self.dtype,
                device=self.device,
            )
        self.params[slot].copy_(net.params)
        if self.cfg.optimizer == "rmsprop":
            rmsprop_reset(self.opt_state, slot)  # type: ignore[arg-type]
        elif self.cfg.optimizer == "adam":
            adam_reset(self.opt_state, slot)  # type: ignore[arg-type]
        shuffle = torch.Generator(device=self.device)
        shuffle.manual_seed(seed)
        self.members[slot] = _Member(
            cfg=cfg,
            seed=seed,
            shuffle=shuffle,
            total=cfg.epochs * self.per_epoch,
            warmup=cfg.warmup_epochs * self.per_epoch,
        )
        return slot

    def remove(self, slot: int) -> None:
        self.members[slot] = None

    def occupied(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m is not None]

    # ------------------------------------------------------------ one epoch

    def advance(self) -> list[MemberEvent]:
        """One epoch for every running member; their reports, then done / failed members."""
        run = [i for i, m in enumerate(self.members) if m is not None and m.status == "running"]
        if not run:
            return []
        members: list[_Member] = [self.members[i] for i in run]  # type: ignore[misc]
        whole = len(run) == self.capacity
        idx = torch.tensor(run, device=self.device)
        p = self.params if whole else self.params[idx]  # [R, n_params] (a copy unless whole)
        state = self._state_rows(idx, whole)
        perms = torch.stack(
            [torch.randperm(self.n_train, generator=m.shuffle, device=self.device) for m in members]
        )  # [R, n_train]: each member's own draw, as train()'s
        self._epoch(p, state, members, perms)
        if not whole:
            self.params[idx] = p
            self._scatter_state(idx, state)
        return self._events(run, members, p)

    def _hyper(self, members: list[_Member], name: str) -> Tensor:
        """A per-member hyperparameter as a [R] float64 tensor."""
        values = [getattr(m.cfg, name) for m in members]
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def _state_rows(self, idx: Tensor, whole: bool) -> Any:
        s = self.opt_state
        if s is None or whole:
            return s
        if self.cfg.optimizer == "rmsprop":
            return type(s)(
                [s.square_avg[0][idx]], [s.momentum_buffer[0][idx]], s.step[idx], s.flavor
            )
        return type(s)([s.exp_avg[0][idx]], [s.exp_avg_sq[0][idx]], s.step[idx])

    def _scatter_state(self, idx: Tensor, rows: Any) -> None:
        s = self.opt_state
        if s is None:
            return
        if self.cfg.optimizer == "rmsprop":
            s.square_avg[0][idx] = rows.square_avg[0]
            s.momentum_buffer[0][idx] = rows.momentum_buffer[0]
        else:
            s.exp_avg[0][idx] = rows.exp_avg[0]
            s.exp_avg_sq[0][idx] = rows.exp_avg_sq[0]
        s.step[idx] = rows.step

    def _opt_step(
        self,
        p: Tensor,
        grad: Tensor,
        state: Any,
        hyper: dict[str, Tensor],
        lr: list[float],
        mask: Tensor | None,
    ) -> None:
        lr_t = torch.tensor(lr, dtype=torch.float64, device=self.device)
        name = self.cfg.optimizer
        if name == "sgd":
            sgd_step([p], [grad], lr=lr_t, mask=mask)
        elif name == "rmsprop":  # TF1: rho = beta2 (decay), momentum = beta1
            rmsprop_step(
                [p], [grad], state, lr=lr_t, alpha=hyper["beta2"], eps=hyper["eps"],
                momentum=hyper["beta1"], mask=mask,
            )  # fmt: skip
        else:
            adam_tf1_step(
                [p],
                [grad],
                state,
                lr=lr_t,
                betas=(hyper["beta1"], hyper["beta2"]),
                eps=hyper["eps"],
                mask=mask,
            )

    def _epoch(self, p: Tensor, state: Any, members: list[_Member], perms: Tensor) -> None:
        """train_epoch for all members at once: per batch one forward / backward, then the
        backprop step or the K-step local phase."""
        cfg, bs, lay = self.cfg, self.cfg.batch_size, self.layout
        hyper = {k: self._hyper(members, k) for k in ("beta1", "beta2", "eps")}
        gamma = self._hyper(members, "gamma").to(self.dtype).view(-1, 1, 1)
        ks = [m.cfg.K for m in members]
        kind = cfg.method.removeprefix("locoprop-")
        for j in range(self.per_epoch):
            bidx = perms[:, j * bs : (j + 1) * bs]  # [R, batch]
            xb, tb = self.data.x_train[bidx], self.target[bidx]
            lrs = [self._lr_at(m.step, m.total, m.warmup, m.cfg.lr) for m in members]
            for m in members:
                m.step += 1
            if cfg.method == "bp":
                q = p.detach().requires_grad_(True)
                _, pre, _ = lay.forward(q, xb)
                (grad,) = torch.autograd.grad(lay.loss(pre[-1], tb).sum(), q)
                self._opt_step(p, grad, state, hyper, lrs, None)
                continue
            with torch.enable_grad():  # backprop_grads: g = dLoss/da for every layer
                q = p.detach().requires_grad_(True)
                inputs, pre, post = lay.forward(q, xb)
                g = torch.autograd.grad(lay.loss(pre[-1], tb).sum(), pre)
            base = pre if kind == "s" else post
            targets = [(t.detach() - gamma * gi) for t, gi in zip(base, g, strict=True)]
            self._local_phase(p, state, hyper, [x.detach() for x in inputs], targets, kind, lrs, ks)

    @torch.no_grad()
    def _local_phase(
        self, p: Tensor, state: Any, hyper: dict[str, Tensor], inputs: list[Tensor],
        targets: list[Tensor], kind: str, lrs: list[float], ks: list[int],
    ) -> None:  # fmt: skip
        """LocalPhase.run for all members: every layer of every member in one bmm per group."""
        r, lay = p.shape[0], self.layout
        xs, xts, ts = [], [], []
        for g in lay.net.groups:  # [R * G, batch, fan_in], its transpose, [R * G, batch, fan_out]
            x = torch.stack([inputs[i] for i in g.layers], dim=1).flatten(0, 1)
            xs.append(x)
            xts.append(x.transpose(1, 2))
            ts.append(torch.stack([targets[i] for i in g.layers], dim=1).flatten(0, 1))
        grad = torch.empty_like(p)
        for k in range(max(ks)):
            for g, (ws, bs, n_g, fi, fo), x, xt, t in zip(
                lay.net.groups, lay.groups, xs, xts, ts, strict=True
            ):
                w = p[:, ws].reshape(r * n_g, fi, fo)
                b = p[:, bs].reshape(r * n_g, 1, fo)
                a = torch.baddbmm(b, x, w)  # [R * G, batch, fan_out]
                if kind == "m":
                    a = self._transfer(g.acts, a, r)
                res = a.sub_(t)
                grad[:, ws].view(r, n_g * fi * fo).copy_(torch.bmm(xt, res).view(r, -1))
                grad[:, bs].copy_(res.sum(dim=1).view(r, -1))
            live = [k < kk for kk in ks]
            mask = None if all(live) else torch.tensor(live, device=self.device)
            lr_k = [
                lr * local_lr_decay(k, kk) if on else 0.0
                for lr, kk, on in zip(lrs, ks, live, strict=True)
            ]
            self._opt_step(p, grad, state, hyper, lr_k, mask)

    @staticmethod
    def _transfer(acts: tuple[str, ...], a: Tensor, r: int) -> Tensor:
        """f per layer of a group, a [R * G, batch, fan_out] (one call when the group agrees)."""
        if all(act == acts[0] for act in acts):
            return ACTIVATIONS[acts[0]](a)
        a = a.view(r, len(acts), *a.shape[1:])
        return torch.stack(
            [ACTIVATIONS[act](a[:, i]) for i, act in enumerate(acts)], dim=1
        ).flatten(0, 1)

    # ------------------------------------------------------------ reports

    @torch.no_grad()
    def _evaluate(self, p: Tensor) -> list[dict[str, float]]:
        """evaluate() for each row of p [R, n_params]."""
        r, task, d = p.shape[0], self.cfg.task, self.data
        cols: dict[str, list[float]] = {}
        for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
            logits = self.layout.forward(p, x.expand(r, -1, -1))[1][-1]
            target = x.expand(r, -1, -1) if task == "autoencoder" else y.expand(r, -1)
            cols[f"{split}_loss"] = self.layout.loss(logits, target).tolist()
            if task == "classifier":
                cols[f"{split}_acc"] = (logits.argmax(-1) == y).double().mean(1).tolist()
        return [{k: v[i] for k, v in cols.items()} for i in range(r)]

    def _events(self, run: list[int], members: list[_Member], p: Tensor) -> list[MemberEvent]:
        for m in members:
            m.epoch += 1
        due = [
            j
            for j, m in enumerate(members)
            if m.epoch % m.cfg.report_every == 0 or m.epoch == m.cfg.epochs
        ]
        metrics = dict(zip(due, self._evaluate(p[due]), strict=True)) if due else {}
        finite = torch.isfinite(p).all(dim=1).tolist()
        reports, ends = [], []
        for j, (slot, m) in enumerate(zip(run, members, strict=True)):
            if j in metrics:
                reports.append(MemberEvent(slot, "report", m.epoch, metrics[j]))
                loss = metrics[j]["train_loss"]
                if not math.isfinite(loss):
                    m.status = "failed"
                    why = f"train_loss is {loss} at epoch {m.epoch} (diverged)"
                    ends.append(MemberEvent(slot, "failed", m.epoch, metrics[j], why))
                elif m.epoch == m.cfg.epochs:
                    m.status = "done"
                    ends.append(MemberEvent(slot, "done", m.epoch, metrics[j]))
            elif not finite[j]:
                m.status = "failed"
                why = f"parameters are not finite at epoch {m.epoch} (diverged)"
                ends.append(MemberEvent(slot, "failed", m.epoch, {}, why))
        return reports + ends


def member_bytes(config: Mapping[str, Any]) -> int:
    """A generous estimate of one member's device memory: parameters, gradient, optimizer
    state and working copies, one batch's activations and the full-set evaluation."""
    from .train import DTYPES, Config

    cfg = Config.from_dict(config)
    item = torch.empty((), dtype=DTYPES[cfg.dtype]).element_size()
    net = make_net(cfg.task, generator=torch.Generator().manual_seed(0))
    n, width = net.params.numel(), sum(net.sizes)
    n_images = 1797
    return item * (8 * n + 6 * cfg.batch_size * width + 2 * n_images * width) + 8 * n_images


def make(config: Mapping[str, Any], *, capacity: int, device: str = "cpu") -> LocoPropPopulation:
    return LocoPropPopulation(config, capacity=capacity, device=device)


POPULATION = PopulationForm(structural=STRUCTURAL, make=make, member_bytes=member_bytes)
