"""Random search: the baseline every tuner comparison needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import write_atomic
from harness.spec import SweepSpec
from harness.trials import (
    INTERRUPTED,
    Restored,
    Suggestion,
    TrialResult,
    TrialState,
    objective_values,
    resume_rule,
    trial_seed,
)
from harness.tuners.base import Tuner, TunerError, TunerOptions, sample_uniform


class RandomTuner(Tuner):
    """Independent uniform (log-uniform on log scales) draws; never prunes.

    The i-th draw depends only on the seed and i. With a state folder, every ask and tell is
    recorded in ``random.json`` (written atomically), so a resumed sweep knows what finished,
    what was interrupted, and continues the numbering.
    """

    name = "random"
    resumable = True

    def __init__(self, spec: SweepSpec, seed: int = 0, state_dir: Path | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.next_number = 0
        self._queue: list[tuple[dict[str, Any], int | None]] = []  # (params, requeue_of)
        self._trials: dict[int, dict[str, Any]] = {}
        self._path = state_dir / "random.json" if state_dir is not None else None
        if self._path is not None and self._path.exists():
            try:
                saved = json.loads(self._path.read_text())
            except ValueError:
                raise TunerError(f"{self._path}: not readable JSON (damaged); restore it from a backup "
                                 "or start the sweep under another --name") from None
            self.next_number = saved["next_number"]
            self._trials = {int(k): v for k, v in saved["trials"].items()}
            self._queue = [(q["params"], q.get("requeue_of")) for q in saved.get("queue", [])]

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> RandomTuner:
        return cls(spec, seed=options.seed, state_dir=options.state_dir)

    def _save(self) -> None:
        if self._path is None:
            return
        queue = [{"params": p, "requeue_of": r} for p, r in self._queue]
        write_atomic(self._path, json.dumps({"next_number": self.next_number, "trials": self._trials,
                                             "queue": queue}))

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` before any random draw."""
        self._queue.append((dict(params), None))
        self._save()

    def ask(self, n: int) -> list[Suggestion]:
        out = []
        for _ in range(n):
            number = self.next_number
            self.next_number += 1
            requeue_of = None
            if self._queue:
                params, requeue_of = self._queue.pop(0)
            else:
                params = sample_uniform(self.spec, np.random.default_rng([self.seed, number]))
            self._trials[number] = {"params": params, "state": "running", "requeue_of": requeue_of}
            out.append(Suggestion(number, params))
        self._save()
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        return False

    def tell(self, result: TrialResult) -> None:
        rec = self._trials.setdefault(result.number, {"params": result.params})
        rec.update(state=result.state.value, value=result.value, reason=result.reason, steps=result.steps,
                   seed=result.seed, seconds=result.seconds)
        if self.spec.multi and result.state is TrialState.COMPLETE:  # every objective, for a resumed front
            names = [m.name for m in self.spec.metrics]
            rec["metrics"] = dict(zip(names, objective_values(result, names) or [], strict=False))
        self._save()

    def restore(self) -> Restored:
        requeued = {rec.get("requeue_of") for rec in self._trials.values()} | {r for _, r in self._queue}
        results = []
        for number in sorted(self._trials):
            rec = self._trials[number]
            if rec["state"] == "running":
                rec.update(state="failed", reason=INTERRUPTED)
            metrics = dict(rec.get("metrics") or {})
            results.append(TrialResult(number, rec["params"], TrialState(rec["state"]), value=rec.get("value"),
                                       reason=rec.get("reason"), steps=rec.get("steps", 0), metrics=metrics,
                                       seconds=float(rec.get("seconds", metrics.get("seconds", 0.0))),
                                       seed=int(rec.get("seed", trial_seed(self.seed, number)))))
        out = resume_rule(results, requeued, lambda r: self._queue.append((dict(r.params), r.number)))
        self._save()
        return out

    def close(self) -> None:
        pass
