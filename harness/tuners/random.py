"""Random search: the baseline every tuner comparison needs."""

from __future__ import annotations

import numpy as np

from harness.spec import SweepSpec
from harness.tuners.base import Suggestion, TrialResult, TunerOptions, sample_uniform


class RandomTuner:
    """Independent uniform (log-uniform on log scales) draws; never prunes.

    The i-th suggestion depends only on the seed and i, so a resumed sweep continues the same
    sequence.
    """

    name = "random"

    def __init__(self, spec: SweepSpec, seed: int = 0, start: int = 0) -> None:
        self.spec = spec
        self.seed = seed
        self.next_number = start
        self._enqueued: list[dict] = []

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> RandomTuner:
        return cls(spec, seed=options.seed, start=int(options.extra.get("start", 0)))

    def enqueue(self, params: dict) -> None:
        """Evaluate ``params`` before any random draw."""
        self._enqueued.append(dict(params))

    def ask(self, n: int) -> list[Suggestion]:
        out = []
        for _ in range(n):
            number = self.next_number
            self.next_number += 1
            if self._enqueued:
                params = self._enqueued.pop(0)
            else:
                rng = np.random.default_rng([self.seed, number])
                params = sample_uniform(self.spec, rng)
            out.append(Suggestion(number, params))
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        return False

    def tell(self, result: TrialResult) -> None:
        pass

    def close(self) -> None:
        pass
