"""SGD, RMSprop and Adam on one flat parameter tensor, shared by backprop and LocoProp.

The update rules follow tf.compat.v1.train (the official LocoProp notebook,
https://github.com/google-research/google-research/blob/master/locoprop/locoprop_training.ipynb):

- RMSprop: ms = rho ms + (1 - rho) g^2 (ms starts at 1, as in TF1);
  mom = momentum mom + lr g / sqrt(ms + eps); p -= mom.
  Official: momentum = 0.999 (flag `1 - one_minus_beta1`), rho = 0.9, eps = 1e-5.
- Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps).
- SGD: p -= lr g.

The learning rate is passed to every `step`, so one object serves the backprop schedule
and LocoProp's per-local-iteration decay; its state lives across batches.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "rmsprop", "adam")


class Optimizer:
    """In-place updates of `params` (a flat tensor) from a gradient of the same shape."""

    def __init__(
        self, name: str, params: torch.Tensor, *, beta1: float, beta2: float, eps: float
    ) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}, expected one of {OPTIMIZERS}")
        self.name, self.params = name, params
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0  # number of steps taken (Adam's bias correction)
        if name == "rmsprop":
            self.ms = torch.ones_like(params)  # running mean of g^2, TF1 starts it at 1
            self.mom = torch.zeros_like(params)  # momentum buffer
        elif name == "adam":
            self.m = torch.zeros_like(params)
            self.v = torch.zeros_like(params)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        p, g = self.params, grad
        if self.name == "sgd":
            p.add_(g, alpha=-lr)
        elif self.name == "rmsprop":
            rho, momentum = self.beta2, self.beta1
            self.ms.mul_(rho).addcmul_(g, g, value=1 - rho)
            self.mom.mul_(momentum).addcdiv_(g, (self.ms + self.eps).sqrt_(), value=lr)
            p.sub_(self.mom)
        else:  # adam
            b1, b2 = self.beta1, self.beta2
            self.m.mul_(b1).add_(g, alpha=1 - b1)
            self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            lr_t = lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
            p.addcdiv_(self.m, self.v.sqrt().add_(self.eps), value=-lr_t)
