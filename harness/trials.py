"""Trial data types: what every layer (tuners, engines, drivers, the recorder, tracking) shares.

A trial travels as: a :class:`Suggestion` from a tuner -> a :class:`TrialTask` on an engine ->
:class:`Report` s and one :class:`Done` from its worker -> :func:`finish`, the one finishing
path, which maps the outcome to a complete, pruned or failed :class:`TrialResult`. This module
imports nothing of the harness but the spec, so every layer can import it without a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.spec import SweepSpec

INTERRUPTED = "interrupted"  # the reason of a trial stopped by Ctrl-C or a crash


class TrialState(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


def trial_seed(sweep_seed: int, number: int) -> int:
    """A per-trial seed derived from the sweep's seed and the trial number."""
    return (sweep_seed * 1_000_003 + number * 7_919) % (2**31 - 1)


@dataclass(frozen=True)
class Suggestion:
    """A configuration to evaluate: ``number`` is unique within the sweep."""

    number: int
    params: dict[str, Any]
    seed: int | None = None  # None: derived from the sweep's seed and the number


@dataclass
class TrialResult:
    """How a trial ended, as a driver tells it to the tuner and the recorder."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None  # the spec's metric: final when complete, last reported when pruned
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why it failed or was pruned
    traceback: str | None = None
    steps: int = 0  # the trainer's own unit: the last step it reported
    seconds: float = 0.0
    device: str = "cpu"
    seed: int = 0

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or a crash: recorded failed, run again once, not counted."""
        return self.reason == INTERRUPTED

    def record(self) -> dict[str, Any]:
        """A JSON-ready record (the write-ahead event logs)."""
        return {"number": self.number, "params": self.params, "state": self.state.value,
                "value": self.value, "metrics": self.metrics, "reason": self.reason,
                "steps": self.steps, "seconds": self.seconds, "device": self.device, "seed": self.seed}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TrialResult:
        return cls(int(rec["number"]), dict(rec.get("params") or {}), TrialState(rec["state"]),
                   value=rec.get("value"), metrics=dict(rec.get("metrics") or {}),
                   reason=rec.get("reason"), steps=int(rec.get("steps") or 0),
                   seconds=float(rec.get("seconds") or 0.0), device=str(rec.get("device") or "cpu"),
                   seed=int(rec.get("seed") or 0))


def interrupted_result(number: int, params: dict[str, Any], **kwargs: Any) -> TrialResult:
    """The record of a trial that was running when the sweep stopped (the resume rule: failed
    with reason ``interrupted``, not counted in the budget, its parameters run again once)."""
    return TrialResult(number, dict(params), TrialState.FAILED, reason=INTERRUPTED, **kwargs)


@dataclass
class Restored:
    """A tuner's own record of a sweep, read back on resume (the source of truth).

    ``finished`` trials count toward the budget. ``interrupted`` ones were running when the
    sweep died (or was stopped with Ctrl-C): they are failed with reason ``interrupted``, do
    not count, and the tuner has queued their parameters to run again once.
    """

    finished: list[TrialResult] = field(default_factory=list)
    interrupted: list[TrialResult] = field(default_factory=list)

    def add(self, result: TrialResult) -> None:
        """File a trial read back from a tuner's state by the resume rule."""
        (self.interrupted if result.interrupted else self.finished).append(result)


def resume_rule(results: Iterable[TrialResult], requeued: set[int],
                requeue: Callable[[TrialResult], None]) -> Restored:
    """The resume rule, written once for every tuner: a trial that was running when the sweep
    stopped is failed with reason ``interrupted``, does not count toward the budget, and its
    parameters run again once (``requeue`` is called unless ``requeued`` already holds its
    number); every other trial counts."""
    out = Restored()
    for result in results:
        out.add(result)
        if result.interrupted and result.number not in requeued:
            requeue(result)
    return out


@dataclass(frozen=True)
class Progress:
    """A sweep's progress as every process that shares its study sees it."""

    finished: int  # complete + pruned + failed (interrupted ones excluded)
    best: float | None
    cum_steps: int


# -- what an engine runs and what comes back ------------------------------------------------------
@dataclass(frozen=True)
class TrialTask:
    number: int
    objective: str
    params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    timeout: float | None = None
    artifact_dir: str | None = None


@dataclass(frozen=True)
class Report:
    number: int
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Done:
    """How a trial ended on its worker. ``status``: ok | pruned | error | timeout | died."""

    number: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    traceback: str | None = None
    steps: int = 0
    seconds: float = 0.0
    device: str = "cpu"


Event = Report | Done


def finish(done: Done, task: TrialTask, spec: SweepSpec, last_value: float | None) -> TrialResult:
    """Map an engine outcome to the trial's state (the one finishing path)."""
    base: dict[str, Any] = dict(
        number=task.number, params=task.params, metrics=done.metrics, steps=done.steps,
        seconds=done.seconds, device=done.device, seed=task.seed,
    )
    name = spec.metric.name
    if done.status == "ok":
        missing = [m.name for m in _metrics(spec) if m.name not in done.metrics and m.name not in MEASURED]
        if missing:
            got = ", ".join(sorted(done.metrics)) or "nothing"
            return TrialResult(state=TrialState.FAILED,
                               reason=f"objective returned no metric '{missing[0]}' (got {got})", **base)
        measured = {"seconds": done.seconds, "steps": float(done.steps)}
        for m in _metrics(spec):
            value = done.metrics.get(m.name, measured.get(m.name))
            if value is None or not math.isfinite(value):
                return TrialResult(state=TrialState.FAILED, reason=f"metric '{m.name}' is {value} (diverged)", **base)
        value = done.metrics.get(name, measured.get(name))
        return TrialResult(state=TrialState.COMPLETE, value=value, **base)
    if done.status == "pruned":
        return TrialResult(state=TrialState.PRUNED, value=last_value, reason=done.reason, **base)
    return TrialResult(state=TrialState.FAILED, reason=done.reason, traceback=done.traceback, **base)


MEASURED = ("seconds", "steps")  # the harness's own measured costs, usable as objectives


def metric_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A trainer's reported or returned metrics as floats (what every engine's worker sends).

    Anything ``float()`` takes is a number (Python and numpy numbers, one-element tensors),
    except text: a string such as ``"0.5"`` is refused like every other non-number, not parsed.
    Raises ``TypeError`` naming the first metric that is not a number, which fails the trial with
    that line as its reason (the engine's worker catches it like any trainer exception).
    """
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, str | bytes):
            raise TypeError(f"metric '{name}' is the string {value!r:.60}, not a number (return a float)")
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric '{name}' is {type(value).__name__} {value!r:.60}, not a number "
                            "(return a float)") from None
    return out


def objective_values(result: TrialResult, names: list[str] | tuple[str, ...]) -> list[float] | None:
    """The trial's value of each objective in ``names`` (the spec's metric order), or None when
    one is missing: a trainer's metric from ``result.metrics``, else the harness's measured
    ``seconds`` / ``steps``. What a multi-objective tuner is told and the front is built from."""
    measured = {"seconds": float(result.seconds), "steps": float(result.steps)}
    out: list[float] = []
    for name in names:
        value = result.metrics.get(name, measured.get(name))
        if value is None:
            return None
        out.append(float(value))
    return out


def _metrics(spec: SweepSpec) -> list[Any]:
    return list(getattr(spec, "metrics", None) or [spec.metric])
EVENT_LOG = "events.jsonl"  # the recorder's write-ahead log of a sweep (started / finished), in its state folder
