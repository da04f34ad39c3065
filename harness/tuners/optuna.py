"""Optuna backend: ask / tell on a study in a real storage, its samplers and pruners.

The search space is translated by define-by-run (``trial.suggest_*`` in parent-first order),
so conditional parameters are native: an inactive parameter is never suggested.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState as OptunaState

from harness.files import write_atomic
from harness.masking import mask_url
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.trials import (
    INTERRUPTED,
    Progress,
    Restored,
    Suggestion,
    TrialResult,
    TrialState,
    objective_values,
    resume_rule,
    trial_seed,
)
from harness.tuners.base import Tuner, TunerError, TunerOptions

SAMPLERS = ("tpe", "random", "gp", "cmaes", "nsga2")
MULTI_SAMPLERS = ("tpe", "random", "gp", "nsga2")  # those that take several objectives
PRUNERS = ("none", "median", "hyperband", "sha")
HEARTBEAT_S = 10  # a process silent for 2 intervals has its running trials failed and retried
HEARTBEAT_ENV = "HARNESS_HEARTBEAT_S"  # overrides it (whole seconds), e.g. for a quick test
LOST = "its process stopped beating (died or hung); retried by another process"


def heartbeat_s() -> int:
    """The heartbeat interval of shared studies: ``HARNESS_HEARTBEAT_S`` or 10 s."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return HEARTBEAT_S
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise TunerError(f"{HEARTBEAT_ENV}={raw}: must be a whole number of seconds >= 1") from None
    return value


class _RetryAndRecord:
    """Optuna's stale-trial callback: retry the trial once (Optuna's own callback) and keep it, so
    the sweep that found it can settle its MLflow run (its own process is gone)."""

    def __init__(self) -> None:
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        self.lost: list[optuna.trial.FrozenTrial] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.lost.append(trial)
        self.retry(study, trial)


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """Each parameter's Optuna distribution (bounds and log flags exactly as in the spec)."""
    out: dict[str, BaseDistribution] = {}
    for name, p in spec.params.items():
        if isinstance(p, FloatParam):
            out[name] = FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            out[name] = IntDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, ChoiceParam):
            out[name] = CategoricalDistribution(p.values)
    return out


def population_size(options: TunerOptions) -> Any:
    """NSGA-II's population size as given (checked by :meth:`OptunaTuner.check`): the typed
    option, else ``tuner_options["population_size"]``; None: Optuna's default of 50."""
    return options.population_size if options.population_size is not None else options.extra.get("population_size")


