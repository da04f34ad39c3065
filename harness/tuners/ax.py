"""Ax backend on ``ax.api.Client`` (the 1.x API; not the deprecated ``AxClient``).

Translation from the spec, faithful or refused (never a silently changed domain):

- ``float`` / ``int`` -> ``RangeParameterConfig`` with ``scaling="log"`` where the spec says
  ``log``; a range with ``low == high`` becomes a one-value choice (Ax's fixed parameter).
- ``choice`` -> ``ChoiceParameterConfig`` of one type (str, int, float or bool; a mix is refused).
- ``when: {parent: value}`` -> ``ChoiceParameterConfig(dependent_parameters={value: [child]})``
  (Ax's hierarchical search space). Ax's space is a tree, so a child active for several values
  of its parent (``when: {method: [a, b]}``) gets one copy per value (``gamma__method_0``,
  ``gamma__method_1``, each with the same domain) and the copies map back to ``gamma``; the set
  of configurations is exactly the spec's. A condition on two parents is refused.

Dispatch: ``ask(n)`` asks Ax for as many trials as there are free workers
(``get_next_trials(max_trials=n)``). All ``Client`` calls run on one background thread, which
also computes the next suggestion while the workers are busy (one ahead, recomputed after each
tell), so a GP fit of 0.3 to 4 s does not leave a worker idle. ``report`` attaches the value at
``progression=step`` and asks ``should_stop_trial_early``; the answer reaches the trial at its
next report (fire-and-forget), and a stopped trial is ``mark_trial_early_stopped`` (pruned).
The client's state is written to ``ax.json`` in the sweep's state folder after every change of
a trial's state (asked, stopped, finished; intermediate data goes with the next one), atomically:
write a temporary file, then ``os.replace``. A save costs about half a second, so results are
saved in batches; until then each told result is in ``ax.results.jsonl``, appended before
``tell`` returns (and so before MLflow hears of it). ``restore`` replays that log onto the saved
client, so a driver killed between a result and the next save loses nothing.

This module imports Ax at module level; it is imported only for ``--tuner ax``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.files import append_line, read_jsonl, repair_jsonl
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
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
from harness.tuners.base import Tuner, TunerError, TunerOptions, sample_uniform

_disabled = logging.root.manager.disable
logging.disable(logging.INFO)  # Ax logs INFO lines on import: keep the CLI's stderr to errors
try:
    from ax.api import Client
    from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig
    from ax.api.utils.instantiation.from_config import parameter_from_config
    from ax.core.parameter import ChoiceParameter, FixedParameter, RangeParameter
    from ax.early_stopping.strategies import PercentileEarlyStoppingStrategy
    from ax.utils.common.logger import set_stderr_log_level
finally:
    logging.disable(_disabled)
set_stderr_log_level(logging.ERROR)

METHODS = ("fast", "quality", "random_search")
STATE_FILE = "ax.json"
RESULTS_FILE = "ax.results.jsonl"  # every told result, one JSON line each (a write-ahead log)

AxConfig = RangeParameterConfig | ChoiceParameterConfig

log = logging.getLogger("harness.ax")


# -- translation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AxParam:
    """One Ax parameter: the spec parameter it stands for and the branch that activates it."""

    ax_name: str
    spec_name: str
    config: AxConfig
    conditions: tuple[tuple[str, Any], ...] = ()  # (parent's Ax name, value) pairs, outermost first


@dataclass
class Translation:
    params: list[AxParam] = field(default_factory=list)

    @property
    def configs(self) -> list[AxConfig]:
        return [p.config for p in self.params]

    def to_spec(self, ax_params: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
        """An Ax parameterization back in the spec's names and types (inactive ones dropped)."""
        by_name = {p.ax_name: p for p in self.params}
        out: dict[str, Any] = {}
        for ax_name, value in ax_params.items():
            if ax_name not in by_name or value is None:
                continue
            name = by_name[ax_name].spec_name
            out[name] = _cast(spec.params[name], value)
        return spec.active_params(out)

    def to_ax(self, params: dict[str, Any]) -> dict[str, Any]:
        """Spec-named params (an active configuration) in Ax's names."""
        out: dict[str, Any] = {}
        for p in self.params:  # parents come before their children
            if p.spec_name in params and all(out.get(k, _MISSING) == v for k, v in p.conditions):
                out[p.ax_name] = params[p.spec_name]
        return out


