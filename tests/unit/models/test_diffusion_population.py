"""The diffusion trainer's population form (models/diffusion/train.py, DiffusionPopulation): a
member trained among others equals the same configuration trained alone by `train` (float64 on
a CPU, 1e-10 relative), with MIXED structures in one population (widths, depths, batch sizes,
T, schedules, predictions, samplers), hyperparameters, members joining and leaving midway
(re-padding as the widest comes and goes), a member that diverges and one whose artifact
write raises; and every Config field classified for populations."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.diffusion.train import (
    CPU_GROUP_OVERHEAD,
    PADDED,
    PER_MEMBER,
    STRUCTURAL,
    Config,
    DiffusionPopulation,
    bucket,
    bucket_limits,
    default_group_overhead,
    train,
)
from models.population import MemberEvent, population_form

TINY: dict[str, Any] = {
    "n_train": 500, "n_eval": 300, "width": 16, "depth": 2, "T": 20, "sampling_steps": 5,
    "batch_size": 32, "warmup_steps": 2, "n_steps": 10, "report_every": 4,
}  # fmt: skip
# every key but the STRUCTURAL ones differs between members: shapes (width, depth, batch_size,
# T: padded) and everything per member (schedule, prediction, sampler, steps, hyperparameters)
MIXED: list[dict[str, Any]] = [
    {},
    {"width": 24, "depth": 1, "batch_size": 20, "T": 35, "sampler": "ddpm", "schedule": "linear",
     "prediction": "eps", "lr": 5e-3, "ema_decay": 0.9, "grad_clip": 0.0, "weight_decay": 0.1},
    {"width": 9, "depth": 3, "batch_size": 40, "T": 12, "sampling_steps": 12, "prediction": "x0",
     "lr": 1e-3, "n_steps": 7, "report_every": 3, "warmup_steps": 0, "grad_clip": 0.05},
    {"width": 32, "depth": 0, "T": 50, "sampling_steps": 7, "lr": 1e-2, "weight_decay": 0.01,
     "ema_decay": 0.99, "n_steps": 12},
    {"width": 12, "batch_size": 8, "sampler": "ddpm", "sampling_steps": None, "lr": 3e-4,
     "grad_clip": 10.0, "warmup_steps": 5, "report_every": 5},
    {"width": 20, "n_steps": 0},  # evaluates its initialization, as train() does
    {"depth": 3, "T": 5, "sampling_steps": 3, "schedule": "linear", "lr": 2e-2, "ema_decay": 0.5,
     "n_steps": 4, "report_every": 1},
    {"width": 17, "batch_size": 64, "prediction": "eps", "lr": 4e-3, "weight_decay": 1.0,
     "grad_clip": 0.5, "n_steps": 9},
]  # fmt: skip
TIMES = ("train_seconds", "sample_seconds", "total_seconds")
REL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _float64_one_thread() -> Iterator[None]:
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def _key(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(config.items()))


@functools.lru_cache(maxsize=64)
def _solo(config_key: tuple[tuple[str, Any], ...], seed: int) -> tuple[list, dict[str, float]]:
    """train() alone: its reports [(step, metrics)] and its result."""
    reports: list[tuple[int, dict[str, float]]] = []
    result = train(dict(config_key), seed=seed, report=lambda s, m: reports.append((s, m)))
    return reports, result


def solo(config: dict[str, Any], seed: int) -> tuple[list, dict[str, float]]:
    return _solo(_key(config), seed)


def assert_close(ours: dict[str, float], ref: dict[str, float], what: str) -> None:
    """Every metric to 1e-10 relative. MMD and energy distance are square roots of differences
    of O(1) means that nearly cancel (sqrt(2 E|x-y| - E|x-x'| - E|y-y'|)), which turns a 1e-16
    difference of the samples into ~1e-11 of the distance: their squares are compared to 1e-10
    relative, or absolute below 1 (1e-10 relative to the O(1) means they are made of)."""
    assert set(ours) == set(ref), what
    for k, v in ref.items():
        if k in TIMES:
            continue
        if math.isnan(v):
            assert math.isnan(ours[k]), (what, k)
        elif k.split("_")[0] in ("mmd", "energy") and not k.endswith("_floor"):
            scale = ref[k.split("_")[0] + "_floor"] if k.endswith("_ratio") else 1.0
            a, b = (ours[k] * scale) ** 2, (v * scale) ** 2
            assert abs(a - b) <= REL * max(1.0, b), (what, k, ours[k], v)
        else:
            assert ours[k] == pytest.approx(v, rel=REL, abs=1e-14), (what, k, ours[k], v)


def run(pop: DiffusionPopulation, schedule: dict[int, list[tuple[dict, int]]] | None = None,
        remove_at: dict[int, int] | None = None) -> dict[tuple[int, int], list[MemberEvent]]:  # fmt: skip
    """Drive `pop` to the end: `schedule` {advance: [(config, seed)]} adds members before that
    advance, `remove_at` {advance: slot} removes a live member before it. Returns the events
    of each member, keyed by (slot, seed)."""
    schedule, remove_at = schedule or {}, remove_at or {}
    seeds: dict[int, int] = {}
    events: dict[tuple[int, int], list[MemberEvent]] = {}
    n = 0
    while True:
        if n in remove_at:
            pop.remove(remove_at[n])
        for config, seed in schedule.get(n, []):
            slot = pop.add(config, seed)
            seeds[slot] = seed
            events[(slot, seed)] = []
        if not pop.occupied() and not any(a > n for a in schedule):
            return events
        for ev in pop.advance():
            events[(ev.slot, seeds[ev.slot])].append(ev)
            if ev.kind != "report":
                pop.remove(ev.slot)
        n += 1


def assert_matches_solo(events: list[MemberEvent], config: dict[str, Any], seed: int) -> None:
    reports, result = solo(config, seed)
    ours = [e for e in events if e.kind == "report"]
    assert [e.step for e in ours] == [s for s, _ in reports], (config, seed)
    for e, (_, ref) in zip(ours, reports, strict=True):
        assert_close(e.metrics, ref, f"report at {e.step}: {config}")
    assert events[-1].kind == "done" and events[-1].step == result["steps"]
    assert_close(events[-1].metrics, result, f"result: {config}")


@pytest.mark.parametrize(("k", "group_overhead"), [(1, math.inf), (3, math.inf), (8, math.inf), (8, None)])
def test_members_of_mixed_structures_equal_their_solo_runs_on_moons(
    k: int, group_overhead: float | None
) -> None:
    """One padded row group for everyone (an accelerator's default), and the CPU's default
    (row groups placed by the cost model)."""
    configs = [TINY | extra for extra in MIXED[:k]]
    pop = DiffusionPopulation(TINY, capacity=k, group_overhead=group_overhead)
    events = run(pop, {0: [(c, 10 + i) for i, c in enumerate(configs)]})
    assert len(events) == k
    assert len(pop.groups) == 0  # all done and removed
    for i, c in enumerate(configs):
        assert_matches_solo(events[(i, 10 + i)], c, 10 + i)


def test_members_equal_their_solo_runs_on_digits_with_ddpm(tmp_path: Path) -> None:
    """Digits (64-D images, x0 clipping, no input embedding) with the ancestral sampler, whose
    noise each member draws from its own generator; widths and depths differ; every member
    writes its sample grid."""
    base = TINY | {"dataset": "digits", "sampler": "ddpm", "n_steps": 6, "report_every": 3}
    configs = [base, base | {"lr": 8e-3, "ema_decay": 0.9, "width": 24, "depth": 1},
               base | {"n_steps": 4, "lr": 1e-3, "width": 8, "batch_size": 50}]  # fmt: skip
    pop = DiffusionPopulation(base, capacity=3, group_overhead=math.inf)
    dirs = [tmp_path / str(i) for i in range(3)]
    for i, c in enumerate(configs):
        assert pop.add(c, 20 + i, artifact_dir=str(dirs[i])) == i
    events: dict[int, list[MemberEvent]] = {i: [] for i in range(3)}
    while pop.occupied():
        for ev in pop.advance():
            events[ev.slot].append(ev)
            if ev.kind != "report":
                pop.remove(ev.slot)
    for i, c in enumerate(configs):
        assert_matches_solo(events[i], c, 20 + i)
        assert (dirs[i] / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_members_join_and_leave_midway_and_still_equal_their_solo_runs() -> None:
    """Continuous batching: slot 1 (the widest) is pruned after 5 steps, so the rows shrink to
    a narrower padding, and a newcomer of another structure takes slot 1 at its own step 0; a
    fourth member, deeper and with the largest batch, joins later (re-padding everyone)."""
    a, b, c, d = (TINY | MIXED[i] for i in (0, 3, 1, 7))
    d = d | {"depth": 3}
    pop = DiffusionPopulation(TINY, capacity=3, group_overhead=math.inf)
    events = run(pop, {0: [(a, 1), (b, 2)], 5: [(c, 3)], 7: [(d, 4)]}, remove_at={5: 1})
    assert_matches_solo(events[(0, 1)], a, 1)
    assert [e.step for e in events[(1, 2)]] == [4]  # its report at step 4, then pruned
    assert_close(events[(1, 2)][0].metrics, solo(b, 2)[0][0][1], "pruned member's report")
    assert_matches_solo(events[(1, 3)], c, 3)  # the newcomer, in the freed slot
    assert_matches_solo(events[(2, 4)], d, 4)


def test_a_member_diverging_midway_fails_alone() -> None:
    """A member with an absurd learning rate (and its own width) joins at step 3 of the others
    and overflows: at its first report (its step 4) its loss is not finite, it reports NaN and
    fails, exactly as train() alone reports NaN at step 4 and stops; its slot can be reused,
    and the others are unchanged."""
    bad = TINY | {"lr": 1e300, "warmup_steps": 0, "width": 40}
    a, b = TINY | MIXED[1], TINY | MIXED[3]
    pop = DiffusionPopulation(TINY, capacity=3, group_overhead=math.inf)
    events = run(pop, {0: [(a, 1), (b, 2)], 3: [(bad, 3)], 9: [(a, 5)]})
    failed = events[(2, 3)]
    assert [e.kind for e in failed] == ["report", "failed"], failed
    assert failed[0].step == 4 and math.isnan(failed[0].metrics["swd_ratio"])
    assert "diverged" in (failed[1].reason or "") and "at step 4" in (failed[1].reason or "")
    reports, result = solo(bad, 3)
    assert [s for s, _ in reports] == [4] and math.isnan(reports[0][1]["swd_ratio"])
    assert not math.isfinite(result["loss"]) and math.isnan(result["swd_ratio"])
    assert_matches_solo(events[(0, 1)], a, 1)
    assert_matches_solo(events[(1, 2)], b, 2)
    assert_matches_solo(events[(2, 5)], a, 5)  # a newcomer in the failed member's slot


def test_a_member_whose_artifact_write_raises_fails_alone(tmp_path: Path) -> None:
    """One member's artifact folder is a file: writing its samples raises; it fails with the
    reason, and the other member finishes equal to its solo run."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    a, b = TINY | MIXED[1], TINY | MIXED[2]
    pop = DiffusionPopulation(TINY, capacity=2, group_overhead=math.inf)
    assert pop.add(a, 1) == 0 and pop.add(b, 2, artifact_dir=str(blocked / "x")) == 1
    events: dict[int, list[MemberEvent]] = {0: [], 1: []}
    while pop.occupied():
        for ev in pop.advance():
            events[ev.slot].append(ev)
            if ev.kind != "report":
                pop.remove(ev.slot)
    assert events[1][-1].kind == "failed" and "Error" in (events[1][-1].reason or "")
    assert_matches_solo(events[0], a, 1)
    with pytest.raises(OSError):  # train() alone raises it
        train(b, seed=2, artifact_dir=str(blocked / "x"))


def test_rows_hold_only_occupied_places_and_padding_follows_the_widest() -> None:
    """No cost for empty places: the rows are the members (compacted on remove), the padded
    shape is the largest member's (it shrinks when the widest leaves), a population of one
    member has exactly that member's shape (no padding, no masks) and its weights."""
    pop = DiffusionPopulation(TINY, capacity=4, group_overhead=math.inf)
    assert pop.groups == [] and pop.waste() == 1.0
    wide, deep = TINY | {"width": 40, "batch_size": 50}, TINY | {"depth": 3, "T": 60}
    for seed, c in enumerate((TINY, wide, deep)):
        pop.add(c, seed)
    (g,) = pop.groups
    assert g.flat.shape[0] == 3 and (g.shape.width, g.shape.depth) == (40, 3)
    assert (g.batch, g.T) == (50, 60) and g.grad_mask is not None and pop.waste() > 1.5
    for _ in range(3):
        pop.advance()
    before = pop.weights(0)
    pop.remove(1)
    pop.remove(2)
    assert g.flat.shape[0] == 1 and pop.occupied() == [0]
    assert (g.shape.width, g.shape.depth, g.batch, g.T) == (16, 2, 32, 20)
    assert g.grad_mask is None and g.pad is None and g.sample_mask is None
    assert g.flat.shape[1] == sum(p.numel() for p in before.values())
    after = pop.weights(0)
    assert all(torch.equal(before[k], after[k]) for k in before)  # re-packing is exact
    assert pop.waste() == 1.0
    with pytest.raises(ValueError, match="empty"):
        pop.remove(3)
    pop.remove(0)
    assert pop.groups == [] and pop.occupied() == []


def test_row_groups_follow_the_cost_model() -> None:
    """A newcomer joins the row group it makes the least dearer, or opens its own when a group's
    fixed cost is less than the padding it would add: with a fixed cost of 5M multiply-adds,
    small members share one padded group and large ones of other shapes get their own; with
    the CPU's default (no fixed cost) only members whose padding is free share."""
    big = TINY | {"width": 256, "batch_size": 512, "depth": 3}
    other = TINY | {"width": 200, "batch_size": 400, "depth": 1}
    pop = DiffusionPopulation(TINY, capacity=16, group_overhead=5e6)
    for i, extra in enumerate(MIXED):  # small (widths <= 32, batches <= 64): one group
        pop.add(TINY | extra, i)
    assert len(pop.groups) == 1
    for i in range(2):
        pop.add(big | {"lr": 1e-3 * (i + 1)}, 20 + i)
        pop.add(other, 30 + i)
    assert len(pop.groups) == 3 and sorted(len(g.members) for g in pop.groups) == [2, 2, 8]
    assert [g.waste() for g in pop.groups[1:]] == [1.0, 1.0]
    cpu = DiffusionPopulation(TINY, capacity=16)
    assert cpu.group_overhead == CPU_GROUP_OVERHEAD
    assert default_group_overhead(torch.device("cuda")) == math.inf
    for i, extra in enumerate(MIXED[:3]):
        cpu.add(TINY | extra, i)
        cpu.add(TINY | extra | {"lr": 0.1, "sampler": "ddpm"}, 10 + i)  # a twin of its shape
    assert len(cpu.groups) == 3 and cpu.waste() == 1.0


def test_padded_entries_stay_exact_zeros() -> None:
    pop = DiffusionPopulation(TINY, capacity=2, group_overhead=math.inf)
    pop.add(TINY | {"width": 8, "depth": 1}, 0)
    pop.add(TINY | {"width": 24}, 1)
    for _ in range(5):
        pop.advance()
    (g,) = pop.groups
    assert g.grad_mask is not None
    padded = g.grad_mask == 0
    for buf in (g.flat, g.ema, g.opt.exp_avg[0], g.opt.exp_avg_sq[0]):
        assert torch.count_nonzero(buf[padded]) == 0
    assert torch.count_nonzero(g.flat[~padded]) > 0.9 * (~padded).sum()


def test_every_config_field_is_classified_exactly_once() -> None:
    """A new Config field must be declared structural, per member or padded (this fails
    until it is), and the attached population form says the same."""
    fields = [f.name for f in dataclasses.fields(Config)]
    groups = {"structural": STRUCTURAL, "per_member": PER_MEMBER, "padded": PADDED}
    counts = Counter(k for keys in groups.values() for k in keys)
    unclassified = [f for f in fields if counts[f] == 0]
    twice = [f for f in fields if counts[f] > 1]
    unknown = [k for k in counts if k not in fields]
    assert not unclassified and not twice and not unknown, (unclassified, twice, unknown)
    form = population_form(train)
    assert form is not None
    assert (form.structural, form.per_member, form.padded) == (STRUCTURAL, PER_MEMBER, PADDED)


def test_structure_capacity_and_the_attached_form() -> None:
    form = population_form(train)
    assert form is not None and form.bucket is not None
    pop = form.make(TINY, capacity=2, device="cpu")
    with pytest.raises(ValueError, match="n_train"):
        pop.add(TINY | {"n_train": 400}, 0)
    assert pop.add(TINY | {"lr": 1e-3, "width": 30}, 0) == 0 and pop.add(TINY, 1) == 1
    with pytest.raises(ValueError, match="full"):
        pop.add(TINY, 2)
    pop.remove(0)
    assert pop.occupied() == [1] and pop.add(TINY, 3) == 0
    assert form.member_bytes is not None and form.member_bytes(TINY) > 0
    # the estimate covers the bucket's worst case: a narrow member may be padded to 64
    assert form.member_bytes(TINY | {"width": 64}) == form.member_bytes(TINY | {"width": 33})
    assert form.signature(TINY) == form.signature(TINY | {"lr": 0.5, "T": 30, "width": 60,
                                                          "sampler": "ddpm", "depth": 3})
    assert form.signature(TINY) != form.signature(TINY | {"width": 65})
    assert form.signature(TINY) != form.signature(TINY | {"n_eval": 400})
    assert bucket_limits(TINY | {"width": 100, "batch_size": 200}) == (128, 256, 3)
    # routing never raises on a bad config: it fails alone when its population adds it
    assert bucket(TINY | {"width": 0}) == (-1, -1, -1)
    with pytest.raises(ValueError, match="diffusion config: width must be >= 1"):
        pop.add(TINY | {"width": 0}, 5)


def test_at_most_five_signatures_among_64_random_quick_configurations() -> None:
    """The issue's target on diffusion-quick: the random tuner's 64 configurations fall into
    at most 5 populations' signatures (today's structural keys gave 64)."""
    from harness.spec import load_spec
    from harness.tuners.random import sample_uniform

    spec = load_spec("diffusion-quick")
    form = population_form(train)
    assert form is not None
    configs = [spec.config(sample_uniform(spec, np.random.default_rng([0, i]))) for i in range(64)]
    signatures = Counter(form.signature(c) for c in configs)
    assert len(signatures) <= 5, signatures
    assert len({bucket(c) for c in configs}) == len(signatures)


def test_a_member_whose_step_raises_fails_alone() -> None:
    """One member's step raises inside the batched step (after another member drew its
    numbers): its group is split, the others' generators are rewound and their step retried
    alone; the broken member fails with the reason, the others end equal to their solo runs."""
    a, b, c = TINY | MIXED[1], TINY | MIXED[2], TINY | MIXED[3]
    pop = DiffusionPopulation(TINY, capacity=3, group_overhead=math.inf)
    for seed, cfg in enumerate((a, b, c)):
        pop.add(cfg, seed)
    events: dict[int, list[MemberEvent]] = {0: [], 1: [], 2: []}
    for n in range(40):
        if n == 2:
            (g,) = pop.groups
            broken = g.members[1]  # its next step raises (after member 0 drew its numbers)
            broken.cfg = dataclasses.replace(broken.cfg, lr="not a number")
        for ev in pop.advance():
            events[ev.slot].append(ev)
            if ev.kind != "report":
                pop.remove(ev.slot)
        if not pop.occupied():
            break
    assert [e.kind for e in events[1]] == ["failed"] and "TypeError" in (events[1][0].reason or "")
    assert events[1][0].step == 0  # its last report
    assert_matches_solo(events[0], a, 0)
    assert_matches_solo(events[2], c, 2)
