"""The one sweep builder: assemble a sweep (tuner, tracker, recorder, driver), run it on an
engine, and close it in one clean-up order.

Every command builds its sweeps here: ``harness sweep`` / ``resume`` and ``harness trial``
(:func:`launch`, :func:`resume`), ``harness benchmark`` (:func:`launch_together`: its sweeps at
once over ONE shared engine, :mod:`harness.drivers.multi`), ``benchmark --simulated``
(:mod:`harness.simulate`) and ``harness tabulate`` (:mod:`harness.tabulate`), which call
:func:`assemble` and :func:`run_on` with their own engine and tracker. One lifecycle:

    assemble (tracker's parent run, recorder, driver) -> engine.start -> driver.run
    -> finally: engine (or driver) shutdown, recorder.close, tracker.finish_sweep, tuner.close,
       the sweep's state.json, its lock
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import names
from harness.drivers.base import Driver
from harness.engines.base import Engine
from harness.files import SweepLock
from harness.inputs import STATE_ROOT, Prepared, SweepOptions, own_loop, prepare, tuner_options
from harness.recorder import Recorder, SweepStats
from harness.spec import SweepSpec
from harness.sweep_dir import begin_state, check_resumable, lock_sweep, prepare_resume, write_state
from harness.tracking import SweepInfo, Tracker, make_tracker
from harness.trials import INTERRUPTED
from harness.tuners.base import Tuner, make_tuner


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
    error: str | None = None  # the sweep's own error, when it failed alone (sweeps run together)

    @property
    def utilization(self) -> float:
        return self.stats.utilization(self.workers)


class SweepInterrupted(Exception):
    """Ctrl-C stopped the sweep; everything finished is recorded (exit 130)."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(f"sweep {summary.name} interrupted")
        self.summary = summary


class SweepsInterrupted(Exception):
    """Ctrl-C stopped sweeps that ran together; each is recorded and resumable (exit 130)."""

    def __init__(self, summaries: list[SweepSummary]) -> None:
        super().__init__(f"{len(summaries)} sweeps interrupted")
        self.summaries = summaries


@dataclass
class Sweep:
    """One assembled sweep. ``close`` is its one clean-up order (see the module doc)."""

    spec: SweepSpec
    tuner: Tuner
    tracker: Tracker
    recorder: Recorder
    driver: Any  # a Driver; the ask/tell driver's step / handle when sweeps run together
    engine: Engine | None  # None: the driver runs its own (Ray Tune)
    parent: str | None = None
    prepared: Prepared | None = None  # a sweep of the CLI (state folder, lock); None: in memory
    state: dict[str, Any] | None = None
    lock: SweepLock | None = None
    ended: bool = False  # the driver ran to its end (budget, stop rule); else it failed
    summary: SweepSummary | None = None
    name: str = ""  # an in-memory sweep's name (a CLI sweep's is its prepared name)
    error: str | None = None  # its own error, when it failed alone among sweeps run together

    def stop(self) -> None:
        """Ctrl-C: stop dispatching; running trials stop and are recorded ``interrupted``."""
        self.recorder.request_stop(INTERRUPTED)

    @property
    def status(self) -> str:
        if self.recorder.stats.stopped_early == INTERRUPTED:
            return "KILLED"
        return "FINISHED" if self.ended else "FAILED"

    def close(self) -> SweepSummary:
        """Record the end: the recorder's last files, the tracker's backlog and parent run, the
        tuner's state, the sweep's state.json, its lock (each step runs even if one fails)."""
        stats = self.recorder.stats
        try:
            self.recorder.close()  # a multi-objective sweep's pareto.json and front figures
            wait = getattr(self.tracker, "wait", None)  # the MLflow tracker's backlog, retried
            if wait is not None:
                wait(timeout=30.0)
            stats.last_stored = time.perf_counter()
            self.tracker.finish_sweep(self.status)
        finally:
            try:
                self.tuner.close()
            finally:
                if self.prepared is not None and self.state is not None:
                    self.state["status"] = {"FINISHED": "finished", "KILLED": INTERRUPTED}.get(self.status, "failed")
                    self.state["finished"] = stats.finished
                    write_state(self.prepared.state_dir, self.state)
                if self.lock is not None:
                    self.lock.release()
        p = self.prepared
        self.summary = SweepSummary(
            name=p.name if p else self.name, spec=self.spec, stats=stats,
            workers=len(p.slots) if p else 1, startup_seconds=self.driver.startup_seconds,
            parent_run_id=self.parent, tracking_uri=p.uri if p else None,
            experiment=p.experiment if p else "", state_dir=p.state_dir if p else Path("."),
            failed_writes=self.tracker.failed_writes, tracking_errors=list(getattr(self.tracker, "errors", [])),
            population_fill=self.engine.fill_rate() if self.engine is not None else None, error=self.error,
        )
        return self.summary


