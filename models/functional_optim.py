"""Functional optimizers on stacked parameters: K members' tensors ``[K, ...]``, one update for all.

Stock ``torch.optim`` optimizers take one scalar learning rate per parameter group, so a
population of K trials (models/population.py) whose learning rates differ needs its own
update. Here every hyperparameter is a ``[K]`` tensor (or a number, the same for every member)
broadcast over each parameter's trailing dimensions, the moments and the step count are kept
per member, and a ``[K]`` bool mask says which members update at all (a failed, finished or
empty slot keeps its parameters and its state unchanged).

In float64 one member's trajectory equals ``torch.optim.Adam`` / ``torch.optim.AdamW`` on that
member alone to ~1e-12 (the same formulas in the same order: ``lerp`` for the first moment,
``mul + addcmul`` for the second, bias corrections from the member's own step count).

    state = adam_init(params)                      # params: list of [K, ...] tensors
    adam_step(params, grads, state, lr=lr_k, mask=active)   # lr_k: [K], or one [K] per param
    adam_reset(state, slot)                        # a new member joins at its step 0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Hyper = float | Tensor  # a number, or one value per member ``[K]``


@dataclass
class AdamState:
    """Per-member Adam state: moments shaped like the parameters, step counts ``[K]``."""

    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    step: Tensor  # [K] float64: updates taken by each member


def adam_init(params: Sequence[Tensor]) -> AdamState:
    """Zero moments and step counts for stacked parameters (leading dimension K)."""
    if not params:
        raise ValueError("adam_init: no parameters")
    k = params[0].shape[0]
    if any(p.dim() == 0 or p.shape[0] != k for p in params):
        raise ValueError(f"adam_init: every parameter needs the leading dimension K = {k}")
    return AdamState(
        exp_avg=[torch.zeros_like(p, memory_format=torch.preserve_format) for p in params],
        exp_avg_sq=[torch.zeros_like(p, memory_format=torch.preserve_format) for p in params],
        step=torch.zeros(k, dtype=torch.float64, device=params[0].device),
    )


def adam_reset(state: AdamState, slot: int | Tensor) -> None:
    """Forget the moments and the step count of ``slot`` (an int or an index / mask tensor)."""
    for buf in (*state.exp_avg, *state.exp_avg_sq):
        buf[slot] = 0
    state.step[slot] = 0


def _per_member(value: Hyper, like: Tensor, dtype: torch.dtype) -> Tensor:
    """``value`` as a ``[K, 1, ..., 1]`` tensor that broadcasts over ``like [K, ...]``."""
    t = torch.as_tensor(value, dtype=dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    if t.shape != like.shape[:1]:
        raise ValueError(f"functional optimizer: a hyperparameter must be a number or [K], got {tuple(t.shape)}")
    return t.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def adam_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    state: AdamState,
    *,
    lr: Hyper | Sequence[Hyper],
    betas: tuple[Hyper, Hyper] = (0.9, 0.999),
    eps: Hyper = 1e-8,
    weight_decay: Hyper = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Tensor | None = None,
) -> None:
    """One Adam (or, with ``decoupled_weight_decay``, AdamW) step, in place, for every member.

    ``lr`` is one value for all parameters or a sequence with one per parameter (parameter
    groups: e.g. a network's weights and a scalar with its own learning rate); each value a
    number or ``[K]``. ``mask [K]`` bool: members that take this step (default: all); the others
    keep their parameters, moments and step count bit for bit, even where their gradients are
    NaN. A parameter whose gradient is None is left alone (its moments too).
    """
    if len(grads) != len(params):
        raise ValueError(f"adam_step: {len(params)} parameters but {len(grads)} gradients")
    lrs = list(lr) if isinstance(lr, Sequence) else [lr] * len(params)
    if len(lrs) != len(params):
        raise ValueError(f"adam_step: {len(params)} parameters but {len(lrs)} learning rates")
    k = state.step.shape[0]
    active = torch.ones(k, dtype=torch.bool, device=state.step.device) if mask is None else mask
    step = state.step + active.to(state.step.dtype)  # [K]
    state.step.copy_(step)
    beta1_64 = _per_member(betas[0], step, torch.float64)
    beta2_64 = _per_member(betas[1], step, torch.float64)
    bias_correction1 = 1 - beta1_64**step  # [K] float64 (0 where a member never stepped)
    bias_correction2_sqrt = (1 - beta2_64**step).sqrt()
    for p, g, m, v, lr_i in zip(params, grads, state.exp_avg, state.exp_avg_sq, lrs, strict=True):
        if g is None:
            continue
        dt = p.dtype
        on = _per_member(active, p, torch.bool)
        lr_p = _per_member(lr_i, p, dt)
        beta1, beta2 = _per_member(betas[0], p, dt), _per_member(betas[1], p, dt)
        wd = _per_member(weight_decay, p, dt)
        if decoupled_weight_decay:
            decayed = p * (1 - lr_p * wd)
        else:
            decayed = p
            g = g + wd * p
        # torch.optim.Adam's formulas, with few passes over the memory (temporaries in place)
        m_new = torch.lerp(m, g, 1 - beta1)
        v_new = torch.addcmul(v * beta2, g * (1 - beta2), g)
        step_size = (_per_member(lr_i, step, torch.float64) / bias_correction1).to(dt)  # [K]
        denom = (v_new.sqrt() / _per_member(bias_correction2_sqrt.to(dt), p, dt)).add_(_per_member(eps, p, dt))
        update = torch.div(m_new, denom).mul_(_per_member(step_size, p, dt))
        p_new = decayed.sub_(update) if decoupled_weight_decay else p - update
        if mask is None:  # every member steps: no select
            p.copy_(p_new)
            m.copy_(m_new)
            v.copy_(v_new)
        else:
            p.copy_(torch.where(on, p_new, p))
            m.copy_(torch.where(on, m_new, m))
            v.copy_(torch.where(on, v_new, v))


# ---------------------------------------------------------------- SGD, RMSprop, TF1-style Adam
#
# models/locoprop/optim.py's rules (tf.compat.v1.train, as the official LocoProp notebook):
# RMSprop with the mean square starting at 1, eps inside the sqrt and lr inside the momentum;
# Adam with the bias corrections folded into the learning rate. ``flavor="torch"`` gives
# torch.optim.RMSprop (not centered) instead. With ``mask=None`` these update in place (no
# copy); with a mask, members where it is False keep parameters and state bit for bit.


def _masked(mask: Tensor | None, like: Tensor, new: Tensor, old: Tensor) -> None:
    """old <- new where the member's mask is set (everywhere when mask is None)."""
    if mask is None:
        old.copy_(new)
    else:
        old.copy_(torch.where(_per_member(mask, like, torch.bool), new, old))


@torch.no_grad()
def sgd_step(
    params: Sequence[Tensor], grads: Sequence[Tensor], *, lr: Hyper, mask: Tensor | None = None
) -> None:
    """p -= lr g for every member (torch.optim.SGD without momentum; TF1 GradientDescent)."""
    for p, g in zip(params, grads, strict=True):
        step = _per_member(lr, p, p.dtype) * g
        if mask is None:
            p.sub_(step)
        else:
            _masked(mask, p, p - step, p)


@dataclass
class RMSpropState:
    """Per-member RMSprop state: mean square and momentum buffers, step counts ``[K]``."""

    square_avg: list[Tensor]
    momentum_buffer: list[Tensor]
    step: Tensor  # [K] float64
    flavor: str  # "torch" (mean square starts at 0) | "tf1" (starts at 1)


def rmsprop_init(params: Sequence[Tensor], *, flavor: str = "torch") -> RMSpropState:
    if flavor not in ("torch", "tf1"):
        raise ValueError(f"rmsprop_init: flavor must be 'torch' or 'tf1', got {flavor!r}")
    if not params:
        raise ValueError("rmsprop_init: no parameters")
    start = 1.0 if flavor == "tf1" else 0.0
    return RMSpropState(
        square_avg=[torch.full_like(p, start) for p in params],
        momentum_buffer=[torch.zeros_like(p) for p in params],
        step=torch.zeros(params[0].shape[0], dtype=torch.float64, device=params[0].device),
        flavor=flavor,
    )


def rmsprop_reset(state: RMSpropState, slot: int | Tensor) -> None:
    """Member ``slot`` starts afresh (its step 0)."""
    for buf in state.square_avg:
        buf[slot] = 1.0 if state.flavor == "tf1" else 0.0
    for buf in state.momentum_buffer:
        buf[slot] = 0
    state.step[slot] = 0


@torch.no_grad()
def rmsprop_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state: RMSpropState,
    *,
    lr: Hyper,
    alpha: Hyper = 0.99,
    eps: Hyper = 1e-8,
    momentum: Hyper = 0.0,
    mask: Tensor | None = None,
) -> None:
    """One RMSprop step. ``alpha``: the decay of the mean square (TF1's rho / decay).

    torch: ms = alpha ms + (1 - alpha) g^2; buf = momentum buf + g / (sqrt(ms) + eps); p -= lr buf.
    tf1:   ms likewise (from 1); buf = momentum buf + lr g / sqrt(ms + eps); p -= buf.
    """
    active = None if mask is None else mask.to(state.step.dtype)
    state.step.add_(1 if active is None else active)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        ms, buf, dt = state.square_avg[i], state.momentum_buffer[i], p.dtype
        a, mom, e, lr_p = (_per_member(h, p, dt) for h in (alpha, momentum, eps, lr))
        if mask is not None:
            ms, buf, p_out = ms.clone(), buf.clone(), p.clone()
        else:
            p_out = p
        ms.mul_(a).add_((1 - a) * g * g)
        if state.flavor == "tf1":
            buf.mul_(mom).add_(lr_p * g / (ms + e).sqrt())
            p_out.sub_(buf)
        else:
            buf.mul_(mom).add_(g / (ms.sqrt() + e))
            p_out.sub_(lr_p * buf)
        if mask is not None:
            _masked(mask, p, ms, state.square_avg[i])
            _masked(mask, p, buf, state.momentum_buffer[i])
            _masked(mask, p, p_out, p)


