"""Launching sweeps: validate every input, build tuner / engine / tracker, run, clean up.

Everything that can be wrong with the input is checked before an MLflow run is created or a
worker is started. The CLI calls :func:`launch` (and :func:`run_trial`) and prints the summary.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import names
from harness.engines.base import EngineError
from harness.files import SweepLock, repair_jsonl, write_atomic
from harness.objective import check_objective
from harness.recorder import Recorder, SweepStats
from harness.spec import SweepSpec, load_spec
from harness.tracking import SweepInfo, check_store, make_tracker, resolve_uri
from harness.trials import INTERRUPTED
from harness.tuners.base import (
    TunerError,
    TunerOptions,
    make_tuner,
    registered_tuners,
    tuner_class,
)

STATE_ROOT = Path(".harness") / "sweeps"


class UsageError(ValueError):
    """A combination of options that makes no sense (one line, exit 2)."""


@dataclass
class SweepOptions:
    space: str
    tuner: str = "optuna"
    engine: str | None = None  # None: ray for --tuner ray, else local (resolved by prepare)
    trials: int | None = None
    workers: int | None = None
    devices: str = "auto"
    trials_per_device: int = 1
    tracking_uri: str | None = None
    experiment: str | None = None
    name: str | None = None
    seed: int = 0
    timeout: float | None = None
    trial_timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    storage: str | None = None
    state_root: Path = STATE_ROOT
    command: str | None = None  # the command line, for provenance
    engine_options: dict[str, Any] = field(default_factory=dict)  # e.g. ray: {"address": ...}
    tags: dict[str, str] = field(default_factory=dict)  # extra parent-run tags
    enqueue: str | None = None  # a YAML list of configurations to evaluate first
    defaults_first: bool = False  # evaluate the space's defaults before the tuner's suggestions
    budget_steps: int | None = None  # also stop once trials used this many training steps in all
    tuner_options: dict[str, Any] = field(default_factory=dict)  # backend-specific, e.g. ax_method
    population: int | None = None  # members per worker population; None: off on CPU, on for CUDA


@dataclass
class SweepSummary:
    name: str
    spec: SweepSpec
    stats: SweepStats
    workers: int
    startup_seconds: float
    parent_run_id: str | None
    tracking_uri: str | None
    experiment: str
    state_dir: Path
    failed_writes: int = 0
    tracking_errors: list[str] = field(default_factory=list)
    population_fill: float | None = None  # populations: mean members per population / K, over time

    @property
    def utilization(self) -> float:
        return self.stats.utilization(self.workers)


@dataclass
class Prepared:
    options: SweepOptions
    spec: SweepSpec
    name: str
    experiment: str
    uri: str | None
    slots: list[str]
    state_dir: Path
    trials: int
    first: list[dict[str, Any]] = field(default_factory=list)  # evaluated before the tuner's own
    population: int = 1  # members per worker population, as resolved (1: one trial per process)


def prepare(options: SweepOptions, spec: SweepSpec | None = None) -> Prepared:
    """Validate everything; raise a one-line error (SpecError, UsageError, ...) on the first fault."""
    spec = spec or load_spec(options.space)
    check_objective(spec.objective)
    if options.trials is not None and options.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {options.trials}")
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {options.timeout}")
    if options.budget_steps is not None and options.budget_steps < 1:
        raise UsageError(f"--budget-steps must be >= 1, got {options.budget_steps}")
    if options.trial_timeout is not None and options.trial_timeout <= 0:
        raise UsageError(f"--trial-timeout must be > 0 seconds, got {options.trial_timeout}")
    if options.tuner not in registered_tuners() and options.tuner != "manual":
        known = ", ".join(sorted(registered_tuners()))
        raise TunerError(f"--tuner {options.tuner}: unknown tuner (installed: {known})")
    _check_backends(options, spec)
    slots = _engine_slots(options)
    population = _population(options, spec, slots)
    uri = resolve_uri(options.tracking_uri)
    if uri is not None:
        check_store(uri)
    stem = Path(str(options.space)).stem
    name = options.name or f"{stem}-{options.tuner}-{datetime.now():%Y%m%d-%H%M%S}"
    if any(c in name for c in "/\\") or name.startswith("."):
        raise UsageError(f"--name {name!r}: a sweep name cannot contain '/' or start with '.'")
    return Prepared(
        options=options, spec=spec, name=name, experiment=options.experiment or stem,
        uri=uri, slots=slots,
        state_dir=options.state_root / name, trials=options.trials or spec.budget.trials,
        first=first_configs(spec, options), population=population,
    )


POPULATION_CUDA = 16  # --population's default when the workers are GPUs (off on CPU)


def _population(options: SweepOptions, spec: SweepSpec, slots: list[str]) -> int:
    """The members per worker population: ``--population`` (default: off on CPU, on for CUDA),
    1 for a plain trainer (said once), fewer when K members would not fit in a worker's memory
    (said once), refused when one member does not."""
    k = options.population
    given = k is not None
    if k is None:
        k = POPULATION_CUDA if any(s.startswith("cuda") for s in slots) else 1
    if k < 1:
        raise UsageError(f"--population must be >= 1, got {k}")
    if k == 1 or options.tuner == "manual":
        return 1
    if options.engine != "local":
        if given:
            raise UsageError(f"--population {k}: populations run on --engine local; Ray Tune and "
                             "the ray engine keep one trial per actor")
        return 1
    from harness.objective import load_objective
    from models.population import population_form

    form = population_form(load_objective(spec.objective))  # imports the trainer here, once
    if form is None:
        if given:
            _stderr(f"--population {k}: objective '{spec.objective}' has no population form; "
                    "its trials run one per process")
        return 1
    return _fit_population(k, form, spec, slots)


def _fit_population(k: int, form: Any, spec: SweepSpec, slots: list[str]) -> int:
    """Split (fewer members per population) or refuse, before any trial starts, populations
    whose members would not fit: the largest ``member_bytes`` of the space's defaults and 256
    random configurations, against the free memory of a worker's device (CUDA: the GPU's free
    memory shared by its workers; CPU: available RAM shared by all workers), keeping 20% spare."""
    if form.member_bytes is None:
        return k
    import numpy as np

    from harness.tuners.base import sample_uniform

    rng = np.random.default_rng(0)
    configs = [spec.config(spec.defaults()[0])] + [spec.config(sample_uniform(spec, rng)) for _ in range(256)]
    try:
        need = max(int(form.member_bytes(c)) for c in configs)
    except Exception:  # a member_bytes that cannot read some configuration: no estimate
        return k
    free, where = free_bytes_per_worker(slots)
    if free is None or need <= 0:
        return k
    fit = int(0.8 * free // need)
    mib = 2**20
    if fit < 1:
        raise UsageError(f"--population {k}: one member needs up to {need / mib:.0f} MiB, more than the "
                         f"{free / mib:.0f} MiB free per worker on {where}; use fewer --workers")
    if fit < k:
        _stderr(f"--population {k}: split to populations of {fit} (a member needs up to "
                f"{need / mib:.0f} MiB; {free / mib:.0f} MiB free per worker on {where})")
        return fit
    return k


def free_bytes_per_worker(slots: list[str]) -> tuple[int | None, str]:
    """Free memory per worker on its device (without initialising CUDA in the driver)."""
    gpus = [s.split(":", 1)[1] for s in slots if s.startswith("cuda:")]
    if gpus:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10)
            free = {line.split(",")[0].strip(): int(line.split(",")[1]) * 2**20
                    for line in out.stdout.splitlines() if "," in line}
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None, "cuda"
        per = [free[g] // gpus.count(g) for g in set(gpus) if g in free]
        return (min(per), "cuda") if per else (None, "cuda")
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if ":" in line}
    except (OSError, ValueError, IndexError):
        return None, "cpu"
    avail = info.get("MemAvailable")
    return (avail // max(1, len(slots)), "cpu") if avail else (None, "cpu")


# backend-specific options of the CLI: (flag, what the refusal says when the tuner does not take it)
_OPTION_FLAGS = {
    "pruner": ("--pruner", "only the optuna tuner takes a pruner"),
    "scheduler": ("--scheduler", "only --tuner ray takes a scheduler "
                                 "(optuna prunes with --pruner; ax stops trials early by itself)"),
    "ax_method": ("--ax-method", "only --tuner ax takes a method"),
}
_OPTION_DEFAULTS = {"pruner": "none"}


def tuner_options(options: SweepOptions, p: Prepared | None = None) -> TunerOptions:
    """The options every tuner receives (typed fields; ``extra`` holds the rest)."""
    extra = dict(options.tuner_options)
    return TunerOptions(
        seed=options.seed, sampler=options.sampler, pruner=options.pruner, storage=options.storage,
        study_name=p.name if p else options.name, state_dir=p.state_dir if p else None,
        budget=p.trials if p else options.trials, scheduler=extra.pop("scheduler", None),
        ax_method=extra.pop("ax_method", None), extra=extra,
    )


def _check_backends(options: SweepOptions, spec: SweepSpec) -> None:
    """The tuner / engine pairing, options meant for another backend, then the chosen tuner's
    and engine's own checks (each backend validates itself: adding one touches one file)."""
    if options.tuner == "manual":
        options.engine = options.engine or "local"
        return
    cls = tuner_class(options.tuner)
    own_loop = getattr(cls, "driver", "ask_tell") != "ask_tell"
    engine = options.engine or ("ray" if own_loop else "local")
    if own_loop and engine != "ray":
        raise UsageError(f"--tuner {options.tuner} --engine {engine}: Ray Tune runs its own trials on Ray "
                         f"(--tuner {options.tuner} implies --engine ray)")
    options.engine = engine
    takes = set(getattr(cls, "takes", ()))
    given = {"pruner": options.pruner, **options.tuner_options}
    for key, (flag, refusal) in _OPTION_FLAGS.items():
        value = given.get(key)
        if value is not None and value != _OPTION_DEFAULTS.get(key) and key not in takes:
            raise UsageError(f"{flag} {value}: {refusal}")
    check = getattr(cls, "check", None)  # a protocol-only plugin class may have none
    if check is not None:
        check(spec, tuner_options(options))
    address = options.engine_options.get("address")
    if address and engine != "ray":
        raise UsageError(f"--ray-address {address}: needs --engine ray (or --tuner ray)")
    if engine == "ray":
        from harness.engines.ray import check_address

        check_address(address)


