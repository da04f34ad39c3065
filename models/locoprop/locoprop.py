"""LocoProp-S, LocoProp-M and the backprop baselines: the training math, once, for R members.

LocoProp: Enhancing BackProp via Local Loss Optimization, Amid, Anil, Warmuth, AISTATS 2022
(https://arxiv.org/abs/2106.06199); official notebook: google-research/locoprop.

Everything here works on R members at once (R = 1 for a plain ``train()``): member r's
parameters are row r of ``params [R, n_params]`` (the flat layout of ``nets.Net``), its batch
is ``x[r] [batch, in]``, and every layer is one batched matmul over the R rows
(``torch.baddbmm``). Rows never mix: each member sees exactly the numbers its solo run sees.

One batch (``train_batch``):

1. Forward: each layer's input x_i [R, batch, fan_in], pre-activation a_i = x_i W_i + b_i and
   output y_i = f_i(a_i) [R, batch, fan_out].
2. Backward: g_i = dLoss/da_i for every layer (written out: the loss's gradient on the
   logits, then g_i = (g_{i+1} W_{i+1}^T) * f_i'(a_i)).
3. Backprop members (method ``bp``): one optimizer step on dLoss/dW_i = x_i^T g_i,
   dLoss/db_i = sum_batch g_i.
4. LocoProp members, with each layer's input x_i held fixed, take K steps on their local losses:

   - LocoProp-S: target a_hat = a - gamma g, loss 1/2 ||x W + b - a_hat||^2 (summed over the
     batch); gradient x^T (x W + b - a_hat).
   - LocoProp-M: target y_hat = f(a) - gamma g, loss the Bregman matching loss of f,
     D_F(x W + b, f^{-1}(y_hat)) with F' = f, summed over the batch; gradient
     x^T (f(x W + b) - y_hat). It never needs f^{-1}, so y_hat may leave f's range.

   Both first local gradients equal gamma times the backprop gradient (the residual starts at
   gamma g). Local step k of K uses lr * max(1 - k/K, 0.25) (the official decay). The layers do
   not interact during the local phase, so all layers of all members step together.

Per member (rows of one ``Stack``): the method (bp / locoprop-s / locoprop-m), the optimizer
(sgd / rmsprop / adam, TF1 rules: models/functional_optim.py), K, gamma, the optimizer's
constants and the learning rate. Rows are kept sorted by (LocoProp or not, optimizer, method,
-K), so each optimizer updates a contiguous block of rows (a view: no copy, no mask), the
LocoProp-M rows get their transfer function in place on their rows, and at local step k the
members still stepping (K > k) are a prefix of their block: the local steps compute those rows
only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..functional_optim import AdamState, RMSpropState, adam_tf1_step, rmsprop_step, sgd_step
from .nets import ACTIVATIONS, DERIVATIVES, Net, activate_

Tensor = torch.Tensor
METHODS = ("bp", "locoprop-s", "locoprop-m")
OPTIMIZERS = ("sgd", "rmsprop", "adam")


def local_lr_decay(k: int, K: int) -> float:
    """Official schedule of the local iterations: max(1 - k/K, 0.25), k = 0 .. K-1."""
    return max(1.0 - k / K, 0.25)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over `warmup` steps to `base`, then linear decay to base/(total-warmup)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (total - step) / (total - warmup)


# ---------------------------------------------------------------- forward, loss, backward

Views = list[tuple[Tensor, Tensor]]  # per layer (W [R, fan_in, fan_out], b [R, fan_out])


def layer_views(net: Net, flat: Tensor) -> Views:
    """Per layer, views into flat [R, n_params]: W [R, fan_in, fan_out] and b [R, fan_out]."""
    r = flat.shape[0]
    return [(flat[:, lay.w].view(r, lay.fan_in, lay.fan_out), flat[:, lay.b]) for lay in net.layers]


def forward(net: Net, pv: Views, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """x [R, batch, in] -> per layer x_i, a_i = x_i W_i + b_i, y_i = f_i(a_i) [R, batch, width]."""
    inputs, pre, post = [], [], []
    for layer, (w, b) in zip(net.layers, pv, strict=True):
        a = torch.baddbmm(b.unsqueeze(1), x, w)  # [R, batch, fan_out]
        inputs.append(x)
        pre.append(a)
        x = ACTIVATIONS[layer.act](a)
        post.append(x)
    return inputs, pre, post


def losses(net: Net, logits: Tensor, target: Tensor) -> Tensor:
    """Each member's loss [R] from its logits [R, batch, out].

    bce: sigmoid cross-entropy summed over pixels, mean over the batch (the paper's autoencoder
    loss; target [R, batch, out]); ce: softmax cross-entropy (target [R, batch] labels).
    """
    if net.loss_kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return per.sum(dim=(1, 2)) / logits.shape[1]
    r, b, c = logits.shape
    per = F.cross_entropy(logits.reshape(r * b, c), target.reshape(r * b), reduction="none")
    return per.view(r, b).mean(1)


def backward(
    net: Net, pv: Views, pre: Sequence[Tensor], post: Sequence[Tensor], target: Tensor
) -> list[Tensor]:
    """g_i = dLoss_r/da_i for every layer [R, batch, fan_out] (each member's own loss)."""
    logits = pre[-1]
    batch = logits.shape[1]
    if net.loss_kind == "bce":
        g = (torch.sigmoid(logits) - target) / batch
    else:
        onehot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        g = (torch.softmax(logits, dim=-1) - onehot) / batch
    out = [g]
    for i in range(len(net.layers) - 1, 0, -1):
        g = torch.bmm(g, pv[i][0].transpose(1, 2))  # dLoss/dy_{i-1}
        act = net.layers[i - 1].act
        if act != "linear":
            g.mul_(DERIVATIVES[act](post[i - 1]))
        out.append(g)
    return out[::-1]


def layer_grads(xts: Sequence[Tensor], res: Sequence[Tensor], out: Views) -> None:
    """out <- per layer x_i^T r_i and sum_batch r_i (xts: the inputs transposed [R, in, batch]).

    r_i = g_i gives the backprop gradient; r_i = the local residual, the local gradient."""
    for xt, ri, (gw, gb) in zip(xts, res, out, strict=True):
        torch.bmm(xt, ri, out=gw)
        torch.sum(ri, dim=1, out=gb)


MRows = bool | Sequence[tuple[int, int]]  # LocoProp-M rows: all, none, or row ranges


def _ranges(m: MRows, rows: int) -> Sequence[tuple[int, int]]:
    return ((0, rows),) if m is True else () if m is False else m  # type: ignore[return-value]


def local_targets(
    pre: Sequence[Tensor], post: Sequence[Tensor], g: Sequence[Tensor], gamma: float | Tensor,
    m: MRows,
) -> list[Tensor]:  # fmt: skip
    """a_hat = a - gamma g (LocoProp-S rows) or y_hat = f(a) - gamma g (LocoProp-M rows: ``m``
    True, or the ranges of M rows), per layer [R, batch, fan_out]; gamma a number or [R, 1, 1]."""
    out = []
    for a, y, gi in zip(pre, post, g, strict=True):
        base = a.clone()
        for lo, hi in _ranges(m, a.shape[0]):
            base[lo:hi] = y[lo:hi]
        out.append(base.sub_(gamma * gi))
    return out


def local_grads(
    net: Net, pv: Views, xs: Sequence[Tensor], xts: Sequence[Tensor], targets: Sequence[Tensor],
    m: MRows, out: Views,
) -> None:  # fmt: skip
    """out <- the gradient of every layer's local loss at the parameters pv, inputs xs held
    fixed: x^T (x W + b - a_hat) (S rows) or x^T (f(x W + b) - y_hat) (M rows: ``m`` True, or
    their row ranges), and the residual's batch sum."""
    res = []
    for layer, (w, b), x, t in zip(net.layers, pv, xs, targets, strict=True):
        a = torch.baddbmm(b.unsqueeze(1), x, w)  # [R, batch, fan_out]
        if m is True:
            activate_(layer.act, a)
        elif m is not False:
            for lo, hi in m:
                activate_(layer.act, a[lo:hi])  # in place on the M rows
        res.append(a.sub_(t))  # the residual
    layer_grads(xts, res, out)


@torch.no_grad()
def evaluate(net: Net, p: Tensor, x: Tensor, target: Tensor, task: str) -> dict[str, list[float]]:
    """Loss (and accuracy) of each member on one whole split: x [n, in] -> {name: [R] values}."""
    r = p.shape[0]
    logits = forward(net, layer_views(net, p), x.expand(r, -1, -1))[1][-1]  # [R, n, out]
    t = target.expand(r, *target.shape)
    out = {"loss": losses(net, logits, t).tolist()}
    if task == "classifier":
        out["acc"] = (logits.argmax(-1) == t).double().mean(1).tolist()
    return out


# ---------------------------------------------------------------- the members' rows


@dataclass(frozen=True)
class Hyper:
    """One member's training constants (its learning rate comes with each batch)."""

    method: str  # bp | locoprop-s | locoprop-m
    optimizer: str  # sgd | rmsprop | adam
    K: int  # local steps per batch (LocoProp)
    gamma: float  # activation step of the targets (LocoProp)
    beta1: float  # Adam beta1 / RMSprop momentum
    beta2: float  # Adam beta2 / RMSprop decay
    eps: float

    def sort_key(self) -> tuple[bool, int, int, int]:
        local = self.method != "bp"
        return (
            local,
            OPTIMIZERS.index(self.optimizer),
            METHODS.index(self.method),
            -self.K if local else 0,
        )


def _same_or_list(values: list[float]) -> float | Tensor:
    """A number when every member agrees, else [rows] float64 (the optimizers round either to
    the same value: see models/functional_optim.py)."""
    if all(v == values[0] for v in values):
        return values[0]
    return torch.tensor(values, dtype=torch.float64)


@dataclass
class Block:
    """Rows [start, stop) of a Stack: one method with one optimizer."""

    start: int
    stop: int
    method: str
    optimizer: str
    ks: list[int]  # the rows' K, descending

    @property
    def local(self) -> bool:
        return self.method != "bp"

    def live(self, k: int) -> int:
        """The end of the rows still taking local steps at step k (K > k): a prefix."""
        return self.start + sum(kk > k for kk in self.ks)


class Stack:
    """R members' parameters and optimizer state, one row each, sorted by ``Hyper.sort_key``.

    params [R, n]; buf1 [R, n]: RMSprop's momentum / Adam's m; buf2 [R, n]: RMSprop's mean
    square (TF1: starts at 1) / Adam's v; step [R] float64: optimizer steps taken.
    ``order`` maps a row to the index its member had in the constructor's arguments.
    """

    def __init__(
        self, net: Net, hypers: Sequence[Hyper], params: Tensor, buf1: Tensor, buf2: Tensor,
        step: Tensor,
    ) -> None:  # fmt: skip
        self.net = net
        self.order = sorted(range(len(hypers)), key=lambda i: hypers[i].sort_key())
        if self.order != list(range(len(hypers))):
            idx = torch.tensor(self.order, device=params.device)
            params, buf1, buf2, step = (t.index_select(0, idx) for t in (params, buf1, buf2, step))
        self.params, self.buf1, self.buf2, self.step = params, buf1, buf2, step
        self.hypers = [hypers[i] for i in self.order]
        self.blocks: list[Block] = []
        for i, h in enumerate(self.hypers):
            last = self.blocks[-1] if self.blocks else None
            if last is not None and (last.method, last.optimizer) == (h.method, h.optimizer):
                last.stop, last.ks = i + 1, [*last.ks, h.K]
            else:
                self.blocks.append(Block(i, i + 1, h.method, h.optimizer, [h.K]))
        self.n_bp = sum(h.method == "bp" for h in self.hypers)
        loco = self.hypers[self.n_bp :]
        self.grad = torch.empty_like(params)
        self._views: dict[tuple[int, int], tuple[Views, Views]] = {}
        self._opt_args: dict[tuple[int, int], tuple] = {}
        self._plan: list | None = None
        gammas = _same_or_list([h.gamma for h in loco]) if loco else 0.0
        if not isinstance(gammas, float):
            gammas = gammas.to(params.device, params.dtype).view(-1, 1, 1)
        self.gamma = gammas  # the LocoProp rows' gamma: a number or [R_loco, 1, 1]

    def m_ranges(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The LocoProp-M rows among rows [lo, hi), as ranges relative to lo."""
        out = []
        for b in self.blocks:
            a, z = max(b.start, lo), min(b.stop, hi)
            if b.method == "locoprop-m" and a < z:
                out.append((a - lo, z - lo))
        return out

    @staticmethod
    def fresh_state(hyper: Hyper, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """A new member's optimizer state for its params [n]: (buf1, buf2, step [1])."""
        buf2 = torch.ones_like(params) if hyper.optimizer == "rmsprop" else torch.zeros_like(params)
        step = torch.zeros(1, dtype=torch.float64, device=params.device)
        return torch.zeros_like(params), buf2, step

    def rows(self, index: Sequence[int]) -> tuple[list[Hyper], Tensor, Tensor, Tensor, Tensor]:
        """The given rows' (hypers, params, buf1, buf2, step): to build a smaller or larger Stack."""
        idx = torch.tensor(list(index), dtype=torch.long, device=self.params.device)
        tensors = (t.index_select(0, idx) for t in (self.params, self.buf1, self.buf2, self.step))
        return ([self.hypers[i] for i in index], *tensors)  # type: ignore[return-value]

    def _optimizer_step(self, block: Block, stop: int, lrs: Sequence[float]) -> None:
        """The block's rows [start, stop) take one step on self.grad (views: in place)."""
        args = self._opt_args.get((block.start, stop))
        if args is None:  # the rows' views, state and constants, once per stack
            a, rows = block.start, self.hypers[block.start : stop]
            consts = [
                _same_or_list([getattr(h, k) for h in rows]) for k in ("beta1", "beta2", "eps")
            ]
            state: AdamState | RMSpropState | None = None
            if block.optimizer == "rmsprop":  # TF1: momentum = beta1, decay = beta2
                state = RMSpropState(
                    [self.buf2[a:stop]], [self.buf1[a:stop]], self.step[a:stop], "tf1"
                )
            elif block.optimizer == "adam":
                state = AdamState([self.buf1[a:stop]], [self.buf2[a:stop]], self.step[a:stop])
            args = self._opt_args[(block.start, stop)] = (
                [self.params[a:stop]],
                [self.grad[a:stop]],
                state,
                *consts,
            )
        p, g, state, beta1, beta2, eps = args
        lr = _same_or_list(list(lrs))
        if isinstance(state, RMSpropState):
            rmsprop_step(p, g, state, lr=lr, alpha=beta2, eps=eps, momentum=beta1)
        elif isinstance(state, AdamState):
            adam_tf1_step(p, g, state, lr=lr, betas=(beta1, beta2), eps=eps)
        else:
            sgd_step(p, g, lr=lr)

    def views(self, lo: int, hi: int) -> tuple[Views, Views]:
        """Per layer views of rows [lo, hi) of the parameters and of the gradient buffer (the
        optimizers update in place, so they stay valid for the stack's life)."""
        v = self._views.get((lo, hi))
        if v is None:
            v = self._views[(lo, hi)] = (
                layer_views(self.net, self.params[lo:hi]),
                layer_views(self.net, self.grad[lo:hi]),
            )
        return v

    @torch.no_grad()
    def train_batch(self, x: Tensor, target: Tensor, lrs: Sequence[float]) -> None:
        """One batch for every row: x [R, batch, in], target [R, batch, out] or [R, batch]
        labels, lrs: each row's learning rate at this batch (its schedule's)."""
        net, rows, nb = self.net, len(self.hypers), self.n_bp
        pv, _ = self.views(0, rows)
        inputs, pre, post = forward(net, pv, x)
        g = backward(net, pv, pre, post, target)
        xts = [t.transpose(1, 2) for t in inputs]  # [R, fan_in, batch]
        if nb:  # backprop rows: dLoss/dW = x^T g, dLoss/db = sum g
            layer_grads([t[:nb] for t in xts], [t[:nb] for t in g], self.views(0, nb)[1])
            for block in self.blocks:
                if not block.local:
                    self._optimizer_step(block, block.stop, lrs[block.start : block.stop])
        if nb == rows:
            return
        # LocoProp rows: the targets a - gamma g (S) or f(a) - gamma g (M), then K local steps.
        targets = local_targets(
            [t[nb:] for t in pre], [t[nb:] for t in post], [t[nb:] for t in g], self.gamma,
            self.m_ranges(nb, rows),
        )  # fmt: skip
        xs, xts = [t[nb:] for t in inputs], [t[nb:] for t in xts]
        rows_of: dict[tuple[int, int], tuple[list[Tensor], ...]] = {}  # a segment's batch rows
        for segments, steps in self.local_plan():  # local step k = 0 .. max K - 1
            for lo, hi, m in segments:  # compute on the rows still stepping only
                if (lo, hi) not in rows_of:
                    sl = slice(lo - nb, hi - nb)
                    rows_of[(lo, hi)] = tuple([t[sl] for t in ts] for ts in (xs, xts, targets))
                pv_k, gv_k = self.views(lo, hi)
                local_grads(net, pv_k, *rows_of[(lo, hi)], m, gv_k)
            for b, stop, decay in steps:
                self._optimizer_step(
                    b, stop, [lr * d for lr, d in zip(lrs[b.start : stop], decay, strict=True)]
                )

    def local_plan(
        self,
    ) -> list[tuple[list[tuple[int, int, MRows]], list[tuple[Block, int, list[float]]]]]:
        """Per local step k: the row segments to compute (with their M rows) and, per block,
        the end of its rows still stepping and their lr decay max(1 - k/K, 0.25)."""
        if self._plan is None:
            local = [b for b in self.blocks if b.local]
            self._plan = []
            for k in range(max(b.ks[0] for b in local)):
                live = [(b, b.live(k)) for b in local]  # each block's rows with K > k: a prefix
                segments = []
                for lo, hi in _segments(live):
                    m = self.m_ranges(lo, hi)
                    segments.append((lo, hi, True if m == [(0, hi - lo)] else m or False))
                steps = [
                    (b, stop, [local_lr_decay(k, h.K) for h in self.hypers[b.start : stop]])
                    for b, stop in live
                    if stop > b.start
                ]
                self._plan.append((segments, steps))
        return self._plan


def _segments(live: list[tuple[Block, int]]) -> list[tuple[int, int]]:
    """Contiguous row ranges of the live prefixes (blocks are adjacent and in row order)."""
    out: list[tuple[int, int]] = []
    for b, stop in live:
        if stop == b.start:
            continue
        if out and out[-1][1] == b.start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((b.start, stop))
    return out
