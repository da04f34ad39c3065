"""The diffusion trainer's population form (models/diffusion/population.py): a member trained
among others equals the same configuration trained alone by `train` (float64 on a CPU), with
mixed hyperparameters, members joining and leaving midway, and a member that diverges."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from models.diffusion.population import STRUCTURAL, DiffusionPopulation
from models.diffusion.train import Config, train
from models.population import MemberEvent, population_form

TINY: dict[str, Any] = {
    "n_train": 500, "n_eval": 300, "width": 16, "depth": 2, "T": 20, "sampling_steps": 5,
    "batch_size": 32, "warmup_steps": 2, "n_steps": 10, "report_every": 4,
}  # fmt: skip
# per-member hyperparameters: everything that is not structural
MIXED: list[dict[str, Any]] = [
    {},
    {"lr": 5e-3, "ema_decay": 0.9, "grad_clip": 0.0, "weight_decay": 0.1},
    {"lr": 1e-3, "n_steps": 7, "report_every": 3, "warmup_steps": 0, "grad_clip": 0.05},
    {"lr": 1e-2, "weight_decay": 0.01, "ema_decay": 0.99, "n_steps": 12},
    {"lr": 3e-4, "grad_clip": 10.0, "warmup_steps": 5, "report_every": 5},
    {"n_steps": 0},  # evaluates its initialization, as train() does
    {"lr": 2e-2, "ema_decay": 0.5, "n_steps": 4, "report_every": 1},
    {"lr": 4e-3, "weight_decay": 1.0, "grad_clip": 0.5, "n_steps": 9},
]
TIMES = ("train_seconds", "sample_seconds", "total_seconds")


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
    assert set(ours) == set(ref), what
    for k, v in ref.items():
        if k in TIMES:
            continue
        if math.isnan(v):
            assert math.isnan(ours[k]), (what, k)
        else:
            assert ours[k] == pytest.approx(v, rel=1e-6, abs=1e-12), (what, k, ours[k], v)


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


@pytest.mark.parametrize("k", [1, 3, 8])
def test_members_equal_their_solo_runs_on_moons(k: int) -> None:
    configs = [TINY | extra for extra in MIXED[:k]]
    pop = train.population.make(TINY, capacity=k)
    pop.batch_sampling = k == 8  # the vmapped sampler (a GPU's default) and the CPU's loop
    events = run(pop, {0: [(c, 10 + i) for i, c in enumerate(configs)]})
    assert len(events) == k
    for i, c in enumerate(configs):
        assert_matches_solo(events[(i, 10 + i)], c, 10 + i)


def test_members_equal_their_solo_runs_on_digits_with_ddpm(tmp_path: Path) -> None:
    """Digits (64-D images, x0 clipping, no input embedding) with the ancestral sampler, whose
    noise each member draws from its own generator; every member writes its sample grid."""
    base = TINY | {"dataset": "digits", "sampler": "ddpm", "n_steps": 6, "report_every": 3}
    configs = [base, base | {"lr": 8e-3, "ema_decay": 0.9}, base | {"n_steps": 4, "lr": 1e-3}]
    pop = train.population.make(base, capacity=3)
    pop.batch_sampling = True  # the vmapped sampler, as on a GPU
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
    """Continuous batching: slot 1 is removed (pruned) after 5 steps and a newcomer with other
    hyperparameters takes it at its own step 0; a fourth member joins later in a free slot."""
    a, b, c, d = (TINY | MIXED[i] for i in (0, 1, 3, 4))
    pop = train.population.make(TINY, capacity=3)
    events = run(pop, {0: [(a, 1), (b, 2)], 5: [(c, 3)], 7: [(d, 4)]}, remove_at={5: 1})
    assert_matches_solo(events[(0, 1)], a, 1)
    assert [e.step for e in events[(1, 2)]] == [4]  # its report at step 4, then pruned
    assert_close(events[(1, 2)][0].metrics, solo(b, 2)[0][0][1], "pruned member's report")
    assert_matches_solo(events[(1, 3)], c, 3)  # the newcomer, in the freed slot
    assert_matches_solo(events[(2, 4)], d, 4)


def test_a_diverging_member_fails_alone() -> None:
    """A member with an absurd learning rate joins at step 3 of the others and overflows
    within a few steps: it fails (its loss is not finite), its slot can be reused, and the
    others are unchanged. train() alone stops with NaN metrics on the same configuration."""
    bad = TINY | {"lr": 1e300, "warmup_steps": 0, "n_steps": 10, "report_every": 100}
    a, b = TINY | MIXED[1], TINY | MIXED[3]
    pop = train.population.make(TINY, capacity=3)
    events = run(pop, {0: [(a, 1), (b, 2)], 3: [(bad, 3)]})
    failed = events[(2, 3)]
    assert [e.kind for e in failed] == ["failed"], failed
    assert "diverged" in (failed[0].reason or "") and "at step" in (failed[0].reason or "")
    assert_matches_solo(events[(0, 1)], a, 1)
    assert_matches_solo(events[(1, 2)], b, 2)
    _, result = solo(bad, 3)
    assert not math.isfinite(result["loss"]) and math.isnan(result["swd_ratio"])


def test_structure_capacity_and_the_attached_form() -> None:
    form = population_form(train)
    assert form is not None and form.structural == STRUCTURAL
    assert {"lr", "ema_decay", "weight_decay", "grad_clip", "n_steps"}.isdisjoint(STRUCTURAL)
    assert set(STRUCTURAL) <= {f for f in Config.__dataclass_fields__}
    pop = form.make(TINY, capacity=2, device="cpu")
    with pytest.raises(ValueError, match="width"):
        pop.add(TINY | {"width": 32}, 0)
    assert pop.add(TINY | {"lr": 1e-3}, 0) == 0 and pop.add(TINY, 1) == 1
    with pytest.raises(ValueError, match="full"):
        pop.add(TINY, 2)
    pop.remove(0)
    assert pop.occupied() == [1] and pop.add(TINY, 3) == 0
    assert form.member_bytes is not None and form.member_bytes(TINY) > 0
    assert form.signature(TINY) == form.signature(TINY | {"lr": 0.5})
    assert form.signature(TINY) != form.signature(TINY | {"T": 30})
