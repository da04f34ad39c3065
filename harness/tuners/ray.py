"""Ray Tune backend: Ray Tune's own search and schedulers; Ray Tune owns the loop.

Ray Tune places and stops its trials itself, so this backend implements the
:class:`~harness.tuners.base.RunTuner` protocol (``run``) instead of ask / tell, and
``--tuner ray`` implies ``--engine ray``.

- Search: Tune's ``BasicVariantGenerator`` (random sampling of the domains below; grid
  search where a space asks for it), seeded by ``--seed``.
- Domains: ``float`` -> ``tune.uniform`` / ``tune.loguniform``; ``int`` -> ``tune.randint`` /
  ``tune.lograndint`` with ``high + 1`` (Tune excludes the upper bound, the spec includes
  it); ``choice`` -> ``tune.choice``. A conditional parameter is a ``tune.sample_from`` that
  samples its own domain when its parents (sampled first) make it active, else ``None``; the
  trial drops inactive parameters.
- Schedulers (``--scheduler``): ``fifo`` (default), ``asha``, ``hyperband``, ``pbt``; their
  time axis is the trainer's ``step`` and their budget ``max_t`` the space's ``fixed.steps``
  (or ``epochs``, ``iterations``; ``tuner_options['max_t']`` overrides). HyperBand and PBT
  pause and restart trials: a trainer that saves ``artifact_dir/checkpoint.pt``
  (``TrialContext.save``) gets it back (``TrialContext.load``); one that does not starts over.
- Trials report with ``ray.tune.report`` and get ``--trials-per-device`` as fractional GPUs
  (``tune.with_resources``).
- Tracking: our own driver-side :class:`HarnessCallback` calls the harness tracker, so trials
  nest under the sweep's parent run exactly as with the other tuners (Ray's own MLflow
  callback makes flat runs). A trial the scheduler stopped before it returned is ``pruned``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback as tb
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform

from harness.engines.base import Done, TrialTask
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.tuners.base import (
    INTERRUPTED,
    Restored,
    RunRequest,
    TrialResult,
    TrialState,
    TunerError,
    TunerOptions,
)

if TYPE_CHECKING:
    from harness.sweep import SweepStats
    from harness.tracking import Tracker

SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
LOG_FILE = "ray.results.jsonl"  # trials started and finished, appended before MLflow hears of them

# Driver-side objects, by sweep: Tune pickles its callbacks and searcher into the experiment
# folder and ``Tuner.restore`` unpickles them, so a restored one finds the live ones here.
_DRIVER: dict[str, dict[str, Any]] = {}
STEP_KEYS = ("steps", "epochs", "iterations", "n_iters", "num_steps", "max_steps")

log = logging.getLogger("harness.ray")


# -- translation -------------------------------------------------------------------------------
def ray_domain(p: FloatParam | IntParam | ChoiceParam) -> Domain:
    """The Tune domain of one parameter (integer bounds made exclusive: ``high + 1``)."""
    if isinstance(p, FloatParam):
        return tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    if isinstance(p, IntParam):
        return tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
    return tune.choice(list(p.values))


def domains(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """Each parameter's domain as the Tune domain objects hold it, in the spec's terms
    (``("float"|"int", low, high, log)`` with inclusive ``high``, or ``("choice", values)``)."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, p in spec.params.items():
        d = ray_domain(p)
        log_scale = isinstance(d.get_sampler(), LogUniform)
        if isinstance(d, Float):
            out[name] = ("float", d.lower, d.upper, log_scale)
        elif isinstance(d, Integer):
            out[name] = ("int", d.lower, d.upper - 1, log_scale)  # Tune's upper is exclusive
        else:
            assert isinstance(d, Categorical)
            out[name] = ("choice", sorted(d.categories, key=repr))
    return out


class _Conditional:
    """``tune.sample_from`` for a conditional parameter: its domain when active, else None.

    Tune resolves function placeholders in the order of the space, and the space lists
    parents first, so the parents' values are already in ``config``.
    """

    def __init__(self, spec: SweepSpec, name: str, seed: int) -> None:
        self.spec = spec
        self.name = name
        self.domain = ray_domain(spec.params[name])
        self.rng = np.random.default_rng([seed, 0x5A17, len(name), *name.encode()])

    def __call__(self, config: Mapping[str, Any]) -> Any:
        chosen = {k: config[k] for k in self.spec.order()
                  if k in config and _is_value(config[k])}
        if not self.spec.params[self.name].active(chosen):
            return None
        return self.domain.sample(random_state=self.rng)


