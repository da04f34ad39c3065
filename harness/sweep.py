"""The sweep loop: ask the tuner, run on the engine, tell the tuner, log to the tracker.

Every trial ends through :func:`finish` (one finishing path): the engine's outcome becomes a
complete, pruned or failed :class:`TrialResult`, which the tuner and the tracker both receive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engines.base import Done, Engine, Report, TrialTask
from harness.spec import Metric, SweepSpec
from harness.tracking import Tracker
from harness.tuners.base import (
    INTERRUPTED,
    Progress,
    Restored,
    Suggestion,
    TrialResult,
    TrialState,
    Tuner,
)


def trial_seed(sweep_seed: int, number: int) -> int:
    """A per-trial seed derived from the sweep's seed and the trial number."""
    return (sweep_seed * 1_000_003 + number * 7_919) % (2**31 - 1)


@dataclass
class SweepStats:
    """What the live display and the summary show; updated as events arrive."""

    budget: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0  # stopped by Ctrl-C or a crash: not counted in the budget
    running: int = 0
    best: TrialResult | None = None
    results: list[TrialResult] = field(default_factory=list)
    cum_steps: int = 0
    busy_seconds: float = 0.0  # sum of the trials' own seconds
    first_dispatch: float | None = None
    last_stored: float | None = None
    stopped_early: str | None = None  # why dispatch stopped before the budget (timeout, ...)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    def add(self, result: TrialResult, metric: Metric) -> None:
        """Add a finished trial (an interrupted one only adds its cost, not a count)."""
        self.results.append(result)
        self.busy_seconds += result.seconds
        self.cum_steps += result.steps
        if result.reason == INTERRUPTED:
            self.interrupted += 1
        elif result.state is TrialState.COMPLETE:
            self.complete += 1
            assert result.value is not None
            if self.best is None or metric.better(result.value, self.best.value):  # type: ignore[arg-type]
                self.best = result
        elif result.state is TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1

    def wall_seconds(self) -> float:
        if self.first_dispatch is None or self.last_stored is None:
            return 0.0
        return self.last_stored - self.first_dispatch

    def utilization(self, workers: int) -> float:
        wall = self.wall_seconds()
        return self.busy_seconds / (workers * wall) if wall > 0 and workers > 0 else 0.0


def finish(done: Done, task: TrialTask, spec: SweepSpec, last_value: float | None) -> TrialResult:
    """Map an engine outcome to the trial's state (the one finishing path)."""
    base: dict[str, Any] = dict(
        number=task.number, params=task.params, metrics=done.metrics, steps=done.steps,
        seconds=done.seconds, device=done.device, seed=task.seed,
    )
    name = spec.metric.name
    if done.status == "ok":
        if name not in done.metrics:
            got = ", ".join(sorted(done.metrics)) or "nothing"
            return TrialResult(state=TrialState.FAILED, reason=f"objective returned no metric '{name}' (got {got})", **base)
        value = done.metrics[name]
        if not math.isfinite(value):
            return TrialResult(state=TrialState.FAILED, reason=f"metric '{name}' is {value} (diverged)", **base)
        return TrialResult(state=TrialState.COMPLETE, value=value, **base)
    if done.status == "pruned":
        return TrialResult(state=TrialState.PRUNED, value=last_value, reason=done.reason, **base)
    return TrialResult(state=TrialState.FAILED, reason=done.reason, traceback=done.traceback, **base)


