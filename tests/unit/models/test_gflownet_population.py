"""The GFlowNet population: K members of MIXED structures as one padded, batched model equal K
solo ``train`` runs.

Float64 on CPU: every member of a population (K = 1, 3, 8; different widths, depths, batch
sizes, losses, backward policies, learning rates and exploration in one population; members
joining late, pruned, replaced, diverging, raising) reports exactly what ``train`` alone with
the same config and seed reports, to 1e-10 relative (in practice ~1e-15). ``train`` itself is
checked against a plain loop of ``nn.Module`` + ``torch.optim.Adam`` (test_gflownet_train.py).
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from models.functional_optim import adam_init, adam_step
from models.gflownet.train import (
    PADDED,
    PER_MEMBER,
    POPULATION,
    STRUCTURAL,
    Config,
    GFlowNetPopulation,
    make,
    train,
)
from models.population import MemberEvent, population_form

ROOT = Path(__file__).resolve().parents[3]
REL = 1e-10
BASE = {"ndim": 2, "height": 4, "hidden": 16, "batch_size": 8, "n_eval_samples": 200,
        "n_iterations": 6, "report_every": 2}
# per member: structure (width, depth, batch, loss, P_B) and hyperparameters, all in one population
MIXED = [
    {},
    {"lr": 3e-3, "logz_lr": 0.05, "epsilon": 0.1, "hidden": 24, "loss": "db", "batch_size": 5},
    {"lr": 2e-3, "temperature": 1.5, "lambda_": 0.6, "n_iterations": 5, "report_every": 3,
     "loss": "subtb", "depth": 3, "backward_policy": "learned", "batch_size": 12},
    {"lr": 5e-4, "logz_lr": 0.2, "epsilon": 0.05, "temperature": 0.7, "loss": "fm", "hidden": 32,
     "depth": 1},
    {"lr": 1e-2, "n_iterations": 4, "n_eval_samples": 0, "backward_policy": "learned", "hidden": 8,
     "depth": 4, "batch_size": 3},
    {"lr": 2e-4, "epsilon": 0.2, "report_every": 1, "n_iterations": 3, "loss": "db",
     "backward_policy": "learned", "hidden": 20, "depth": 2},
    {"lr": 4e-3, "temperature": 2.0, "logz_lr": 0.01, "loss": "subtb", "lambda_": 0.95,
     "batch_size": 16, "hidden": 12, "depth": 3},
    {"lr": 1e-3, "epsilon": 0.02, "n_iterations": 7, "report_every": 4, "loss": "fm",
     "hidden": 28, "batch_size": 6, "depth": 1},
]


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
        assert mine == pytest.approx(theirs, rel=REL, abs=1e-13)
    end: MemberEvent = got["end"]
    assert end.kind == "done" and end.step == calls[-1][0]
    assert end.metrics == pytest.approx(final, rel=REL, abs=1e-13)
    assert list(end.metrics) == list(final)


@pytest.mark.parametrize(("k", "table"), [(1, True), (3, True), (8, True), (3, False), (8, False)])
@pytest.mark.parametrize("first", ["tb", "learned"])
def test_every_member_of_a_mixed_population_equals_its_solo_run(k: int, table: bool, first: str) -> None:
    """Widths 8-32, depths 1-4, batches 3-16, all four losses and both P_B in one population;
    table: the networks evaluated once on every state (small grids), else on the batch's rows."""
    base = BASE | ({"backward_policy": "learned"} if first == "learned" else {})
    configs = [base | h for h in MIXED[:k]]
    # the second half joins at advance 2, at its own step 0 (continuous batching)
    joins = {0: [], 2: []}
    for i, c in enumerate(configs):
        joins[0 if i < (k + 1) // 2 else 2].append((f"m{i}", c, 100 + i))
    pop = GFlowNetPopulation(base, capacity=k, table=table)
    out = drive(pop, joins)
    for i, c in enumerate(configs):
        assert_same(out[f"m{i}"], c, 100 + i)


def test_adam_in_chunks_of_rows_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adam runs over a few rows at a time (so that wide members' moments stay in the cache)."""
    import models.gflownet.train as gtrain

    monkeypatch.setattr(gtrain, "ADAM_CHUNK", 700)  # 1-2 rows of these widths per call
    configs = [BASE | h for h in MIXED]
    out = drive(make(BASE, capacity=8), {0: [(f"m{i}", c, 60 + i) for i, c in enumerate(configs)]})
    for i, c in enumerate(configs):
        assert_same(out[f"m{i}"], c, 60 + i)


def test_replay_members_equal_their_solo_runs() -> None:
    base = BASE | {"loss": "tb", "replay_size": 16, "backward_policy": "learned"}
    configs = [base | h | {"replay_size": 16 + 8 * i} for i, h in enumerate(MIXED[:3])]
    out = drive(make(base, capacity=3), {0: [("a", configs[0], 1), ("b", configs[1], 2)],
                                         1: [("c", configs[2], 3)]})
    for name, c, seed in (("a", configs[0], 1), ("b", configs[1], 2), ("c", configs[2], 3)):
        assert_same(out[name], c, seed)


def test_a_diverging_member_fails_alone() -> None:
    base = BASE | {"loss": "tb", "n_iterations": 8}
    good = [base | MIXED[1], base | MIXED[2]]
    bad = base | {"logz_lr": 1e200, "report_every": 1, "hidden": 32}  # log Z leaps to ~1e200: loss inf at step 2
    pop = make(base, capacity=3)
    a, b = pop.add(good[0], 7), pop.add(good[1], 8)
    out = {a: [], b: []}
    ends: dict[int, MemberEvent] = {}
    for _ in range(2):
        for ev in pop.advance():
            out[ev.slot].append(ev)
    c = pop.add(bad, 9)  # joins midway, the widest: the others are padded to it
    assert pop.width == 32
    out[c] = []
    while any(s not in ends for s in (a, b)):
        for ev in pop.advance():
            out[ev.slot].append(ev)
            if ev.kind != "report":
                ends[ev.slot] = ev
                if ev.slot == c:
                    assert pop.width == 24  # the widest left the compute: the padding shrank
    failed = ends[c]
    assert failed.kind == "failed" and failed.step == 1
    assert "at step 2" in failed.reason and "diverged" in failed.reason
    assert [e.kind for e in out[c]] == ["report", "failed"]
    assert c in pop.occupied()  # a failed member keeps its slot until removed
    for slot, config, seed in ((a, good[0], 7), (b, good[1], 8)):
        got = {"reports": [(e.step, e.metrics) for e in out[slot] if e.kind == "report"], "end": ends[slot]}
        assert_same(got, config, seed)


def test_an_exception_in_the_batched_step_fails_only_the_member_that_raises() -> None:
    """The step is retried member by member (generators rewound): the others stay exact."""
    base = BASE | {"n_iterations": 5}
    configs = [base | h | {"n_iterations": 5} for h in MIXED[:3]]
    pop = make(base, capacity=3)
    slots = [pop.add(c, 20 + i) for i, c in enumerate(configs)]
    victim = pop.members[slots[1]]
    compute = pop._compute

    def failing(lo: int, hi: int):
        if victim in pop.rows[lo:hi] and victim.step == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return compute(lo, hi)

    pop._compute = failing
    events: dict[int, list[MemberEvent]] = {s: [] for s in slots}
    while any(e[-1].kind == "report" if e else True for e in events.values()):
        for ev in pop.advance():
            events[ev.slot].append(ev)
    end = events[slots[1]][-1]
    assert end.kind == "failed" and "out of memory" in end.reason and "step 3" in end.reason
    for s, c, seed in ((slots[0], configs[0], 20), (slots[2], configs[2], 22)):
        got = {"reports": [(e.step, e.metrics) for e in events[s] if e.kind == "report"],
               "end": events[s][-1]}
        assert_same(got, c, seed)


def test_an_exception_in_one_report_fails_only_that_member(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    base = BASE | {"n_iterations": 2}
    pop = make(base, capacity=2)
    a = pop.add(base, 1, artifact_dir=str(blocked / "artifacts"))  # its png cannot be written
    b = pop.add(base | MIXED[1] | {"n_iterations": 2}, 2, artifact_dir=str(tmp_path / "ok"))
    events = [ev for _ in range(2) for ev in pop.advance()]
    ends = {ev.slot: ev for ev in events if ev.kind != "report"}
    assert ends[a].kind == "failed" and "step 2" in ends[a].reason
    assert ends[b].kind == "done" and (tmp_path / "ok" / "distribution.png").stat().st_size > 0


def test_pruned_member_replaced_by_one_at_its_step_0() -> None:
    base = BASE | {"loss": "subtb", "backward_policy": "learned"}
    configs = [base | h for h in MIXED[:4]]
    joins = {0: [("a", configs[0], 11), ("b", configs[3], 12), ("c", configs[1], 13)],
             3: [("d", configs[2], 14)]}
    pop = make(base, capacity=3)
    out = drive(pop, joins, prunes={3: ["b"]})
    assert out["b"]["end"] is None and [s for s, _ in out["b"]["reports"]] == [2]
    for name, c, seed in (("a", configs[0], 11), ("c", configs[1], 13), ("d", configs[2], 14)):
        assert_same(out[name], c, seed)


def test_only_occupied_rows_are_computed() -> None:
    """Rows stay compact: a population of capacity 16 holding one member holds one row of the
    member's own width and depth, and grows and shrinks as members come and go."""
    pop = make(BASE, capacity=16)
    a = pop.add(BASE, 0)
    assert (pop.size, pop.width, pop.deep) == (1, 16, 2)
    wide = [pop.add(BASE | {"hidden": 32, "depth": 4}, s) for s in range(1, 5)]
    assert (len(pop.rows), pop.size, pop.width, pop.deep) == (5, 8, 32, 4)
    for s in wide:
        pop.remove(s)
    assert (len(pop.rows), pop.size, pop.width, pop.deep) == (1, 2, 16, 2)
    assert pop.rows[0] is pop.members[a]


def test_every_config_field_is_classified_once() -> None:
    fields = [f.name for f in dataclasses.fields(Config)]
    classes = [STRUCTURAL, PER_MEMBER, PADDED]
    for name in fields:
        assert sum(name in c for c in classes) == 1, f"{name}: classify it in exactly one of " \
            "STRUCTURAL / PER_MEMBER / PADDED (models/gflownet/train.py)"
    assert set(fields) == set(STRUCTURAL) | set(PER_MEMBER) | set(PADDED)
    assert (POPULATION.structural, POPULATION.per_member, POPULATION.padded) == (STRUCTURAL, PER_MEMBER, PADDED)


def sample_config(params: dict, rng: random.Random) -> dict:
    out: dict = {}
    for name, p in params.items():
        if "when" in p and any(out.get(k) != v for k, v in p["when"].items()):
            continue
        if p["type"] == "choice":
            out[name] = rng.choice(p["values"])
        elif p.get("log"):
            value = math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"])))
            out[name] = round(value) if p["type"] == "int" else value
        else:
            out[name] = rng.randint(p["low"], p["high"]) if p["type"] == "int" else rng.uniform(p["low"], p["high"])
    return out


def test_few_signatures_on_the_quick_space() -> None:
    """64 random gflownet-quick configurations fall in at most 5 populations (was 64)."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "gflownet-quick.yaml").read_text())
    for seed in range(3):
        rng = random.Random(seed)
        configs = [spec["fixed"] | sample_config(spec["params"], rng) for _ in range(64)]
        assert len({POPULATION.signature(c) for c in configs}) <= 5


def test_membership_rules_and_the_form() -> None:
    assert population_form(train) is POPULATION
    assert POPULATION.signature(BASE | {"lr": 1.0}) == POPULATION.signature(BASE | {"lr": 2.0})
    assert POPULATION.signature(BASE) == POPULATION.signature(BASE | {"hidden": 100, "depth": 4,
                                                                      "loss": "fm", "batch_size": 3})
    assert POPULATION.signature(BASE) != POPULATION.signature(BASE | {"hidden": 300})
    pop = make(BASE, capacity=2)
    with pytest.raises(ValueError, match="hidden"):
        pop.add(BASE | {"hidden": 300}, 0)
    with pytest.raises(ValueError, match="height"):
        pop.add(BASE | {"height": 5}, 0)
    with pytest.raises(ValueError, match="gflownet config"):
        pop.add(BASE | {"lr": -1.0}, 0)
    assert [pop.add(BASE, 0), pop.add(BASE, 1)] == [0, 1]
    with pytest.raises(ValueError, match="full"):
        pop.add(BASE, 2)
    pop.remove(0)
    assert pop.occupied() == [1] and pop.add(BASE, 3) == 0
    assert POPULATION.member_bytes(BASE) > 0


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
