"""LocoProp population form: members of MIXED methods, optimizers, K and learning rates trained
as one batched model equal their solo train() runs (float64, 1e-10 relative); train() itself
equals a direct transcription of the paper (test_locoprop.py).

Small sizes: 359 training images (test_fraction 0.8), batch 50, 2-3 epochs.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from models.locoprop import locoprop as core
from models.locoprop.config import Config
from models.locoprop.nets import make_net
from models.locoprop.population import (
    PADDED,
    PER_MEMBER,
    STRUCTURAL,
    LocoPropPopulation,
    member_bytes,
)
from models.locoprop.train import train
from models.population import MemberEvent, population_form

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[3]
REL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- signatures


def test_every_config_field_is_classified_exactly_once() -> None:
    fields = [f.name for f in dataclasses.fields(Config)]
    groups = {"structural": STRUCTURAL, "per_member": PER_MEMBER, "padded": PADDED}
    for name in fields:
        where = [g for g, keys in groups.items() if name in keys]
        assert len(where) == 1, f"Config.{name} is in {where or 'no group'}: classify it once"
    assert sorted(k for keys in groups.values() for k in keys) == sorted(fields)
    form = population_form(train)
    assert form is not None
    assert (form.structural, form.per_member, form.padded) == (STRUCTURAL, PER_MEMBER, PADDED)


def sample(params: dict, rng: random.Random) -> dict:
    """One random configuration of a search space's params (conditions honoured)."""
    out: dict = {}
    for name, p in params.items():  # conditions refer to earlier parameters in these spaces
        when = p.get("when", {})
        if any(out.get(k) not in (v if isinstance(v, list) else [v]) for k, v in when.items()):
            continue
        if p["type"] == "choice":
            out[name] = rng.choice(p["values"])
        elif p["type"] == "int":
            out[name] = rng.randint(p["low"], p["high"])
        elif p.get("log"):
            out[name] = math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"])))
        else:
            out[name] = rng.uniform(p["low"], p["high"])
    return out


def test_the_quick_space_has_one_signature() -> None:
    """64 random locoprop-quick configurations (9 signatures before: method x optimizer)."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "locoprop-quick.yaml").read_text())
    rng = random.Random(0)
    form = population_form(train)
    assert form is not None
    configs = [{**spec["fixed"], **sample(spec["params"], rng)} for _ in range(64)]
    assert len({(c["method"], c["optimizer"]) for c in configs}) == 9  # all mixes drawn
    assert len({form.signature(c) for c in configs}) == 1


# ---------------------------------------------------------------- population vs train()

BASE = {"test_fraction": 0.8, "batch_size": 50, "dtype": "float64"}  # 359 training images
LR = {("bp", "sgd"): 0.05, "sgd": 2e-4, "adam": 2e-3, "rmsprop": 1e-3}


def mixed_members() -> list[tuple[dict, int]]:
    """Eight members, each its own method, optimizer, K, lr, gamma, constants, epochs, reports."""
    mixes = [
        ("locoprop-m", "rmsprop", {}),
        ("bp", "adam", {"lr": 3e-3}),
        ("locoprop-s", "sgd", {"gamma": 3.0, "K": 1}),
        ("locoprop-m", "adam", {"K": 4, "report_every": 2}),
        ("bp", "sgd", {"epochs": 2, "warmup_epochs": 0}),
        ("locoprop-s", "rmsprop", {"K": 3, "beta1": 0.5, "beta2": 0.95, "eps": 1e-4}),
        ("locoprop-m", "sgd", {"gamma": 5.0, "K": 1, "warmup_epochs": 2}),
        ("bp", "rmsprop", {"beta2": 0.99, "epochs": 2, "report_every": 2}),
    ]
    out = []
    for i, (method, optimizer, mix) in enumerate(mixes):
        lr = LR.get((method, optimizer), LR[optimizer])
        cfg = {**BASE, "method": method, "optimizer": optimizer, "lr": lr, "gamma": 10.0, "K": 2}
        cfg |= {"epochs": 3, "warmup_epochs": 1} | mix
        out.append((cfg, 100 + 7 * i))
    return out


def solo(cfg: dict, seed: int) -> tuple[list[tuple[int, dict]], dict]:
    reports: list[tuple[int, dict]] = []
    out = train(cfg, seed=seed, report=lambda s, m: reports.append((s, dict(m))))
    return reports, out


def drive(pop: LocoPropPopulation, schedule: dict[int, list[tuple[int | None, dict, int]]] | None = None):
    """Run to the end; returns {member id: {"reports", "end"}}; checks after every advance that
    the stack holds exactly the running members (no rows for empty places).

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
        pop._restack()  # as advance() does first: the stack holds the running members only
        running = [s for s in pop.occupied() if pop.members[s].status == "running"]  # type: ignore[union-attr]
        assert sorted(pop.rows) == running
        assert pop.stack is None or pop.stack.params.shape[0] == len(running)
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
        assert m == pytest.approx(w, rel=REL, abs=0), what
    end: MemberEvent = got["end"]
    assert end is not None and end.kind == "done", what
    assert end.step == reports[-1][0]
    assert end.metrics == pytest.approx(out, rel=REL, abs=0), f"{what}: final"


