"""The driver protocol: what joins a tuner to where its trials run, for one sweep.

Two drivers implement it: :class:`~harness.drivers.ask_tell.AskTellDriver` (our loop, on any
engine; also step-wise, so :class:`~harness.drivers.multi.MultiSweepDriver` drives several
sweeps over one shared engine) and :class:`~harness.drivers.ray_tune.RayTuneDriver` (Ray Tune's
own loop). Either hands every trial event to the sweep's one
:class:`~harness.recorder.Recorder`; the sweep builder (:mod:`harness.builder`) only calls
``run``, ``shutdown`` and reads ``startup_seconds`` and ``recorder``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from harness.recorder import Recorder, SweepStats


class Driver(Protocol):
    recorder: Recorder

    @property
    def startup_seconds(self) -> float:
        """Seconds before the first trial could start (workers, Ray), printed beside the wall time."""
        ...

    def run(self) -> SweepStats:
        """Run the sweep to its end (budget, stop rule or Ctrl-C); every event recorded."""
        ...

    def shutdown(self) -> None:
        """Release what the driver itself started (not a shared engine: its owner shuts it down)."""
        ...


__all__ = ["Driver"]
