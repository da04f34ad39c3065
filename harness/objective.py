"""The objective interface: what a trainer sees of the harness, and how objectives are found.

A trainer is a plain function::

    def train(config, *, device, seed, report, artifact_dir=None) -> dict[str, float]

``report(step, metrics)`` streams intermediate metrics to the driver; when the tuner has decided
to stop the trial, the next ``report`` raises :class:`TrialPruned`, which unwinds the trainer.
Objectives are registered by name in the entry-point group ``harness.objectives``; any importable
``module:function`` works as well, so users tune their own trainers without touching the harness.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from harness.files import write_atomic

ENTRY_POINT_GROUP = "harness.objectives"

ReportFn = Callable[[int, Mapping[str, float]], None]


class TrialPruned(Exception):
    """Raised by ``report`` to stop a trial the tuner decided to prune."""


class Objective(Protocol):
    def __call__(
        self,
        config: Mapping[str, Any],
        *,
        device: str,
        seed: int,
        report: ReportFn,
        artifact_dir: str | None = None,
    ) -> Mapping[str, float]: ...


@dataclass
class TrialContext:
    """Everything a worker needs to run one trial, and the trial's view of the harness."""

    number: int
    params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    device: str = "cpu"
    artifact_dir: str | None = None
    report: ReportFn = field(default=lambda step, metrics: None, repr=False)

    def checkpoint_path(self) -> Path | None:
        return Path(self.artifact_dir) / "checkpoint.pt" if self.artifact_dir else None

    def save(self, state: Any) -> None:
        """Save a trainer checkpoint (for schedulers that pause and resume trials)."""
        path = self.checkpoint_path()
        if path is None:
            raise RuntimeError("this trial has no artifact_dir to save a checkpoint into")
        import pickle

        write_atomic(path, pickle.dumps(state))

    def load(self) -> Any | None:
        path = self.checkpoint_path()
        if path is None or not path.exists():
            return None
        import pickle

        return pickle.loads(path.read_bytes())


class ObjectiveError(ValueError):
    """The objective named in a spec cannot be found (one line, for the CLI)."""


# The shipped objectives, also found from a source checkout that was never pip-installed (a
# GPU machine given only the working tree); installed entry points take precedence.
BUILTIN = {
    "branin": "harness.testfunctions:branin",
    "branin_currin": "harness.testfunctions:branin_currin",
    "hartmann6": "harness.testfunctions:hartmann6",
    "gflownet": "models.gflownet.train:train",
    "diffusion": "models.diffusion.train:train",
    "locoprop": "models.locoprop.train:train",
}


@functools.lru_cache(maxsize=1)
def registered_objectives() -> dict[str, str]:
    """Names in the ``harness.objectives`` entry-point group -> their ``module:attr``."""
    return {**BUILTIN, **{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}}


def load_objective(name: str) -> Objective:
    """Resolve a registry name or ``module:function`` to the callable."""
    registry = registered_objectives()
    target = registry.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(registry)) or "none installed"
        raise ObjectiveError(
            f"unknown objective '{name}': not a registered name ({known}) nor module:function"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ObjectiveError(f"objective '{name}': cannot import module '{module_name}': {exc}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ObjectiveError(f"objective '{name}': module '{module_name}' has no '{attr}'")
    if not callable(fn):
        raise ObjectiveError(f"objective '{name}': '{target}' is not callable")
    return fn  # type: ignore[return-value]


def check_objective(name: str) -> None:
    """Fail fast in the driver (before any run is created) when the objective does not resolve.

    Registered names are checked against the registry without importing the trainer (the
    workers import it); ``module:function`` is checked by finding the module.
    """
    registry = registered_objectives()
    if name in registry:
        return
    if ":" not in name:
        known = ", ".join(sorted(registry)) or "none installed"
        raise ObjectiveError(
            f"unknown objective '{name}': not a registered name ({known}) nor module:function"
        )
    module_name = name.partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ObjectiveError(f"objective '{name}': no module named '{module_name}'")
