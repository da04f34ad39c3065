"""A tuner that proposes the given configurations in order: ``harness trial`` and reruns."""

from __future__ import annotations

from typing import Any

from harness.trials import Suggestion, TrialResult
from harness.tuners.base import Tuner


class ManualTuner(Tuner):
    name = "manual"

    def __init__(self, configs: list[dict[str, Any]], seeds: list[int | None] | None = None,
                 start: int = 0) -> None:
        self._queue = [dict(c) for c in configs]
        self._seeds = list(seeds) if seeds is not None else [None] * len(configs)
        self.next_number = start

    def ask(self, n: int) -> list[Suggestion]:
        out = []
        while self._queue and len(out) < n:
            out.append(Suggestion(self.next_number, self._queue.pop(0), self._seeds.pop(0)))
            self.next_number += 1
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        return False

    def tell(self, result: TrialResult) -> None:
        pass

    def close(self) -> None:
        pass