@pytest.fixture(scope="module")
def mixed() -> tuple[list, list]:
    members = mixed_members()
    return members, [solo(cfg, seed) for cfg, seed in members]


@pytest.mark.parametrize("k", [1, 3, 8])
def test_mixed_members_equal_their_solo_runs(k: int, mixed) -> None:
    members, want = mixed
    chosen = list(range(k)) if k < 8 else list(range(8))
    if k == 3:
        chosen = [0, 1, 5]  # locoprop-m rmsprop, bp adam, locoprop-s rmsprop (K 2 and 3)
    pop = LocoPropPopulation(members[0][0], capacity=k)
    for i in chosen:
        pop.add(*members[i])
    log = drive(pop)
    for slot, i in enumerate(chosen):
        assert_same(log[slot], want[i], f"K={k} member {i} {members[i][0]}")
    # the members differ (the test would see a swapped hyperparameter)
    assert len({round(w[1]["train_loss"], 6) for w in want}) == len(want)


def test_float32_members_equal_their_solo_runs_bit_for_bit() -> None:
    """No float32 drift: every op runs each member's numbers in its solo order (the optimizer's
    coefficients rounded alike for a number and a [K] tensor, rows never mixed)."""
    members = [({**cfg, "dtype": "float32"}, seed) for cfg, seed in mixed_members()]
    pop = LocoPropPopulation(members[0][0], capacity=8)
    for cfg, seed in members:
        pop.add(cfg, seed)
    log = drive(pop)
    for i, (cfg, seed) in enumerate(members):
        reports, out = solo(cfg, seed)
        assert log[i]["reports"] == reports, f"member {i} {cfg}"
        assert log[i]["end"].metrics == out


def test_a_one_percent_change_of_one_learning_rate_is_seen(mixed) -> None:
    members, want = mixed
    cfg, seed = members[3]
    pop = LocoPropPopulation(cfg, capacity=2)
    pop.add({**cfg, "lr": cfg["lr"] * 1.01}, seed)
    pop.add(*members[0])
    log = drive(pop)
    assert log[0]["end"].metrics["train_loss"] != pytest.approx(want[3][1]["train_loss"], rel=1e-6)
    assert_same(log[1], want[0], "member 0")


def test_a_diverging_member_fails_alone(mixed) -> None:
    """It joins after one epoch of the others and overflows to NaN in its first epoch."""
    members, want = mixed
    bad = {**members[2][0], "lr": 1e300, "K": 3}
    bad_reports, bad_out = solo(bad, 9)
    assert not math.isfinite(bad_out["train_loss"])  # train() diverges too
    pop = LocoPropPopulation(members[0][0], capacity=3)
    pop.add(*members[0])
    pop.add(*members[3])
    log = drive(pop, {1: [(None, bad, 9)]})
    failed = log[100]["end"]
    assert failed.kind == "failed" and "diverged" in failed.reason, failed
    assert [s for s, _ in log[100]["reports"]] == [s for s, _ in bad_reports] == [failed.step]
    assert not math.isfinite(failed.metrics["train_loss"])
    assert_same(log[0], want[0], "member 0")
    assert_same(log[1], want[3], "member 3")


def test_removed_member_replaced_midway_everyone_equals_solo(mixed) -> None:
    members, want = mixed
    a, b, c, d = 0, 3, 4, 6
    pop = LocoPropPopulation(members[a][0], capacity=4)  # a free place too
    for i in (a, b, c):
        pop.add(*members[i])
    log = drive(pop, {1: [(1, *members[d])]})  # after one epoch: drop b, d joins at its epoch 0
    assert_same(log[0], want[a], "a")
    assert_same(log[2], want[c], "c")
    assert_same(log[100], want[d], "d joined midway")
    assert log[1]["reports"] == []  # b (reports every 2 epochs): pruned after one epoch
    assert log[1]["end"] is None


