"""The Ray Tune driver: Ray Tune's own loop places, schedules and stops the trials; a callback
hands every trial event to the sweep's :class:`~harness.recorder.Recorder`, the same one the
ask/tell driver uses (statistics, stop rules, the finishing path, the event log, MLflow).

Inside a Tune worker a trial runs through :func:`harness.engines.base.run_task`, the code every
engine's worker runs; its :class:`~harness.trials.Report` s and its :class:`~harness.trials.Done`
travel to the driver as Tune results (the spec's metric and ``step`` at the top level for Tune's
schedulers, the harness event itself under ``harness_event``).

Ctrl-C: Tune's own SIGINT handler is off (``TUNE_DISABLE_SIGINT_HANDLER``); the harness's sets
the recorder's stop flag, and the callback then ends Tune's loop through ``SIGUSR1`` (Tune's
"stop, save the experiment" signal), so the running trials stay unfinished in Tune's state; the
recorder records them failed, reason ``interrupted``, and ``harness resume`` runs them again.

Resume: the backend's ``restore()`` reads what finished and what was running into a frozen
:class:`~harness.tuners.ray.RayResume`; this driver restores Tune's experiment (``Tuner.restore``)
and runs it with a new callback built from that state and a new searcher (Tune restores its saved
state onto it), so nothing of the driver travels through Tune's pickles.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune

from harness.engines.base import run_task
from harness.recorder import Recorder, SweepStats
from harness.spec import ChoiceParam, SweepSpec
from harness.trials import INTERRUPTED, Done, Report, TrialTask, trial_seed
from harness.tuners.ray import BudgetedSearch, RayResume, trial_number

TUNE_ENV = (("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), ("RAY_AIR_NEW_OUTPUT", "0"),
            ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"), ("RAY_CHDIR_TO_TRIAL_DIR", "0"),
            ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9"),
            ("TUNE_DISABLE_SIGINT_HANDLER", "1"))
EVENT_KEY = "harness_event"


def _event(e: Report | Done) -> str:
    return json.dumps({"kind": type(e).__name__, **dataclasses.asdict(e)})


def _parse(result: Mapping[str, Any]) -> Report | Done | None:
    raw = result.get(EVENT_KEY)
    if not raw:
        return None
    d = json.loads(raw)
    kind = d.pop("kind")
    return Report(**d) if kind == "Report" else Done(**d)


# -- the trial (runs in a Tune worker) ---------------------------------------------------------
def run_trial(config: dict[str, Any], *, spec: SweepSpec, objective: str, sweep_seed: int,
              trial_timeout: float | None, artifact_root: str | None) -> None:
    """The Tune trainable: the engines' ``run_task``, its events sent as Tune results."""
    number = trial_number(tune.get_context().get_trial_id())
    params = spec.active_params({k: v for k, v in config.items() if v is not None})
    gpu_ids = ray.get_gpu_ids()
    label = f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu"
    if artifact_root:
        art = Path(artifact_root) / f"trial-{number}"
        art.mkdir(parents=True, exist_ok=True)
    else:
        art = Path(tempfile.mkdtemp(prefix=f"harness-trial-{number}-"))
    _restore_checkpoint(art)
    seen = [_mtime(art / "checkpoint.pt")]
    run_id = uuid.uuid4().hex[:12]  # this run of the trial (HyperBand and PBT restart trials)
    t0 = time.perf_counter()

    last_step = [0]

    def send(event: Report | Done) -> None:
        res: dict[str, Any] = {EVENT_KEY: _event(event), "harness_run": run_id,
                               "harness_run_s": time.perf_counter() - t0}
        metrics = event.metrics  # Tune's schedulers read the spec's metric at the top level
        res.update({k: v for k, v in metrics.items() if k == spec.metric.name})
        if isinstance(event, Report):
            last_step[0] = event.step
            res.update(step=event.step)
            tune.report(res, checkpoint=_new_checkpoint(art, seen))  # may end the trial (SystemExit)
        else:
            res.update(step=max(event.steps, last_step[0]))
            tune.report(res)

    watchdog = None
    if trial_timeout:  # a hung trial: kill the process; the driver records the timeout
        watchdog = threading.Timer(trial_timeout, os._exit, args=(75,))
        watchdog.daemon = True
        watchdog.start()
    task = TrialTask(number=number, objective=objective, params=params, config=spec.config(params),
                     seed=trial_seed(sweep_seed, number), timeout=trial_timeout, artifact_dir=str(art))
    try:
        done = run_task(task, "cuda" if gpu_ids else "cpu", send, lambda n: False, time.perf_counter)
    finally:
        if watchdog is not None:
            watchdog.cancel()
    send(dataclasses.replace(done, device=label))


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
    trial_id: str
    last_step: int = 0
    final: Done | None = None
    params_logged: dict[str, Any] | None = None
    runs: dict[str, float] = field(default_factory=dict)  # seconds of each run of the trial

    def seconds(self, fallback: float) -> float:
        return sum(self.runs.values()) if self.runs else fallback


