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

import math
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
# The update rules of tf.compat.v1.train, as the official LocoProp notebook uses them
# (https://github.com/google-research/google-research/blob/master/locoprop/locoprop_training.ipynb):
#
# - SGD (GradientDescent): p -= lr g.
# - RMSprop (``flavor="tf1"``): ms = rho ms + (1 - rho) g^2, with ms starting at 1;
#   mom = momentum mom + lr g / sqrt(ms + eps); p -= mom. (``flavor="torch"``:
#   torch.optim.RMSprop, not centered: ms from 0, buf = momentum buf + g / (sqrt(ms) + eps),
#   p -= lr buf.)
# - Adam (``adam_tf1_step``): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
#   p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) (eps not bias-corrected).
#
# One sequence of element-wise ops serves a number and a [K] hyperparameter alike (``x * c``
# with c a Python float or a [K, 1, ...] tensor), and derived coefficients (1 - rho, the bias
# corrections) are computed in float64 before one rounding to the parameters' dtype: so a
# member gets bit for bit the same update alone (numbers) as in a population of members with
# other hyperparameters ([K] tensors), also in float32. A one-member tensor on the CPU is
# taken as a number. With ``mask=None`` the updates are in place (no copy); with a mask,
# members where it is False keep parameters and state bit for bit.

Coef = float | Tensor  # a Python float, or float64 [K, 1, ..., 1]


def _coef(value: Hyper, like: Tensor) -> Coef:
    """A number stays a Python float; ``[K]`` becomes float64 ``[K, 1, ..., 1]``."""
    if isinstance(value, (int, float)):
        return float(value)
    if value.numel() == 1 and value.device.type == "cpu" and like.shape[0] == 1:
        return float(value.reshape(()))
    return _per_member(value, like, torch.float64)


def _in(c: Coef, like: Tensor) -> Coef:
    """The coefficient rounded once to the parameters' dtype (a float is rounded by the op)."""
    return c if isinstance(c, float) else c.to(like.dtype)


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
        step = g * _in(_coef(lr, p), p)
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


def _rmsprop_one(
    p: Tensor, g: Tensor, ms: Tensor, buf: Tensor, flavor: str, lr: Coef, a: Coef, e: Coef,
    mom: Coef,
) -> None:  # fmt: skip
    """One in-place RMSprop update of one parameter (the formulas of ``rmsprop_step``)."""
    ms.mul_(_in(a, p)).addcmul_(g * _in(1 - a, p), g)
    if flavor == "tf1":
        buf.mul_(_in(mom, p)).addcdiv_(g * _in(lr, p), (ms + _in(e, p)).sqrt_())
        p.sub_(buf)
    else:
        buf.mul_(_in(mom, p)).addcdiv_(g, ms.sqrt().add_(_in(e, p)))
        p.sub_(buf * _in(lr, p))


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
    state.step.add_(1 if mask is None else mask.to(state.step.dtype))
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        ms, buf = state.square_avg[i], state.momentum_buffer[i]
        h = [_coef(v, p) for v in (lr, alpha, eps, momentum)]
        if mask is None:
            _rmsprop_one(p, g, ms, buf, state.flavor, *h)
            continue
        ms_new, buf_new, p_new = ms.clone(), buf.clone(), p.clone()
        _rmsprop_one(p_new, g, ms_new, buf_new, state.flavor, *h)
        _masked(mask, p, ms_new, ms)
        _masked(mask, p, buf_new, buf)
        _masked(mask, p, p_new, p)


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
    state.step.add_(1 if mask is None else mask.to(state.step.dtype))
    t = state.step.clamp(min=1)  # a member that never stepped: its (discarded) update is finite
    b1, b2, lr0 = (_coef(h, t) for h in (betas[0], betas[1], lr))
    if all(isinstance(c, float) for c in (b1, b2, lr0)) and t.numel() == 1 and t.is_cpu:
        n = float(t.reshape(()))
        lr_t: Coef = lr0 * math.sqrt(1 - b2**n) / (1 - b1**n)  # type: ignore[operator]
    else:
        lr_t = (lr0 * (1 - b2**t).sqrt() / (1 - b1**t)).reshape(-1)  # [K] float64
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        m, v = state.exp_avg[i], state.exp_avg_sq[i]
        b1p, b2p, e, lr_p = (_coef(h, p) for h in (betas[0], betas[1], eps, lr_t))
        if mask is not None:
            m, v, p_out = m.clone(), v.clone(), p.clone()
        else:
            p_out = p
        m.mul_(_in(b1p, p)).add_(g * _in(1 - b1p, p))
        v.mul_(_in(b2p, p)).addcmul_(g * _in(1 - b2p, p), g)
        p_out.sub_(m / v.sqrt().add_(_in(e, p)) * _in(lr_p, p))
        if mask is not None:
            _masked(mask, p, m, state.exp_avg[i])
            _masked(mask, p, v, state.exp_avg_sq[i])
            _masked(mask, p, p_out, p)


# ---------------------------------------------------------------- compaction


def select_rows(state: AdamState | RMSpropState, index: Tensor) -> AdamState | RMSpropState:
    """A new state holding the members ``index`` (a 1-D index tensor), in that order: a
    population that keeps only its occupied rows drops, reorders or grows its state with it
    (grow: concatenate a fresh ``*_init`` state of the new rows with ``concat_rows``)."""
    if isinstance(state, AdamState):
        return AdamState(
            [t.index_select(0, index) for t in state.exp_avg],
            [t.index_select(0, index) for t in state.exp_avg_sq],
            state.step.index_select(0, index),
        )
    return RMSpropState(
        [t.index_select(0, index) for t in state.square_avg],
        [t.index_select(0, index) for t in state.momentum_buffer],
        state.step.index_select(0, index),
        state.flavor,
    )


def concat_rows(
    a: AdamState | RMSpropState, b: AdamState | RMSpropState
) -> AdamState | RMSpropState:
    """The members of ``a`` followed by those of ``b`` (same kind and flavor)."""
    if isinstance(a, AdamState) and isinstance(b, AdamState):
        return AdamState(
            [torch.cat(x) for x in zip(a.exp_avg, b.exp_avg, strict=True)],
            [torch.cat(x) for x in zip(a.exp_avg_sq, b.exp_avg_sq, strict=True)],
            torch.cat([a.step, b.step]),
        )
    if isinstance(a, RMSpropState) and isinstance(b, RMSpropState) and a.flavor == b.flavor:
        return RMSpropState(
            [torch.cat(x) for x in zip(a.square_avg, b.square_avg, strict=True)],
            [torch.cat(x) for x in zip(a.momentum_buffer, b.momentum_buffer, strict=True)],
            torch.cat([a.step, b.step]),
            a.flavor,
        )
    raise ValueError("concat_rows: the two states must be of one kind (and one RMSprop flavor)")