def test_an_exception_of_one_member_fails_it_alone(mixed, monkeypatch) -> None:
    """One member's shuffle raises; another member makes the batched epoch raise (so the
    population reruns that epoch member by member): both fail, the others equal their solo runs."""
    members, want = mixed
    poison = {**members[5][0], "gamma": 77.0}
    real = core.Stack.train_batch

    def train_batch(self, x, target, lrs):
        if any(h.gamma == 77.0 for h in self.hypers):
            raise RuntimeError("poisoned member")
        return real(self, x, target, lrs)

    monkeypatch.setattr(core.Stack, "train_batch", train_batch)
    pop = LocoPropPopulation(members[0][0], capacity=4)
    pop.add(*members[0])
    pop.add(*members[1])
    s_poison = pop.add(poison, 3)
    s_shuffle = pop.add(*members[2])

    pop.members[s_shuffle].shuffle = "not a generator"  # type: ignore[union-attr,assignment]
    log = drive(pop)
    assert log[s_poison]["end"].kind == "failed"
    assert "RuntimeError in its epoch: poisoned member" in log[s_poison]["end"].reason
    assert "TypeError in drawing its epoch's shuffle" in log[s_shuffle]["end"].reason
    assert log[s_poison]["end"].step == log[s_shuffle]["end"].step == 0
    assert_same(log[0], want[0], "member 0")
    assert_same(log[1], want[1], "member 1")


def test_train_reraises_its_member_exception(monkeypatch) -> None:
    def boom(self, x, target, lrs):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.Stack, "train_batch", boom)
    with pytest.raises(RuntimeError, match="boom"):
        train({**BASE, "epochs": 2, "warmup_epochs": 1})


def test_no_rows_for_empty_places() -> None:
    """Capacity is a bound: one member in a population of 16 is a stack of one row."""
    cfg = {**BASE, "epochs": 2, "warmup_epochs": 1, "K": 2}
    pop = LocoPropPopulation(cfg, capacity=16)
    pop.add(cfg, 0)
    pop.advance()
    assert pop.stack is not None and pop.stack.params.shape[0] == 1
    pop.add({**cfg, "method": "bp", "optimizer": "adam"}, 1)
    pop.add({**cfg, "epochs": 5}, 2)
    pop._restack()
    assert pop.stack.params.shape[0] == 3
    events = pop.advance()  # member 0 is done after it: its row goes at once
    assert [(e.slot, e.kind) for e in events if e.kind != "report"] == [(0, "done")]
    assert pop.stack.params.shape[0] == 2 and sorted(pop.rows) == [1, 2]
    pop.remove(0)
    pop.remove(2)  # pruned: its row goes at once
    assert pop.stack.params.shape[0] == 1 and pop.rows == [1]
    pop.advance()
    assert pop.stack is None and pop.rows == []  # member 1 done: nothing left


def test_add_checks_structure_and_capacity() -> None:
    cfg = {**BASE, "epochs": 2, "warmup_epochs": 1, "K": 2}
    pop = LocoPropPopulation(cfg, capacity=1)
    with pytest.raises(ValueError, match="batch_size"):
        pop.add({**cfg, "batch_size": 40}, 0)
    mix = {"lr": 0.01, "K": 5, "epochs": 3, "method": "bp", "optimizer": "adam"}
    assert pop.add({**cfg, **mix}, 0) == 0  # not structural
    with pytest.raises(ValueError, match="slots"):
        pop.add(cfg, 1)
    form = population_form(train)
    assert form is not None
    assert form.signature(cfg) == form.signature({**cfg, **mix})
    assert form.signature(cfg) != form.signature({**cfg, "batch_size": 40})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_member_bytes_covers_a_member_rows(dtype: str) -> None:
    cfg = {"batch_size": 100, "dtype": dtype}
    item = 4 if dtype == "float32" else 8
    n = make_net("autoencoder", generator=torch.Generator()).params.numel()
    assert n == 37896  # 64-128-64-32-8-32-64-128-64: weights 37376, biases 520
    width = 64 + 128 + 64 + 32 + 8 + 32 + 64 + 128 + 64
    want = item * (4 * n + 6 * 100 * width + 2 * 1797 * width) + 8 * 1797
    assert member_bytes(cfg) == want
    pop = LocoPropPopulation(cfg, capacity=2)
    pop.add(cfg, 0)
    pop.advance()
    s = pop.stack
    assert s is not None
    held = sum(t.numel() * t.element_size() for t in (s.params, s.buf1, s.buf2))
    assert held + n * item <= member_bytes(cfg)  # + the gradient's row