@dataclass
class SweepLoop:
    spec: SweepSpec
    tuner: Tuner
    engine: Engine
    tracker: Tracker
    objective: str
    budget: int
    seed: int = 0
    timeout: float | None = None
    trial_timeout: float | None = None
    artifact_root: Path | None = None
    on_update: Callable[[SweepStats], None] | None = None
    clock: Callable[[], float] = time.perf_counter
    restored: Restored | None = None
    budget_steps: int | None = None  # stop dispatching once finished trials used this many steps
    prefetch: bool = True  # ask for the next trial while every worker is busy
    stop_reason: str | None = None  # set (e.g. by a SIGINT handler) to stop dispatching
    stats: SweepStats | None = None  # the running statistics, once run() has started

    def run(self) -> SweepStats:
        stats = self.stats = SweepStats(budget=self.budget)
        for r in self.restored.finished if self.restored else []:
            self._count(r, stats)
        tasks: dict[int, TrialTask] = {}
        last_value: dict[int, float] = {}
        interrupted: set[int] = set()
        ready: list[Suggestion] = []  # asked ahead while every worker was busy
        asked = stats.finished
        start = self.clock()
        exhausted = False
        try:
            self._loop(stats, tasks, last_value, interrupted, ready, asked, start, exhausted)
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still record what ran
            stats.stopped_early = INTERRUPTED
            pending = [*tasks.values(), *(self._task(s) for s in ready)]
            for task in pending:
                done = Done(task.number, "error", reason=INTERRUPTED, device="?")
                self._record(finish(done, task, self.spec, None), stats, start)
            tasks.clear()
            ready.clear()
        return stats

    def _loop(self, stats: SweepStats, tasks: dict[int, TrialTask], last_value: dict[int, float],
              interrupted: set[int], ready: list[Suggestion], asked: int, start: float,
              exhausted: bool) -> None:
        while True:
            if self.stop_reason and not stats.stopped_early:
                stats.stopped_early = self.stop_reason
                for number in tasks:  # finish their current report, then stop
                    interrupted.add(number)
                    self.engine.stop_trial(number)
            if self.timeout is not None and self.clock() - start > self.timeout and not stats.stopped_early:
                stats.stopped_early = f"timeout after {self.timeout:g} s"
            if self.budget_steps is not None and stats.cum_steps >= self.budget_steps and not stats.stopped_early:
                stats.stopped_early = f"step budget of {self.budget_steps} training steps used"
            free = self.engine.free_slots()
            if stats.stopped_early and ready:  # asked ahead but never run: not part of the budget
                for s in ready:
                    task = self._task(s)
                    self._record(finish(Done(s.number, "error", reason=INTERRUPTED, device="?"), task,
                                        self.spec, None), stats, start)
                ready.clear()
            while free and ready and not stats.stopped_early:
                self._dispatch(ready.pop(0), tasks, stats)
                free -= 1
            want = min(free, self.budget - asked)
            if want > 0 and not exhausted and not stats.stopped_early:
                suggestions = self._ask(want)
                exhausted = not suggestions
                for s in suggestions:
                    self._dispatch(s, tasks, stats)
                    asked += 1
            elif free == 0 and tasks and not ready and not exhausted and not stats.stopped_early \
                    and asked < self.budget and self.prefetch:
                # every worker is busy: compute the next suggestion now, so a worker that frees
                # up starts at once instead of waiting for the tuner
                suggestions = self._ask(1)
                exhausted = not suggestions
                ready.extend(suggestions)
                asked += len(suggestions)
            stats.running = len(tasks)
            if not tasks and not ready and (asked >= self.budget or exhausted or stats.stopped_early):
                break
            for event in self.engine.poll(0.05):
                if isinstance(event, Report):
                    self._on_report(event, last_value)
                elif isinstance(event, Done) and event.number in tasks:
                    task = tasks.pop(event.number)
                    if event.number in interrupted and event.status == "pruned":
                        event = Done(event.number, "error", event.metrics, INTERRUPTED,
                                     steps=event.steps, seconds=event.seconds, device=event.device)
                    result = finish(event, task, self.spec, last_value.pop(event.number, None))
                    self._record(result, stats, start)
            stats.running = len(tasks)
            if self.on_update is not None:
                self.on_update(stats)

    def _task(self, s: Suggestion) -> TrialTask:
        return TrialTask(
            number=s.number, objective=self.objective, params=s.params,
            config=self.spec.config(s.params),
            seed=s.seed if s.seed is not None else trial_seed(self.seed, s.number),
            timeout=self.trial_timeout, artifact_dir=self._artifact_dir(s.number),
        )

    def _ask(self, n: int) -> list[Suggestion]:
        suggestions = self.tuner.ask(n)
        take_lost = getattr(self.tuner, "take_lost", None)
        if take_lost is not None:
            lost = take_lost()  # another process's trials, found dead: settle their child runs
            if lost:
                self.tracker.reconcile(lost)
        return suggestions

    def _dispatch(self, s: Suggestion, tasks: dict[int, TrialTask], stats: SweepStats) -> None:
        task = self._task(s)
        device = self.engine.submit(task)
        tasks[s.number] = task
        if stats.first_dispatch is None:
            stats.first_dispatch = self.clock()
        self.tracker.trial_started(s.number, s.params, task.seed, device)

    def _on_report(self, event: Report, last_value: dict[int, float]) -> None:
        self.tracker.trial_report(event.number, event.step, event.metrics)
        value = event.metrics.get(self.spec.metric.name)
        if value is None or not math.isfinite(value):
            return
        last_value[event.number] = value
        if self.tuner.report(event.number, event.step, value):
            self.engine.stop_trial(event.number)

    def _count(self, result: TrialResult, stats: SweepStats) -> None:
        stats.add(result, self.spec.metric)

    def _record(self, result: TrialResult, stats: SweepStats, start: float) -> None:
        self.tuner.tell(result)
        self._count(result, stats)
        view = self._shared_progress()
        if view is None:  # this process's own view: the whole sweep unless a study is shared
            view = Progress(stats.finished, stats.best.value if stats.best else None, stats.cum_steps)
        self.tracker.trial_finished(
            result, elapsed=self.clock() - start, best=view.best,
            finished=view.finished, cum_steps=view.cum_steps,
            artifact_dir=self._artifact_dir(result.number),
        )

    def _shared_progress(self) -> Progress | None:
        """The study's progress across processes, when the tuner has one and can read it now."""
        read = getattr(self.tuner, "shared_progress", None)
        if read is None:
            return None
        try:
            return read()
        except Exception:  # a passing database fault must not cost a result: log our own view
            return None

    def _artifact_dir(self, number: int) -> str | None:
        if self.artifact_root is None:
            return None
        path = self.artifact_root / f"trial-{number}"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