def make_sampler(name: str, seed: int, population: int | None = None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":  # a first generation of population_size random trials, then evolution
        return optuna.samplers.NSGAIISampler(seed=seed, **({"population_size": population} if population else {}))
    raise TunerError(f"--sampler {name}: unknown sampler (use one of {', '.join(SAMPLERS)})")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    raise TunerError(f"--pruner {name}: unknown pruner (use one of {', '.join(PRUNERS)})")


def make_storage(storage: str | None, state_dir: Path | None) -> optuna.storages.BaseStorage:
    """``None``: a journal file in the sweep's state folder (in memory without one);
    ``memory``; an RDB URL (``sqlite:///``, ``postgresql://``); or a journal file path."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    def journal(path: str) -> JournalStorage:
        # A driver killed while holding the lock leaves it behind: break it after 3 s, not 30.
        # The path must be absolute: the lock is a symlink to it, and the grace period reads
        # the link's target; a relative target resolves against the link's folder, is never
        # found, and acquire() then spins at full CPU forever (a CI rehearsal hung on it).
        path = os.path.abspath(path)
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path, grace_period=3)))

    if storage is None:
        if state_dir is None:
            return optuna.storages.InMemoryStorage()
        state_dir.mkdir(parents=True, exist_ok=True)
        return journal(str(state_dir / "optuna.journal"))
    if storage == "memory":
        return optuna.storages.InMemoryStorage()
    if "://" in storage:
        import random
        import time

        beat = heartbeat_s()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for attempt in range(5):
                try:
                    return optuna.storages.RDBStorage(
                        storage, heartbeat_interval=beat, grace_period=2 * beat,
                        heartbeat_stale_trial_callback=_RetryAndRecord(),
                    )
                except Exception as exc:  # SQLAlchemy raises many types for a bad URL or a dead server
                    # several processes creating the tables at once collide: the next try finds them
                    if attempt == 4 or "already exists" not in str(exc) and "duplicate key" not in str(exc):
                        raise TunerError(
                            f"--storage {mask_url(storage)}: cannot open: {str(exc).splitlines()[0]}"
                        ) from None
                    time.sleep(random.uniform(0.2, 1.0))
    return journal(storage)


OWNER_ATTR = "harness_owner"


STEPS_ATTR = "harness_steps"  # a multi-objective trial's steps (it has no intermediate values)
RUN_ATTR = "harness_run"  # {"seed", "seconds"} of a finished trial, read back on resume


def _steps(trial: optuna.trial.FrozenTrial) -> int:
    """The training steps a trial used: the last step it reported (0 if none)."""
    return max(trial.intermediate_values, default=0) or int(trial.user_attrs.get(STEPS_ATTR, 0))


def _beats(storage: optuna.storages.BaseStorage) -> bool:
    """A database storage with heartbeats: one study that several processes can share."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def _owner(state_dir: Path | None) -> str | None:
    """The sweep's owner id on a shared study: made once, kept in its state folder, so the same
    sweep resumed knows its own trials from those of the other processes."""
    if state_dir is None:
        return None
    path = state_dir / "optuna.owner"
    if path.exists():
        return path.read_text().strip()
    owner = uuid.uuid4().hex
    write_atomic(path, owner)
    return owner


class OptunaTuner(Tuner):
    name = "optuna"
    resumable = True
    takes = ("sampler", "pruner", "storage", "population_size")

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        if options.sampler not in SAMPLERS:
            raise TunerError(f"--sampler {options.sampler}: unknown sampler (use one of {', '.join(SAMPLERS)})")
        if options.pruner not in PRUNERS:
            raise TunerError(f"--pruner {options.pruner}: unknown pruner (use one of {', '.join(PRUNERS)})")
        if spec.multi and options.pruner != "none":
            raise TunerError(f"--pruner {options.pruner}: Optuna cannot prune a study with several objectives "
                             f"({', '.join(m.name for m in spec.metrics)}); use --pruner none")
        size = population_size(options)
        if size is not None:
            if options.sampler != "nsga2":
                raise TunerError(f"--population-size {size}: only --sampler nsga2 has a population "
                                 f"(got --sampler {options.sampler})")
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise TunerError(f"--population-size {size}: must be a whole number >= 2 (NSGA-II crosses two parents)")
        if spec.multi and options.sampler not in MULTI_SAMPLERS:
            raise TunerError(f"--sampler {options.sampler}: takes one objective; with several use one of "
                             f"{', '.join(MULTI_SAMPLERS)}")

    def __init__(self, spec: SweepSpec, study: optuna.Study, state_dir: Path | None = None,
                 lost: _RetryAndRecord | None = None, seed: int = 0) -> None:
        self.spec = spec
        self.study = study
        self.seed = seed  # the sweep's seed: a trial's seed when its record lacks one
        self._lost = lost  # other processes' trials this one found dead
        self.dists = distributions(spec)
        self._trials: dict[int, optuna.Trial] = {}
        self._heartbeat: threading.Thread | None = None
        self._closing = threading.Event()
        # A database study, which several processes may share (create_study wraps the
        # RDBStorage in a cache, so ask the storage whether it beats rather than checking its
        # class). Optuna beats only inside study.optimize: ask/tell trials need our own heartbeat.
        self.shared = _beats(study._storage)
        # this sweep's mark on the trials it runs in a shared study (kept to resume it)
        self.owner = (_owner(state_dir) if self.shared else None) or uuid.uuid4().hex
        if self.shared:
            self._heartbeat = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        storage = self.study._storage
        while not self._closing.wait(storage.get_heartbeat_interval() / 2):  # type: ignore[attr-defined]
            for trial in list(self._trials.values()):
                try:
                    storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
                except Exception:  # a finished trial or a passing database fault: next beat
                    pass

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> OptunaTuner:
        optuna.logging.set_verbosity(logging.WARNING)
        population = population_size(options)
        sampler = make_sampler(options.sampler, options.seed, population)
        pruner = make_pruner(options.pruner)
        storage = make_storage(options.storage, options.state_dir)
        study = optuna.create_study(
            study_name=options.study_name or "harness",
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=[m.goal for m in spec.metrics],
            load_if_exists=True,
        )
        n = len(study.get_trials(deepcopy=False))
        if n:  # resumed or shared: a sampler restarted from the same seed would replay its draws
            study.sampler = make_sampler(options.sampler, (options.seed + 1_000_003 * n) % 2**31, population)
        callback = getattr(storage, "heartbeat_stale_trial_callback", None)
        return cls(spec, study, state_dir=options.state_dir, seed=options.seed,
                   lost=callback if isinstance(callback, _RetryAndRecord) else None)

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` before the sampler's own suggestions."""
        self.study.enqueue_trial(params)

    def _suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name in self.spec.order():
            p = self.spec.params[name]
            if not p.active(params):
                continue
            d = self.dists[name]
            if isinstance(d, FloatDistribution):
                params[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
            elif isinstance(d, IntDistribution):
                params[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
            elif isinstance(d, CategoricalDistribution):
                params[name] = trial.suggest_categorical(name, d.choices)
        return params

    def ask(self, n: int) -> list[Suggestion]:
        out = []
        with warnings.catch_warnings():
            # heartbeats outside study.optimize are what we do on purpose (see _beat)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.shared:
                # trials of a dead process (no heartbeat) are failed; the retry callback re-queues them
                optuna.storages.fail_stale_trials(self.study)
            for _ in range(n):
                trial = self.study.ask()
                if self.shared:  # say whose trial it is
                    trial.set_user_attr(OWNER_ATTR, self.owner)
                self._trials[trial.number] = trial
                out.append(Suggestion(trial.number, self._suggest(trial)))
        return out

    def report(self, number: int, step: int, value: float) -> bool:
        if self.spec.multi:  # Optuna keeps no intermediate values with several objectives
            return False
        trial = self._trials[number]
        trial.report(value, step)
        return trial.should_prune()

    def tell(self, result: TrialResult) -> None:
        trial = self._trials.pop(result.number, result.number)
        # on a shared study a process that stalled past the grace period may find its trial
        # already failed (and retried) by another: that record stands
        skip = self.shared
        if result.reason == INTERRUPTED and not isinstance(trial, int):
            try:
                trial.set_user_attr("harness_reason", INTERRUPTED)
            except RuntimeError:  # already finished by the heartbeat check
                if not skip:
                    raise
        if not isinstance(trial, int):
            try:  # what a resume reads back besides Optuna's own record
                trial.set_user_attr(RUN_ATTR, {"seed": result.seed, "seconds": result.seconds})
                if self.spec.multi:  # no intermediate values: keep the steps
                    trial.set_user_attr(STEPS_ATTR, result.steps)
            except RuntimeError:  # already finished by the heartbeat check
                if not skip:
                    raise
        if result.state is TrialState.COMPLETE and self.spec.multi:
            values = objective_values(result, [m.name for m in self.spec.metrics])
            self.study.tell(trial, values, skip_if_finished=skip)
        elif result.state is TrialState.COMPLETE:
            self.study.tell(trial, result.value, skip_if_finished=skip)
        elif result.state is TrialState.PRUNED:
            self.study.tell(trial, state=OptunaState.PRUNED, skip_if_finished=skip)
        else:
            self.study.tell(trial, state=OptunaState.FAIL, skip_if_finished=skip)

    def take_lost(self) -> list[TrialResult]:
        """Other processes' trials that this one found dead (no heartbeat) since the last call:
        failed, their configuration queued again; the sweep settles their MLflow runs."""
        if self._lost is None or not self._lost.lost:
            return []
        lost, self._lost.lost = self._lost.lost, []
        return [TrialResult(t.number, dict(t.params), TrialState.FAILED, reason=LOST, steps=_steps(t))
                for t in lost if t.number not in self._trials]

    def shared_progress(self) -> Progress | None:
        """Every process's finished trials on a shared (database) study; None for a journal.

        The count, the best value and the steps come from one read, and the finished set only
        grows, so a larger count never comes with a worse best: the parent's curves stay
        monotone while several processes log to them.
        """
        if not self.shared:
            return None
        finished = steps = 0
        best: float | None = None
        done = (OptunaState.COMPLETE, OptunaState.PRUNED, OptunaState.FAIL)
        for t in self.study.get_trials(deepcopy=False, states=done):
            if t.user_attrs.get("harness_reason") == INTERRUPTED:
                continue
            finished += 1
            steps += _steps(t)
            value = t.values[0] if t.state == OptunaState.COMPLETE and t.values else None
            if value is not None and (best is None or self.spec.metric.better(value, best)):
                best = value
        return Progress(finished, best, steps)

    def restore(self) -> Restored:
        """Read the study back; fail trials a dead driver left RUNNING and re-queue them once.

        On a shared (database) study only this sweep's own trials are read back (those marked
        with its owner id, kept in its state folder): other processes' trials are theirs to
        finish, or the heartbeats', and do not count toward this process's budget.
        """
        trials = self.study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("harness_requeue_of") for t in trials}
        results: list[TrialResult] = []
        for t in trials:
            if self.shared and t.user_attrs.get(OWNER_ATTR) != self.owner:
                continue
            if t.state == OptunaState.RUNNING:
                self.study._storage.set_trial_user_attr(t._trial_id, "harness_reason", INTERRUPTED)
                self.study.tell(t.number, state=OptunaState.FAIL)
            elif t.state == OptunaState.WAITING:
                continue
            steps = _steps(t)
            interrupted = t.state == OptunaState.RUNNING or t.user_attrs.get("harness_reason") == INTERRUPTED
            state = {OptunaState.COMPLETE: TrialState.COMPLETE, OptunaState.PRUNED: TrialState.PRUNED}.get(
                t.state, TrialState.FAILED)
            values = t.values if t.state == OptunaState.COMPLETE and t.values else None
            value = values[0] if values else t.intermediate_values.get(steps)
            metrics = dict(zip([m.name for m in self.spec.metrics], values, strict=True)) if values else {}
            run = t.user_attrs.get(RUN_ATTR) or {}  # absent: interrupted, or a sweep of an older harness
            result = TrialResult(t.number, dict(t.params), state, value=value, steps=steps, metrics=metrics,
                                 seconds=float(run.get("seconds", metrics.get("seconds", 0.0))),
                                 seed=int(run.get("seed", trial_seed(self.seed, t.number))),
                                 reason=INTERRUPTED if interrupted else None)
            results.append(result)
        return resume_rule(results, requeued, lambda r: self.study.enqueue_trial(
            dict(r.params), user_attrs={"harness_requeue_of": r.number}))

    def close(self) -> None:
        self._closing.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
