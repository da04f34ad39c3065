"""models/functional_optim.py, the one optimizer set of models/: K members stacked, [K]
hyperparameters and masks, against torch.optim (one optimizer per member) and against a direct
transcription of the TF1 update rules, for 300 steps in float64."""

from __future__ import annotations

import pytest
import torch

from models.functional_optim import (
    AdamState,
    RMSpropState,
    adam_init,
    adam_reset,
    adam_step,
    adam_tf1_step,
    concat_rows,
    rmsprop_init,
    rmsprop_reset,
    rmsprop_step,
    select_rows,
    sgd_step,
)

F64 = torch.float64
STEPS = 300
K = 3


def stream(seed: int, shape: tuple[int, ...] = (K, 4, 5)):
    """Initial parameters, then per step a gradient and a mask (member i skips some steps)."""
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(shape, generator=gen, dtype=F64)
    grads = [torch.randn(shape, generator=gen, dtype=F64) for _ in range(STEPS)]
    masks = [torch.tensor([(t + i) % (i + 2) != 0 for i in range(K)]) for t in range(STEPS)]
    masks[0] = torch.ones(K, dtype=torch.bool)  # and a step where nobody is masked
    return p0, grads, masks


def against_torch(p0, grads, masks, make_opt, functional) -> None:
    """``functional(p, g, mask)`` on the stack vs ``make_opt(i, param)`` on member i alone."""
    stacked = p0.clone()
    refs = [p0[i].clone().requires_grad_(True) for i in range(K)]
    opts = [make_opt(i, r) for i, r in enumerate(refs)]
    for t, (g, mask) in enumerate(zip(grads, masks, strict=True)):
        functional(stacked, g, None if t % 7 == 0 and bool(mask.all()) else mask)
        for i, (r, o) in enumerate(zip(refs, opts, strict=True)):
            if mask[i]:
                r.grad = g[i].clone()
                o.step()
    assert (stacked - p0).abs().max() > 0.1  # it moved
    for i, r in enumerate(refs):
        torch.testing.assert_close(stacked[i], r.detach(), rtol=1e-10, atol=1e-12, msg=f"member {i}")


LRS = torch.tensor([1e-3, 3e-3, 1e-2], dtype=F64)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw_equal_torch_optim(decoupled: bool) -> None:
    betas1, betas2 = torch.tensor([0.9, 0.8, 0.5], dtype=F64), torch.tensor([0.999, 0.99, 0.9], dtype=F64)
    eps, wd = torch.tensor([1e-8, 1e-6, 1e-4], dtype=F64), torch.tensor([0.0, 0.01, 0.1], dtype=F64)
    p0, grads, masks = stream(0)
    state = adam_init([p0])
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam

    def make(i, r):
        b = (float(betas1[i]), float(betas2[i]))
        return cls([r], lr=float(LRS[i]), betas=b, eps=float(eps[i]), weight_decay=float(wd[i]))

    def functional(p, g, mask):
        adam_step([p], [g], state, lr=LRS, betas=(betas1, betas2), eps=eps, weight_decay=wd,
                  decoupled_weight_decay=decoupled, mask=mask)  # fmt: skip

    against_torch(p0, grads, masks, make, functional)


def test_sgd_equals_torch_optim() -> None:
    p0, grads, masks = stream(1)
    against_torch(
        p0, grads, masks,
        lambda i, r: torch.optim.SGD([r], lr=float(LRS[i])),
        lambda p, g, mask: sgd_step([p], [g], lr=LRS, mask=mask),
    )  # fmt: skip


@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_rmsprop_torch_flavor_equals_torch_optim(momentum: float) -> None:
    alphas = torch.tensor([0.99, 0.9, 0.8], dtype=F64)
    p0, grads, masks = stream(2)
    state = rmsprop_init([p0])

    def make(i, r):
        return torch.optim.RMSprop(
            [r], lr=float(LRS[i]), alpha=float(alphas[i]), eps=1e-6, momentum=momentum
        )

    def functional(p, g, mask):
        rmsprop_step([p], [g], state, lr=LRS, alpha=alphas, eps=1e-6, momentum=momentum, mask=mask)

    against_torch(p0, grads, masks, make, functional)


# ---------------------------------------------------------------- TF1 rules (official notebook)


def tf1_reference(name: str, p: torch.Tensor, grads, lrs, hyper: dict[str, float]) -> torch.Tensor:
    """tf.compat.v1.train's updates written out, one member, plain tensors."""
    b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["eps"]
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    ms, mom = torch.ones_like(p), torch.zeros_like(p)  # RMSprop: ms starts at 1
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        if name == "sgd":
            p = p - lr * g
        elif name == "rmsprop":  # decay = beta2, momentum = beta1, eps inside the sqrt
            ms = b2 * ms + (1 - b2) * g * g
            mom = b1 * mom + lr * g / torch.sqrt(ms + eps)
            p = p - mom
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * m / (torch.sqrt(v) + eps)
    return p