def assemble(spec: SweepSpec, tuner: Tuner, tracker: Tracker, engine: Engine | None, *, budget: int,
             seed: int, info: SweepInfo | None = None, join: bool = False, parent_run_id: str | None = None,
             restored: Any = None, timeout: float | None = None, budget_steps: int | None = None,
             trial_timeout: float | None = None, state_dir: Path | None = None,
             on_update: Callable[[SweepStats], None] | None = None, clock: Callable[[], float] | None = None,
             ray: dict[str, Any] | None = None) -> Sweep:
    """The tracker's parent run (``info``; fails here, before any worker starts, when the store
    does not answer), the recorder and the driver: ask/tell on ``engine``, or Ray Tune's own
    loop when ``engine`` is None (``ray``: its slots and address)."""
    parent = tracker.start_sweep(info, parent_run_id=parent_run_id, join=join) if info is not None else None
    if restored is not None:
        tracker.reconcile(restored.finished + restored.interrupted)
    recorder = Recorder(
        spec, tracker, budget=budget, tell=None if engine is None else tuner.tell,
        progress=tuner.shared_progress, timeout=timeout, budget_steps=budget_steps, state_dir=state_dir,
        artifact_root=(state_dir / "artifacts").resolve() if state_dir is not None else None,
        on_update=on_update, restored=restored, **({"clock": clock} if clock is not None else {}),
    )
    driver: Driver
    if engine is None:  # Ray Tune: its own loop and trial placement
        from harness.drivers.ray_tune import RayTuneDriver

        ray = ray or {}
        driver = RayTuneDriver(spec=spec, tuner=tuner, recorder=recorder, objective=spec.objective,  # type: ignore[arg-type]
                               budget=budget, seed=seed, slots=ray.get("slots", ["cpu"]),
                               address=ray.get("address"), trial_timeout=trial_timeout, state_dir=state_dir)
    else:
        from harness.drivers.ask_tell import AskTellDriver

        driver = AskTellDriver(spec=spec, tuner=tuner, engine=engine, recorder=recorder,
                               objective=spec.objective, budget=budget, seed=seed, trial_timeout=trial_timeout)
    return Sweep(spec, tuner, tracker, recorder, driver, engine, parent=parent)


def open_sweep(options: SweepOptions, p: Prepared, engine: Engine | None, *,
               on_update: Callable[[SweepStats], None] | None = None,
               manual_configs: list[dict[str, Any]] | None = None,
               manual_seeds: list[int | None] | None = None,
               resume_state: dict[str, Any] | None = None, lock: SweepLock | None = None) -> Sweep:
    """A sweep of the CLI: its state folder first (so a driver killed from here on can be
    resumed), its tuner (restored on resume), its tracker and parent run, its recorder and
    driver on ``engine`` (None for Ray Tune's own loop). Holds the folder's lock until closed."""
    spec = p.spec
    p.state_dir.mkdir(parents=True, exist_ok=True)
    lock = lock or lock_sweep(p.state_dir, p.name)
    try:
        state = begin_state(options, p, resume_state)
        restored = None
        if manual_configs is not None:
            from harness.tuners.manual import ManualTuner

            tuner: Tuner = ManualTuner(manual_configs, manual_seeds)
        else:
            tuner = make_tuner(options.tuner, spec, tuner_options(options, p))
            if resume_state is not None:
                restored = tuner.restore()
            else:
                for params in p.first:
                    tuner.enqueue(params)
        shared = options.storage is not None and "://" in options.storage
        info = SweepInfo(
            name=p.name, experiment=p.experiment, tuner=options.label, objective=spec.objective,
            engine=options.engine or "local", seed=options.seed, spec_yaml=spec.to_yaml(), spec_hash=spec.hash(),
            metric=spec.metric.name, goal=spec.metric.goal, params=dict(spec.fixed),
            tags={**provenance(options.command), names.TAG_BUDGET: str(p.trials),
                  **({names.TAG_SHARED: "true"} if shared else {}), **objectives_tag(spec), **options.tags},
        )
        try:
            sweep = assemble(
                spec, tuner, make_tracker(p.uri), engine, budget=p.trials, seed=options.seed, info=info,
                join=resume_state is not None or shared, parent_run_id=state.get("parent_run_id"),
                restored=restored, timeout=options.timeout or spec.budget.timeout,
                budget_steps=options.budget_steps, trial_timeout=options.trial_timeout or spec.budget.trial_timeout,
                state_dir=p.state_dir, on_update=on_update,
                ray={"slots": p.slots, "address": options.engine_options.get("address")})
        except BaseException:
            tuner.close()
            raise
        state.update(parent_run_id=sweep.parent, status="running")
        write_state(p.state_dir, state)
    except BaseException:
        lock.release()
        raise
    sweep.prepared, sweep.state, sweep.lock = p, state, lock
    return sweep


def run_on(sweep: Sweep, engine: Engine | None) -> SweepSummary:
    """Run one sweep on its own engine (started here, shut down here), Ctrl-C handled, and
    close it: the one lifecycle of a single sweep."""
    previous = install_sigint(sweep.stop, lambda: sweep.recorder.stop_reason is not None)
    try:
        if engine is not None:
            engine.start(sweep.spec.objective)
        sweep.driver.run()
        sweep.ended = True
    finally:
        restore_sigint(previous)
        try:
            (engine or sweep.driver).shutdown()
        finally:
            summary = sweep.close()
    if sweep.status == "KILLED":
        raise SweepInterrupted(summary)
    return summary


