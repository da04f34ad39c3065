"""The ask/tell driver: ask the tuner, run on the engine, hear reports, tell the tuner.

Every event goes to the :class:`~harness.recorder.Recorder` (started, report, finished), which
owns the statistics, the stop rules, the write-ahead log and the tracker; this loop only keeps
the engine's slots busy and turns the tuner's prune decisions into ``engine.stop_trial``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import names as N
from harness.engines.base import Engine
from harness.recorder import Recorder, SweepStats
from harness.spec import SweepSpec
from harness.trials import INTERRUPTED, Done, Report, Suggestion, TrialTask, trial_seed
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

    @property
    def stats(self) -> SweepStats:
        return self.recorder.stats

    def run(self) -> SweepStats:
        try:
            self._loop()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still record what ran
            rec = self.recorder
            rec.request_stop()
            rec.stats.stopped_early = rec.stop_reason
            for task in self.tasks.values():
                rec.finished(Done(task.number, "error", reason=INTERRUPTED, device="?"), task)
            for s in self.ready:
                rec.never_ran(self._task(s))
            self.tasks.clear()
            self.ready.clear()
        return self.stats

    def _loop(self) -> None:
        rec, engine = self.recorder, self.engine
        asked = rec.stats.finished
        exhausted = False
        stopping = False
        while True:
            stop = rec.should_stop()
            if stop and not stopping:
                stopping = True
                if rec.interrupted:
                    for number in self.tasks:  # finish their current report, then stop
                        rec.interrupting(number)
                        engine.stop_trial(number)
                for s in self.ready:  # asked ahead but never run: not part of the budget
                    rec.never_ran(self._task(s))
                self.ready.clear()
            free = engine.free_slots()
            while free and self.ready and not stop:
                self._dispatch(self.ready.pop(0))
                free -= 1
            want = min(free, self.budget - asked)
            if want > 0 and not exhausted and not stop:
                suggestions = self._ask(want)
                exhausted = not suggestions
                for s in suggestions:
                    self._dispatch(s)
                    asked += 1
            elif free == 0 and self.tasks and not self.ready and not exhausted and not stop \
                    and asked < self.budget and self.prefetch:
                # every worker is busy: compute the next suggestion now, so a worker that frees
                # up starts at once instead of waiting for the tuner
                suggestions = self._ask(1)
                exhausted = not suggestions
                self.ready.extend(suggestions)
                asked += len(suggestions)
            if not self.tasks and not self.ready and (asked >= self.budget or exhausted or stop):
                break
            for event in engine.poll(0.05):
                if isinstance(event, Report):
                    value = rec.report(event)
                    if value is not None and self.tuner.report(event.number, event.step, value):
                        engine.stop_trial(event.number)
                elif isinstance(event, Done) and event.number in self.tasks:
                    rec.finished(event, self.tasks.pop(event.number))
            rec.update()

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
            self.recorder.tracker.reconcile(lost)
        return suggestions

    def _dispatch(self, s: Suggestion) -> None:
        task = self._task(s)
        device = self.engine.submit(task)
        self.tasks[s.number] = task
        placement = getattr(self.engine, "placement", None)  # a population engine's (id, size)
        joined = placement(task.number) if placement is not None else None
        tags = {N.TAG_POPULATION: joined[0], N.TAG_POPULATION_SIZE: str(joined[1])} if joined else None
        self.recorder.started(task, device, tags=tags)


__all__ = ["AskTellDriver"]