def _is_value(v: Any) -> bool:
    return v is not None and not isinstance(v, Domain | tuple)  # tuple: an unresolved placeholder


def param_space(spec: SweepSpec, seed: int) -> dict[str, Any]:
    """The Tune ``param_space``, parents before children."""
    space: dict[str, Any] = {}
    for name in spec.order():
        p = spec.params[name]
        space[name] = tune.sample_from(_Conditional(spec, name, seed)) if p.when else ray_domain(p)
    return space


def max_steps(spec: SweepSpec, extra: Mapping[str, Any]) -> int:
    """The schedulers' budget on the ``step`` axis."""
    if extra.get("max_t"):
        return int(extra["max_t"])
    for key in STEP_KEYS:
        value = spec.fixed.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 100


def make_scheduler(name: str, spec: SweepSpec, extra: Mapping[str, Any], seed: int) -> Any:
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        PopulationBasedTraining,
    )

    max_t = max_steps(spec, extra)
    rf = float(extra.get("reduction_factor", 3))
    if name == "fifo":
        return FIFOScheduler()
    if name == "asha":
        grace = int(extra.get("grace_period", max(1, max_t // 10)))
        return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=grace,
                             reduction_factor=rf, stop_last_trials=False)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="step", max_t=max_t, reduction_factor=rf,
                                  stop_last_trials=False)
    if name == "pbt":
        mutations = {n: ray_domain(p) for n, p in spec.params.items() if not p.when}
        if not mutations:
            raise TunerError("--scheduler pbt: the space has no unconditional parameter to mutate")
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=int(extra.get("perturbation_interval", max(1, max_t // 4))),
            hyperparam_mutations=mutations, quantile_fraction=0.25, require_attrs=True,
        )
    raise TunerError(f"--scheduler {name}: unknown scheduler (use one of {', '.join(SCHEDULERS)})")


# -- the trial (runs in a Tune worker) ---------------------------------------------------------
def trial_number(trial_id: str) -> int:
    """Tune's trial ids end in the trial's creation index (``a1b2c_00007`` -> 7)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else abs(hash(trial_id)) % 1_000_000_000


def run_trial(config: dict[str, Any], *, spec: SweepSpec, objective: str, sweep_seed: int,
              trial_timeout: float | None, artifact_root: str | None) -> None:
    """The Tune trainable: run the objective; report steps, then one final result."""
    from harness.objective import load_objective
    from harness.sweep import trial_seed

    ctx = tune.get_context()
    number = trial_number(ctx.get_trial_id())
    params = spec.active_params({k: v for k, v in config.items() if v is not None})
    seed = trial_seed(sweep_seed, number)
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids else "cpu"
    label = f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu"
    if artifact_root:
        art = Path(artifact_root) / f"trial-{number}"
        art.mkdir(parents=True, exist_ok=True)
    else:
        art = Path(tempfile.mkdtemp(prefix=f"harness-trial-{number}-"))
    _restore_checkpoint(art)
    ckpt_mtime = [_mtime(art / "checkpoint.pt")]
    last_step = 0
    keys: list[str] = []
    run_id = uuid.uuid4().hex[:12]  # this run of the trial (HyperBand and PBT restart trials)
    t0 = time.perf_counter()

    def report(step: int, metrics: Mapping[str, float]) -> None:
        nonlocal last_step
        last_step = int(step)
        res: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
        keys[:] = list(res)
        res.update(step=last_step, harness_keys=",".join(keys), harness_device=label,
                   harness_run=run_id, harness_run_s=time.perf_counter() - t0)
        tune.report(res, checkpoint=_new_checkpoint(art, ckpt_mtime))  # may end the trial (SystemExit)

    watchdog = None
    if trial_timeout:  # a hung trial: kill the process; the driver records the timeout
        watchdog = threading.Timer(trial_timeout, os._exit, args=(75,))
        watchdog.daemon = True
        watchdog.start()
    final: dict[str, Any] = {}
    try:
        fn = load_objective(objective)
        t0 = time.perf_counter()  # the trial's own time; a first import is start-up, not work
        out = fn(spec.config(params), device=device, seed=seed, report=report, artifact_dir=str(art))
        final = {k: float(v) for k, v in dict(out or {}).items()}
        status, reason, trace = "ok", "", ""
    except Exception as exc:
        status = "error"
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        trace = tb.format_exc()
    finally:
        if watchdog is not None:
            watchdog.cancel()
    final.update(step=last_step, harness_status=status, harness_reason=reason, harness_traceback=trace,
                 harness_run=run_id, harness_run_s=time.perf_counter() - t0, harness_device=label,
                 harness_keys=",".join(final) if status == "ok" else "")
    tune.report(final)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _restore_checkpoint(art: Path) -> None:
    """A trial restarted by HyperBand or PBT gets its (or its donor's) checkpoint back."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return
    with ckpt.as_directory() as d:
        src = Path(d) / "checkpoint.pt"
        if src.exists():
            shutil.copy2(src, art / "checkpoint.pt")


def _new_checkpoint(art: Path, seen: list[float]) -> Any:
    """A Tune checkpoint when the trainer wrote a new ``checkpoint.pt`` since the last report."""
    path = art / "checkpoint.pt"
    mtime = _mtime(path)
    if not mtime or mtime == seen[0]:
        return None
    seen[0] = mtime
    from ray.tune import Checkpoint

    d = Path(tempfile.mkdtemp(prefix="harness-ckpt-"))
    shutil.copy2(path, d / "checkpoint.pt")
    return Checkpoint.from_directory(str(d))


# -- the driver side ---------------------------------------------------------------------------
@dataclass
class _Live:
    task: TrialTask
    started: float
    last_value: float | None = None
    last_step: int = 0
    final: dict[str, Any] | None = None
    params_logged: dict[str, Any] | None = None
    runs: dict[str, float] = field(default_factory=dict)  # seconds of each run of the trial

    def seconds(self, fallback: float) -> float:
        return sum(self.runs.values()) if self.runs else fallback


class HarnessCallback(tune.Callback):
    """Ray Tune events -> the harness tracker, in the layout the sweep loop writes."""

    def __init__(self, spec: SweepSpec, request: RunRequest, tracker: Tracker, stats: SweepStats,
                 on_update: Callable[[SweepStats], None] | None, scheduler: str,
                 clock: Callable[[], float] = time.perf_counter, log_path: Path | None = None) -> None:
        self.spec = spec
        self.request = request
        self.tracker = tracker
        self.stats = stats
        self.on_update = on_update
        self.scheduler = scheduler
        self.clock = clock
        self.start = clock()
        self.live: dict[int, _Live] = {}
        self.finished: set[int] = set()
        self.gpu = any(s.startswith("cuda") for s in request.slots)
        self._last_update = 0.0
        self.key = str(log_path) if log_path is not None else uuid.uuid4().hex
        self.log_path = log_path
        self.numbers: dict[str, int] = {}  # trial id -> number, where it is not the id's index
        self.done_ids: set[str] = set()  # trials recorded as finished (before a crash, too)
        self.rerun_from = request.budget  # numbers of re-run interrupted trials start here
        self.interrupted_ids: set[str] = set()  # running when the last driver died

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config into the experiment folder: the tracker (threads, a
        client), the statistics and the display stay in the driver."""
        state = dict(self.__dict__)
        for key in ("tracker", "stats", "on_update", "clock"):
            state[key] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A restored callback (``Tuner.restore``) takes the new driver's objects."""
        self.__dict__.update(state)
        bound = _DRIVER.get(self.key)
        if bound is not None:
            self.__dict__.update(bound)
            self.live = {}
            self.start = self.clock()

    def _number(self, trial: Any) -> int:
        return self.numbers.get(trial.trial_id, trial_number(trial.trial_id))

    def _log(self, record: dict[str, Any]) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        from harness.sweep import trial_seed

        if trial.trial_id in self.done_ids:
            return  # finished before the crash, after Tune's last snapshot: not run again
        if trial.trial_id in self.interrupted_ids:  # run again under a new number
            self.interrupted_ids.discard(trial.trial_id)
            self.numbers[trial.trial_id] = self.rerun_from
            self.rerun_from += 1
        number = self._number(trial)
        if number in self.live or number in self.finished:
            return  # resumed after a pause (HyperBand, PBT): the same child run
        params = self.spec.active_params({k: v for k, v in trial.config.items() if v is not None})
        self._log({"event": "started", "trial_id": trial.trial_id, "number": number, "params": params})
        seed = trial_seed(self.request.seed, trial_number(trial.trial_id))  # as the trial computes it
        task = TrialTask(number=number, objective=self.request.objective, params=params,
                         config=self.spec.config(params), seed=seed,
                         timeout=self.request.trial_timeout)
        self.live[number] = _Live(task, self.clock(), params_logged=dict(params))
        if self.stats.first_dispatch is None:
            self.stats.first_dispatch = self.clock()
        self.tracker.trial_started(number, params, seed, "cuda" if self.gpu else "cpu")
        self._update()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        live = self.live.get(self._number(trial))
        if live is None:
            return
        if "harness_run" in result:
            live.runs[str(result["harness_run"])] = float(result.get("harness_run_s", 0.0))
        if "harness_status" in result:
            live.final = dict(result)
            return
        keys = [k for k in str(result.get("harness_keys", "")).split(",") if k]
        metrics = {k: float(result[k]) for k in keys if k in result}
        step = int(result.get("step", 0))
        live.last_step = max(live.last_step, step)  # a restarted trial may report a step again
        self.tracker.trial_report(live.task.number, step, metrics)
        value = metrics.get(self.spec.metric.name)
        if value is not None and np.isfinite(value):
            live.last_value = value
        self._log_mutations(live, trial, step)

    def _log_mutations(self, live: _Live, trial: Any, step: int) -> None:
        """PBT changes a running trial's hyperparameters: MLflow params cannot change, so the
        new values are logged as metrics ``pbt.NAME`` (a choice as its index)."""
        params = self.spec.active_params({k: v for k, v in trial.config.items() if v is not None})
        if params == live.params_logged:
            return
        changed: dict[str, float] = {}
        for k, v in params.items():
            if live.params_logged is not None and live.params_logged.get(k) == v:
                continue
            p = self.spec.params[k]
            if isinstance(p, ChoiceParam):
                changed[f"pbt.{k}_index"] = float(p.values.index(v))
            else:
                changed[f"pbt.{k}"] = float(v)
        live.params_logged = params
        if changed:
            self.tracker.trial_report(live.task.number, step, changed)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        number = self._number(trial)
        live = self.live.pop(number, None)
        if live is None:
            return
        elapsed = self.clock() - live.started
        f = live.final
        if f is None:  # the scheduler stopped it before the trainer returned
            device = str(trial.last_result.get("harness_device", "cpu")) if trial.last_result else "cpu"
            done = Done(number, "pruned", reason=f"stopped by the {self.scheduler} scheduler at step {live.last_step}",
                        steps=live.last_step, seconds=live.seconds(elapsed), device=device)
        else:
            keys = [k for k in str(f.get("harness_keys", "")).split(",") if k]
            done = Done(
                number, "ok" if f["harness_status"] == "ok" else "error",
                metrics={k: float(f[k]) for k in keys if k in f},
                reason=f.get("harness_reason") or None, traceback=f.get("harness_traceback") or None,
                steps=max(int(f.get("step", 0)), live.last_step), seconds=live.seconds(elapsed),
                device=str(f.get("harness_device", "cpu")),
            )
        self._finish(done, live, trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        number = self._number(trial)
        live = self.live.pop(number, None)
        if live is None:
            return
        elapsed = self.clock() - live.started
        timeout = self.request.trial_timeout
        if timeout is not None and elapsed >= timeout:
            done = Done(number, "timeout", reason=f"timeout: trial exceeded {timeout:g} s",
                        steps=live.last_step, seconds=elapsed)
        else:
            done = Done(number, "died", reason=f"worker died ({_error_line(trial)})",
                        steps=live.last_step, seconds=live.seconds(elapsed))
        self._finish(done, live, trial.trial_id)

    def _finish(self, done: Done, live: _Live, trial_id: str) -> None:
        from harness.sweep import finish

        if done.device == "cpu" and self.gpu:
            done = Done(**{**done.__dict__, "device": "cuda"})
        result = finish(done, live.task, self.spec, live.last_value)
        self.finished.add(result.number)
        self.done_ids.add(trial_id)
        self._log({"event": "finished", "trial_id": trial_id, "number": result.number,
                   "params": result.params, "state": result.state.value, "value": result.value,
                   "steps": result.steps, "reason": result.reason, "seconds": result.seconds,
                   "device": result.device})
        self._record(result)

    def _record(self, result: TrialResult) -> None:
        """What the sweep loop's ``_record`` does, with Ray Tune as the tuner."""
        s = self.stats
        s.add(result, self.spec.metric)
        root = self.request.artifact_root
        index = next((trial_number(t) for t, n in self.numbers.items() if n == result.number), result.number)
        art = root / f"trial-{index}" if root is not None else None
        self.tracker.trial_finished(
            result, elapsed=self.clock() - self.start, best=s.best.value if s.best else None,
            finished=s.finished, cum_steps=s.cum_steps,
            artifact_dir=str(art) if art is not None and art.is_dir() else None,
        )
        self._update(force=True)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._update()

    def _update(self, force: bool = False) -> None:
        self.stats.running = len(self.live)
        now = self.clock()
        if self.on_update is not None and (force or now - self._last_update > 0.2):
            self._last_update = now
            self.on_update(self.stats)


def read_log(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The callback's log: trial id -> its last ``started`` record, and -> its ``finished`` one."""
    started: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return started, finished
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash mid-write
            continue
        (started if rec.get("event") == "started" else finished)[rec["trial_id"]] = rec
    return started, finished


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    text = ""
    if path:
        try:
            text = Path(path).read_text()
        except OSError:
            text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
    for ln in lines:
        if "Error" in ln or "died" in ln or "exit" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "the trial's process ended without a result"


class _BudgetedVariantGenerator(BasicVariantGenerator):
    """Tune's random search, which stops proposing once the sweep's ``--timeout`` has passed or
    its step budget is used (running trials finish, as with the other tuners)."""

    def __init__(self, *args: Any, deadline: float | None, stats: SweepStats, timeout: float | None,
                 budget_steps: int | None, key: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key = key
        self._deadline = deadline
        self._stats = stats
        self._timeout = timeout
        self._budget_steps = budget_steps

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rebind()

    def _rebind(self) -> None:
        """A restored searcher: the new driver's statistics and deadline (Tune restores its
        state with a plain ``__dict__`` update too, hence the call in ``next_trial``)."""
        bound = _DRIVER.get(getattr(self, "_key", ""))
        if bound is not None and self._stats is not bound["stats"]:
            self._stats = bound["stats"]
            self._deadline = bound["deadline"]

    def next_trial(self) -> Any:
        self._rebind()
        why = None
        if self._deadline is not None and time.monotonic() > self._deadline:
            why = f"timeout after {self._timeout:g} s"
        elif self._budget_steps is not None and self._stats.cum_steps >= self._budget_steps:
            why = f"step budget of {self._budget_steps} training steps used"
        if why is not None:
            if not self._stats.stopped_early:
                self._stats.stopped_early = why
            self.set_finished()
            return None
        return super().next_trial()


# -- the tuner ---------------------------------------------------------------------------------
class RayTuneTuner:
    """``--tuner ray``: Ray Tune runs the whole sweep (a :class:`RunTuner`)."""

    name = "ray"

    def __init__(self, spec: SweepSpec, options: TunerOptions) -> None:
        self.spec = spec
        self.options = options
        self.scheduler = str(options.extra.get("scheduler") or "fifo")
        if self.scheduler not in SCHEDULERS:
            raise TunerError(f"--scheduler {self.scheduler}: unknown scheduler (use one of {', '.join(SCHEDULERS)})")
        make_scheduler(self.scheduler, spec, options.extra, options.seed)  # fail fast on a bad space
        self.startup_seconds = 0.0
        self._points: list[dict[str, Any]] = []
        self._owns_ray = False
        self._restore_path: Path | None = None  # set by restore(): Tune's experiment folder
        self._resume: dict[str, Any] | None = None
        self._restored: Restored | None = None

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> RayTuneTuner:
        return cls(spec, options)

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` first (Tune's ``points_to_evaluate``)."""
        self._points.append(dict(params))

    def restore(self) -> Restored:
        """Tune's experiment folder is restored by ``run`` (``Tuner.restore``); what finished
        and what was running come from our own log, which is written before MLflow is."""
        state_dir = self.options.state_dir
        if state_dir is None:
            raise TunerError("--resume: the sweep has no state folder")
        path = (state_dir / "ray" / "tune").resolve()
        started, finished = read_log(state_dir / LOG_FILE)
        out = Restored()
        if not tune.Tuner.can_restore(str(path)):
            if started or finished:
                raise TunerError(f"--resume: trials ran but Ray Tune saved no experiment in {path}; "
                                 "start the sweep again under another --name")
            return out  # killed before Tune saved anything or ran a trial: start it afresh
        for rec in finished.values():
            out.finished.append(TrialResult(
                int(rec["number"]), rec["params"], TrialState(rec["state"]), value=rec["value"],
                steps=int(rec["steps"] or 0), reason=rec["reason"], seconds=float(rec.get("seconds") or 0.0),
                device=str(rec.get("device") or "cpu")))
        running = {tid: rec for tid, rec in started.items() if tid not in finished}
        for rec in running.values():
            out.interrupted.append(TrialResult(int(rec["number"]), rec["params"], TrialState.FAILED,
                                               reason=INTERRUPTED))
        used = [int(r["number"]) for r in started.values()] + [int(r["number"]) for r in finished.values()]
        self._restore_path = path
        self._resume = {
            "done_ids": set(finished), "interrupted_ids": set(running),
            "numbers": {tid: int(r["number"]) for tid, r in {**started, **finished}.items()
                        if int(r["number"]) != trial_number(tid)},
            "finished": {int(r["number"]) for r in finished.values()},
            "rerun_from": max([self.options.extra.get("budget") or 0, *(n + 1 for n in used)]),
        }
        self._restored = out
        return out

    def run(self, request: RunRequest, tracker: Tracker,
            on_update: Callable[[SweepStats], None] | None = None) -> SweepStats:
        from harness.engines.ray import ensure_ray
        from harness.sweep import SweepStats

        for var, value in (("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), ("RAY_AIR_NEW_OUTPUT", "0"),
                           ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"), ("RAY_CHDIR_TO_TRIAL_DIR", "0"),
                           ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9")):
            os.environ.setdefault(var, value)
        t0 = time.perf_counter()
        gpus = sorted({s for s in request.slots if s.startswith("cuda")})
        self._owns_ray = ensure_ray(request.address, request.slots)
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # a failed trial is recorded (reason, traceback) by our callback: not logged twice
        logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
        spec = self.spec
        stats = SweepStats(budget=request.budget)
        state_dir = self.options.state_dir
        log_path = (state_dir / LOG_FILE).resolve() if state_dir is not None else None
        callback = HarnessCallback(spec, request, tracker, stats, on_update, self.scheduler, log_path=log_path)
        deadline = time.monotonic() + request.timeout if request.timeout else None
        bound: dict[str, Any] = {"tracker": tracker, "stats": stats, "on_update": on_update,
                                 "clock": time.perf_counter, "deadline": deadline}
        if self._resume is not None:  # the restored callback continues from our log
            bound.update(self._resume)
            callback.__dict__.update(self._resume)
            for r in self._restored.finished if self._restored is not None else []:
                stats.add(r, spec.metric)
        _DRIVER[callback.key] = bound
        if gpus:
            per_gpu = sum(1 for s in request.slots if s == gpus[0])
            resources = {"cpu": 1, "gpu": 1.0 / per_gpu}
        else:
            resources = {"cpu": 1}
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, spec=spec, objective=request.objective, sweep_seed=request.seed,
                trial_timeout=request.trial_timeout,
                artifact_root=str(request.artifact_root.resolve()) if request.artifact_root else None,
            ),
            resources,
        )
        search = _BudgetedVariantGenerator(
            points_to_evaluate=self._points or None, random_state=request.seed,
            deadline=deadline, stats=stats, timeout=request.timeout, budget_steps=request.budget_steps,
            key=callback.key,
        )
        storage = (state_dir / "ray").resolve() if state_dir is not None else Path(tempfile.mkdtemp(prefix="harness-ray-"))
        storage.mkdir(parents=True, exist_ok=True)
        if self._restore_path is not None:
            tuner = tune.Tuner.restore(
                str(self._restore_path), trainable, resume_unfinished=True, resume_errored=False,
                restart_errored=False, param_space=param_space(spec, request.seed),
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(spec, request.seed),
                tune_config=tune.TuneConfig(
                    metric=spec.metric.name, mode="min" if spec.metric.goal == "minimize" else "max",
                    num_samples=request.budget, search_alg=search,
                    scheduler=make_scheduler(self.scheduler, spec, self.options.extra, request.seed),
                    max_concurrent_trials=len(request.slots), reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name="tune", storage_path=str(storage), callbacks=[callback], verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
        self.startup_seconds = time.perf_counter() - t0
        tuner.fit()
        if stats.first_dispatch is not None:
            self.startup_seconds = stats.first_dispatch - t0
        stats.running = 0
        return stats

    def close(self) -> None:
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


__all__ = ["SCHEDULERS", "HarnessCallback", "RayTuneTuner", "domains", "param_space", "ray_domain"]
