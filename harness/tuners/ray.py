"""Ray Tune backend, the proposing half: domains, Tune's searcher and schedulers, resume.

Ray Tune owns its loop and trial placement, so it is driven by its own driver
(:mod:`harness.drivers.ray_tune`, ``--tuner ray`` implies ``--engine ray``), which hands every
trial event to the same recorder as the ask/tell driver. This file only proposes:

- Search: Tune's ``BasicVariantGenerator`` (random sampling of the domains below; grid
  search where a space asks for it), seeded by ``--seed``; it stops proposing when the
  recorder's stop rules say so (Ctrl-C, ``--timeout``, the step budget).
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
- Resume: Tune's experiment folder, plus what the recorder's event log says finished and what
  was running (:func:`harness.events.read_events`), handed to the driver as a :class:`RayResume`.

:class:`RayTuneBackend` is not a :class:`~harness.tuners.base.Tuner`: nothing asks it for a trial.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform

from harness.events import read_events
from harness.files import repair_jsonl
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.trials import (
    EVENT_LOG,
    INTERRUPTED,
    Progress,
    Restored,
    TrialResult,
    interrupted_result,
)
from harness.tuners.base import TunerError, TunerOptions

SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
PAUSING = ("hyperband", "pbt")  # schedulers that pause trials and run waiting ones meanwhile
STEP_KEYS = ("steps", "epochs", "iterations", "n_iters", "num_steps", "max_steps")


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


def scheduler_settings(name: str, spec: SweepSpec, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of Tune's scheduler ``name`` (``SCHEDULER_CLASSES[name]``): their time
    axis is the trainer's ``step``, their budget :func:`max_steps`; ``extra`` may set
    ``grace_period`` (ASHA, default a tenth of ``max_t``), ``reduction_factor`` (3) and
    ``perturbation_interval`` (PBT, a quarter of ``max_t``). ASHA: Li et al. 2020, "A System for
    Massively Parallel Hyperparameter Tuning"; HyperBand: Li et al. 2018, JMLR 18(185); PBT:
    Jaderberg et al. 2017, arXiv:1711.09846."""
    if name not in SCHEDULERS:
        raise TunerError(f"--scheduler {name}: unknown scheduler (use one of {', '.join(SCHEDULERS)})")
    if name == "fifo":
        return {}
    max_t = max_steps(spec, extra)
    rf = float(extra.get("reduction_factor", 3))
    if name == "asha":
        return {"time_attr": "step", "max_t": max_t, "reduction_factor": rf, "stop_last_trials": False,
                "grace_period": int(extra.get("grace_period", max(1, max_t // 10)))}
    if name == "hyperband":
        return {"time_attr": "step", "max_t": max_t, "reduction_factor": rf, "stop_last_trials": False}
    mutations = {n: ray_domain(p) for n, p in spec.params.items() if not p.when}
    if not mutations:
        raise TunerError("--scheduler pbt: the space has no unconditional parameter to mutate")
    return {"time_attr": "step", "hyperparam_mutations": mutations, "quantile_fraction": 0.25,
            "require_attrs": True,
            "perturbation_interval": int(extra.get("perturbation_interval", max(1, max_t // 4)))}


SCHEDULER_CLASSES = {"fifo": "FIFOScheduler", "asha": "ASHAScheduler",
                     "hyperband": "HyperBandScheduler", "pbt": "PopulationBasedTraining"}


def make_scheduler(name: str, spec: SweepSpec, extra: Mapping[str, Any]) -> Any:
    """Tune's scheduler ``name`` built from :func:`scheduler_settings`."""
    from ray.tune import schedulers

    settings = scheduler_settings(name, spec, extra)
    return getattr(schedulers, SCHEDULER_CLASSES[name])(**settings)


def trial_number(trial_id: str) -> int:
    """Tune's trial ids end in the trial's creation index (``a1b2c_00007`` -> 7)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else abs(hash(trial_id)) % 1_000_000_000


@dataclass(frozen=True)
class RayResume:
    """What a resumed Ray Tune sweep continues from, read from the recorder's event log by
    :meth:`RayTuneBackend.restore` and handed to the driver's callback (by Tune trial id).

    ``path``: Tune's experiment folder (``Tuner.restore``). ``done``: trials recorded finished
    (also those that finished after Tune's last snapshot: not run again). ``running``: trials
    started and never finished, or finished ``interrupted``: run again once, under a new number.
    ``numbers``: trial id -> number where it is not the id's index (earlier re-runs).
    ``finished``: the numbers of the ``done`` trials. ``rerun_from``: the next re-run's number.
    """

    path: Path
    done: frozenset[str] = frozenset()
    running: frozenset[str] = frozenset()
    numbers: tuple[tuple[str, int], ...] = ()
    finished: frozenset[int] = frozenset()
    rerun_from: int = 0


def resume_state(path: Path, started: Mapping[str, Mapping[str, Any]],
                 finished: Mapping[str, Mapping[str, Any]], budget: int) -> tuple[RayResume, Restored]:
    """The resume rule on Ray Tune's trials (by Tune trial id, as the recorder's log keys them):
    a trial recorded finished counts; one recorded ``interrupted`` (Ctrl-C), or started and never
    finished (a crash), is failed ``interrupted`` and runs again once, under a number past the
    budget and every number used."""
    done = {tid: rec for tid, rec in finished.items() if rec.get("reason") != INTERRUPTED}
    running = {tid: rec for tid, rec in started.items() if tid not in done}
    out = Restored(
        finished=[TrialResult.from_record(dict(rec)) for rec in done.values()],
        interrupted=[interrupted_result(int(rec["number"]), rec["params"], seed=int(rec.get("seed") or 0))
                     for rec in running.values()],
    )
    # a trial's number: its finished record's when it counts, else its last start's (a re-run)
    numbers = {tid: int(r["number"]) for tid, r in {**started, **done}.items()}
    used = [int(r["number"]) for r in (*started.values(), *finished.values())]
    resume = RayResume(
        path=path, done=frozenset(done), running=frozenset(running),
        numbers=tuple(sorted((tid, n) for tid, n in numbers.items() if n != trial_number(tid))),
        finished=frozenset(int(r["number"]) for r in done.values()),
        rerun_from=max([budget, *(n + 1 for n in used)]),
    )
    return resume, out


class BudgetedSearch(BasicVariantGenerator):
    """Tune's random search, which stops proposing once the recorder's stop rules say so
    (Ctrl-C, ``--timeout``, the step budget); running trials finish, as with the other tuners.

    ``max_concurrent`` is ``--workers``: Tune ignores ``TuneConfig.max_concurrent_trials`` when
    it is given a search algorithm, so this one proposes a trial only while fewer run (Tune's
    own default search does the same), and the stop rules are asked before each new trial
    (0: every trial at once, for the schedulers that pause trials).

    ``should_stop``, ``samples`` (the sweep's budget) and ``max_concurrent`` are the running
    driver's and never restored: Tune pickles the searcher into its experiment folder
    (``tuner.pkl``, its searcher state), and a resumed sweep's driver builds a new searcher onto
    which Tune restores the saved state, keeping the new ones; a larger ``--trials`` on resume
    adds the missing samples.
    """

    OWN = ("_should_stop", "_samples", "max_concurrent")  # the driver's, not Tune's state

    def __init__(self, *args: Any, should_stop: Callable[[], str | None] | None = None,
                 samples: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._should_stop = should_stop
        self._samples = samples

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_should_stop": None}

    def get_state(self) -> Any:
        state = super().get_state()
        if isinstance(state, dict):
            for key in self.OWN:
                state.pop(key, None)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Tune's restore of a saved state (``__dict__.update`` in Tune): ours is kept; a search
        the last driver's stop rules (``--timeout``, Ctrl-C) ended goes on with the samples it
        had not proposed (``next_trial`` finds out again whether any are left); a budget larger
        than the saved run's number of samples is made up (:meth:`_extend`)."""
        super().set_state({k: v for k, v in state.items() if k not in self.OWN})
        self._finished = False
        self._extend()

    def _extend(self) -> None:
        """A resumed sweep with a larger ``--trials``: Tune's saved state holds the first run's
        number of samples (its trials indexed 0 .. n-1), so the missing ones are chained as one
        more iterator over the same space, indexed from n on, drawn from the same random stream
        (one variant per sample: the space has no grid). Tune's own ``_TrialIterator``, as its
        ``add_configurations`` builds it (Tune has no public way to grow a restored search)."""
        more = (self._samples or 0) - self._total_samples
        if more <= 0 or not self._iterators:
            return
        from ray.tune.search.basic_variant import _TrialIterator

        spec = {**self._iterators[-1].unresolved_spec, "num_samples": more}
        iterator = _TrialIterator(uuid_prefix=self._uuid_prefix, num_samples=more, unresolved_spec=spec,
                                  constant_grid_search=self._constant_grid_search, points_to_evaluate=[],
                                  lazy_eval=False, start=self._total_samples,
                                  random_state=self._random_state)
        self._iterators.append(iterator)
        self._trial_generator = itertools.chain(self._trial_generator, iterator)
        self._total_samples += more

    def next_trial(self) -> Any:
        if self._should_stop is not None and self._should_stop():
            self.set_finished()
            return None
        return super().next_trial()


class RayTuneBackend:
    """``--tuner ray``: proposes what Ray Tune's loop needs (its ``param_space``, searcher and
    scheduler) and reads a sweep back for resume (:class:`RayResume`); the Ray Tune driver
    (:mod:`harness.drivers.ray_tune`) runs the sweep. Not a :class:`~harness.tuners.base.Tuner`:
    Tune proposes inside its own loop, so nothing asks this class for a trial. It keeps the
    attributes the runner reads of every backend (``name``, ``driver``, ``takes``, ``resumable``,
    ``check``, ``from_spec``, ``enqueue``, ``restore``, ``shared_progress``, ``close``)."""

    name = "ray"
    driver = "ray_tune"
    resumable = True
    takes = ("scheduler",)

    def __init__(self, spec: SweepSpec, options: TunerOptions) -> None:
        self.check(spec, options)
        self.spec = spec
        self.options = options
        self.scheduler = options.scheduler or "fifo"
        self.points: list[dict[str, Any]] = []  # Tune's points_to_evaluate
        self.resume: RayResume | None = None  # set by restore(): what the driver continues from

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        """An unknown scheduler, or a space a scheduler cannot use (PBT with nothing to mutate),
        or several objectives (its loop reports one metric to one searcher and scheduler)."""
        if spec.multi:
            raise TunerError(f"--tuner ray: Ray Tune's loop optimizes one metric, this space has "
                             f"{len(spec.metrics)} ({', '.join(m.name for m in spec.metrics)}); "
                             "use --tuner optuna, ax or random (any of them on --engine ray)")
        scheduler_settings(options.scheduler or "fifo", spec, options.extra)

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> RayTuneBackend:
        return cls(spec, options)

    # -- what Tune's loop needs ----------------------------------------------------------------
    def param_space(self) -> dict[str, Any]:
        return param_space(self.spec, self.options.seed)

    def searcher(self, should_stop: Callable[[], str | None], concurrent: int) -> BudgetedSearch:
        """Tune's random search, seeded by ``--seed``, given points first, bounded by the stop
        rules, proposing at most ``concurrent`` trials at a time (``--workers``) under a
        scheduler that never pauses a trial. HyperBand and PBT pause trials and run waiting ones
        in their place, so they get every trial at once (their population; PBT exploits
        within it), and Ray's CPUs bound how many run."""
        lazy = self.scheduler not in PAUSING
        return BudgetedSearch(points_to_evaluate=self.points or None, random_state=self.options.seed,
                              should_stop=should_stop, samples=self.options.budget,
                              max_concurrent=concurrent if lazy else 0)

    def make_scheduler(self) -> Any:
        return make_scheduler(self.scheduler, self.spec, self.options.extra)

    # -- what the runner asks of every backend -------------------------------------------------
    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` first (Tune's ``points_to_evaluate``)."""
        self.points.append(dict(params))

    def restore(self) -> Restored:
        """Tune's experiment folder is restored by the driver (``Tuner.restore``); what finished
        and what was running come from the recorder's event log (:func:`read_events`, written
        before MLflow is), by the rule of :func:`resume_state`; the driver gets it as
        :attr:`resume`. A sweep killed before Tune saved anything or ran a trial starts afresh."""
        state_dir = self.options.state_dir
        if state_dir is None:
            raise TunerError("--resume: the sweep has no state folder")
        path = (state_dir / "ray" / "tune").resolve()
        repair_jsonl(state_dir / EVENT_LOG)  # a torn last line, cut by a kill, is moved aside
        started, finished = read_events(state_dir)
        if not tune.Tuner.can_restore(str(path)):
            if started or finished:
                raise TunerError(f"--resume: trials ran but Ray Tune saved no experiment in {path}; "
                                 "start the sweep again under another --name")
            return Restored()
        budget = self.options.budget or self.options.extra.get("budget") or 0
        self.resume, restored = resume_state(path, started, finished, int(budget))
        return restored

    def shared_progress(self) -> Progress | None:
        return None  # one process drives a Ray Tune sweep

    def close(self) -> None:
        """Nothing held: Tune's objects live in the driver."""


RayTuneTuner = RayTuneBackend  # the name the ``harness.tuners`` entry point ``ray`` gives

__all__ = ["SCHEDULERS", "BudgetedSearch", "RayResume", "RayTuneBackend", "RayTuneTuner", "domains",
           "make_scheduler", "param_space", "ray_domain", "resume_state", "scheduler_settings",
           "trial_number"]