@torch.no_grad()
def adam_tf1_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state: AdamState,
    *,
    lr: Hyper,
    betas: tuple[Hyper, Hyper] = (0.9, 0.999),
    eps: Hyper = 1e-8,
    mask: Tensor | None = None,
) -> None:
    """TF1's Adam on the state of ``adam_init``: m, v as torch's, then
    p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) (eps not bias-corrected)."""
    k = state.step.shape[0]
    active = torch.ones(k, dtype=torch.float64, device=state.step.device) if mask is None else mask
    state.step.add_(active.to(state.step.dtype))
    t = state.step.clamp(min=1)  # a member that never stepped: its (discarded) update stays finite
    b1, b2 = _per_member(betas[0], t, torch.float64), _per_member(betas[1], t, torch.float64)
    lr_t = _per_member(lr, t, torch.float64) * (1 - b2**t).sqrt() / (1 - b1**t)  # [K] float64
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        m, v, dt = state.exp_avg[i], state.exp_avg_sq[i], p.dtype
        b1p, b2p, e = (_per_member(h, p, dt) for h in (betas[0], betas[1], eps))
        if mask is not None:
            m, v, p_out = m.clone(), v.clone(), p.clone()
        else:
            p_out = p
        m.mul_(b1p).add_((1 - b1p) * g)
        v.mul_(b2p).add_((1 - b2p) * g * g)
        p_out.sub_(_per_member(lr_t, p, dt) * m / (v.sqrt() + e))
        if mask is not None:
            _masked(mask, p, m, state.exp_avg[i])
            _masked(mask, p, v, state.exp_avg_sq[i])
            _masked(mask, p, p_out, p)
