"""A multi-objective sweep's front in MLflow: tags, hypervolume curves, ``pareto.json`` and figures.

The :class:`~harness.recorder.Recorder` holds one :class:`SweepFront` when the spec lists several
metrics and hands it every finished trial, whichever driver runs the sweep, so every tuner's
front is computed by the same code (:class:`harness.pareto.LiveFront`): each complete child run
is tagged ``harness.pareto`` (and retagged when it leaves the front), the parent run logs
``hypervolume`` per finished trial and ``hypervolume_by_steps``, and ``pareto.json`` plus
``pareto.png`` / ``pareto.html`` are parent artifacts (rewritten at most every 10 s while the
front changes, and at the end).

The reference point: the spec's, else a default chosen once per sweep. A default depends on
the data (:func:`harness.pareto.default_reference`), so a fresh sweep logs its ``hypervolume``
curves only at the end, under the default of its final front, and keeps that point in its
state folder (``front.reference.json``, written atomically). A resumed sweep reads it back and
measures every later trial under the same point as it finishes: the curves are logged once,
never again under a new default that would give the parent two values per earlier step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import names as N
from harness.files import write_atomic
from harness.pareto import LiveFront
from harness.spec import SweepSpec
from harness.tracking import Tracker
from harness.trials import Progress, TrialResult, TrialState, objective_values


class SweepFront:
    EVERY_S = 10.0  # pareto.json is rewritten at most this often while the front changes
    BATCH = 1000  # metrics per tracker call (MLflow's log_batch limit)

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
        self.source = "spec"
        stored = None if all(r is not None for r in ref) else stored_reference(folder, self.names)
        self.pending: list[float] | None = None  # a default chosen, its curves not logged yet
        if stored is not None and stored[1]:  # its curves are logged: measure new trials under it
            ref, self.source = stored[0], "default"  # type: ignore[assignment]
        elif stored is not None:
            self.pending, self.source = stored[0], "default"
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
        reference = self.live.reference if self.live.reference is not None else self.pending
        return front_records(trials, self.names, self.goals, reference, reference_source=self.source).to_json()

    def close(self, results: list[TrialResult]) -> None:
        """The end of the sweep (or of this run of it): without a reference point in the spec and
        none chosen yet, the default reference (the final front's nadir pushed back 10%) is
        chosen now, kept in the state folder, and the hypervolume curves under it are logged
        once; then ``pareto.json`` and the figures. A hypervolume of 0 is noted with its reason.
        A failure is noted, not fatal: the trials are recorded already."""
        try:
            if self.live.reference is None and self.live.numbers:
                self._default_curves(results)
            if self.live.numbers:
                from harness.pareto import zero_volume_reason

                why = zero_volume_reason(self.live.points, self.goals, self.live.reference)
                if why is not None:
                    self.note(why)
            self._write(results, plots=True)
        except Exception as exc:
            self.note(f"front not written: {exc}"[:300])

    def _default_curves(self, results: list[TrialResult]) -> None:
        from harness.pareto import default_reference, hypervolume_curve

        ref = self.pending if self.pending is not None else default_reference(self.live.points, self.goals)
        self.source = "default"
        self._keep(ref, logged=False)  # chosen before its curves go out: a crash now reuses it
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
        for i in range(0, len(metrics), self.BATCH):  # MLflow takes at most 1000 metrics a batch
            self.tracker.pareto_update({}, metrics[i:i + self.BATCH])
        self._keep(ref, logged=True)
        self.pending = None
        # from now on this is the sweep's reference point: measured live, like the spec's
        self.live.reference = [float(v) for v in ref]
        self.live.hypervolume = curve[-1] if curve else 0.0

    def _keep(self, reference: list[float], logged: bool) -> None:
        if self.folder is not None:
            write_atomic(self.folder / REFERENCE_FILE, json.dumps(
                {"metrics": self.names, "reference": [float(v) for v in reference], "curves_logged": logged}))

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


REFERENCE_FILE = "front.reference.json"  # the default reference point chosen for a sweep


def stored_reference(folder: Path | None, names: list[str]) -> tuple[list[float], bool] | None:
    """The default reference point a sweep chose (in its state folder) and whether its
    hypervolume curves are logged already; None when none was chosen (or for other metrics)."""
    if folder is None:
        return None
    path = folder / REFERENCE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written atomically, so only a hand-edited file gets here
        from harness.files import StateFileError

        raise StateFileError(f"{path}: not readable JSON; delete it to choose the reference point again") from None
    if doc.get("metrics") != names:
        return None
    return [float(v) for v in doc["reference"]], bool(doc.get("curves_logged"))
