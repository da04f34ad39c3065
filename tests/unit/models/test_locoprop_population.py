"""LocoProp population form: members trained as one batched model equal their solo train() runs.

float64 on CPU, small sizes: 359 training images (test_fraction 0.8), batch 50, 2-3 epochs.
Also the stacked functional optimizers (models/functional_optim.py) against
models/locoprop/optim.py and torch.optim, one member at a time.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.functional_optim import (
    adam_init,
    adam_tf1_step,
    rmsprop_init,
    rmsprop_reset,
    rmsprop_step,
    sgd_step,
)
from models.locoprop.optim import Optimizer
from models.locoprop.population import STRUCTURAL, LocoPropPopulation
from models.locoprop.train import train
from models.population import MemberEvent, population_form

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- functional optimizers


def _stacked_vs_solo(name: str, hypers: list[dict[str, float]], masks: list[list[bool]]) -> None:
    """K members stacked, per-member hyperparameters and masks, vs one Optimizer per member."""
    gen = torch.Generator().manual_seed(0)
    k, n = len(hypers), 7
    p0 = torch.randn(k, n, generator=gen, dtype=F64)
    grads = [torch.randn(k, n, generator=gen, dtype=F64) for _ in masks]
    lrs = [torch.rand(k, generator=gen, dtype=F64) * 0.1 for _ in masks]
    stacked = p0.clone()
    h = {key: torch.tensor([d[key] for d in hypers], dtype=F64) for key in hypers[0]}
    state = rmsprop_init([stacked], flavor="tf1") if name == "rmsprop" else adam_init([stacked])
    for g, lr, mask in zip(grads, lrs, masks, strict=True):
        m = None if all(mask) else torch.tensor(mask)
        if name == "sgd":
            sgd_step([stacked], [g], lr=lr, mask=m)
        elif name == "rmsprop":
            rmsprop_step(
                [stacked],
                [g],
                state,
                lr=lr,
                alpha=h["beta2"],
                eps=h["eps"],
                momentum=h["beta1"],
                mask=m,
            )
        else:
            adam_tf1_step(
                [stacked], [g], state, lr=lr, betas=(h["beta1"], h["beta2"]), eps=h["eps"], mask=m
            )
    for i, d in enumerate(hypers):
        solo = p0[i].clone()
        opt = Optimizer(name, solo, **d)
        for g, lr, mask in zip(grads, lrs, masks, strict=True):
            if mask[i]:
                opt.step(g[i].clone(), float(lr[i]))
        torch.testing.assert_close(stacked[i], solo, rtol=1e-12, atol=1e-12, msg=f"member {i}")


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_stacked_tf1_optimizers_equal_locoprop_optimizer_per_member(name: str) -> None:
    hypers = [
        {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3},
        {"beta1": 0.0, "beta2": 0.99, "eps": 1e-5},
    ]
    masks = [[True] * 3, [True, False, True], [False, True, True], [True] * 3, [True, True, False]]
    _stacked_vs_solo(name, hypers, masks)


@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_stacked_rmsprop_torch_flavor_equals_torch_optim(momentum: float) -> None:
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(2, 5, generator=gen, dtype=F64)
    stacked = p0.clone()
    state = rmsprop_init([stacked])
    ref = [p0[i].clone().requires_grad_(True) for i in range(2)]
    alphas, lrs = [0.99, 0.8], [0.01, 0.03]
    opts = [
        torch.optim.RMSprop([r], lr=lr, alpha=a, eps=1e-6, momentum=momentum)
        for r, a, lr in zip(ref, alphas, lrs, strict=True)
    ]
    for _ in range(4):
        g = torch.randn(2, 5, generator=gen, dtype=F64)
        rmsprop_step(
            [stacked], [g], state, lr=torch.tensor(lrs, dtype=F64), alpha=torch.tensor(alphas, dtype=F64),
            eps=1e-6, momentum=momentum,
        )  # fmt: skip
        for i, (r, o) in enumerate(zip(ref, opts, strict=True)):
            r.grad = g[i].clone()
            o.step()
    for i in range(2):
        torch.testing.assert_close(stacked[i], ref[i].detach(), rtol=1e-12, atol=1e-12)
    rmsprop_reset(state, 1)
    assert state.step.tolist() == [4.0, 0.0] and float(state.square_avg[0][1].abs().max()) == 0.0


# ---------------------------------------------------------------- population vs train()

BASE = {"test_fraction": 0.8, "batch_size": 50, "dtype": "float64"}  # 359 training images


def member_configs(method: str, optimizer: str) -> list[tuple[dict, int]]:
    """Eight mixed members: lr, gamma, local K, optimizer constants, epochs, warm-up, reports."""
    lr = {"sgd": 0.05 if method == "bp" else 2e-4, "adam": 2e-3, "rmsprop": 1e-3}[optimizer]
    mixes = [
        {},
        {"lr": lr * 3, "gamma": 3.0, "K": 1},
        {"lr": lr / 2, "gamma": 20.0, "K": 4, "report_every": 2},
        {"epochs": 2, "warmup_epochs": 0, "K": 2},
        {"lr": lr * 2, "K": 3, "beta1": 0.5, "beta2": 0.95, "eps": 1e-4},
        {"gamma": 5.0, "K": 1, "warmup_epochs": 2},
        {"lr": lr / 3, "K": 4, "beta2": 0.99},
        {"epochs": 2, "warmup_epochs": 1, "gamma": 15.0, "report_every": 2},
    ]
    out = []
    for i, mix in enumerate(mixes):
        cfg = {**BASE, "method": method, "optimizer": optimizer, "lr": lr, "gamma": 10.0, "K": 2}
        cfg |= {"epochs": 3, "warmup_epochs": 1} | mix
        if optimizer == "sgd":
            cfg = {k: v for k, v in cfg.items() if k not in ("beta1", "beta2", "eps")}
        out.append((cfg, 100 + 7 * i))
    return out


def solo(cfg: dict, seed: int) -> tuple[list[tuple[int, dict]], dict]:
    reports: list[tuple[int, dict]] = []
    out = train(cfg, seed=seed, report=lambda s, m: reports.append((s, dict(m))))
    return reports, out


def drive(
    pop: LocoPropPopulation, schedule: dict[int, list[tuple[int | None, dict, int]]] | None = None
):
    """Run to the end; returns {member id: (reports, done metrics or None, failed event)}.

    schedule: before advance number a, for each (slot to remove or None, config, seed): join."""
    ids: dict[int, int] = {s: s for s in pop.occupied()}  # slot -> member id
    log: dict[int, dict] = {s: {"reports": [], "end": None} for s in ids}
    a, next_id = 0, 100
    while pop.occupied() or (schedule and any(k >= a for k in schedule)):
        for remove, cfg, seed in (schedule or {}).get(a, []):
            if remove is not None:
                pop.remove(remove)
            slot = pop.add(cfg, seed)
            ids[slot], log[next_id] = next_id, {"reports": [], "end": None}
            next_id += 1
        a += 1
        for ev in pop.advance():
            entry = log[ids[ev.slot]]
            if ev.kind == "report":
                entry["reports"].append((ev.step, ev.metrics))
            else:
                entry["end"] = ev
                pop.remove(ev.slot)
    return log


def assert_same(got: dict, want: tuple[list, dict], what: str) -> None:
    reports, out = want
    assert [s for s, _ in got["reports"]] == [s for s, _ in reports], what
    for (_, m), (_, w) in zip(got["reports"], reports, strict=True):
        assert set(m) == set(w), what
        for k in w:
            assert m[k] == pytest.approx(w[k], rel=1e-6), f"{what}: {k}"
    end: MemberEvent = got["end"]
    assert end is not None and end.kind == "done", what
    assert end.step == reports[-1][0]
    assert set(end.metrics) == set(out)
    for k in out:
        assert end.metrics[k] == pytest.approx(out[k], rel=1e-6), f"{what}: final {k}"


@pytest.mark.parametrize("method", ["bp", "locoprop-s", "locoprop-m"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_member_equals_its_solo_run(method: str, optimizer: str) -> None:
    members = member_configs(method, optimizer)
    want = [solo(cfg, seed) for cfg, seed in members]
    for k in (1, 3, 8):
        pop = LocoPropPopulation(members[0][0], capacity=k)
        for cfg, seed in members[:k]:
            pop.add(cfg, seed)
        log = drive(pop)
        for i in range(k):
            assert_same(log[i], want[i], f"K={k} member {i} {members[i][0]}")


def test_a_diverging_member_fails_alone() -> None:
    """It joins after one epoch of the others and overflows to NaN in its first epoch."""
    members = member_configs("locoprop-s", "sgd")[:2]
    bad = {**members[1][0], "method": "locoprop-s", "lr": 1e300, "K": 3}
    bad_reports, bad_out = solo(bad, 9)
    assert not math.isfinite(bad_out["train_loss"])  # train() diverges too
    pop = LocoPropPopulation(members[0][0], capacity=3)
    for cfg, seed in members:
        pop.add(cfg, seed)
    log: dict[int, dict] = {s: {"reports": [], "end": None} for s in range(3)}
    frozen = None
    for a in range(5):
        if a == 1:
            assert pop.add(bad, 9) == 2
        for ev in pop.advance():
            if ev.kind == "report":
                log[ev.slot]["reports"].append((ev.step, ev.metrics))
            else:
                log[ev.slot]["end"] = ev
                if ev.kind == "failed":
                    frozen = pop.params[2].clone()  # it stays in its slot, masked
        if frozen is not None:
            torch.testing.assert_close(pop.params[2], frozen, equal_nan=True, rtol=0, atol=0)
    failed = log[2]["end"]
    assert failed.kind == "failed" and "diverged" in failed.reason, failed
    assert [s for s, _ in log[2]["reports"]] == [s for s, _ in bad_reports] == [failed.step]
    assert not math.isfinite(failed.metrics["train_loss"])
    assert_same(log[0], solo(*members[0]), "member 0")
    assert_same(log[1], solo(*members[1]), "member 1")


def test_removed_member_replaced_midway_everyone_equals_solo() -> None:
    members = member_configs("locoprop-m", "adam")
    a, b, c, d = members[0], members[2], members[4], members[6]
    pop = LocoPropPopulation(a[0], capacity=4)  # a free slot: the gathered working-set path too
    for cfg, seed in (a, b, c):
        pop.add(cfg, seed)
    log = drive(pop, {1: [(1, d[0], d[1])]})  # after one epoch: drop b, d joins at its epoch 0
    assert_same(log[0], solo(*a), "a")
    assert_same(log[2], solo(*c), "c")
    assert_same(log[100], solo(*d), "d joined midway")
    assert [s for s, _ in log[1]["reports"]] == []  # b: removed before its first report


def test_add_checks_structure_and_capacity() -> None:
    cfg = {**BASE, "epochs": 2, "warmup_epochs": 1, "K": 2}
    pop = LocoPropPopulation(cfg, capacity=1)
    with pytest.raises(ValueError, match="method"):
        pop.add({**cfg, "method": "bp"}, 0)
    assert pop.add({**cfg, "lr": 0.01, "K": 5, "epochs": 3}, 0) == 0  # not structural
    with pytest.raises(ValueError, match="slots"):
        pop.add(cfg, 1)
    form = population_form(train)
    assert form is not None and form.structural == STRUCTURAL
    assert form.member_bytes is not None and form.member_bytes(cfg) > 0
    assert form.signature(cfg) == form.signature({**cfg, "lr": 0.5, "K": 7})