def _engine_slots(options: SweepOptions) -> list[str]:
    from harness.engines import ENGINES
    from harness.engines.local import device_slots

    if options.engine not in ENGINES:
        raise UsageError(f"--engine {options.engine}: unknown engine (use one of {', '.join(ENGINES)})")

    return device_slots(options.devices, options.trials_per_device, options.workers)


def provenance(command: str | None) -> dict[str, str]:
    """Git commit (and dirtiness), package versions and the command line, as parent-run tags."""
    tags: dict[str, str] = {}
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            tags[names.TAG_GIT_COMMIT] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=5)
            tags[names.TAG_GIT_DIRTY] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.TimeoutExpired):
        pass
    for pkg in ("torch", "optuna", "ax-platform", "ray", "mlflow"):
        try:
            tags[f"harness.version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    from harness.masking import mask_url

    tags[names.TAG_COMMAND] = mask_url(command or shlex.join(["harness", *sys.argv[1:]]))
    return tags


def _write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Atomically replace the sweep's state.json."""
    write_atomic(state_dir / "state.json", json.dumps(data, indent=2, sort_keys=True))


class SweepInterrupted(Exception):
    """Ctrl-C stopped the sweep; everything finished is recorded (exit 130)."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(f"sweep {summary.name} interrupted")
        self.summary = summary


def _options_record(options: SweepOptions) -> dict[str, Any]:
    """The options a resume needs, as saved in state.json."""
    keys = ("tuner", "engine", "workers", "devices", "trials_per_device", "experiment", "seed",
            "timeout", "trial_timeout", "sampler", "pruner", "storage", "engine_options",
            "tuner_options", "budget_steps", "population")
    return {k: getattr(options, k) for k in keys}


def launch(
    options: SweepOptions,
    on_update: Callable[[SweepStats], None] | None = None,
    *,
    prepared: Prepared | None = None,
    manual_configs: list[dict[str, Any]] | None = None,
    manual_seeds: list[int | None] | None = None,
    resume_state: dict[str, Any] | None = None,
    lock: SweepLock | None = None,
) -> SweepSummary:
    """Run a sweep end to end (validated first; see :func:`prepare`).

    With ``resume_state`` (a saved state.json), the tuner's own state is read back first, MLflow
    is reconciled from it, and the sweep continues under the same parent run. The sweep folder's
    lock (one driver per sweep) is taken here unless the caller holds it (``lock``).
    """
    p = prepared or prepare(options)
    if lock is None:
        lock = _lock(p.state_dir, p.name)
    try:
        return _launch(options, p, on_update, manual_configs, manual_seeds, resume_state)
    finally:
        lock.release()


def _lock(state_dir: Path, name: str) -> SweepLock:
    """Take the sweep folder's lock, or refuse in one line naming the process that holds it."""
    lock = SweepLock(state_dir)
    if not lock.acquire():
        raise UsageError(f"sweep {name}: another process is driving it (pid {lock.holder()}); "
                         "wait for it to end, or stop it, then 'harness resume " + name + "'")
    return lock


def _launch(options: SweepOptions, p: Prepared, on_update: Callable[[SweepStats], None] | None,
            manual_configs: list[dict[str, Any]] | None, manual_seeds: list[int | None] | None,
            resume_state: dict[str, Any] | None) -> SweepSummary:
    spec = p.spec
    shared = options.storage is not None and "://" in options.storage
    if resume_state is None and not shared and (p.state_dir / "state.json").exists():
        raise UsageError(f"--name {p.name}: a sweep of that name exists; continue it with "
                         f"'harness resume {p.name}' or choose another name")
    state: dict[str, Any] = resume_state or {
        "name": p.name, "spec_hash": spec.hash(), "tuner": options.tuner, "engine": options.engine,
        "tracking_uri": p.uri, "experiment": p.experiment, "seed": options.seed,
        "started": time.time(), "objective": spec.objective, "options": _options_record(options),
    }
    state.update(trials=p.trials, status="starting", pid=os.getpid())
    _write_state(p.state_dir, state)  # first, so a driver killed from here on can be resumed
    (p.state_dir / "spec.yaml").write_text(spec.to_yaml())
    restored = None
    if manual_configs is not None:
        from harness.tuners.manual import ManualTuner

        tuner: Any = ManualTuner(manual_configs, manual_seeds)
    else:
        tuner = make_tuner(options.tuner, spec, tuner_options(options, p))
        if resume_state is not None:
            restored = tuner.restore()
        else:
            for params in p.first:
                tuner.enqueue(params)
    tracker = make_tracker(p.uri)
    own_loop = getattr(tuner, "driver", "ask_tell") != "ask_tell"
    engine = None
    if not own_loop:
        from harness.engines import make_engine

        engine = make_engine(options.engine, p.slots, population=p.population, **options.engine_options)
    info = SweepInfo(
        name=p.name, experiment=p.experiment, tuner=options.tuner, objective=spec.objective,
        engine=options.engine, seed=options.seed, spec_yaml=spec.to_yaml(), spec_hash=spec.hash(),
        metric=spec.metric.name, goal=spec.metric.goal, params=dict(spec.fixed),
        tags={**provenance(options.command), names.TAG_BUDGET: str(p.trials),
              **({names.TAG_SHARED: "true"} if shared else {}), **_objectives_tag(spec), **options.tags},
    )
    # fails here, before any worker starts, when the store does not answer
    parent = tracker.start_sweep(info, parent_run_id=state.get("parent_run_id"),
                                 join=resume_state is not None or shared)
    state.update(parent_run_id=parent, status="running")
    _write_state(p.state_dir, state)
    if restored is not None:
        tracker.reconcile(restored.finished + restored.interrupted)
    recorder = Recorder(
        spec, tracker, budget=p.trials, tell=None if own_loop else tuner.tell,
        progress=tuner.shared_progress, timeout=options.timeout or spec.budget.timeout,
        budget_steps=options.budget_steps, state_dir=p.state_dir,
        artifact_root=(p.state_dir / "artifacts").resolve(), on_update=on_update, restored=restored,
    )
    trial_timeout = options.trial_timeout or spec.budget.trial_timeout
    driver: Any
    if own_loop:  # Ray Tune: its own loop and trial placement
        from harness.drivers.ray_tune import RayTuneDriver

        driver = RayTuneDriver(spec=spec, tuner=tuner, recorder=recorder, objective=spec.objective,
                               budget=p.trials, seed=options.seed, slots=p.slots,
                               address=options.engine_options.get("address"),
                               trial_timeout=trial_timeout, state_dir=p.state_dir)
    else:
        from harness.drivers.ask_tell import AskTellDriver

        driver = AskTellDriver(spec=spec, tuner=tuner, engine=engine, recorder=recorder,
                               objective=spec.objective, budget=p.trials, seed=options.seed,
                               trial_timeout=trial_timeout)
    status = "FAILED"
    previous = _install_sigint(recorder)
    try:
        if engine is not None:
            engine.start(spec.objective)
        stats = driver.run()
        wait = getattr(tracker, "wait", None)
        if wait is not None:
            wait(timeout=30.0)  # a store that is away gets its backlog retried at finish
        stats.last_stored = time.perf_counter()
        status = "KILLED" if stats.stopped_early == INTERRUPTED else "FINISHED"
    finally:
        _restore_sigint(previous)
        (engine or driver).shutdown()
        recorder.close()  # a multi-objective sweep's pareto.json and front figures
        tracker.finish_sweep(status)
        tuner.close()
        state["status"] = {"FINISHED": "finished", "KILLED": INTERRUPTED}.get(status, "failed")
        state["finished"] = recorder.stats.finished
        _write_state(p.state_dir, state)
    summary = SweepSummary(
        name=p.name, spec=spec, stats=stats, workers=len(p.slots),
        startup_seconds=(engine or driver).startup_seconds,
        parent_run_id=parent, tracking_uri=p.uri,
        experiment=p.experiment, state_dir=p.state_dir, failed_writes=tracker.failed_writes,
        tracking_errors=list(getattr(tracker, "errors", [])),
        population_fill=getattr(engine, "fill_rate", lambda: None)(),
    )
    if status == "KILLED":
        raise SweepInterrupted(summary)
    return summary


def _objectives_tag(spec: SweepSpec) -> dict[str, str]:
    """A multi-objective sweep names its objectives on the parent run (compare reads them)."""
    if not spec.multi:
        return {}
    return {names.TAG_OBJECTIVES: json.dumps([{"name": m.name, "goal": m.goal, "reference": m.reference}
                                              for m in spec.metrics])}


def _install_sigint(recorder: Recorder) -> Any:
    """First Ctrl-C: stop dispatching; running trials stop and are recorded ``interrupted``
    (whichever driver runs the sweep). Second Ctrl-C: KeyboardInterrupt, which the driver turns
    into an immediate, recorded stop."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if recorder.stop_reason is None:
            recorder.request_stop(INTERRUPTED)
        else:
            raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous: Any) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def resume(name: str, *, state_root: Path = STATE_ROOT, space: str | None = None,
           trials: int | None = None, workers: int | None = None, command: str | None = None,
           on_update: Callable[[SweepStats], None] | None = None,
           tracking_uri: str | None = None,
           notify: Callable[[str], None] | None = None) -> SweepSummary:
    """Continue a sweep from ``.harness/sweeps/NAME``: its own spec, tuner state and parent run."""
    state_dir = state_root / name
    if not (state_dir / "state.json").exists():
        known = ", ".join(sorted(d.name for d in state_root.glob("*") if (d / "state.json").exists())) or "none"
        raise UsageError(f"--resume {name}: no sweep state in {state_dir} (known: {known})")
    lock = _lock(state_dir, name)  # before the state is read: of two resumes, exactly one runs
    try:
        return _resume(name, state_dir, lock, space=space, trials=trials, workers=workers,
                       command=command, on_update=on_update, tracking_uri=tracking_uri, notify=notify)
    finally:
        lock.release()


def repair_state(state_dir: Path, notify: Callable[[str], None]) -> None:
    """A torn last record of any append-only state file (the Optuna journal, the event log, Ax's
    results log) is moved aside, with one line saying so; damage that is not a torn append is
    refused in one line naming the file (StateFileError)."""
    for path in sorted([*state_dir.glob("*.jsonl"), *state_dir.glob("*.journal")]):
        message = repair_jsonl(path)
        if message:
            notify(message)


def _resume(name: str, state_dir: Path, lock: SweepLock, *, space: str | None, trials: int | None,
            workers: int | None, command: str | None, on_update: Callable[[SweepStats], None] | None,
            tracking_uri: str | None, notify: Callable[[str], None] | None) -> SweepSummary:
    try:
        state = json.loads((state_dir / "state.json").read_text())
        saved_spec = load_spec(state_dir / "spec.yaml")
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"--resume {name}: the sweep state in {state_dir} cannot be read "
                         "(state.json or spec.yaml is damaged)") from None
    if space is not None and load_spec(space).hash() != saved_spec.hash():
        raise UsageError(
            f"--resume {name}: {space} differs from the spec the sweep started with "
            f"({state_dir / 'spec.yaml'}); start a new sweep or restore the file"
        )
    repair_state(state_dir, notify or _stderr)
    saved = dict(state.get("options", {}))
    if workers is not None:
        saved["workers"] = workers
    if tracking_uri is not None and tracking_uri != state.get("tracking_uri"):
        raise UsageError(f"--resume {name}: the sweep logs to {state.get('tracking_uri')}, not {tracking_uri}")
    options = SweepOptions(
        space=str(state_dir / "spec.yaml"), name=name, state_root=state_dir.parent, command=command,
        tracking_uri=state.get("tracking_uri") or "none", trials=trials or state.get("trials"),
        **{k: v for k, v in saved.items() if k != "experiment"},
        experiment=state.get("experiment"),
    )
    p = prepare(options, saved_spec)
    p.first = []
    return launch(options, on_update, prepared=p, resume_state=state, lock=lock)


def _stderr(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr)


def run_trial(options: SweepOptions, overrides: dict[str, Any],
              on_update: Callable[[SweepStats], None] | None = None, *,
              params_file: str | None = None, from_run: str | None = None,
              seed: int | None = None) -> SweepSummary:
    """``harness trial``: one configuration, through the same engine, as a one-trial sweep.

    Parameters come from ``--set`` overrides, over a ``--params`` file (what ``harness best``
    writes), over a finished run's params (``--from-run``, same seed unless ``seed``), over
    the space's defaults.
    """
    options.tuner = "manual"
    options.trials = 1
    if options.workers is None:
        options.workers = 1
    spec = None
    base: dict[str, Any] = {}
    if from_run is not None:
        from harness.records import run_for_rerun
        from harness.tracking import resolve_uri

        uri = resolve_uri(options.tracking_uri)
        if uri is None:
            raise UsageError("--from-run needs a tracking store (not --tracking-uri none)")
        spec, base, run_seed, experiment = run_for_rerun(uri, from_run)
        seed = run_seed if seed is None else seed
        options.experiment = options.experiment or experiment
        options.space = options.space or "rerun"
        options.tags = {**options.tags, names.TAG_RERUN_OF: from_run}
    if params_file is not None:
        base.update(read_params_file(params_file))
    p = prepare(options, spec)
    params, fixed_over = p.spec.defaults({**base, **overrides})
    if fixed_over:
        p.spec = p.spec.model_copy(update={"fixed": {**p.spec.fixed, **fixed_over}})
    if options.name is None:
        p.name = p.name.replace("-manual-", "-trial-")
        p.state_dir = options.state_root / p.name
    return launch(options, on_update, prepared=p, manual_configs=[params],
                  manual_seeds=[seed if seed is not None else options.seed])


def read_params_file(path: str) -> dict[str, Any]:
    """A YAML mapping of params, or a document with a ``params`` key (``harness best`` output)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--params {path}: cannot read: {str(exc).splitlines()[0]}") from None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
        doc = doc["params"]
    if not isinstance(doc, dict):
        raise UsageError(f"--params {path}: expected a mapping of parameter values")
    return doc


def first_configs(spec: SweepSpec, options: SweepOptions) -> list[dict[str, Any]]:
    """Configurations evaluated before the tuner's own: the defaults, then ``--enqueue`` ones."""
    import yaml

    configs: list[dict[str, Any]] = []
    if options.defaults_first:
        configs.append(spec.defaults()[0])
    if options.enqueue:
        try:
            doc = yaml.safe_load(Path(options.enqueue).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--enqueue {options.enqueue}: cannot read: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, dict):
            doc = [doc]
        if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
            raise UsageError(f"--enqueue {options.enqueue}: expected a YAML list of parameter mappings")
        for i, d in enumerate(doc):
            d = d.get("params", d) if isinstance(d.get("params"), dict) else d
            unknown = sorted(set(d) - set(spec.params))
            if unknown:
                raise UsageError(f"--enqueue {options.enqueue}: entry {i}: unknown parameter(s) {', '.join(unknown)}")
            params, _ = spec.defaults(d)
            configs.append(params)
    return configs


def parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (1e-3, 64, true, tb)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


__all__ = ["EngineError", "SweepOptions", "SweepSummary", "UsageError", "launch", "prepare", "run_trial"]
