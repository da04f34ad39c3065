"""The GFlowNet population form: K members as one batched model equal K solo ``train`` runs.

Float64 on CPU: every member of a population (K = 1, 3, 8, mixed hyperparameters, members
joining late, pruned, replaced, diverging) reports exactly what ``train`` alone with the same
config and seed reports, to 1e-6 relative (in practice ~1e-15). And the functional Adam equals
``torch.optim.Adam`` / ``AdamW`` per member to 1e-12.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models.functional_optim import adam_init, adam_step
from models.gflownet.population import POPULATION, STRUCTURAL, make
from models.gflownet.train import train
from models.population import MemberEvent, population_form

BASE = {"ndim": 2, "height": 4, "hidden": 16, "batch_size": 8, "n_eval_samples": 200,
        "n_iterations": 6, "report_every": 2}
# per-member hyperparameters: learning rates, exploration, SubTB's lambda, budgets, reporting
MIXED = [
    {},
    {"lr": 3e-3, "logz_lr": 0.05, "epsilon": 0.1},
    {"lr": 2e-3, "temperature": 1.5, "lambda_": 0.6, "n_iterations": 5, "report_every": 3},
    {"lr": 5e-4, "logz_lr": 0.2, "epsilon": 0.05, "temperature": 0.7, "lambda_": 0.95},
    {"lr": 1e-2, "n_iterations": 4, "n_eval_samples": 0},
    {"lr": 2e-4, "epsilon": 0.2, "report_every": 1, "n_iterations": 3},
    {"lr": 4e-3, "temperature": 2.0, "logz_lr": 0.01},
    {"lr": 1e-3, "epsilon": 0.02, "lambda_": 0.8, "n_iterations": 7, "report_every": 4},
]
COMBOS = [(loss, bp) for loss in ("tb", "db", "subtb") for bp in ("uniform", "learned")] + [("fm", "uniform")]


@pytest.fixture(autouse=True, scope="module")
def float64_one_thread():
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


_SOLO: dict[tuple, tuple[list, dict]] = {}


def solo(config: dict, seed: int) -> tuple[list[tuple[int, dict]], dict]:
    """train() alone: its reports (copied when made) and its return value (cached)."""
    key = (tuple(sorted(config.items())), seed)
    if key not in _SOLO:
        calls: list[tuple[int, dict]] = []
        final = train(config, seed=seed, report=lambda s, m: calls.append((s, dict(m))))
        _SOLO[key] = (calls, final)
    return _SOLO[key]


def drive(pop, joins: dict[int, list], prunes: dict[int, list] | None = None) -> dict:
    """Run a population to the end. ``joins[t]``: (name, config, seed) added before advance t;
    ``prunes[t]``: names removed before advance t. Returns each member's reports and end event."""
    prunes = prunes or {}
    slot_of: dict[str, int] = {}
    name_of: dict[int, str] = {}
    out: dict[str, dict] = {}
    t = 0
    while True:
        for name in prunes.get(t, []):
            pop.remove(slot_of[name])
            del name_of[slot_of[name]]
        for name, config, seed in joins.get(t, []):
            slot = pop.add(config, seed)
            slot_of[name], name_of[slot] = slot, name
            out[name] = {"reports": [], "end": None}
        if not pop.occupied() and t > max(joins):
            return out
        for ev in pop.advance():
            member = out[name_of[ev.slot]]
            if ev.kind == "report":
                member["reports"].append((ev.step, ev.metrics))
            else:
                member["end"] = ev
                pop.remove(ev.slot)
                del name_of[ev.slot]
        t += 1


def assert_same(got: dict, config: dict, seed: int) -> None:
    calls, final = solo(config, seed)
    assert [s for s, _ in got["reports"]] == [s for s, _ in calls]
    for (_, mine), (_, theirs) in zip(got["reports"], calls, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-6, abs=1e-12)
    end: MemberEvent = got["end"]
    assert end.kind == "done" and end.step == calls[-1][0]
    assert end.metrics == pytest.approx(final, rel=1e-6, abs=1e-12)
    assert list(end.metrics) == list(final)


