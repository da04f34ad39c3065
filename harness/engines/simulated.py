"""A simulated engine: trials cost their tabulated (or surrogate) seconds on a simulated clock.

The engine runs no trainer. For each submitted task it asks ``trace(task)`` for the trial's
:class:`~harness.surrogate.Curve` (the exact table row when the configuration was tabulated,
else the surrogate's prediction) and schedules its reports and its end at
``start + seconds`` on a :class:`SimClock`. ``poll`` returns the next events in simulated-time
order and advances the clock to them, so ``--workers W`` concurrency, asynchronous dispatch
(a worker frees up when its trial ends and the driver fills it at once) and pruning behave
as for real: ``stop_trial`` works like the real engines' stop flag, the trial's next report
is delivered and the trial ends there, pruned, with the steps and seconds it used.

The clock is the recorder's clock (pass ``engine.clock`` to the :class:`~harness.recorder.Recorder`),
so ``elapsed_s``, ``--timeout`` and the wall-time curves are in simulated seconds.

``charge_tuner_time`` (default on): the real time the driver spends between engine calls
(the tuner's ask / tell / prune decisions, the recorder) is added to the simulated clock, so a
comparison in seconds shows a slow tuner as slow. Off, the tuner thinks for free and a
simulated sweep is deterministic for a deterministic tuner.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.engines.base import Engine
from harness.trials import Done, Event, Report, TrialTask

if TYPE_CHECKING:
    from harness.surrogate import Curve


class SimClock:
    """Simulated seconds; a callable like ``time.perf_counter``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance_to(self, t: float) -> None:
        self.now = max(self.now, t)


@dataclass
class _Running:
    task: TrialTask
    curve: Curve
    start: float
    slot: str
    stop: bool = False
    next_report: int = 0  # index of the next report to deliver


@dataclass
class SimulatedEngine(Engine):
    """An :class:`~harness.engines.base.Engine` on a simulated clock (see the module doc)."""

    trace: Callable[[TrialTask], Curve]
    workers: int = 1
    charge_tuner_time: bool = True
    clock: SimClock = field(default_factory=SimClock)
    name: str = "simulated"
    startup_seconds: float = 0.0
    tuner_seconds: float = 0.0  # real seconds charged to the clock (the tuner's thinking)
    _running: dict[int, _Running] = field(default_factory=dict)
    _heap: list[tuple[float, int, int, int]] = field(default_factory=list)  # (t, seq, number, index)
    _seq: int = 0
    _mark: float | None = None
    _free: list[str] = field(default_factory=list)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, objective: str) -> None:
        self._free = [f"sim:{i}" for i in range(self.workers)]
        self._mark = time.perf_counter()

    def shutdown(self) -> None:
        self._running.clear()
        self._heap.clear()

    # -- the tuner's real time ---------------------------------------------------------------
    def _charge(self) -> None:
        """Add the real time spent outside the engine since its last call to the clock."""
        now = time.perf_counter()
        if self.charge_tuner_time and self._mark is not None:
            self.clock.now += now - self._mark
            self.tuner_seconds += now - self._mark
        self._mark = now

    def _unmark(self) -> None:
        self._mark = time.perf_counter()  # the engine's own work is not charged

    # -- dispatch --------------------------------------------------------------------------
    def free_slots(self) -> int:
        return len(self._free)

    def running(self) -> list[int]:
        return list(self._running)

    def submit(self, task: TrialTask) -> str:
        if not self._free:
            raise RuntimeError("submit() with no free slot")
        self._charge()
        slot = self._free.pop(0)
        curve = self.trace(task)
        run = _Running(task, curve, self.clock.now, slot)
        self._running[task.number] = run
        self._schedule(run)
        self._unmark()
        return slot

    def stop_trial(self, number: int) -> None:
        run = self._running.get(number)
        if run is not None:
            run.stop = True

    def _schedule(self, run: _Running) -> None:
        """Queue the trial's next event: its next report, else its end (or a timeout)."""
        curve, i = run.curve, run.next_report
        if i < len(curve.reports):
            t = run.start + curve.reports[i][1]
        else:
            t = run.start + curve.seconds
            i = -1  # the end
        timeout = run.task.timeout
        if timeout is not None and t - run.start > timeout:
            t, i = run.start + timeout, -2
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, run.task.number, i))

    def poll(self, timeout: float) -> list[Event]:
        """Every event due by now (the tuner's charged time may have passed some), else the next
        one, the clock advanced to it. ``timeout`` is not waited: simulated time jumps."""
        self._charge()
        events: list[Event] = []
        if self._heap and self._heap[0][0] > self.clock.now:
            self.clock.advance_to(self._heap[0][0])
        while self._heap and self._heap[0][0] <= self.clock.now:
            t, _, number, i = heapq.heappop(self._heap)
            run = self._running.get(number)
            if run is None:
                continue
            events.extend(self._fire(run, t, i))
        self._unmark()
        return events

    def _fire(self, run: _Running, t: float, i: int) -> list[Event]:
        task, curve = run.task, run.curve
        elapsed = t - run.start
        if i == -2:
            last = curve.reports[run.next_report - 1][0] if run.next_report else 0
            return [self._end(run, Done(task.number, "timeout", reason=f"timeout: trial exceeded {task.timeout:g} s",
                                        steps=last, seconds=elapsed, device=run.slot))]
        if i >= 0:
            step, _, metrics = curve.reports[i]
            run.next_report = i + 1
            out: list[Event] = [Report(task.number, step, dict(metrics))]
            if run.stop:  # the real worker: send the report, see the flag, raise TrialPruned
                out.append(self._end(run, Done(task.number, "pruned", reason=f"pruned at step {step}",
                                               steps=step, seconds=elapsed, device=run.slot)))
            else:
                self._schedule(run)
            return out
        if curve.status != "ok":
            return [self._end(run, Done(task.number, "error", dict(curve.metrics), reason=curve.reason or "failed",
                                        steps=curve.steps, seconds=elapsed, device=run.slot))]
        return [self._end(run, Done(task.number, "ok", dict(curve.metrics), steps=curve.steps, seconds=elapsed,
                                    device=run.slot))]

    def _end(self, run: _Running, done: Done) -> Done:
        del self._running[run.task.number]
        self._free.append(run.slot)
        self._free.sort()
        return done


__all__ = ["SimClock", "SimulatedEngine"]