HYPERS = [
    {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3},
    {"beta1": 0.0, "beta2": 0.99, "eps": 1e-5},
]


def tf1_functional(name: str, state, p, g, lr, h, mask) -> None:
    if name == "sgd":
        sgd_step([p], [g], lr=lr, mask=mask)
    elif name == "rmsprop":
        rmsprop_step([p], [g], state, lr=lr, alpha=h["beta2"], eps=h["eps"], momentum=h["beta1"],
                     mask=mask)  # fmt: skip
    else:
        adam_tf1_step([p], [g], state, lr=lr, betas=(h["beta1"], h["beta2"]), eps=h["eps"], mask=mask)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_tf1_rules_per_member_with_masks(name: str) -> None:
    p0, grads, masks = stream(3)
    gen = torch.Generator().manual_seed(4)
    lrs = [torch.rand(K, generator=gen, dtype=F64) * 0.01 for _ in range(STEPS)]
    h = {key: torch.tensor([d[key] for d in HYPERS], dtype=F64) for key in HYPERS[0]}
    stacked = p0.clone()
    state = rmsprop_init([stacked], flavor="tf1") if name == "rmsprop" else adam_init([stacked])
    for t, (g, lr, mask) in enumerate(zip(grads, lrs, masks, strict=True)):
        tf1_functional(name, state, stacked, g, lr, h, None if t == 0 else mask)
    assert (stacked - p0).abs().max() > 0.05
    for i in range(K):
        on = [t for t in range(STEPS) if masks[t][i]]
        want = tf1_reference(
            name, p0[i], [grads[t][i] for t in on], [float(lrs[t][i]) for t in on], HYPERS[i]
        )
        torch.testing.assert_close(stacked[i], want, rtol=1e-10, atol=1e-12, msg=f"member {i}")


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_one_member_with_numbers_takes_the_scalar_path_to_the_same_result(name: str) -> None:
    """A population of one takes the fused scalar ops (numbers, or one-member tensors on the
    CPU): the TF1 trajectory too."""
    p0, grads, _ = stream(5, (1, 6))
    h = HYPERS[1]
    ht = {k: torch.tensor([v], dtype=F64) for k, v in h.items()}
    a, b = p0.clone(), p0.clone()
    new = (lambda p: rmsprop_init([p], flavor="tf1")) if name == "rmsprop" else (lambda p: adam_init([p]))
    sa, sb = new(a), new(b)
    for t, g in enumerate(grads):
        lr = 0.01 * (1 + t % 3)
        tf1_functional(name, sa, a, g, lr, h, None)
        tf1_functional(name, sb, b, g, torch.tensor([lr], dtype=F64), ht, None)
    want = tf1_reference(name, p0[0], [g[0] for g in grads], [0.01 * (1 + t % 3) for t in range(STEPS)], h)
    torch.testing.assert_close(a[0], want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b[0], want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- state bookkeeping


def test_reset_select_and_concat_rows() -> None:
    p = torch.zeros(3, 2, dtype=F64)
    adam = adam_init([p])
    adam_step([p], [torch.ones(3, 2, dtype=F64)], adam, lr=0.1)
    adam_reset(adam, 1)
    assert adam.step.tolist() == [1.0, 0.0, 1.0]
    assert float(adam.exp_avg[0][1].abs().max()) == 0.0 and float(adam.exp_avg[0][0, 0]) == pytest.approx(0.1)
    rms = rmsprop_init([p], flavor="tf1")
    rmsprop_step([p], [torch.full((3, 2), 2.0, dtype=F64)], rms, lr=0.1, alpha=0.5)
    rmsprop_reset(rms, 2)
    assert rms.square_avg[0][:, 0].tolist() == [2.5, 2.5, 1.0]  # 0.5 * 1 + 0.5 * 4; reset: 1
    picked = select_rows(rms, torch.tensor([2, 0]))
    assert isinstance(picked, RMSpropState) and picked.flavor == "tf1"
    assert picked.square_avg[0][:, 0].tolist() == [1.0, 2.5] and picked.step.tolist() == [0.0, 1.0]
    both = concat_rows(select_rows(adam, torch.tensor([0])), select_rows(adam, torch.tensor([2, 1])))
    assert isinstance(both, AdamState) and both.step.tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="one kind"):
        concat_rows(adam, rms)


def test_reordered_rows_step_like_the_original_rows() -> None:
    """Compaction: selecting rows (state and params alike) then stepping == stepping, then selecting."""
    p0, grads, _ = stream(6)
    a = p0.clone()
    sa = adam_init([a])
    for g in grads[:5]:
        adam_tf1_step([a], [g], sa, lr=LRS)
    order = torch.tensor([2, 0])
    b, sb = a[order].clone(), select_rows(sa, order)
    for g in grads[5:10]:
        adam_tf1_step([a], [g], sa, lr=LRS)
        adam_tf1_step([b], [g[order]], sb, lr=LRS[order])
    torch.testing.assert_close(b, a[order], rtol=0, atol=0)
