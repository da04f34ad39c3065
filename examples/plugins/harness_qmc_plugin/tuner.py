"""A quasi-Monte Carlo tuner: a scrambled Sobol' or Halton design (:mod:`scipy.stats.qmc`).

It implements the harness's tuner protocol (``from_spec`` / ``ask`` / ``report`` / ``tell`` /
``close``, plus the optional ``enqueue`` and ``restore``) and is registered in the entry-point
group ``harness.tuners`` as ``qmc``; the harness itself knows nothing about it.

The design has one coordinate per parameter of the spec, in the spec's order (parents first).
A point ``u`` in [0, 1)^d becomes a configuration coordinate by coordinate:

- float: ``low + u (high - low)``, or log-uniform on a log scale;
- int: one of the ``high - low + 1`` values (both bounds included), each an equal share of the
  unit interval; on a log scale an equal share of ``[log(low - 1/2), log(high + 1/2)]``, rounded;
- choice: ``values[floor(u k)]`` for ``k`` values;
- a conditional parameter whose ``when`` does not hold is left out (its coordinate unused), so
  each active sub-space still gets its share of a low-discrepancy design.

The design is a function of the seed only: point ``i`` is the ``i``-th point of the sequence
scrambled with that seed (Sobol' points are taken from a power-of-two prefix, whose first points
are the same whatever its length), so a sweep is reproducible and a resumed one continues the
same design. The tuner never prunes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import qmc

from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.tuners.base import TunerError

try:  # the trial types' new home
    from harness.trials import Restored, Suggestion, TrialResult, TrialState
except ImportError:  # a harness from before harness/trials.py
    from harness.tuners.base import Restored, Suggestion, TrialResult, TrialState

if TYPE_CHECKING:
    from harness.tuners.base import TunerOptions

SEQUENCES = ("sobol", "halton")
INTERRUPTED = "interrupted"  # the harness's reason for a trial that was running when it died


def design(sequence: str, dim: int, seed: int, n: int) -> np.ndarray:
    """The first ``n`` points (rows in [0, 1)^dim) of the scrambled sequence for ``seed``."""
    if sequence == "sobol":
        m = max(0, math.ceil(math.log2(max(n, 1))))
        return qmc.Sobol(dim, scramble=True, rng=seed).random_base2(m)[:n]
    if sequence == "halton":
        return qmc.Halton(dim, scramble=True, rng=seed).random(n)
    raise TunerError(f"qmc sequence {sequence!r}: unknown (use one of {', '.join(SEQUENCES)})")


def to_params(spec: SweepSpec, u: np.ndarray) -> dict[str, Any]:
    """Map one design point to a configuration of ``spec`` (inactive parameters absent)."""
    params: dict[str, Any] = {}
    for j, name in enumerate(spec.order()):
        p = spec.params[name]
        if not p.active(params):
            continue
        x = float(u[j])
        if isinstance(p, ChoiceParam):
            params[name] = p.values[min(int(x * len(p.values)), len(p.values) - 1)]
        elif isinstance(p, IntParam):
            if p.log:
                lo, hi = math.log(p.low - 0.5), math.log(p.high + 0.5)
                v = int(round(math.exp(lo + x * (hi - lo))))
            else:
                v = p.low + int(x * (p.high - p.low + 1))
            params[name] = min(max(v, p.low), p.high)  # inclusive bounds
        elif isinstance(p, FloatParam):
            if p.log:
                lo, hi = math.log(p.low), math.log(p.high)
                v = math.exp(lo + x * (hi - lo))
            else:
                v = p.low + x * (p.high - p.low)
            params[name] = min(max(float(v), p.low), p.high)
    return params


class QMCTuner:
    """Scrambled Sobol' (default) or Halton points over the space, in sequence order."""

    name = "qmc"
    resumable = True  # restore() reads a sweep back from qmc.json
    takes = ("sampler",)  # --sampler sobol|halton picks the sequence

    def __init__(self, spec: SweepSpec, seed: int = 0, sequence: str = "sobol",
                 state_dir: Path | None = None) -> None:
        if sequence not in SEQUENCES:
            raise TunerError(f"qmc sequence {sequence!r}: unknown (use one of {', '.join(SEQUENCES)})")
        self.spec = spec
        self.seed = seed
        self.sequence = sequence
        self.dim = max(1, len(spec.params))
        self.next_number = 0  # trial numbers handed out
        self.next_point = 0  # design points used (enqueued configurations use none)
        self._points = np.empty((0, self.dim))
        self._queue: list[tuple[dict[str, Any], int | None]] = []  # (params, requeue_of)
        self._trials: dict[int, dict[str, Any]] = {}
        self._path = state_dir / "qmc.json" if state_dir is not None else None
        if self._path is not None and self._path.exists():
            saved = json.loads(self._path.read_text())
            if (saved["sequence"], saved["seed"]) != (sequence, seed):
                raise TunerError(f"{self._path}: a {saved['sequence']} design with seed {saved['seed']}, "
                                 f"not {sequence} with seed {seed}")
            self.next_number, self.next_point = saved["next_number"], saved["next_point"]
            self._trials = {int(k): v for k, v in saved["trials"].items()}
            self._queue = [(q["params"], q["requeue_of"]) for q in saved["queue"]]

    @staticmethod
    def sequence_of(options: TunerOptions) -> str:
        """``options.extra["sequence"]``, else ``--sampler sobol|halton``, else Sobol' (the
        sampler's default, ``tpe``, is Optuna's and means nothing here)."""
        sequence = options.extra.get("sequence")
        if sequence is None:
            sequence = options.sampler if options.sampler in SEQUENCES else "sobol"
        if sequence not in SEQUENCES:
            raise TunerError(f"qmc sequence {sequence!r}: unknown (use one of {', '.join(SEQUENCES)})")
        return sequence

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        """Validate the options before the harness creates anything."""
        cls.sequence_of(options)

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> QMCTuner:
        return cls(spec, seed=options.seed, sequence=cls.sequence_of(options), state_dir=options.state_dir)

    def point(self, i: int) -> np.ndarray:
        """Design point ``i`` (the design grows by doubling, so asks stay cheap)."""
        if i >= len(self._points):
            self._points = design(self.sequence, self.dim, self.seed, max(2 * len(self._points), i + 1, 16))
        return self._points[i]

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` before the next design point."""
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
                params = to_params(self.spec, self.point(self.next_point))
                self.next_point += 1
            self._trials[number] = {"params": params, "state": "running", "requeue_of": requeue_of}
            out.append(Suggestion(number, params))
        self._save()
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        return False  # a design does not learn, and never prunes

    def tell(self, result: TrialResult) -> None:
        rec = self._trials.setdefault(result.number, {"params": result.params, "requeue_of": None})
        rec.update(state=result.state.value, value=result.value, reason=result.reason, steps=result.steps)
        self._save()

    def restore(self) -> Restored:
        """What finished, and what was running when the sweep died (queued to run again once)."""
        out = Restored()
        requeued = {rec.get("requeue_of") for rec in self._trials.values()} | {r for _, r in self._queue}
        for number in sorted(self._trials):
            rec = self._trials[number]
            if rec["state"] == "running":
                rec.update(state="failed", reason=INTERRUPTED)
            result = TrialResult(number, rec["params"], TrialState(rec["state"]), value=rec.get("value"),
                                 reason=rec.get("reason"), steps=rec.get("steps", 0))
            if result.reason == INTERRUPTED:
                out.interrupted.append(result)
                if number not in requeued:
                    self._queue.append((dict(rec["params"]), number))
            else:
                out.finished.append(result)
        self._save()
        return out

    def close(self) -> None:
        pass

    def _save(self) -> None:
        """The ledger, written atomically (a plugin uses only the harness's public types)."""
        if self._path is None:
            return
        blob = json.dumps({
            "sequence": self.sequence, "seed": self.seed, "next_number": self.next_number,
            "next_point": self.next_point, "trials": self._trials,
            "queue": [{"params": p, "requeue_of": r} for p, r in self._queue],
        })
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".qmc.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(blob)
        os.replace(tmp, self._path)