_MISSING = object()


def _cast(p: FloatParam | IntParam | ChoiceParam, value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value  # numpy scalars from Ax
    if isinstance(p, FloatParam):
        return float(value)
    if isinstance(p, IntParam):
        return int(round(float(value)))
    for v in p.values:  # the spec's own object
        if v == value and isinstance(v, bool) == isinstance(value, bool):
            return v
    return value


def _choice_type(name: str, values: list[Any]) -> str:
    kinds = {("bool" if isinstance(v, bool) else "int" if isinstance(v, int) else
              "float" if isinstance(v, float) else "str") for v in values}
    if len(kinds) != 1:
        raise TunerError(
            f"params.{name}: Ax needs the values of a choice to be of one type, got "
            f"{sorted(kinds)} in {values} (write them all as strings or all as numbers of one type)"
        )
    return kinds.pop()


def _config(ax_name: str, p: FloatParam | IntParam | ChoiceParam,
            dependents: dict[Any, list[str]] | None) -> AxConfig:
    if isinstance(p, ChoiceParam):
        kind = _choice_type(ax_name, p.values)
        return ChoiceParameterConfig(
            name=ax_name, values=list(p.values), parameter_type=kind,  # type: ignore[arg-type]
            is_ordered=kind in ("int", "float"), dependent_parameters=dependents or None,
        )
    kind = "float" if isinstance(p, FloatParam) else "int"
    if p.low == p.high:  # Ax's ranges need low < high; one value is Ax's fixed parameter
        return ChoiceParameterConfig(name=ax_name, values=[p.low], parameter_type=kind)  # type: ignore[arg-type]
    return RangeParameterConfig(
        name=ax_name, bounds=(p.low, p.high), parameter_type=kind,  # type: ignore[arg-type]
        scaling="log" if p.log else "linear",
    )


def translate(spec: SweepSpec) -> Translation:
    """The spec as Ax parameter configs; :class:`TunerError` (one line) when Ax cannot express it."""
    children: dict[str, dict[Any, list[str]]] = {}  # parent -> value -> children
    for name, p in spec.params.items():
        if not p.when:
            continue
        if len(p.when) > 1:
            parents = ", ".join(p.when)
            raise TunerError(
                f"params.{name}.when names {len(p.when)} parents ({parents}): Ax's hierarchical "
                "search space is a tree with one parent per parameter; nest the conditions or "
                "use --tuner optuna, ray or random"
            )
        ((parent, allowed),) = p.when.items()
        for value in allowed if isinstance(allowed, list) else [allowed]:
            children.setdefault(parent, {}).setdefault(value, []).append(name)

    out = Translation()
    taken = set(spec.params)

    def emit(name: str, ax_name: str, conditions: tuple[tuple[str, Any], ...]) -> None:
        p = spec.params[name]
        branches = children.get(name, {})
        plan: list[tuple[Any, str, str]] = []  # (value, child, child's Ax name)
        dependents: dict[Any, list[str]] = {}
        for i, value in enumerate(getattr(p, "values", [])):
            for child in branches.get(value, []):
                several = sum(child in kids for kids in branches.values()) > 1
                child_ax = f"{child}{ax_name[len(name):]}" + (f"__{name}_{i}" if several else "")
                if child_ax != child and child_ax in taken:
                    raise TunerError(
                        f"params.{child}: its Ax copy name '{child_ax}' clashes with another "
                        "parameter; rename one of them"
                    )
                taken.add(child_ax)
                plan.append((value, child, child_ax))
                dependents.setdefault(value, []).append(child_ax)
        out.params.append(AxParam(ax_name, name, _config(ax_name, p, dependents), conditions))
        for value, child, child_ax in plan:
            emit(child, child_ax, (*conditions, (ax_name, value)))

    for name in spec.order():
        if not spec.params[name].when:
            emit(name, name, ())
    return out


def check_space(spec: SweepSpec) -> None:
    """Raise :class:`TunerError` when Ax cannot express the space (for ``prepare``)."""
    tr = translate(spec)
    from ax.core.search_space import SearchSpace
    from ax.exceptions.core import UserInputError

    try:
        SearchSpace(parameters=[parameter_from_config(c) for c in tr.configs])
    except (UserInputError, ValueError) as exc:
        raise TunerError(f"Ax cannot express this space: {str(exc).splitlines()[0]}") from None


def domains(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """Each spec parameter's domain as Ax's own parameter objects hold it (for the contract test).

    ``("float"|"int", low, high, log)`` or ``("choice", values)``; every copy of a parameter
    (one per parent value) must carry the same domain, which is checked here.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for p in translate(spec).params:
        core = parameter_from_config(p.config)
        if isinstance(core, RangeParameter):
            kind = "int" if core.parameter_type.name == "INT" else "float"
            dom: tuple[Any, ...] = (kind, core.lower, core.upper, bool(core.log_scale))
        elif isinstance(core, FixedParameter):
            sp = spec.params[p.spec_name]
            dom = (sp.type, core.value, core.value, bool(getattr(sp, "log", False))) \
                if not isinstance(sp, ChoiceParam) else ("choice", [core.value])
        else:
            assert isinstance(core, ChoiceParameter)
            dom = ("choice", sorted(core.values, key=repr))
        if p.spec_name in out and out[p.spec_name] != dom:
            raise AssertionError(f"{p.spec_name}: Ax copies differ: {out[p.spec_name]} vs {dom}")
        out[p.spec_name] = dom
    return out


def _metric_name(name: str) -> str:
    """Ax parses the objective string: keep the metric name an identifier."""
    safe = re.sub(r"\W", "_", name)
    return safe if safe and not safe[0].isdigit() else f"m_{safe}"


def optimization(spec: SweepSpec) -> dict[str, Any]:
    """``configure_optimization``'s arguments: one objective, or several as Ax's comma-separated
    string (``"-branin, -currin"``: a leading minus minimizes). With several, the spec's reference
    point becomes Ax's objective thresholds: in ax-platform 1.3 an outcome constraint on an
    objective metric of a multi-objective string is turned into its objective threshold
    (``ax.api.utils.instantiation.from_string.optimization_config_from_string``)."""
    terms = [("-" if m.goal == "minimize" else "") + _metric_name(m.name) for m in spec.metrics]
    out: dict[str, Any] = {"objective": ", ".join(terms)}
    if spec.multi and all(m.reference is not None for m in spec.metrics):
        out["outcome_constraints"] = [
            f"{_metric_name(m.name)} {'<=' if m.goal == 'minimize' else '>='} {float(m.reference):.17g}"  # type: ignore[arg-type]
            for m in spec.metrics
        ]
    return out


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
REQUEUE = "harness_requeue_of"  # run metadata of an interrupted trial's second run
PRUNED_EARLY = "harness: pruned before its first report"  # abandoned: Ax's stop needs data


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
        self.metric = _metric_name(spec.metric.name)
        self.state_path = state_path
        self.budget = budget
        self.seed = seed
        self.early_stopping = early_stopping
        self.min_curves = min_curves
        self.fallbacks = 0  # suggestions drawn at random because Ax could not generate one
        self.saves = 0
        self.stop_checks = 0
        trials = client._experiment.trials.values()
        self._generated = sum(1 for t in trials if not _is_spare(t))  # toward the budget
        self._completed_curves = sum(1 for t in trials if t.status.name == "COMPLETED")
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
        idx = self.client.attach_trial(self.tr.to_ax(params))
        if requeue_of is not None:
            self.client._experiment.trials[idx].update_run_metadata({REQUEUE: requeue_of})
        self._first.append(Suggestion(idx, self.spec.active_params(params)))
        self._generated += 1
        self._save()

    def restore(self) -> Restored:
        """Read the saved client back: trials a dead driver left running are failed
        (``interrupted``) and their parameters queued to run once more."""
        if self._thread is not None:
            raise TunerError("restore() after the sweep started")
        results: list[TrialResult] = []
        asked, told = self._read_log()
        for r in told:  # told, but maybe not saved before the driver died
            self._finish(r)
        runs = {r.number: r for r in told}  # seed and seconds: Ax keeps neither
        trials = self.client._experiment.trials
        for idx, trial in trials.items():  # computed ahead, never handed out: not interrupted
            if (asked is not None and idx not in asked and trial.status.name in ("RUNNING", "CANDIDATE", "STAGED")):
                trial.mark_abandoned(reason=SPARE)
        done = {t.run_metadata.get(REQUEUE) for t in trials.values() if not _is_spare(t)}
        for idx, trial in sorted(trials.items()):
            if _is_spare(trial) or trial.arm is None:
                continue
            params = self.tr.to_spec(dict(trial.arm.parameters), self.spec)
            status = trial.status.name
            told_run = runs.get(idx)
            seed = told_run.seed if told_run is not None else trial_seed(self.seed, idx)
            seconds = told_run.seconds if told_run is not None else None
            if status in ("RUNNING", "CANDIDATE", "STAGED") or trial.status_reason == INTERRUPTED:
                if status != "FAILED":
                    self.client.mark_trial_failed(idx, failed_reason=INTERRUPTED)
                results.append(interrupted_result(idx, params, seed=seed, seconds=seconds or 0.0))
                continue
            state = {"COMPLETED": TrialState.COMPLETE, "EARLY_STOPPED": TrialState.PRUNED,
                     "ABANDONED": TrialState.PRUNED}.get(status, TrialState.FAILED)
            value, steps = self._last_value(idx)
            reason = trial.status_reason if state is TrialState.FAILED else None
            metrics = self._final_metrics(idx) if self.spec.multi and state is TrialState.COMPLETE else {}
            results.append(TrialResult(idx, params, state, value=value, steps=steps, reason=reason, seed=seed,
                                       metrics=metrics, seconds=seconds if seconds is not None
                                       else float(metrics.get("seconds", 0.0))))
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
                else:  # what attach_data does, for several progressions at once (~30 ms a call)
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
        if self._status(r.number) not in ("RUNNING", "CANDIDATE", "STAGED"):
            return
        if r.state is TrialState.COMPLETE:
            assert r.value is not None
            self.client.complete_trial(r.number, raw_data=self._raw_data(r), progression=r.steps)
            self._completed_curves += 1
        elif r.state is TrialState.PRUNED and r.number in self._with_data:
            self.client.mark_trial_early_stopped(r.number)
        elif r.state is TrialState.PRUNED and r.value is not None and math.isfinite(r.value) and r.steps > 0:
            # reports not attached yet (a replayed result): its last one is enough for Ax
            self.client.attach_data(r.number, {self.metric: float(r.value)}, progression=r.steps)
            self.client.mark_trial_early_stopped(r.number)
        elif r.state is TrialState.PRUNED:  # Ax needs data for EARLY_STOPPED
            self.client._experiment.trials[r.number].mark_abandoned(reason=PRUNED_EARLY)
        else:
            self.client.mark_trial_failed(r.number, failed_reason=(r.reason or "failed")[:500])

    def _generate(self, n: int) -> list[Suggestion]:
        try:
            trials = self.client.get_next_trials(max_trials=n)
        except Exception as exc:  # a model that cannot be fit must not stop the sweep
            log.warning("Ax could not generate trials (%s); drawing at random", str(exc)[:200])
            trials = {}
        got = [Suggestion(idx, self.tr.to_spec(dict(p), self.spec)) for idx, p in sorted(trials.items())]
        while len(got) < n:  # Ax gave fewer (a spent discrete space, a failed fit): keep workers fed
            rng = np.random.default_rng([self.seed, 7, self._generated + len(got)])
            params = sample_uniform(self.spec, rng)
            idx = self.client.attach_trial(self.tr.to_ax(params))
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
            self.client._experiment.trials[s.number].mark_abandoned(reason=SPARE)

    def _raw_data(self, r: TrialResult) -> dict[str, float]:
        """A complete trial's objective values in Ax's metric names (all of them when several)."""
        if not self.spec.multi:
            return {self.metric: float(r.value)}  # type: ignore[arg-type]
        values = objective_values(r, [m.name for m in self.spec.metrics])
        assert values is not None, f"trial {r.number}: complete without every objective"
        return {_metric_name(m.name): v for m, v in zip(self.spec.metrics, values, strict=True)}

    def _final_metrics(self, number: int) -> dict[str, float]:
        """A complete multi-objective trial's values read back (resume), in the spec's names."""
        df = self.client._experiment.lookup_data(trial_indices=[number]).full_df
        out: dict[str, float] = {}
        for m in self.spec.metrics:
            rows = df[df["metric_name"] == _metric_name(m.name)]
            if not rows.empty:
                out[m.name] = float(rows.sort_values("step").iloc[-1]["mean"]) if "step" in rows else \
                    float(rows.iloc[-1]["mean"])
        return out

    def _status(self, number: int) -> str | None:
        trial = self.client._experiment.trials.get(number)
        return None if trial is None else trial.status.name

    def _last_value(self, number: int) -> tuple[float | None, int]:
        df = self.client._experiment.lookup_data(trial_indices=[number]).full_df
        df = df[df["metric_name"] == self.metric]
        if df.empty:
            return None, 0
        row = df.sort_values("step").iloc[-1]
        step = row.get("step", 0)
        return float(row["mean"]), int(step) if step == step else 0  # NaN: no progression

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

    def _read_log(self) -> tuple[set[int] | None, list[TrialResult]]:
        """The trials handed to the sweep (None: no log) and the results told, in order."""
        path = self.state_path.with_name(RESULTS_FILE) if self.state_path is not None else None
        if path is None or not path.exists():
            return None, []
        asked: set[int] = set()
        told: list[TrialResult] = []
        trials = self.client._experiment.trials
        repair_jsonl(path)  # a line cut short by a crash mid-write is moved aside
        for rec in read_jsonl(path):
            if rec.get("event") == "asked":
                asked.update(rec["numbers"])
                continue
            trial = trials.get(rec["number"])
            if trial is None or trial.arm is None:
                continue
            params = self.tr.to_spec(dict(trial.arm.parameters), self.spec)
            told.append(TrialResult(rec["number"], params, TrialState(rec["state"]), value=rec["value"],
                                    steps=int(rec["steps"] or 0), reason=rec["reason"],
                                    metrics=dict(rec.get("metrics") or {}),
                                    seed=int(rec.get("seed", trial_seed(self.seed, rec["number"]))),
                                    seconds=float(rec.get("seconds", 0.0))))
        return asked, told

    def _save(self) -> None:
        """The client as JSON, atomically (write a temporary file, then os.replace)."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        self.client.save_to_json_file(str(tmp))
        os.replace(tmp, self.state_path)
        self.saves += 1


def _is_spare(trial: Any) -> bool:
    return trial.status.name == "ABANDONED" and trial.status_reason == SPARE


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