def make_engine_for(options: SweepOptions, p: Prepared) -> Engine | None:
    """The engine a prepared sweep runs on (None: Ray Tune's own loop places its trials)."""
    if own_loop(options.tuner):
        return None
    from harness.engines import make_engine

    return make_engine(options.engine or "local", p.slots, population=p.population, **options.engine_options)


def launch(options: SweepOptions, on_update: Callable[[SweepStats], None] | None = None, *,
           prepared: Prepared | None = None, manual_configs: list[dict[str, Any]] | None = None,
           manual_seeds: list[int | None] | None = None, resume_state: dict[str, Any] | None = None,
           lock: SweepLock | None = None) -> SweepSummary:
    """Run a sweep end to end (validated first; see :func:`harness.inputs.prepare`).

    With ``resume_state`` (a saved state.json), the tuner's own state is read back first, MLflow
    is reconciled from it, and the sweep continues under the same parent run. The sweep folder's
    lock is held for the whole run: a second process on the same sweep is refused."""
    p = prepared or prepare(options)
    engine = make_engine_for(options, p)
    sweep = open_sweep(options, p, engine, on_update=on_update, manual_configs=manual_configs,
                       manual_seeds=manual_seeds, resume_state=resume_state, lock=lock)
    return run_on(sweep, engine)


def resume(name: str, *, state_root: Path = STATE_ROOT, space: str | None = None,
           trials: int | None = None, workers: int | None = None, command: str | None = None,
           on_update: Callable[[SweepStats], None] | None = None, tracking_uri: str | None = None,
           notify: Callable[[str], None] | None = None) -> SweepSummary:
    """Continue a sweep from ``.harness/sweeps/NAME``: its own spec, tuner state and parent run."""
    state_dir = check_resumable(name, state_root)
    lock = lock_sweep(state_dir, name)  # before the state is read: of two resumes, exactly one runs
    try:
        options, p, state = prepare_resume(name, state_dir, space=space, trials=trials, workers=workers,
                                           command=command, tracking_uri=tracking_uri, notify=notify)
    except BaseException:
        lock.release()
        raise
    return launch(options, on_update, prepared=p, resume_state=state, lock=lock)


def launch_together(sweeps: list[tuple[SweepOptions, Prepared, dict[str, Any] | None]], *, engine: Engine,
                    cap: int, concurrent: int | None = None,
                    on_close: Callable[[SweepSummary], None] | None = None) -> list[SweepSummary]:
    """Run ask/tell sweeps at once over ONE shared ``engine`` (started and shut down here), each
    with its own tuner, recorder, seed, parent run, budget and state folder, and at most ``cap``
    trials in flight (its ``--workers``). A third element of a tuple is the saved state of a
    sweep to continue (else None). Ctrl-C stops them all: :class:`SweepsInterrupted` (exit 130),
    each sweep resumable."""
    from harness.drivers.multi import MultiSweepDriver, SharedEngine

    summaries: list[SweepSummary] = []

    def opener(item: tuple[SweepOptions, Prepared, dict[str, Any] | None]) -> Callable[[Engine], Sweep]:
        return lambda view: open_sweep(item[0], item[1], view, resume_state=item[2])

    def close(h: Any) -> None:
        summary = h.close()
        summaries.append(summary)
        if on_close is not None:
            on_close(summary)

    shared = SharedEngine(engine)
    multi = MultiSweepDriver(shared, [opener(s) for s in sweeps], cap=cap, concurrent=concurrent, close=close)
    previous = install_sigint(multi.stop, lambda: multi.stopped)
    try:
        engine.start(sweeps[0][1].spec.objective)
        multi.run()
    finally:
        restore_sigint(previous)
        engine.shutdown()
    if multi.stopped:
        raise SweepsInterrupted(summaries)
    return summaries


def objectives_tag(spec: SweepSpec) -> dict[str, str]:
    """A multi-objective sweep names its objectives on the parent run (compare reads them)."""
    if not spec.multi:
        return {}
    return {names.TAG_OBJECTIVES: json.dumps([{"name": m.name, "goal": m.goal, "reference": m.reference}
                                              for m in spec.metrics])}


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
            tags[names.TAG_VERSION_PREFIX + pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    from harness.masking import mask_url

    tags[names.TAG_COMMAND] = mask_url(command or shlex.join(["harness", *sys.argv[1:]]))
    return tags


def install_sigint(stop: Callable[[], None], stopping: Callable[[], bool]) -> Any:
    """First Ctrl-C: ``stop()`` (stop dispatching; running trials stop and are recorded
    ``interrupted``, whichever driver runs). Second Ctrl-C: KeyboardInterrupt, which the driver
    turns into an immediate, recorded stop."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if not stopping():
            stop()
        else:
            raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, handler)


def restore_sigint(previous: Any) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGINT, previous)


__all__ = ["Sweep", "SweepInterrupted", "SweepSummary", "SweepsInterrupted", "assemble", "launch",
           "launch_together", "open_sweep", "provenance", "resume", "run_on"]
