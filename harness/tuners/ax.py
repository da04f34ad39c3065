"""Ax backend on ``ax.api.Client`` (the 1.x API; not the deprecated ``AxClient``).

The spec's translation (parameters, conditions, objectives) is :mod:`harness.tuners.ax_space`.

Dispatch: ``ask(n)`` asks Ax for as many trials as there are free workers
(``get_next_trials(max_trials=n)``). All ``Client`` calls run on one background thread, which
also computes the next suggestion while the workers are busy (one ahead, recomputed after each
tell), so a GP fit of 0.3 to 4 s does not leave a worker idle. ``report`` attaches the value at
``progression=step`` and asks ``should_stop_trial_early``; the answer reaches the trial at its
next report (fire-and-forget), and a stopped trial is ``mark_trial_early_stopped`` (pruned).

State: the client is written to ``ax.json`` in the sweep's state folder after every change of a
trial's state (asked, stopped, finished; intermediate data goes with the next one), atomically
(:func:`harness.files.write_atomic_via`). A save costs about half a second, so results are saved
in batches; until then each told result is in ``ax.results.jsonl``, appended before ``tell``
returns (and so before MLflow hears of it). That log also holds what Ax keeps nowhere (the
trials handed out, each result's seed, seconds, value and steps, which trial re-runs which), so
``restore`` reads the client's trials through its public ``summarize()`` and the rest from the
log, and replays results not yet saved: a driver killed between a result and the next save
loses nothing.

Private Ax attributes still used, where ``Client`` 1.3 has no public equivalent:
``client._experiment.trials[i].update_trial_data`` (several progressions of one trial in one
call; the public ``attach_data`` takes one, ~30 ms each) and ``mark_abandoned(reason=SPARE)``
(``Client.mark_trial_abandoned`` takes no reason; the reason marks a suggestion computed ahead
and never run, which a resume, and tests/reliability/test_resume.py, tell from a pruned trial).

This module imports Ax at module level (quietly: :func:`~harness.tuners.ax_space.quiet_ax_import`);
it is imported only for ``--tuner ax``. Ax's stderr log level is set when a client is created.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.files import append_line, read_jsonl, repair_jsonl, write_atomic_via
from harness.spec import SweepSpec
from harness.trials import (
    INTERRUPTED,
    Restored,
    Suggestion,
    TrialResult,
    TrialState,
    interrupted_result,
    objective_values,
    resume_rule,
    trial_seed,
)
from harness.tuners.ax_space import (  # noqa: F401  (check_space, domains, optimization: re-exported)
    Translation,
    check_space,
    domains,
    metric_name,
    optimization,
    quiet_ax_import,
    translate,
)
from harness.tuners.base import Tuner, TunerError, TunerOptions, sample_uniform

with quiet_ax_import():
    from ax.api import Client
    from ax.early_stopping.strategies import PercentileEarlyStoppingStrategy
    from ax.utils.common.logger import set_stderr_log_level

METHODS = ("fast", "quality", "random_search")
STATE_FILE = "ax.json"
RESULTS_FILE = "ax.results.jsonl"  # every told result, one JSON line each (a write-ahead log)

log = logging.getLogger("harness.ax")


def early_stopping_strategy(min_curves: int = 4) -> PercentileEarlyStoppingStrategy:
    """Stop a trial below the median of the others at the same (normalized) progression, once
    ``min_curves`` trials have completed and it is 30 % into its curve (Optuna's MedianPruner
    waits for 4 trials too)."""
    return PercentileEarlyStoppingStrategy(
        percentile_threshold=50.0, min_curves=min_curves, min_progression=0.3,
        normalize_progressions=True,
    )


# -- the tuner ---------------------------------------------------------------------------------
SPARE = "harness: computed ahead, never asked for"
OPEN = ("RUNNING", "CANDIDATE", "STAGED")  # Ax's states of a trial that has not ended


class AxTuner(Tuner):
    """Ask / report / tell on an Ax ``Client``; once the sweep runs, only one background
    thread touches the client."""

    name = "ax"
    resumable = True
    takes = ("ax_method",)

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        """An unknown ``--ax-method``, or a space Ax cannot express."""
        method = options.ax_method or options.extra.get("ax_method")
        if method is not None and method not in METHODS:
            raise TunerError(f"--ax-method {method}: unknown method (use one of {', '.join(METHODS)})")
        check_space(spec)
    AHEAD = 1  # suggestions computed ahead of demand while the workers are busy
    SAVE_EVERY_S = 2.0  # results are saved at least this often while more keep arriving

    def __init__(self, spec: SweepSpec, client: Client, translation: Translation, *,
                 state_path: Path | None, budget: int | None, seed: int,
                 early_stopping: bool = True, min_curves: int = 4) -> None:
        self.spec = spec
        self.client = client
        self.tr = translation
        self.metric = metric_name(spec.metric.name)
        self.state_path = state_path
        self.budget = budget
        self.seed = seed
        self.early_stopping = early_stopping
        self.min_curves = min_curves
        self.fallbacks = 0  # suggestions drawn at random because Ax could not generate one
        self.saves = 0
        self.stop_checks = 0
        # each trial's Ax status and reason, read once through the public summary, then kept
        # current here (this tuner makes every change of state)
        self._trials = _trial_table(client, translation)
        self._generated = sum(1 for t in self._trials.values() if t.reason != SPARE)  # toward the budget
        self._completed_curves = sum(1 for t in self._trials.values() if t.status == "COMPLETED")
        self._cv = threading.Condition()
        self._events: list[tuple[Any, ...]] = []  # for the thread: ("data", ...) / ("tell", r)
        self._first: deque[Suggestion] = deque()  # enqueued configurations, asked for first
        self._ready: deque[Suggestion] = deque()  # generated ahead, not yet asked for
        self._demand = 0  # suggestions an ask() is waiting for
        self._stop: set[int] = set()  # trials Ax decided to stop
        self._with_data: set[int] = set()
        self._busy = False
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> AxTuner:
        pin_threads()
        extra = options.extra
        method = options.ax_method or extra.get("ax_method") or "fast"
        if method not in METHODS:
            raise TunerError(f"--ax-method {method}: unknown method (use one of {', '.join(METHODS)})")
        tr = translate(spec)
        state_path = options.state_dir / STATE_FILE if options.state_dir is not None else None
        if state_path is not None and state_path.exists():
            try:
                client = Client.load_from_json_file(str(state_path))
            except ValueError:  # JSONDecodeError: a damaged file, not a torn append
                raise TunerError(f"{state_path}: Ax's saved state is not readable JSON (damaged); restore it "
                                 "from a backup or start the sweep under another --name") from None
        else:
            if state_path is not None:  # a log without its client belongs to no trial of this one
                state_path.with_name(RESULTS_FILE).unlink(missing_ok=True)
            client = Client(random_seed=options.seed)
            client.configure_experiment(parameters=tr.configs, name=options.study_name or "harness")
            client.configure_optimization(**optimization(spec))
            init = extra.get("ax_init_trials")
            client.configure_generation_strategy(
                method=method, initialization_random_seed=options.seed,
                initialization_budget=int(init) if init is not None else None,
                # never pause generation to wait for results: a free worker always gets a trial
                allow_exceeding_initialization_budget=True,
            )
        min_curves = int(extra.get("ax_min_curves", 4))
        client.set_early_stopping_strategy(early_stopping_strategy(min_curves))
        budget = options.budget or extra.get("budget")
        return cls(spec, client, tr, state_path=state_path, seed=options.seed,
                   budget=int(budget) if budget else None,
                   # Ax's percentile early stopping reads one objective: none with several
                   early_stopping=bool(extra.get("ax_early_stopping", True)) and not spec.multi,
                   min_curves=min_curves)

    # -- the protocol (called from the sweep loop) ------------------------------------------
    def ask(self, n: int) -> list[Suggestion]:
        """Up to ``n`` suggestions; waits only while none is ready and one is being computed."""
        self._start()
        with self._cv:
            self._demand = n
            self._cv.notify_all()
            while (not self._first and not self._ready and self._can_generate()
                   and self._error is None):
                self._cv.wait(timeout=1.0)
            if self._error is not None:
                raise TunerError(f"Ax failed: {str(self._error).splitlines()[0][:300]}") from self._error
            out: list[Suggestion] = []
            for q in (self._first, self._ready):
                while q and len(out) < n:
                    out.append(q.popleft())
            self._demand = 0
            self._cv.notify_all()  # compute the next one ahead
        self._log({"event": "asked", "numbers": [x.number for x in out]})
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        """Attach the value (on the thread); True once Ax has decided to stop the trial."""
        if not self.early_stopping:
            return False  # the fit uses final values only: no need to pay for the curve
        self._start()
        with self._cv:
            self._events.append(("data", number, int(step), float(value)))
            self._cv.notify_all()
            return number in self._stop

    def tell(self, result: TrialResult) -> None:
        self._log_result(result)  # durable before the sweep records it anywhere else
        self._start()
        with self._cv:
            self._events.append(("tell", result))
            self._cv.notify_all()

    def enqueue(self, params: dict[str, Any], requeue_of: int | None = None) -> None:
        """Evaluate ``params`` before Ax's own suggestions (attached as a trial of its own)."""
        if self._thread is not None:
            raise TunerError("enqueue() after the sweep started")
        ax_params = self.tr.to_ax(params)
        idx = self.client.attach_trial(ax_params)
        self._trials[idx] = _Trial("RUNNING", None, ax_params)
        if requeue_of is not None:  # written ahead, so a second resume does not queue it again
            self._log({"event": "requeued", "number": idx, "of": requeue_of})
        self._first.append(Suggestion(idx, self.spec.active_params(params)))
        self._generated += 1
        self._save()

    def restore(self) -> Restored:
        """Read the saved client back: trials a dead driver left running are failed
        (``interrupted``) and their parameters queued to run once more."""
        if self._thread is not None:
            raise TunerError("restore() after the sweep started")
        results: list[TrialResult] = []
        asked, told, done = self._read_log()
        for r in told:  # told, but maybe not saved before the driver died
            self._finish(r)
        runs = {r.number: r for r in told}  # value, steps, metrics, seed and seconds of each result
        for idx, t in self._trials.items():  # computed ahead, never handed out: not interrupted
            if asked is not None and idx not in asked and t.status in OPEN:
                self._abandon(idx)
        for idx, t in sorted(self._trials.items()):
            if t.reason == SPARE:
                continue
            params = self.tr.to_spec(t.params, self.spec)
            told_run = runs.get(idx)
            seed = told_run.seed if told_run is not None else trial_seed(self.seed, idx)
            if t.status in OPEN or t.reason == INTERRUPTED:
                if t.status != "FAILED":
                    self.client.mark_trial_failed(idx, failed_reason=INTERRUPTED)
                    self._trials[idx] = _Trial("FAILED", INTERRUPTED, t.params)
                results.append(interrupted_result(idx, params, seed=seed,
                                                  seconds=told_run.seconds if told_run is not None else 0.0))
                continue
            state = {"COMPLETED": TrialState.COMPLETE, "EARLY_STOPPED": TrialState.PRUNED,
                     "ABANDONED": TrialState.PRUNED}.get(t.status, TrialState.FAILED)
            if told_run is None:  # finished in ax.json, never told: a sweep of an older harness
                results.append(TrialResult(idx, params, state, seed=seed,
                                           reason=t.reason if state is TrialState.FAILED else None))
                continue
            metrics = told_run.metrics if self.spec.multi and state is TrialState.COMPLETE else {}
            results.append(TrialResult(idx, params, state, value=told_run.value, steps=told_run.steps, seed=seed,
                                       reason=told_run.reason if state is TrialState.FAILED else None,
                                       metrics=metrics, seconds=told_run.seconds))
        requeue: list[TrialResult] = []
        out = resume_rule(results, done, requeue.append)
        self._generated = len(out.finished)
        self._completed_curves = sum(1 for r in out.finished if r.state is TrialState.COMPLETE)
        for r in requeue:  # after the counts: an enqueue may start generating
            self.enqueue(r.params, requeue_of=r.number)
        self._save()
        return out

    def close(self) -> None:
        if self._thread is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout=300)
        self._thread = None

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Block until the thread has applied every queued event and filled its buffer."""
        with self._cv:
            self._cv.wait_for(
                lambda: (not self._events and not self._busy and self._wanted() == 0)
                or self._error is not None or self._thread is None,
                timeout=timeout,
            )

    # -- the background thread -------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="harness-ax", daemon=True)
            self._thread.start()

    def _can_generate(self) -> bool:
        return self.budget is None or self._generated < self.budget

    def _wanted(self) -> int:
        if self._closing or not self._can_generate():
            return 0
        want = max(self._demand, 0) + self.AHEAD - len(self._ready) - len(self._first)
        if self.budget is not None:
            want = min(want, self.budget - self._generated)
        return max(want, 0)

    def _loop(self) -> None:
        """Results first (the next fit uses them), then generation. Suggestions are saved before
        the sweep sees them (a trial that runs is always in ax.json); other changes are saved
        once no result waits (they would delay the early-stopping decisions), at least every
        ``SAVE_EVERY_S``."""
        dirty_since: float | None = None
        try:
            while True:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                    idle = lambda: self._closing or bool(self._events) or self._wanted() > 0  # noqa: E731
                    if dirty_since is not None:  # a pending save: wait a moment for more results
                        self._cv.wait_for(idle, timeout=0.05)
                    else:
                        self._cv.wait_for(idle)
                    events, self._events = self._events, []
                    closing = self._closing
                    self._busy = True
                    more = bool(self._events)
                if self._apply(events) and dirty_since is None:
                    dirty_since = time.monotonic()
                with self._cv:
                    want = self._wanted()
                    more = more or bool(self._events)
                if want > 0:
                    got = self._generate(want)
                    self._save()  # before the sweep can run them
                    dirty_since = None
                    self._publish(got)
                if closing:
                    self._abandon_spares()
                    self._save()
                    break
                if dirty_since is not None and (not more or time.monotonic() - dirty_since > self.SAVE_EVERY_S):
                    with self._cv:
                        more = bool(self._events)
                    if not more or time.monotonic() - dirty_since > self.SAVE_EVERY_S:
                        self._save()
                        dirty_since = None
        except Exception as exc:  # reported to the sweep loop by the next ask
            log.exception("Ax thread failed")
            with self._cv:
                self._error = exc
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _apply(self, events: list[tuple[Any, ...]]) -> bool:
        """Attach data, record outcomes, decide early stops. True when a trial's state changed
        (a save costs about 0.5 s: intermediate data alone waits for the next state change,
        which saves it too; a trial running at a crash is run again anyway)."""
        fresh: set[int] = set()  # trials with new data in this batch
        changed = False
        points: dict[int, list[tuple[int, dict[str, float]]]] = {}
        for ev in events:  # a trial's reports in one batch are attached together
            if ev[0] == "data":
                _, number, step, value = ev
                points.setdefault(number, []).append((step, {self.metric: value}))
        for ev in events:
            if ev[0] == "data":
                number = ev[1]
                batch = points.pop(number, None)
                if not batch or self._status(number) != "RUNNING":
                    continue
                if len(batch) == 1:
                    self.client.attach_data(number, batch[0][1], progression=batch[0][0])
                else:  # what attach_data does, for several progressions at once (~30 ms a call;
                    # Client 1.3 has no public call for several: the one private use kept here)
                    self.client._experiment.trials[number].update_trial_data(raw_data=batch)
                self._with_data.add(number)
                fresh.add(number)
            else:
                self._finish(ev[1])
                fresh.discard(ev[1].number)
                changed = True
        if self.early_stopping and self._completed_curves >= self.min_curves:
            for number in sorted(fresh):  # one check per trial and batch: each costs ~0.1 s
                self.stop_checks += 1
                if self.client.should_stop_trial_early(number):
                    with self._cv:
                        self._stop.add(number)
                    changed = True
        return changed

    def _finish(self, r: TrialResult) -> None:
        t = self._trials.get(r.number)
        if t is None or t.status not in OPEN:
            return
        if r.state is TrialState.COMPLETE:
            assert r.value is not None
            self.client.complete_trial(r.number, raw_data=self._raw_data(r), progression=r.steps)
            self._completed_curves += 1
            status, reason = "COMPLETED", None
        elif r.state is TrialState.PRUNED and r.number in self._with_data:
            self.client.mark_trial_early_stopped(r.number)
            status, reason = "EARLY_STOPPED", None
        elif r.state is TrialState.PRUNED and r.value is not None and math.isfinite(r.value) and r.steps > 0:
            # reports not attached yet (a replayed result): its last one is enough for Ax
            self.client.attach_data(r.number, {self.metric: float(r.value)}, progression=r.steps)
            self.client.mark_trial_early_stopped(r.number)
            status, reason = "EARLY_STOPPED", None
        elif r.state is TrialState.PRUNED:  # Ax needs data for EARLY_STOPPED: pruned before its first report
            self.client.mark_trial_abandoned(r.number)
            status, reason = "ABANDONED", None
        else:
            reason = (r.reason or "failed")[:500]
            self.client.mark_trial_failed(r.number, failed_reason=reason)
            status = "FAILED"
        self._trials[r.number] = _Trial(status, reason, t.params)

    def _generate(self, n: int) -> list[Suggestion]:
        try:
            trials = self.client.get_next_trials(max_trials=n)
        except Exception as exc:  # a model that cannot be fit must not stop the sweep
            log.warning("Ax could not generate trials (%s); drawing at random", str(exc)[:200])
            trials = {}
        got = [Suggestion(idx, self.tr.to_spec(dict(p), self.spec)) for idx, p in sorted(trials.items())]
        for idx, p in trials.items():
            self._trials[idx] = _Trial("RUNNING", None, dict(p))
        while len(got) < n:  # Ax gave fewer (a spent discrete space, a failed fit): keep workers fed
            rng = np.random.default_rng([self.seed, 7, self._generated + len(got)])
            params = sample_uniform(self.spec, rng)
            ax_params = self.tr.to_ax(params)
            idx = self.client.attach_trial(ax_params)
            self._trials[idx] = _Trial("RUNNING", None, ax_params)
            got.append(Suggestion(idx, params))
            self.fallbacks += 1
        return got

    def _publish(self, got: list[Suggestion]) -> None:
        with self._cv:
            self._ready.extend(got)
            self._generated += len(got)
            self._cv.notify_all()

    def _abandon_spares(self) -> None:
        """Suggestions computed ahead and never asked for: abandoned, and a resume skips them."""
        with self._cv:
            spares = [*self._first, *self._ready]
            self._first.clear()
            self._ready.clear()
        for s in spares:
            self._abandon(s.number)

    def _abandon(self, number: int) -> None:
        """A suggestion never run: abandoned with the reason SPARE, which ``Client``'s public
        ``mark_trial_abandoned`` cannot give (the other private use kept: the reason tells a
        resume, and anyone reading ax.json, that the trial does not count)."""
        self.client._experiment.trials[number].mark_abandoned(reason=SPARE)
        self._trials[number] = _Trial("ABANDONED", SPARE, self._trials[number].params)

    def _raw_data(self, r: TrialResult) -> dict[str, float]:
        """A complete trial's objective values in Ax's metric names (all of them when several)."""
        if not self.spec.multi:
            return {self.metric: float(r.value)}  # type: ignore[arg-type]
        values = objective_values(r, [m.name for m in self.spec.metrics])
        assert values is not None, f"trial {r.number}: complete without every objective"
        return {metric_name(m.name): v for m, v in zip(self.spec.metrics, values, strict=True)}

    def _status(self, number: int) -> str | None:
        t = self._trials.get(number)
        return None if t is None else t.status

    def _log_result(self, r: TrialResult) -> None:
        rec: dict[str, Any] = {"event": "told", "number": r.number, "state": r.state.value, "value": r.value,
                               "steps": r.steps, "reason": r.reason, "seed": r.seed, "seconds": r.seconds}
        if self.spec.multi and r.state is TrialState.COMPLETE:
            rec["metrics"] = dict(zip([m.name for m in self.spec.metrics],
                                      objective_values(r, [m.name for m in self.spec.metrics]) or [], strict=False))
        self._log(rec)

    def _log(self, record: dict[str, Any]) -> None:
        if self.state_path is not None:
            append_line(self.state_path.with_name(RESULTS_FILE), record)

    def _read_log(self) -> tuple[set[int] | None, list[TrialResult], set[int]]:
        """The trials handed to the sweep (None: no log), the results told, in order, and the
        trials whose re-run is queued already."""
        path = self.state_path.with_name(RESULTS_FILE) if self.state_path is not None else None
        if path is None or not path.exists():
            return None, [], set()
        asked: set[int] = set()
        told: list[TrialResult] = []
        requeued: set[int] = set()
        repair_jsonl(path)  # a line cut short by a crash mid-write is moved aside
        for rec in read_jsonl(path):
            if rec.get("event") == "asked":
                asked.update(rec["numbers"])
                continue
            if rec.get("event") == "requeued":
                requeued.add(int(rec["of"]))
                continue
            t = self._trials.get(rec["number"])
            if t is None:
                continue
            params = self.tr.to_spec(t.params, self.spec)
            told.append(TrialResult(rec["number"], params, TrialState(rec["state"]), value=rec["value"],
                                    steps=int(rec["steps"] or 0), reason=rec["reason"],
                                    metrics=dict(rec.get("metrics") or {}),
                                    seed=int(rec.get("seed", trial_seed(self.seed, rec["number"]))),
                                    seconds=float(rec.get("seconds", 0.0))))
        return asked, told, requeued

    def _save(self) -> None:
        """The client as JSON, atomically (a uniquely named temporary file, then os.replace)."""
        if self.state_path is None:
            return
        write_atomic_via(self.state_path, lambda tmp: self.client.save_to_json_file(str(tmp)))
        self.saves += 1


@dataclass(frozen=True)
class _Trial:
    """One Ax trial as this tuner tracks it: Ax's status name, its reason, its Ax parameters."""

    status: str
    reason: str | None
    params: dict[str, Any]


def _trial_table(client: Client, tr: Translation) -> dict[int, _Trial]:
    """Every trial of the client, through its public ``summarize()`` (one row per trial; an
    inactive conditional parameter is NaN there and left out here)."""
    df = client.summarize()
    if df.empty:
        return {}
    names = [p.ax_name for p in tr.params if p.ax_name in df.columns]
    out: dict[int, _Trial] = {}
    for row in df.to_dict("records"):
        reason = row.get("status_reason")
        params = {n: row[n] for n in names if not (isinstance(row[n], float) and math.isnan(row[n]))}
        out[int(row["trial_index"])] = _Trial(str(row["trial_status"]),
                                              reason if isinstance(reason, str) else None, params)
    return out


def pin_threads() -> None:
    """One torch thread in the driver: BO must not fight the trials for the cores. Ax's INFO
    logs and BoTorch's numerical warnings stay off the sweep's display."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass
    set_stderr_log_level(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(ax|botorch|gpytorch|linear_operator)(\.|$)")


__all__ = ["METHODS", "AxTuner", "Translation", "check_space", "domains", "translate"]
