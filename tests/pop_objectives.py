"""A toy trainer with a population form, for the engine and builder tests (no torch).

``toy``: ``steps`` reports of ``value = (x - 0.3)^2 + 1 / step``, ``pause`` seconds per step.
Its population advances every member by one step per ``advance`` at the cost of ONE pause (a
batched step), on :data:`CLOCK` when ``fake_clock`` is set (tests of the share of the work).
Members of equal ``group`` share a population.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from models.population import MemberEvent, PopulationForm

Report = Callable[[int, Mapping[str, float]], None] | None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


def _value(config: Mapping[str, Any], step: int) -> float:
    return (float(config["x"]) - 0.3) ** 2 + 1.0 / step


def toy(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0, report: Report = None,
        artifact_dir: str | None = None) -> dict[str, float]:
    steps = int(config.get("steps", 4))
    for step in range(1, steps + 1):
        time.sleep(float(config.get("pause", 0.0)))
        if report is not None:
            report(step, {"value": _value(config, step)})
    return {"value": _value(config, steps)}


class ToyPopulation:
    def __init__(self, config: Mapping[str, Any], capacity: int) -> None:
        self.capacity = capacity
        self.pause = float(config.get("pause", 0.0))
        self.fake = bool(config.get("fake_clock", False))
        self.members: dict[int, list[Any]] = {}  # slot -> [config, step]

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        free = [s for s in range(self.capacity) if s not in self.members]
        if not free:
            raise ValueError("population full")
        self.members[free[0]] = [dict(config), 0]
        return free[0]

    def remove(self, slot: int) -> None:
        self.members.pop(slot, None)

    def occupied(self) -> list[int]:
        return sorted(self.members)

    def advance(self) -> list[MemberEvent]:
        if self.fake:
            CLOCK.now += self.pause
        else:
            time.sleep(self.pause)
        events, ends = [], []
        for slot in sorted(self.members):
            m = self.members[slot]
            if m[1] >= int(m[0].get("steps", 4)):
                continue
            m[1] += 1
            events.append(MemberEvent(slot, "report", m[1], {"value": _value(m[0], m[1])}))
            if m[1] == int(m[0].get("steps", 4)):
                ends.append(MemberEvent(slot, "done", m[1], {"value": _value(m[0], m[1])}))
        return events + ends


toy.population = PopulationForm(  # type: ignore[attr-defined]
    structural=("group",), make=lambda config, *, capacity, device: ToyPopulation(config, capacity),
    per_member=("x",))
