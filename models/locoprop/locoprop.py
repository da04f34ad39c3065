"""LocoProp-S and LocoProp-M updates, and the plain backprop step they are compared with.

LocoProp: Enhancing BackProp via Local Loss Optimization, Amid, Anil, Warmuth, AISTATS 2022
(https://arxiv.org/abs/2106.06199); official notebook: google-research/locoprop.

One forward pass stores each layer's input x, pre-activation a = x W + b and output y = f(a);
one backward pass gives g = dLoss/da for every layer. Then each layer, with its input x
held fixed, takes K steps on its own local loss:

- LocoProp-S: target a_hat = a - gamma g, loss 1/2 ||x W + b - a_hat||^2 (summed over the batch);
  gradient x^T (x W + b - a_hat).
- LocoProp-M: target y_hat = f(a) - gamma g, loss the Bregman matching loss of f,
  D_F(x W + b, f^{-1}(y_hat)) with F' = f, summed over the batch; gradient
  x^T (f(x W + b) - y_hat). It never needs f^{-1}, so y_hat may leave f's range.

Both first local gradients equal gamma times the backprop gradient (the residual starts
at gamma g). Step k of K uses lr * max(1 - k/K, 0.25) (official decay). The layers do not
interact during the local phase, so all are updated at once: layers of one shape group
with one batched matmul.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .nets import ACTIVATIONS, Net, Trace
from .optim import Optimizer

Tensor = torch.Tensor
KINDS = ("s", "m")  # LocoProp-S (squared loss on a), LocoProp-M (matching loss on y)


def local_lr_decay(k: int, K: int) -> float:
    """Official schedule of the local iterations: max(1 - k/K, 0.25), k = 0 .. K-1."""
    return max(1.0 - k / K, 0.25)


def backprop_grads(net: Net, x: Tensor, target: Tensor) -> tuple[Trace, list[Tensor]]:
    """One forward and one backward pass: the trace and g_i = dLoss/da_i for every layer."""
    params = net.params.detach().requires_grad_(True)  # only to build the graph
    trace = net.forward(x, params)
    loss = net.loss(trace.pre[-1], target)
    g = torch.autograd.grad(loss, trace.pre)  # no weight gradients are computed
    detached = Trace(
        [t.detach() for t in trace.inputs],
        [t.detach() for t in trace.pre],
        [t.detach() for t in trace.post],
    )
    return detached, list(g)


def local_targets(trace: Trace, g: Sequence[Tensor], gamma: float, kind: str) -> list[Tensor]:
    """a_hat = a - gamma g (S) or y_hat = f(a) - gamma g (M), per layer [batch, fan_out]."""
    base = trace.pre if kind == "s" else trace.post
    return [t - gamma * gi for t, gi in zip(base, g, strict=True)]


class LocalPhase:
    """The layer-local problems of one batch, stacked per shape group.

    inputs[i] [batch, fan_in_i] and targets[i] [batch, fan_out_i] are fixed for the phase.
    """

    def __init__(
        self, net: Net, inputs: Sequence[Tensor], targets: Sequence[Tensor], kind: str
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown LocoProp kind {kind!r}, expected one of {KINDS}")
        self.net, self.kind = net, kind
        # Per group: inputs x [G, batch, fan_in], x^T [G, fan_in, batch], targets [G, batch, fan_out].
        self.x = [torch.stack([inputs[i] for i in g.layers]) for g in net.groups]
        self.xt = [x.transpose(1, 2) for x in self.x]
        self.t = [torch.stack([targets[i] for i in g.layers]) for g in net.groups]

    @classmethod
    def from_backprop(
        cls, net: Net, trace: Trace, g: Sequence[Tensor], gamma: float, kind: str
    ) -> LocalPhase:
        return cls(net, trace.inputs, local_targets(trace, g, gamma, kind), kind)

    def _transfer(self, acts: tuple[str, ...], a: Tensor) -> Tensor:
        """f applied member-wise to a [G, batch, fan_out] (one call when the group agrees)."""
        if all(act == acts[0] for act in acts):
            return ACTIVATIONS[acts[0]](a)
        return torch.stack(
            [ACTIVATIONS[act](a_s) for act, a_s in zip(acts, a.unbind(0), strict=True)]
        )

    def grad(self, params: Tensor, out: Tensor) -> Tensor:
        """Write the gradient of every layer's local loss at `params` into `out` (flat)."""
        self._grad_into(self.net.group_views(params), self.net.group_views(out))
        return out

    def _grad_into(
        self, views: list[tuple[Tensor, Tensor]], grads: list[tuple[Tensor, Tensor]]
    ) -> None:
        for g, (w, b), (gw, gb), x, xt, t in zip(
            self.net.groups, views, grads, self.x, self.xt, self.t, strict=True
        ):
            a = torch.baddbmm(b.unsqueeze(1), x, w)  # [G, batch, fan_out]
            r = a.sub_(t) if self.kind == "s" else self._transfer(g.acts, a).sub_(t)  # residual
            torch.bmm(xt, r, out=gw)  # x^T r   [G, fan_in, fan_out]
            torch.sum(r, dim=1, out=gb)  # [G, fan_out]

    @torch.no_grad()
    def run(self, opt: Optimizer, lr: float, K: int) -> None:
        """K local steps on all layers at once; the optimizer's state carries over batches."""
        grad = torch.empty_like(opt.params)
        # The optimizer updates opt.params in place, so these views stay valid for all K steps.
        views, grads = self.net.group_views(opt.params), self.net.group_views(grad)
        for k in range(K):
            self._grad_into(views, grads)
            opt.step(grad, lr * local_lr_decay(k, K))


def locoprop_step(
    net: Net,
    opt: Optimizer,
    x: Tensor,
    target: Tensor,
    *,
    lr: float,
    gamma: float,
    K: int,
    kind: str,
) -> None:
    """One LocoProp batch: a backprop pass for the targets, then K local steps."""
    trace, g = backprop_grads(net, x, target)
    LocalPhase.from_backprop(net, trace, g, gamma, kind).run(opt, lr, K)


def backprop_step(net: Net, opt: Optimizer, x: Tensor, target: Tensor, *, lr: float) -> None:
    """One plain backprop step with the same optimizer object and the same lr schedule."""
    params = net.params.detach().requires_grad_(True)
    loss = net.loss(net.forward(x, params).pre[-1], target)
    (grad,) = torch.autograd.grad(loss, params)
    opt.step(grad, lr)
