"""A multi-objective sweep's front in MLflow: tags, hypervolume curves, ``pareto.json`` and figures.

The :class:`~harness.recorder.Recorder` holds one :class:`SweepFront` when the spec lists several
metrics and hands it every finished trial, whichever driver runs the sweep, so every tuner's
front is computed by the same code (:class:`harness.pareto.LiveFront`): each complete child run
is tagged ``harness.pareto`` (and retagged when it leaves the front), the parent run logs
``hypervolume`` per finished trial and ``hypervolume_by_steps``, and ``pareto.json`` plus
``pareto.png`` / ``pareto.html`` are parent artifacts (rewritten at most every 10 s while the
front changes, and at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import names as N
from harness.pareto import LiveFront
from harness.spec import SweepSpec
from harness.tracking import Tracker
from harness.trials import Progress, TrialResult, TrialState, objective_values


class SweepFront:
    EVERY_S = 10.0  # pareto.json is rewritten at most this often while the front changes

    def __init__(self, spec: SweepSpec, tracker: Tracker, *, clock: Callable[[], float],
                 note: Callable[[str], None], folder: Path | None,
                 restored: list[TrialResult]) -> None:
        self.spec = spec
        self.tracker = tracker
        self.clock = clock
        self.note = note  # a line for the sweep's event log (a figure that failed, say)
        self.folder = folder
        self.names = [m.name for m in spec.metrics]
        self.goals = [m.goal for m in spec.metrics]
        ref = [m.reference for m in spec.metrics]
        self.live = LiveFront(self.names, self.goals, None if any(r is None for r in ref) else ref)  # type: ignore[arg-type]
        self._written = 0.0
        flags: dict[int, bool] = {}
        for r in restored:  # a resumed sweep: the front so far, its tags current
            flags.update(self.live.add(r.number, self._values(r)))
        if flags:
            self.tracker.pareto_update(flags, [])

    def _values(self, result: TrialResult) -> list[float] | None:
        if result.state is not TrialState.COMPLETE:
            return None
        return objective_values(result, self.names)

    def add(self, result: TrialResult, view: Progress, results: list[TrialResult]) -> None:
        """Tag the trial (and any run it pushed off the front), step the hypervolume metrics."""
        if result.interrupted:
            return
        flags = self.live.add(result.number, self._values(result))
        metrics: list[tuple[str, float, int]] = []
        if self.live.reference is not None:
            hv = self.live.hypervolume
            metrics = [(N.METRIC_HYPERVOLUME, hv, view.finished), (N.METRIC_HYPERVOLUME_BY_STEPS, hv, view.cum_steps)]
        self.tracker.pareto_update(flags, metrics)
        if any(flags.values()) and self.clock() - self._written > self.EVERY_S:
            self._write(results)

    def to_json(self, results: list[TrialResult]) -> dict[str, Any]:
        """The sweep's front as ``pareto.json`` holds it (run ids filled in by the tracker)."""
        from harness.pareto import front_records

        trials = []
        for r in self._complete(results):
            values = objective_values(r, self.names)
            metrics = {**r.metrics, "seconds": r.seconds, "steps": float(r.steps),
                       **(dict(zip(self.names, values, strict=True)) if values else {})}
            trials.append({"number": r.number, "params": r.params, "metrics": metrics, "run_id": None,
                           "seed": r.seed})
        return front_records(trials, self.names, self.goals, self.live.reference).to_json()

    def close(self, results: list[TrialResult]) -> None:
        """The end of the sweep: without a reference point in the spec, the hypervolume curves
        under the default reference (the final front's nadir pushed back 10%), logged once now
        that it is fixed; then ``pareto.json`` and the figures. A failure is noted, not fatal:
        the trials are recorded already."""
        try:
            if self.live.reference is None and self.live.numbers:
                self._default_curves(results)
            self._write(results, plots=True)
        except Exception as exc:
            self.note(f"front not written: {exc}"[:300])

    def _default_curves(self, results: list[TrialResult]) -> None:
        from harness.pareto import default_reference, hypervolume_curve

        ref = default_reference(self.live.points, self.goals)
        rows, finished, steps, metrics = [], 0, 0, []
        for r in results:
            if r.interrupted:
                continue
            finished += 1
            steps += r.steps
            rows.append((self._values(r) or [float("nan")] * len(self.names), finished, steps))
        curve = hypervolume_curve([v for v, _, _ in rows], self.goals, ref)
        for hv, (_, k, cum) in zip(curve, rows, strict=True):
            metrics += [(N.METRIC_HYPERVOLUME, hv, k), (N.METRIC_HYPERVOLUME_BY_STEPS, hv, cum)]
        self.tracker.pareto_update({}, metrics)

    def _write(self, results: list[TrialResult], plots: bool = False) -> None:
        self._written = self.clock()
        front = self.to_json(results)
        files: list[Any] = []
        if plots and self.folder is not None and front["trials"]:
            try:
                files = self._plot(results)
            except Exception as exc:  # a figure must never cost the sweep's record
                self.note(f"front plot failed: {exc}"[:300])
        self.tracker.log_front(front, files)

    def _plot(self, results: list[TrialResult]) -> list[Any]:
        import numpy as np

        from harness.pareto_plots import write_fronts

        complete = self._complete(results)
        pts = np.array([objective_values(r, self.names) or [float("nan")] * len(self.names) for r in complete],
                       dtype=float).reshape(-1, len(self.names))
        labels = [f"trial {r.number}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in r.params.items()) for r in complete]
        assert self.folder is not None
        return write_fronts({"trials": pts}, self.names, self.goals, self.folder / "pareto",
                            title=f"Pareto front: {len(complete)} complete trials",
                            reference=self.live.reference, labels={"trials": labels})

    @staticmethod
    def _complete(results: list[TrialResult]) -> list[TrialResult]:
        return [r for r in results if r.state is TrialState.COMPLETE and not r.interrupted]
