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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import names as N
from harness.files import append_line
from harness.pareto import LiveFront
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
    objective_values,
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
        for r in restored.finished if restored else []:
            self.stats.add(r, spec.metric)
        self.front: LiveFront | None = None  # a multi-objective sweep's front (issue 17)
        self._front_written = 0.0
        if spec.multi:
            self._start_front(restored)

    # -- stop rules --------------------------------------------------------------------------
    def request_stop(self, reason: str = INTERRUPTED) -> None:
        """Stop dispatching (Ctrl-C): running trials stop and are recorded ``interrupted``."""
        if self.stop_reason is None:
            self.stop_reason = reason

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
        if tags:
            self.tracker.trial_started(task.number, task.params, task.seed, device, tags=tags)
        else:
            self.tracker.trial_started(task.number, task.params, task.seed, device)
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
            self._front_add(result, view)
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

    # -- the Pareto front of a multi-objective sweep (issue 17) ----------------------------------
    FRONT_EVERY_S = 10.0  # pareto.json is rewritten at most this often while the front changes

    def _start_front(self, restored: Restored | None) -> None:
        ref = [m.reference for m in self.spec.metrics]
        self.front = LiveFront([m.name for m in self.spec.metrics], [m.goal for m in self.spec.metrics],
                               None if any(r is None for r in ref) else ref)  # type: ignore[arg-type]
        flags: dict[int, bool] = {}
        for r in restored.finished if restored else []:  # a resumed sweep: the front so far, tags current
            flags.update(self.front.add(r.number, self._values(r)))
        if flags:
            self.tracker.pareto_update(flags, [])

    def _values(self, result: TrialResult) -> list[float] | None:
        if result.state is not TrialState.COMPLETE:
            return None
        return objective_values(result, [m.name for m in self.spec.metrics])

    def _front_add(self, result: TrialResult, view: Progress) -> None:
        """Tag the trial (and any run it pushed off the front), step the hypervolume metrics."""
        assert self.front is not None
        if result.interrupted:
            return
        flags = self.front.add(result.number, self._values(result))
        metrics: list[tuple[str, float, int]] = []
        if self.front.reference is not None:
            hv = self.front.hypervolume
            metrics = [(N.METRIC_HYPERVOLUME, hv, view.finished), (N.METRIC_HYPERVOLUME_BY_STEPS, hv, view.cum_steps)]
        self.tracker.pareto_update(flags, metrics)
        if any(flags.values()) and self.clock() - self._front_written > self.FRONT_EVERY_S:
            self._write_front()

    def front_json(self) -> dict[str, Any] | None:
        """The sweep's front as ``pareto.json`` holds it (run ids filled in by the tracker)."""
        if self.front is None:
            return None
        from harness.pareto import front_records

        spec = self.spec
        complete = [r for r in self.stats.results if r.state is TrialState.COMPLETE and not r.interrupted]
        names = [m.name for m in spec.metrics]
        trials = []
        for r in complete:
            values = objective_values(r, names)
            metrics = {**r.metrics, "seconds": r.seconds, "steps": float(r.steps),
                       **(dict(zip(names, values, strict=True)) if values else {})}
            trials.append({"number": r.number, "params": r.params, "metrics": metrics, "run_id": None,
                           "seed": r.seed})
        return front_records(trials, names, [m.goal for m in spec.metrics], self.front.reference).to_json()

    def _write_front(self, plots: bool = False) -> None:
        self._front_written = self.clock()
        front = self.front_json()
        if front is None:
            return
        files: list[Any] = []
        if plots and self.log_path is not None and front["trials"]:
            try:
                files = self._plot_front()
            except Exception as exc:  # a figure must never cost the sweep's record
                self._log({"event": "note", "message": f"front plot failed: {exc}"[:300]})
        self.tracker.log_front(front, files)

    def _plot_front(self) -> list[Any]:
        import numpy as np

        from harness.pareto_plots import write_fronts

        names = [m.name for m in self.spec.metrics]
        complete = [r for r in self.stats.results if r.state is TrialState.COMPLETE and not r.interrupted]
        pts = np.array([objective_values(r, names) or [float("nan")] * len(names) for r in complete],
                       dtype=float).reshape(-1, len(names))
        labels = [f"trial {r.number}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in r.params.items()) for r in complete]
        assert self.log_path is not None
        return write_fronts({"trials": pts}, names, [m.goal for m in self.spec.metrics],
                            self.log_path.parent / "pareto", title=f"Pareto front: {len(complete)} complete trials",
                            reference=self.front.reference if self.front else None, labels={"trials": labels})

    def close(self) -> None:
        """The end of the sweep: ``pareto.json`` and the front's figures as parent artifacts; without
        a reference point in the spec, the hypervolume curves under the default reference (the
        final front's nadir pushed back 10%), logged once now that it is fixed."""
        if self.front is None:
            return
        try:
            self._close_front()
        except Exception as exc:  # the trials are recorded already: a front that fails is noted, not fatal
            self._log({"event": "note", "message": f"front not written: {exc}"[:300]})

    def _close_front(self) -> None:
        assert self.front is not None
        if self.front.reference is None and self.front.numbers:
            from harness.pareto import default_reference, hypervolume_curve

            goals = [m.goal for m in self.spec.metrics]
            ref = default_reference(self.front.points, goals)
            names = [m.name for m in self.spec.metrics]
            rows, finished, steps, metrics = [], 0, 0, []
            for r in self.stats.results:
                if r.interrupted:
                    continue
                finished += 1
                steps += r.steps
                rows.append((self._values(r) or [float("nan")] * len(names), finished, steps))
            curve = hypervolume_curve([v for v, _, _ in rows], goals, ref)
            for hv, (_, k, cum) in zip(curve, rows, strict=True):
                metrics += [(N.METRIC_HYPERVOLUME, hv, k), (N.METRIC_HYPERVOLUME_BY_STEPS, hv, cum)]
            self.tracker.pareto_update({}, metrics)
        self._write_front(plots=True)

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
        if self.log_path is not None:
            append_line(self.log_path, record)


def read_events(state_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The event log of a sweep: key (or number) -> its last ``started`` record, and -> its
    ``finished`` one. Call :func:`harness.files.repair_jsonl` on it first."""
    from harness.files import read_jsonl

    started: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(state_dir / EVENT_LOG):
        key = str(rec.get("key", rec.get("number")))
        (started if rec.get("event") == "started" else finished)[key] = rec
    return started, finished