class RecorderCallback(tune.Callback):
    """Ray Tune's trial events -> the recorder. Keeps only what Tune's ids need: the trial's
    number (a re-run interrupted trial gets a new one) and the seconds of its runs; a resumed
    sweep's callback starts from the :class:`~harness.tuners.ray.RayResume` read back."""

    def __init__(self, spec: SweepSpec, recorder: Recorder, *, objective: str, seed: int, budget: int,
                 scheduler: str, gpu: bool, trial_timeout: float | None,
                 resume: RayResume | None = None) -> None:
        self.spec = spec
        self.recorder = recorder
        self.objective = objective
        self.seed = seed
        self.scheduler = scheduler
        self.gpu = gpu
        self.trial_timeout = trial_timeout
        self.live: dict[int, _Live] = {}
        self.started_at: dict[int, float] = {}
        self.signalled = False
        r = resume or RayResume(path=Path(), rerun_from=budget)
        self.finished: set[int] = set(r.finished)
        self.numbers: dict[str, int] = dict(r.numbers)  # trial id -> number, where not the id's index
        self.done_ids: set[str] = set(r.done)  # trials recorded as finished (before a crash, too)
        self.rerun_from = r.rerun_from  # numbers of re-run interrupted trials start here
        self.interrupted_ids: set[str] = set(r.running)  # running when the last driver stopped

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config into the experiment folder: the recorder (a tracker with
        threads, the display) stays in the driver (a resumed sweep's driver makes a new callback)."""
        return {**self.__dict__, "recorder": None}

    def _number(self, trial: Any) -> int:
        return self.numbers.get(trial.trial_id, trial_number(trial.trial_id))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
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
        index = trial_number(trial.trial_id)  # the trial computes its seed and folder from it
        task = TrialTask(number=number, objective=self.objective, params=params,
                         config=self.spec.config(params), seed=trial_seed(self.seed, index),
                         timeout=self.trial_timeout)
        self.live[number] = _Live(task, trial.trial_id, params_logged=dict(params))
        self.started_at[number] = time.perf_counter()
        self.recorder.started(task, "cuda" if self.gpu else "cpu", key=trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        live = self.live.get(self._number(trial))
        if live is None:
            return
        if "harness_run" in result:
            live.runs[str(result["harness_run"])] = float(result.get("harness_run_s", 0.0))
        event = _parse(result)
        if isinstance(event, Done):
            live.final = event
        elif isinstance(event, Report):
            live.last_step = max(live.last_step, event.step)  # a restarted trial may report a step again
            self.recorder.report(Report(live.task.number, event.step, event.metrics))
            self._log_mutations(live, trial, event.step)

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
            changed[f"pbt.{k}_index" if isinstance(p, ChoiceParam) else f"pbt.{k}"] = (
                float(p.values.index(v)) if isinstance(p, ChoiceParam) else float(v))
        live.params_logged = params
        if changed:
            self.recorder.trial_metrics(live.task.number, step, changed)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        live = self.live.get(self._number(trial))
        if live is None:
            return
        seconds = live.seconds(time.perf_counter() - self.started_at[live.task.number])
        if live.final is None:  # the scheduler stopped it before the trainer returned
            device = "cuda" if self.gpu else "cpu"
            done = Done(live.task.number, "pruned",
                        reason=f"stopped by the {self.scheduler} scheduler at step {live.last_step}",
                        steps=live.last_step, seconds=seconds, device=device)
        else:
            done = dataclasses.replace(live.final, number=live.task.number, seconds=seconds,
                                       steps=max(live.final.steps, live.last_step))
        self._finish(done, live)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        live = self.live.get(self._number(trial))
        if live is None:
            return
        elapsed = time.perf_counter() - self.started_at[live.task.number]
        if self.trial_timeout is not None and elapsed >= self.trial_timeout:
            done = Done(live.task.number, "timeout", reason=f"timeout: trial exceeded {self.trial_timeout:g} s",
                        steps=live.last_step, seconds=elapsed)
        else:
            done = Done(live.task.number, "died", reason=f"worker died ({_error_line(trial)})",
                        steps=live.last_step, seconds=live.seconds(elapsed))
        self._finish(done, live)

    def interrupt_running(self) -> None:
        """The sweep stopped (Ctrl-C): every trial still running is recorded interrupted."""
        for live in list(self.live.values()):
            if live.task.number in self.finished:
                continue
            elapsed = time.perf_counter() - self.started_at[live.task.number]
            self._finish(Done(live.task.number, "error", reason=INTERRUPTED, steps=live.last_step,
                              seconds=live.seconds(elapsed), device="cuda" if self.gpu else "cpu"), live)

    def _finish(self, done: Done, live: _Live) -> None:
        if done.device == "cpu" and self.gpu:
            done = dataclasses.replace(done, device="cuda")
        self.live.pop(live.task.number, None)
        self.finished.add(live.task.number)
        self.done_ids.add(live.trial_id)
        index = trial_number(live.trial_id)
        self.recorder.finished(done, live.task, key=live.trial_id,
                               artifact_dir=self.recorder.artifact_dir(index))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.recorder.stop_reason == INTERRUPTED and not self.signalled:
            self.signalled = True  # end Tune's loop; its state keeps the running trials unfinished
            os.kill(os.getpid(), signal.SIGUSR1)
        self.recorder.update()


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


class TuneBackend(Protocol):
    """What this driver takes from the ``--tuner ray`` backend (:class:`~harness.tuners.ray.
    RayTuneBackend`): Tune's ``param_space``, searcher and scheduler, and, on resume, what to
    continue from."""

    scheduler: str  # its name, for the reason of a trial the scheduler stopped
    resume: RayResume | None  # set by the backend's restore()

    def param_space(self) -> dict[str, Any]: ...

    def searcher(self, should_stop: Callable[[], str | None], concurrent: int) -> BudgetedSearch: ...

    def make_scheduler(self) -> Any: ...


@dataclass
class RayTuneDriver:
    """Runs a whole sweep with Ray Tune's loop (``--tuner ray``, on ``--engine ray``)."""

    spec: SweepSpec
    tuner: TuneBackend
    recorder: Recorder
    objective: str
    budget: int
    seed: int
    slots: list[str]  # one per concurrent trial: "cpu" or "cuda:N" (K per GPU: 1/K of a GPU each)
    address: str | None = None  # a Ray cluster to join (None: start one here)
    trial_timeout: float | None = None
    state_dir: Path | None = None
    startup_seconds: float = 0.0
    _owns_ray: bool = False

    @property
    def stats(self) -> SweepStats:
        return self.recorder.stats

    def run(self) -> SweepStats:
        from harness.engines.ray import ensure_ray

        for var, value in TUNE_ENV:
            os.environ.setdefault(var, value)
        t0 = time.perf_counter()
        gpus = sorted({s for s in self.slots if s.startswith("cuda")})
        self._owns_ray = ensure_ray(self.address, self.slots)
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # a failed trial is recorded (reason, traceback) by the recorder: not logged twice
        logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
        spec, rec, backend = self.spec, self.recorder, self.tuner
        resume = backend.resume
        callback = RecorderCallback(spec, rec, objective=self.objective, seed=self.seed, budget=self.budget,
                                    scheduler=backend.scheduler, gpu=bool(gpus),
                                    trial_timeout=self.trial_timeout, resume=resume)
        search = backend.searcher(rec.should_stop, len(self.slots))
        resources: dict[str, float] = {"cpu": 1}
        if gpus:
            resources["gpu"] = 1.0 / sum(1 for s in self.slots if s == gpus[0])
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, spec=spec, objective=self.objective, sweep_seed=self.seed,
                trial_timeout=self.trial_timeout,
                artifact_root=str(rec.artifact_root.resolve()) if rec.artifact_root else None,
            ),
            resources,
        )
        storage = (self.state_dir / "ray").resolve() if self.state_dir is not None \
            else Path(tempfile.mkdtemp(prefix="harness-ray-"))
        storage.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            runner = tune.Tuner.restore(
                str(resume.path), trainable, resume_unfinished=True, resume_errored=False,
                restart_errored=False, param_space=backend.param_space(),
            )
            _adopt(runner, callback, search)
        else:
            runner = tune.Tuner(
                trainable,
                param_space=backend.param_space(),
                tune_config=tune.TuneConfig(
                    metric=spec.metric.name, mode="min" if spec.metric.goal == "minimize" else "max",
                    num_samples=self.budget, search_alg=search, scheduler=backend.make_scheduler(),
                    reuse_actors=True,  # --workers: the searcher's max_concurrent
                ),
                run_config=tune.RunConfig(
                    name="tune", storage_path=str(storage), callbacks=[callback], verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
        self.startup_seconds = time.perf_counter() - t0
        try:
            runner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still record what ran
            rec.request_stop()
        if rec.stop_reason == INTERRUPTED:
            rec.mark_interrupted()
            callback.interrupt_running()
        if rec.stats.first_dispatch is not None:
            self.startup_seconds = rec.stats.first_dispatch - t0
        rec.mark_stopped()
        return rec.stats

    def shutdown(self) -> None:
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


def _adopt(runner: Any, callback: RecorderCallback, search: BudgetedSearch) -> None:
    """A restored Tune experiment runs with this driver's callback and searcher: ``Tuner.restore``
    unpickles the ones of the first run (without a recorder) and takes no new ones, so they are
    set on the restored run's configs (private to Tune: ``_local_tuner``, which ``fit`` reads);
    Tune then restores the saved searcher state onto ``search`` (its ``should_stop`` kept)."""
    local = runner._local_tuner
    local._run_config.callbacks = [c for c in local._run_config.callbacks or []
                                   if not isinstance(c, RecorderCallback)] + [callback]
    local._tune_config.search_alg = search


__all__ = ["RayTuneDriver", "RecorderCallback", "TuneBackend", "run_trial"]
