"""Several sweeps over one shared engine: the ask/tell loop of each, stepped by one loop.

``harness benchmark`` runs its sweeps (tuners x seeds) at once on ONE engine (the process pool,
the population engine, the Ray engine), so populations fill from every sweep's in-flight trials
and no sweep pays for starting and stopping workers. Fairness first: each sweep keeps its own
tuner, recorder, seed, parent run, budget and state, and sees the engine through an
:class:`EngineView` capped at its own ``--workers`` in-flight trials, so its tuner sees exactly
the pending trials it would see alone.

Trials are keyed by (sweep, number): a view submits each task under an engine-global id and
:class:`SharedEngine` routes each polled event back to its sweep under the sweep's own number.
Free places go round-robin by age: the sweep that has waited longest since it last dispatched
goes first, so one sweep's trials never starve another's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from harness.drivers.ask_tell import AskTellDriver
from harness.engines.base import Engine
from harness.trials import Done, Event, TrialTask


class SharedEngine:
    """One engine, several sweeps: engine-global trial ids <-> (view, the sweep's number)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._next = 0
        self._route: dict[int, tuple[EngineView, int]] = {}

    def view(self, cap: int) -> EngineView:
        """An engine for one sweep: at most ``cap`` of its trials in flight."""
        return EngineView(self, cap)

    def poll(self, timeout: float) -> list[tuple[EngineView, Event]]:
        """The engine's events, each routed to its sweep's view under the sweep's number."""
        out: list[tuple[EngineView, Event]] = []
        for event in self.engine.poll(timeout):
            route = self._route.get(event.number)
            if route is None:
                continue
            view, number = route
            if isinstance(event, Done):
                del self._route[event.number]
                view.ids.pop(number, None)
            out.append((view, replace(event, number=number)))
        return out

    def _submit(self, view: EngineView, task: TrialTask) -> str:
        gid = self._next
        self._next += 1
        self._route[gid] = (view, task.number)
        view.ids[task.number] = gid
        return self.engine.submit(replace(task, number=gid))


class EngineView(Engine):
    """One sweep's view of a :class:`SharedEngine` (its own numbers, its own in-flight cap)."""

    def __init__(self, shared: SharedEngine, cap: int) -> None:
        self.shared = shared
        self.cap = cap
        self.ids: dict[int, int] = {}  # the sweep's trial number -> engine-global id (in flight)
        self.name = shared.engine.name
        self.last_dispatch = time.perf_counter()

    @property
    def startup_seconds(self) -> float:  # type: ignore[override]
        return self.shared.engine.startup_seconds

    def start(self, objective: str) -> None:
        """The shared engine is started once, by its owner."""

    def shutdown(self) -> None:
        """The shared engine is shut down once, by its owner."""

    def free_slots(self) -> int:
        return max(0, min(self.cap - len(self.ids), self.shared.engine.free_slots()))

    def submit(self, task: TrialTask) -> str:
        self.last_dispatch = time.perf_counter()
        return self.shared._submit(self, task)

    def poll(self, timeout: float) -> list[Event]:
        raise RuntimeError("a sweep's engine view is polled through its SharedEngine")

    def stop_trial(self, number: int) -> None:
        gid = self.ids.get(number)
        if gid is not None:
            self.shared.engine.stop_trial(gid)

    def placement(self, number: int) -> tuple[str, int] | None:
        gid = self.ids.get(number)
        return self.shared.engine.placement(gid) if gid is not None else None

    def fill_rate(self) -> float | None:
        return self.shared.engine.fill_rate()


class SweepHandle(Protocol):
    """An open sweep as the builder assembled it (see :class:`harness.builder.Sweep`)."""

    driver: AskTellDriver
    ended: bool  # set here when its loop ran to its end (budget, stop rule)
    error: str | None  # set here when its own error ended it alone

    def stop(self) -> None:
        """Ctrl-C: stop dispatching; running trials stop and are recorded ``interrupted``."""
        ...


class MultiSweepDriver:
    """Steps the ask/tell loops of several sweeps over one :class:`SharedEngine`.

    ``openers`` open one sweep each, given its engine view, in order; at most ``concurrent``
    sweeps are open at once (a finished one makes room for the next). ``close(handle)`` is
    called for each sweep as soon as it has finished (or after a stop). :meth:`stop` (the
    first Ctrl-C) stops every open sweep and opens no more; a KeyboardInterrupt (the second)
    aborts every open sweep at once, recorded. A sweep's own error (its tuner, say) ends that
    sweep alone: its running trials are stopped and recorded interrupted, it closes as failed
    (resumable), and the others go on.
    """

    def __init__(self, shared: SharedEngine, openers: list[Callable[[Engine], SweepHandle]], *,
                 cap: int, concurrent: int | None = None,
                 close: Callable[[SweepHandle], None] = lambda h: None) -> None:
        self.shared = shared
        self.openers = list(openers)
        self.cap = cap
        self.concurrent = max(1, concurrent or len(self.openers) or 1)
        self.close = close
        self.active: list[SweepHandle] = []
        self.stopped = False
        self.errors: list[str] = []  # the tracebacks of sweeps that failed alone

    def stop(self) -> None:
        self.stopped = True
        for h in self.active:
            h.stop()

    def run(self) -> None:
        try:
            self._loop()
        except KeyboardInterrupt:
            self.stopped = True
            for h in self.active:
                h.driver.abort()
        finally:
            for h in self.active:  # what is still open (stopped, or an error): closed, recorded
                self.close(h)
            self.active = []

    def _loop(self) -> None:
        while True:
            while self.openers and not self.stopped and len(self.active) < self.concurrent:
                opener = self.openers.pop(0)
                handle = opener(self.shared.view(self.cap))
                self.active.append(handle)
                if self.stopped:  # Ctrl-C came while it was opening
                    handle.stop()
            # round-robin by age: the sweep that waited longest since it dispatched goes first
            for h in sorted(self.active, key=lambda h: h.driver.engine.last_dispatch):  # type: ignore[attr-defined]
                try:
                    more = h.driver.step()
                except Exception as exc:
                    self._fail(h, exc)
                    continue
                if not more:
                    h.ended = True
                    self.active.remove(h)
                    self.close(h)
            if not self.active and (self.stopped or not self.openers):
                return
            by_view = {id(h.driver.engine): h for h in self.active}
            for view, event in self.shared.poll(0.05):
                h = by_view.get(id(view))
                if h is not None and h in self.active:
                    try:
                        h.driver.handle(event)
                    except Exception as exc:
                        self._fail(h, exc)
            for h in self.active:
                h.driver.recorder.update()

    def _fail(self, h: SweepHandle, exc: Exception) -> None:
        """End sweep ``h`` alone after its own error (see the class doc)."""
        import traceback

        h.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        self.errors.append(traceback.format_exc())
        view = h.driver.engine
        for number in list(h.driver.tasks):
            view.stop_trial(number)
        try:
            h.driver.abort()  # its running trials: recorded interrupted (run again on resume)
        finally:
            h.driver.recorder.mark_failed(str(h.error))
            self.active.remove(h)
            self.close(h)


__all__ = ["EngineView", "MultiSweepDriver", "SharedEngine", "SweepHandle"]