@pytest.mark.parametrize(("k", "table"), [(1, True), (3, True), (8, True), (3, False)])
@pytest.mark.parametrize(("loss", "bp"), COMBOS)
def test_every_member_equals_its_solo_run(loss: str, bp: str, k: int, table: bool) -> None:
    """table: the network evaluated once on every state (small grids), else on the batch's rows."""
    base = BASE | {"loss": loss, "backward_policy": bp}
    configs = [base | h for h in MIXED[:k]]
    # the second half joins at advance 2, at its own step 0 (continuous batching)
    joins = {0: [], 2: []}
    for i, c in enumerate(configs):
        joins[0 if i < (k + 1) // 2 else 2].append((f"m{i}", c, 100 + i))
    pop = make(base, capacity=k)
    assert pop.use_table  # 4x4: 16 states, fewer than a batch's 8 x 7 rows
    pop.use_table = table
    out = drive(pop, joins)
    for i, c in enumerate(configs):
        assert_same(out[f"m{i}"], c, 100 + i)


def test_replay_members_equal_their_solo_runs() -> None:
    base = BASE | {"loss": "tb", "replay_size": 16, "backward_policy": "learned"}
    configs = [base | h for h in MIXED[:3]]
    out = drive(make(base, capacity=3), {0: [("a", configs[0], 1), ("b", configs[1], 2)],
                                         1: [("c", configs[2], 3)]})
    for name, c, seed in (("a", configs[0], 1), ("b", configs[1], 2), ("c", configs[2], 3)):
        assert_same(out[name], c, seed)


def test_a_diverging_member_fails_alone() -> None:
    base = BASE | {"loss": "tb", "n_iterations": 8}
    good = [base | MIXED[1], base | MIXED[3]]
    bad = base | {"logz_lr": 1e200, "report_every": 1}  # log Z leaps to ~1e200: loss inf at step 2
    pop = make(base, capacity=3)
    a, b = pop.add(good[0], 7), pop.add(good[1], 8)
    out = {a: [], b: []}
    ends: dict[int, MemberEvent] = {}
    for _ in range(2):
        for ev in pop.advance():
            out[ev.slot].append(ev)
    c = pop.add(bad, 9)  # joins midway
    out[c] = []
    frozen = None
    while any(s not in ends for s in (a, b)):
        for ev in pop.advance():
            out[ev.slot].append(ev)
            if ev.kind != "report":
                ends[ev.slot] = ev
        if c in ends and frozen is None:
            frozen = {n: p[c].clone() for n, p in pop.params.items()}
    failed = ends[c]
    assert failed.kind == "failed" and failed.step == 1
    assert "at step 2" in failed.reason and "diverged" in failed.reason
    assert [e.kind for e in out[c]] == ["report", "failed"]
    assert pop.occupied() == [a, b, c]  # a failed member stays (masked) until removed
    for n, p in pop.params.items():  # ... and stops updating
        assert torch.equal(p[c], frozen[n])
    assert all(math.isfinite(v) for p in pop.params.values() for v in p[c].flatten().tolist())
    for slot, config, seed in ((a, good[0], 7), (b, good[1], 8)):
        got = {"reports": [(e.step, e.metrics) for e in out[slot] if e.kind == "report"], "end": ends[slot]}
        assert_same(got, config, seed)


def test_pruned_member_replaced_by_one_at_its_step_0() -> None:
    base = BASE | {"loss": "subtb", "backward_policy": "learned"}
    configs = [base | h for h in MIXED[:4]]
    joins = {0: [("a", configs[0], 11), ("b", configs[1], 12), ("c", configs[3], 13)],
             3: [("d", configs[2], 14)]}
    out = drive(make(base, capacity=3), joins, prunes={3: ["b"]})
    assert out["b"]["end"] is None and [s for s, _ in out["b"]["reports"]] == [2]
    for name, c, seed in (("a", configs[0], 11), ("c", configs[3], 13), ("d", configs[2], 14)):
        assert_same(out[name], c, seed)


def test_membership_rules_and_the_form() -> None:
    assert population_form(train) is POPULATION
    assert set(STRUCTURAL) >= {"ndim", "height", "hidden", "depth", "activation", "loss",
                               "backward_policy", "batch_size", "replay_size"}
    assert not set(STRUCTURAL) & {"lr", "logz_lr", "lambda_", "epsilon", "temperature"}
    assert POPULATION.signature(BASE | {"lr": 1.0}) == POPULATION.signature(BASE | {"lr": 2.0})
    pop = make(BASE, capacity=2)
    with pytest.raises(ValueError, match="hidden"):
        pop.add(BASE | {"hidden": 32}, 0)
    with pytest.raises(ValueError, match="gflownet config"):
        pop.add(BASE | {"lr": -1.0}, 0)
    assert [pop.add(BASE, 0), pop.add(BASE, 1)] == [0, 1]
    with pytest.raises(ValueError, match="full"):
        pop.add(BASE, 2)
    pop.remove(0)
    assert pop.occupied() == [1] and pop.add(BASE, 3) == 0
    assert POPULATION.member_bytes(BASE) > 0


def test_artifact_png(tmp_path: Path) -> None:
    pop = make(BASE, capacity=1)
    pop.add(BASE | {"n_iterations": 2}, 0, artifact_dir=str(tmp_path))
    kinds = [ev.kind for _ in range(2) for ev in pop.advance()]
    assert kinds == ["report", "done"]
    assert (tmp_path / "distribution.png").stat().st_size > 0


def test_functional_adam_equals_torch_adam() -> None:
    """Two parameter groups with [K] learning rates, a mask; Adam and AdamW, float64."""
    gen = torch.Generator().manual_seed(0)
    k = 3
    w0, z0 = torch.randn(k, 4, 5, generator=gen), torch.randn(k, generator=gen)
    lrs, z_lrs = [1e-3, 1e-2, 0.3], [0.1, 0.05, 0.2]
    for cls, decoupled in ((torch.optim.Adam, False), (torch.optim.AdamW, True)):
        for wd in (0.0, 0.1):
            w, z = w0.clone(), z0.clone()
            state = adam_init([w, z])
            refs = []
            for i in range(k):
                ws, zs = w0[i].clone().requires_grad_(), z0[i].clone().requires_grad_()
                opt = cls([{"params": [ws], "lr": lrs[i]}, {"params": [zs], "lr": z_lrs[i]}],
                          weight_decay=wd)
                refs.append((ws, zs, opt))
            for it in range(30):
                gw, gz = torch.randn(k, 4, 5, generator=gen), torch.randn(k, generator=gen)
                mask = torch.tensor([True, it % 3 != 0, True])
                adam_step([w, z], [gw, gz], state, lr=[torch.tensor(lrs), torch.tensor(z_lrs)],
                          weight_decay=wd, decoupled_weight_decay=decoupled, mask=mask)
                for i, (ws, zs, opt) in enumerate(refs):
                    if mask[i]:
                        ws.grad, zs.grad = gw[i].clone(), gz[i].clone()
                        opt.step()
            for i, (ws, zs, _) in enumerate(refs):
                torch.testing.assert_close(w[i], ws.detach(), rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(z[i], zs.detach(), rtol=1e-12, atol=1e-12)
