"""The engine protocol: where trials run, separate from who proposes them (the tuner).

An engine accepts :class:`TrialTask` s while it has free slots, streams :class:`Report` s while
they run and one :class:`Done` each when they end. Prune decisions are fire-and-forget:
``stop_trial`` sets a flag that the trial's next ``report`` call turns into ``TrialPruned``.
"""

from __future__ import annotations

import os
import traceback as tb
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from harness.objective import TrialPruned, load_objective
from harness.trials import Done, Event, Report, TrialTask, metric_numbers  # noqa: F401  (the engine's messages)


class Engine(Protocol):
    """Where trials run. The abilities below the protocol's core have defaults here (an engine
    class subclasses this protocol and overrides those it has), so callers never probe for them."""

    name: str
    startup_seconds: float  # measured by start(); printed beside the sweep's wall time

    def start(self, objective: str) -> None:
        """Start the workers (pre-importing ``objective``); returns when they are ready."""
        ...

    def free_slots(self) -> int: ...

    def submit(self, task: TrialTask) -> str:
        """Start ``task`` on a free slot; returns the device it runs on."""
        ...

    def poll(self, timeout: float) -> list[Event]:
        """Events that arrived within ``timeout`` seconds (returns early when one arrives)."""
        ...

    def stop_trial(self, number: int) -> None: ...

    def shutdown(self) -> None: ...

    # -- optional abilities (defaults) ----------------------------------------------------------
    def placement(self, number: int) -> tuple[str, int] | None:
        """The population a running trial joined and its size K (child-run tags), or None when
        the engine runs one trial per process."""
        return None

    def fill_rate(self) -> float | None:
        """Mean members per running population / K over time, or None without populations."""
        return None


def _torch_cuda() -> Any:
    """torch.cuda when the trainer already imported torch and a GPU is visible, else None."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def _reset_gpu_memory() -> None:
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def _gpu_memory() -> dict[str, float]:
    """The trial's peak GPU memory, for packing several trials on one GPU."""
    cuda = _torch_cuda()
    if cuda is None:
        return {}
    return {"gpu_peak_mem_mb": cuda.max_memory_allocated() / 2**20}


class EngineError(ValueError):
    """An engine option is wrong or the engine cannot start (one line, for the CLI)."""


def run_task(
    task: TrialTask,
    device: str,
    send: Callable[[Event], None],
    should_stop: Callable[[int], bool],
    clock: Callable[[], float],
) -> Done:
    """Run one trial in the current process: the part every engine's worker shares.

    ``send`` streams reports; ``should_stop(number)`` is the prune flag checked on each report.
    The trainer's exceptions become a ``Done`` with status ``pruned`` or ``error``.
    """
    last_step = 0
    t0 = clock()

    def report(step: int, metrics: Mapping[str, float]) -> None:
        nonlocal last_step
        last_step = int(step)
        send(Report(task.number, int(step), metric_numbers(metrics)))
        if should_stop(task.number):
            raise TrialPruned(f"pruned at step {step}")

    _reset_gpu_memory()
    try:
        if task.artifact_dir:  # on another machine of a cluster the driver's folder is not there
            os.makedirs(task.artifact_dir, exist_ok=True)
        fn = load_objective(task.objective)
        out = fn(task.config, device=device, seed=task.seed, report=report,
                 artifact_dir=task.artifact_dir)
        metrics = metric_numbers(dict(out or {}))
        metrics.update(_gpu_memory())
        return Done(task.number, "ok", metrics, steps=last_step, seconds=clock() - t0, device=device)
    except TrialPruned as exc:
        return Done(task.number, "pruned", reason=str(exc) or "pruned", steps=last_step,
                    seconds=clock() - t0, device=device)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        return Done(task.number, "error", reason=reason, traceback=tb.format_exc(),
                    steps=last_step, seconds=clock() - t0, device=device)
