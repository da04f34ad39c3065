"""The one place a trial is counted, stopped, logged and written ahead, whoever drives it.

Both drivers (the ask/tell loop and Ray Tune's loop) hand every trial event to a
:class:`Recorder`: ``started`` when a trial is dispatched, ``report`` for each intermediate
result, ``finished`` with the worker's :class:`~harness.trials.Done`. The recorder maps the
outcome to a state through :func:`~harness.trials.finish` (the one finishing path), tells the
tuner, counts it in :class:`SweepStats`, appends it to the sweep's write-ahead event log
(``events.jsonl``, before MLflow hears of it), and hands it to the tracker with the parent run's
progress. The stop rules (Ctrl-C, ``--timeout``, the step budget) are decided here too, so a
sweep stops the same way whichever driver runs it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.front import SweepFront
from harness.spec import Metric, SweepSpec
from harness.tracking import Tracker
from harness.trials import (
    EVENT_LOG,
    INTERRUPTED,
    Done,
    Progress,
    Report,
    Restored,
    TrialResult,
    TrialState,
    TrialTask,
    finish,
)


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
        if result.interrupted:
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


class Recorder:
    """Counts, stops, logs and writes ahead every trial of one sweep (see the module doc)."""

    def __init__(
        self,
        spec: SweepSpec,
        tracker: Tracker,
        *,
        budget: int,
        tell: Callable[[TrialResult], None] | None = None,
        progress: Callable[[], Progress | None] | None = None,
        timeout: float | None = None,
        budget_steps: int | None = None,
        state_dir: Path | None = None,
        artifact_root: Path | None = None,
        on_update: Callable[[SweepStats], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        restored: Restored | None = None,
    ) -> None:
        self.spec = spec
        self.tracker = tracker
        self.tell = tell
        self.progress = progress
        self.timeout = timeout
        self.budget_steps = budget_steps
        self.log_path = state_dir / EVENT_LOG if state_dir is not None else None
        self.artifact_root = artifact_root
        self.on_update = on_update
        self.clock = clock
        self.stats = SweepStats(budget=budget)
        self.stop_reason: str | None = None  # set by request_stop (a SIGINT handler, say)
        self.start = clock()
        self._last_value: dict[int, float] = {}
        self._interrupting: set[int] = set()
        self._last_update = 0.0
        self._log_file: IO[str] | None = None
        for r in restored.finished if restored else []:
            self.stats.add(r, spec.metric)
        self.front: SweepFront | None = None  # a multi-objective sweep's front (harness/front.py)
        if spec.multi:
            self.front = SweepFront(spec, tracker, clock=clock, folder=state_dir,
                                    note=lambda m: self._log({"event": "note", "message": m}),
                                    restored=restored.finished if restored else [])

    # -- stop rules --------------------------------------------------------------------------
    def request_stop(self, reason: str = INTERRUPTED) -> None:
        """Stop dispatching (Ctrl-C): running trials stop and are recorded ``interrupted``.

        Ctrl-C wins over a rule that stopped dispatching before (``--timeout``, the step
        budget), whose running trials would otherwise finish: the person asked to stop now,
        and the sweep must end ``interrupted`` (exit 130, resumable)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if reason == INTERRUPTED and self.stats.stopped_early not in (None, INTERRUPTED):
            self.stop_reason = self.stats.stopped_early = INTERRUPTED

    def should_stop(self) -> str | None:
        """Why no new trial may start (Ctrl-C, ``--timeout``, the step budget), or None."""
        s = self.stats
        if s.stopped_early:
            return s.stopped_early
        if self.stop_reason:
            s.stopped_early = self.stop_reason
        elif self.timeout is not None and self.clock() - self.start > self.timeout:
            s.stopped_early = f"timeout after {self.timeout:g} s"
        elif self.budget_steps is not None and s.cum_steps >= self.budget_steps:
            s.stopped_early = f"step budget of {self.budget_steps} training steps used"
        return s.stopped_early

    @property
    def interrupted(self) -> bool:
        return self.stats.stopped_early == INTERRUPTED

    def interrupting(self, number: int) -> None:
        """Trial ``number`` is being stopped because the sweep is: it ends ``interrupted``."""
        self._interrupting.add(number)

    # -- trial events --------------------------------------------------------------------------
    def started(self, task: TrialTask, device: str, key: str | None = None,
                tags: dict[str, str] | None = None) -> None:
        """A trial was dispatched (``key``: the driver's own id of it, kept in the log; ``tags``:
        extra child-run tags, e.g. the population it joined)."""
        self._log({"event": "started", "number": task.number, "params": task.params,
                   "seed": task.seed, **({"key": key} if key is not None else {})})
        if self.stats.first_dispatch is None:
            self.stats.first_dispatch = self.clock()
        self.tracker.trial_started(task.number, task.params, task.seed, device, tags=tags)
        self.stats.running += 1
        self.update()

    def report(self, event: Report) -> float | None:
        """An intermediate result: logged; returns the spec's metric when it is finite (for the
        driver to ask the tuner whether to prune)."""
        self.tracker.trial_report(event.number, event.step, event.metrics)
        value = event.metrics.get(self.spec.metric.name)
        if value is None or not math.isfinite(value):
            return None
        self._last_value[event.number] = value
        return value

    def finished(self, done: Done, task: TrialTask, *, key: str | None = None,
                 artifact_dir: str | None = None) -> TrialResult:
        """A trial ended on its worker: the one finishing path, then :meth:`record`."""
        if task.number in self._interrupting and done.status == "pruned":  # stopped by us
            done = Done(done.number, "error", done.metrics, INTERRUPTED, steps=done.steps,
                        seconds=done.seconds, device=done.device)
        self._interrupting.discard(task.number)
        result = finish(done, task, self.spec, self._last_value.pop(task.number, None))
        self.stats.running = max(0, self.stats.running - 1)
        self.record(result, key=key, artifact_dir=artifact_dir)
        return result

    def never_ran(self, task: TrialTask) -> TrialResult:
        """A trial asked for but never run (asked ahead, then the sweep stopped): interrupted."""
        result = finish(Done(task.number, "error", reason=INTERRUPTED, device="?"), task, self.spec, None)
        self.record(result)
        return result

    def record(self, result: TrialResult, *, key: str | None = None,
               artifact_dir: str | None = None) -> None:
        """Tell the tuner, count, write ahead, then the tracker (in that order)."""
        if self.tell is not None:
            self.tell(result)
        self.stats.add(result, self.spec.metric)
        self._log({"event": "finished", **result.record(), **({"key": key} if key is not None else {})})
        view = self._progress()
        self.tracker.trial_finished(
            result, elapsed=self.clock() - self.start, best=view.best, finished=view.finished,
            cum_steps=view.cum_steps,
            artifact_dir=artifact_dir if artifact_dir is not None else self.artifact_dir(result.number),
        )
        if self.front is not None:
            self.front.add(result, view, self.stats.results)
        self.update(force=True)

    def update(self, force: bool = False) -> None:
        """Redraw the live display (at most every 50 ms unless ``force``)."""
        now = self.clock()
        if self.on_update is not None and (force or now - self._last_update > 0.05):
            self._last_update = now
            self.on_update(self.stats)

    def artifact_dir(self, number: int, create: bool = False) -> str | None:
        if self.artifact_root is None:
            return None
        path = self.artifact_root / f"trial-{number}"
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return str(path) if create or path.is_dir() else None

    def close(self) -> None:
        """The end of the sweep: a multi-objective sweep's ``pareto.json`` and figures; the
        event log closed."""
        if self.front is not None:
            self.front.close(self.stats.results)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- internals -----------------------------------------------------------------------------
    def _progress(self) -> Progress:
        """The parent run's progress: a shared study's (every process) when the tuner can read
        it now, else this process's own view."""
        if self.progress is not None:
            try:
                view = self.progress()
            except Exception:  # a passing database fault must not cost a result: log our own view
                view = None
            if view is not None:
                return view
        s = self.stats
        return Progress(s.finished, s.best.value if s.best else None, s.cum_steps)

    def _log(self, record: dict[str, Any]) -> None:
        """One line, written and flushed to the kernel before the tracker hears of the event (a
        killed driver loses nothing; the file stays open: reopening it per event cost the 0.2 s
        dispatch benchmark ~1% of utilization)."""
        if self.log_path is None:
            return
        if self._log_file is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()

    # -- for drivers: what they took from the tracker and the statistics ------------------------
    def reconcile(self, lost: list[TrialResult]) -> None:
        """Trials of other processes on a shared study, found dead: settle their child runs."""
        if lost:
            self.tracker.reconcile(lost)

    def trial_metrics(self, number: int, step: int, metrics: dict[str, float]) -> None:
        """Metrics of a running trial that are not one of its reports (PBT's changed
        hyperparameters, ``pbt.NAME``): logged at ``step``, never a prune decision."""
        self.tracker.trial_report(number, step, metrics)

    def mark_stopped(self) -> None:
        """The driver's loop has ended: no trial of this sweep runs any more."""
        self.stats.running = 0
        self.update(force=True)

    def mark_failed(self, reason: str) -> None:
        """The sweep's own driver failed (its tuner raised): it stopped, ``failed: REASON``,
        resumable; other sweeps of a benchmark go on."""
        self.request_stop(f"failed: {reason}")
        self.stats.stopped_early = f"failed: {reason}"

    def mark_interrupted(self) -> None:
        """Ctrl-C ended the sweep: it stopped ``interrupted`` (exit 130, resumable), also when
        another rule (``--timeout``, the step budget) had stopped dispatching before."""
        self.request_stop(INTERRUPTED)
        self.stats.stopped_early = INTERRUPTED

