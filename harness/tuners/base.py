"""The tuner protocol: who proposes trials, separate from where they run (the engine).

A tuner backend is one file implementing :class:`Tuner` (ask / report / tell) and registered in
the entry-point group ``harness.tuners``; the ask/tell driver (:mod:`harness.drivers.ask_tell`)
joins it to an engine. A tuner imports only the spec and the trial types: it never sees the
engine, the tracker or the recorder. Ray Tune, which owns its loop and trial placement, is
driven by its own driver (:mod:`harness.drivers.ray_tune`); its tuner class only proposes
(domains, searcher, scheduler) and restores.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.trials import (  # noqa: F401  (re-exported: the types a tuner works with)
    INTERRUPTED,
    Progress,
    Restored,
    Suggestion,
    TrialResult,
    TrialState,
    interrupted_result,
)

ENTRY_POINT_GROUP = "harness.tuners"


@dataclass(frozen=True)
class TunerOptions:
    """What the CLI passes to every tuner; each backend reads the fields that concern it."""

    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "none"
    storage: str | None = None
    study_name: str | None = None
    state_dir: Path | None = None
    budget: int | None = None  # the sweep's number of trials (Ray Tune numbers re-runs past it)
    scheduler: str | None = None  # Ray Tune's scheduler
    ax_method: str | None = None  # Ax's generation strategy
    population_size: int | None = None  # Optuna NSGA-II's population (None: Optuna's 50)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific knobs (plugins, max_t, ...)


class Tuner:
    """Ask for configurations, hear intermediate results, learn the outcome.

    A backend subclasses this (or implements the same methods): ``ask`` / ``report`` / ``tell``
    are the protocol; the optional abilities below are no-op defaults that a backend overrides
    when it has them, so a driver calls them without asking whether they exist. ``check`` is
    the backend's own validation of the options and the space, run before anything is created.
    """

    name: str = "tuner"
    driver: str = "ask_tell"  # "ray_tune": a tool that owns its loop, run by its own driver
    # options of the CLI this backend takes besides the common ones (--seed, --storage ...):
    # the runner refuses any other backend-specific option for it, in one line
    takes: tuple[str, ...] = ()

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        """Raise :class:`TunerError` (one line) when ``options`` or ``spec`` do not suit this
        backend; called for whichever tuner is chosen before any run is created."""

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> Tuner:
        raise NotImplementedError

    def ask(self, n: int) -> list[Suggestion]:
        """Up to ``n`` new configurations (fewer is allowed; none ends the sweep early)."""
        raise NotImplementedError

    def report(self, number: int, step: int, value: float) -> bool:
        """An intermediate value of trial ``number`` at ``step``; True means prune it."""
        return False

    def tell(self, result: TrialResult) -> None:
        """The trial's outcome (complete, pruned or failed)."""

    def close(self) -> None:
        """Release what the tuner holds (threads, storages)."""

    # -- optional abilities (no-op defaults) ----------------------------------------------------
    resumable: bool = False  # restore() reads back a sweep

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` before the tuner's own suggestions."""
        raise TunerError(f"--tuner {self.name}: this tuner cannot evaluate given configurations first")

    def restore(self) -> Restored:
        """The tuner's own record of the sweep (resume); queues interrupted trials once."""
        raise TunerError(f"--resume: the {self.name} tuner keeps no state to resume from")

    def shared_progress(self) -> Progress | None:
        """The progress of a study other processes share (the parent run's curves), or None."""
        return None

    def take_lost(self) -> list[TrialResult]:
        """Trials of other processes found dead, whose child runs this process settles."""
        return []


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


def tuner_class(name: str) -> type:
    """The class registered as ``name`` (imported, not built: for its ``check``)."""
    registry = registered_tuners()
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise TunerError(f"--tuner {name}: unknown tuner (installed: {known})")
    module, _, attr = registry[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def make_tuner(name: str, spec: SweepSpec, options: TunerOptions) -> Tuner:
    """Build the tuner registered as ``name`` (a class with ``from_spec``). A plugin class that
    implements the protocol without subclassing :class:`Tuner` gets its no-op abilities."""
    tuner = tuner_class(name).from_spec(spec, options)
    return tuner if isinstance(tuner, Tuner) else _Adapted(tuner)


class _Adapted(Tuner):
    """A protocol-only tuner object, given :class:`Tuner`'s optional abilities where it lacks them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)

    def __getattribute__(self, attr: str) -> Any:
        if attr in ("_inner", "__class__", "__dict__", "name"):
            return object.__getattribute__(self, attr)
        inner = object.__getattribute__(self, "_inner")
        if hasattr(inner, attr):
            return getattr(inner, attr)
        return object.__getattribute__(self, attr)


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
