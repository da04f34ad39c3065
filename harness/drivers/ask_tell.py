"""The ask/tell driver: ask the tuner, run on the engine, hear reports, tell the tuner.

Every event goes to the :class:`~harness.recorder.Recorder` (started, report, finished), which
owns the statistics, the stop rules, the write-ahead log and the tracker; this loop only keeps
the engine's slots busy and turns the tuner's prune decisions into ``engine.stop_trial``.

A trial ``lost`` with its worker (a population worker that died holding several trials) is
recorded interrupted and run again once; a rerun that is lost again fails.

The loop is step-wise: :meth:`AskTellDriver.step` dispatches what it can and says whether the
sweep has work left, :meth:`AskTellDriver.handle` takes one engine event. :meth:`run` alternates
them over its own engine; :class:`~harness.drivers.multi.MultiSweepDriver` alternates them for
several sweeps over one shared engine (each sweep's engine is then a capped view of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import names as N
from harness.engines.base import Engine
from harness.recorder import Recorder, SweepStats
from harness.spec import SweepSpec
from harness.trials import INTERRUPTED, Done, Event, Report, Suggestion, TrialTask, trial_seed
from harness.tuners.base import Tuner


@dataclass
class AskTellDriver:
    spec: SweepSpec
    tuner: Tuner
    engine: Engine
    recorder: Recorder
    objective: str
    budget: int
    seed: int = 0
    trial_timeout: float | None = None
    prefetch: bool = True  # ask for the next trial while every worker is busy
    tasks: dict[int, TrialTask] = field(default_factory=dict)  # running
    ready: list[Suggestion] = field(default_factory=list)  # asked ahead while every worker was busy
    asked: int = -1  # trials asked so far (-1: not begun)
    exhausted: bool = False  # the tuner has nothing more to propose
    stopping: bool = False  # a stop rule fired; what was asked ahead is given back
    interrupting: bool = False  # Ctrl-C: the running trials were told to stop
    reruns: set[int] = field(default_factory=set)  # trials that rerun a lost one (not again)
    _to_rerun: list[dict] = field(default_factory=list)  # params of lost trials, enqueued

    @property
    def stats(self) -> SweepStats:
        return self.recorder.stats

    @property
    def startup_seconds(self) -> float:
        return self.engine.startup_seconds

    def shutdown(self) -> None:
        """Nothing of its own: the engine belongs to whoever built it (see harness.builder)."""

    def run(self) -> SweepStats:
        try:
            while self.step():
                for event in self.engine.poll(0.05):
                    self.handle(event)
                self.recorder.update()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still record what ran
            self.abort()
        return self.stats

    def abort(self) -> None:
        """Stop at once (a second Ctrl-C): every running or asked-ahead trial is recorded
        ``interrupted``."""
        rec = self.recorder
        rec.mark_interrupted()
        for task in self.tasks.values():
            rec.finished(Done(task.number, "error", reason=INTERRUPTED, device="?"), task)
        for s in self.ready:
            rec.never_ran(self._task(s))
        self.tasks.clear()
        self.ready.clear()

    def step(self) -> bool:
        """Apply the stop rules, dispatch onto free slots (asking the tuner), and say whether the
        sweep has anything left: running trials, or budget it may still ask for."""
        rec, engine = self.recorder, self.engine
        if self.asked < 0:
            self.asked = rec.stats.finished
        stop = rec.should_stop()
        if stop and not self.stopping:
            self.stopping = True
            for s in self.ready:  # asked ahead but never run: not part of the budget
                rec.never_ran(self._task(s))
            self.ready.clear()
        if rec.interrupted and not self.interrupting:  # Ctrl-C, also after --timeout stopped dispatching
            self.interrupting = True
            for number in self.tasks:  # finish their current report, then stop
                rec.interrupting(number)
                engine.stop_trial(number)
        free = engine.free_slots()
        while free and self.ready and not stop:
            self._dispatch(self.ready.pop(0))
            free -= 1
        want = min(free, self.budget - self.asked)
        if want > 0 and not self.exhausted and not stop:
            suggestions = self._ask(want)
            self.exhausted = not suggestions
            for s in suggestions:
                self._dispatch(s)
                self.asked += 1
        elif free == 0 and self.tasks and not self.ready and not self.exhausted and not stop \
                and self.asked < self.budget and self.prefetch:
            # every worker is busy: compute the next suggestion now, so a worker that frees
            # up starts at once instead of waiting for the tuner
            suggestions = self._ask(1)
            self.exhausted = not suggestions
            self.ready.extend(suggestions)
            self.asked += len(suggestions)
        return not (not self.tasks and not self.ready
                    and (self.asked >= self.budget or self.exhausted or stop))

    def handle(self, event: Event) -> None:
        """One event of the engine: a report (the tuner may prune) or a trial's end."""
        rec = self.recorder
        if isinstance(event, Report):
            value = rec.report(event)
            if value is not None and self.tuner.report(event.number, event.step, value):
                self.engine.stop_trial(event.number)
        elif isinstance(event, Done) and event.number in self.tasks:
            task = self.tasks.pop(event.number)
            if event.status == "lost" and task.number not in self.reruns and not self.stopping:
                # its worker died holding several trials (a population): none is the suspect, so
                # each is recorded interrupted (not counted) and runs again once
                rec.finished(Done(event.number, "error", event.metrics, INTERRUPTED, event.reason,
                                  steps=event.steps, seconds=event.seconds, device=event.device), task)
                self.tuner.enqueue(dict(task.params))
                self._to_rerun.append(dict(task.params))
                self.asked -= 1
                self.exhausted = False
            else:
                rec.finished(event, task)

    def _task(self, s: Suggestion) -> TrialTask:
        return TrialTask(
            number=s.number, objective=self.objective, params=s.params,
            config=self.spec.config(s.params),
            seed=s.seed if s.seed is not None else trial_seed(self.seed, s.number),
            timeout=self.trial_timeout, artifact_dir=self.recorder.artifact_dir(s.number, create=True),
        )

    def _ask(self, n: int) -> list[Suggestion]:
        suggestions = self.tuner.ask(n)
        lost = self.tuner.take_lost()  # another process's trials, found dead: settle their runs
        if lost:
            self.recorder.reconcile(lost)
        return suggestions

    def _dispatch(self, s: Suggestion) -> None:
        if s.params in self._to_rerun:
            self._to_rerun.remove(s.params)
            self.reruns.add(s.number)
        task = self._task(s)
        device = self.engine.submit(task)
        self.tasks[s.number] = task
        joined = self.engine.placement(task.number)  # a population engine's (id, size)
        tags = {N.TAG_POPULATION: joined[0], N.TAG_POPULATION_SIZE: str(joined[1])} if joined else None
        self.recorder.started(task, device, tags=tags)


__all__ = ["AskTellDriver"]
