"""The tuner protocol: who proposes trials, separate from where they run (the engine).

A tuner backend is one file implementing :class:`Tuner` (ask / report / tell) and registered in
the entry-point group ``harness.tuners``; the sweep loop in :mod:`harness.sweep` joins it to an
engine. Tools that own their loop and trial placement (Ray Tune) are a different kind and are
not driven through this protocol.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from harness.sweep import SweepStats
    from harness.tracking import Tracker

ENTRY_POINT_GROUP = "harness.tuners"


class TrialState(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


@dataclass(frozen=True)
class Suggestion:
    """A configuration to evaluate: ``number`` is unique within the sweep."""

    number: int
    params: dict[str, Any]
    seed: int | None = None  # None: derived from the sweep's seed and the number


@dataclass
class TrialResult:
    """How a trial ended, as the sweep loop tells it to the tuner and the tracker."""

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


@dataclass(frozen=True)
class TunerOptions:
    """What the CLI passes to every tuner; each backend reads the fields that concern it."""

    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "none"
    storage: str | None = None
    study_name: str | None = None
    state_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


INTERRUPTED = "interrupted"


@dataclass
class Restored:
    """A tuner's own record of a sweep, read back on resume (the source of truth).

    ``finished`` trials count toward the budget. ``interrupted`` ones were running when the
    sweep died (or was stopped with Ctrl-C): they are failed with reason ``interrupted``, do
    not count, and the tuner has queued their parameters to run again once.
    """

    finished: list[TrialResult] = field(default_factory=list)
    interrupted: list[TrialResult] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """A sweep's progress as every process that shares its study sees it."""

    finished: int  # complete + pruned + failed (interrupted ones excluded)
    best: float | None
    cum_steps: int


class Tuner(Protocol):
    """Ask for configurations, hear intermediate results, learn the outcome."""

    name: str

    def ask(self, n: int) -> list[Suggestion]:
        """Up to ``n`` new configurations (fewer is allowed; none ends the sweep early)."""
        ...

    def report(self, number: int, step: int, value: float) -> bool:
        """An intermediate value of trial ``number`` at ``step``; True means prune it."""
        ...

    def tell(self, result: TrialResult) -> None:
        """The trial's outcome (complete, pruned or failed)."""
        ...

    def close(self) -> None: ...

    # Optional: ``enqueue(params)`` evaluates known configurations first; ``restore() -> Restored``
    # makes the tuner resumable; ``shared_progress() -> Progress | None`` gives the progress of a
    # study that other processes share, for the parent run's curves, and ``take_lost() ->
    # list[TrialResult]`` the trials of other processes it found dead, whose runs the sweep
    # settles (the sweep loop checks with hasattr).


@dataclass
class RunRequest:
    """What a :class:`RunTuner` needs to run a whole sweep itself."""

    objective: str
    budget: int
    seed: int
    slots: list[str]  # one per concurrent trial: "cpu" or "cuda:N" (K per GPU: 1/K of a GPU each)
    timeout: float | None = None  # stop proposing trials after this many seconds
    trial_timeout: float | None = None
    artifact_root: Path | None = None
    address: str | None = None  # a Ray cluster to join (None: start one here)
    budget_steps: int | None = None  # stop proposing once finished trials used this many steps


@runtime_checkable
class RunTuner(Protocol):
    """A tuner that owns its loop and trial placement (Ray Tune): the runner hands it the whole
    sweep instead of driving ask / tell on an engine. It reports every trial to ``tracker``
    (``trial_started`` / ``trial_report`` / ``trial_finished``) in the sweep loop's layout."""

    name: str
    startup_seconds: float

    def run(self, request: RunRequest, tracker: Tracker,
            on_update: Callable[[SweepStats], None] | None = None) -> SweepStats: ...

    def close(self) -> None: ...


class TunerError(ValueError):
    """A tuner option is wrong (one line, for the CLI)."""


BUILTIN = {  # known without installing the package (a checkout on a bare GPU box, say)
    "optuna": "harness.tuners.optuna:OptunaTuner",
    "random": "harness.tuners.random:RandomTuner",
    "ax": "harness.tuners.ax:AxTuner",
    "ray": "harness.tuners.ray:RayTuneTuner",
}


def registered_tuners() -> dict[str, str]:
    """Tuner name -> ``module:Class``: the built-ins, plus the ``harness.tuners`` entry points."""
    return {**BUILTIN, **{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}}


def make_tuner(name: str, spec: SweepSpec, options: TunerOptions) -> Tuner:
    """Build the tuner registered as ``name`` (a class with ``from_spec``)."""
    registry = registered_tuners()
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise TunerError(f"--tuner {name}: unknown tuner (installed: {known})")
    module, _, attr = registry[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls.from_spec(spec, options)


def sample_uniform(spec: SweepSpec, rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn uniformly (log-uniformly on log scales), parents first."""
    params: dict[str, Any] = {}
    for name in spec.order():
        p = spec.params[name]
        if not p.active(params):
            continue
        if isinstance(p, ChoiceParam):
            params[name] = p.values[int(rng.integers(len(p.values)))]
        elif isinstance(p, IntParam):
            if p.log:
                lo, hi = math.log(p.low - 0.5 + 1e-9), math.log(p.high + 0.5)
                v = int(round(math.exp(rng.uniform(lo, hi))))
            else:
                v = int(rng.integers(p.low, p.high + 1))  # inclusive upper bound
            params[name] = min(max(v, p.low), p.high)
        elif isinstance(p, FloatParam):
            if p.log:
                params[name] = float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
            else:
                params[name] = float(rng.uniform(p.low, p.high))
    return params
