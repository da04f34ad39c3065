"""Ray Tune backend, the proposing half: domains, Tune's searcher and schedulers, restore.

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform

from harness.files import read_jsonl, repair_jsonl
from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.trials import EVENT_LOG, Restored, TrialResult, interrupted_result
from harness.tuners.base import Tuner, TunerError, TunerOptions

SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
LOG_FILE = EVENT_LOG  # the recorder's write-ahead log: what started and finished, by Tune trial id

# Driver-side objects, by sweep: Tune pickles its callbacks and searcher into the experiment
# folder and ``Tuner.restore`` unpickles them, so a restored one finds the live ones here.
LIVE: dict[str, dict[str, Any]] = {}
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


def trial_number(trial_id: str) -> int:
    """Tune's trial ids end in the trial's creation index (``a1b2c_00007`` -> 7)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else abs(hash(trial_id)) % 1_000_000_000


def read_log(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The event log by Tune trial id: its last ``started`` record, and its ``finished`` one
    (a torn last line, cut by a kill, is moved aside first)."""
    repair_jsonl(path)
    started: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(path):
        key = rec.get("key") or rec.get("trial_id")
        if key is not None:
            (started if rec.get("event") == "started" else finished)[str(key)] = rec
    return started, finished


class BudgetedSearch(BasicVariantGenerator):
    """Tune's random search, which stops proposing once the recorder's stop rules say so
    (Ctrl-C, ``--timeout``, the step budget); running trials finish, as with the other tuners."""

    def __init__(self, *args: Any, should_stop: Callable[[], str | None], key: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key = key
        self._should_stop = should_stop

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_should_stop"] = None  # the driver's; a restored searcher takes the new one
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rebind()

    def get_state(self) -> Any:
        """Tune saves its searcher's ``__dict__`` (minus its iterators) into the experiment."""
        state = super().get_state()
        if isinstance(state, dict):
            state["_should_stop"] = None
        return state

    def _rebind(self) -> None:
        """A restored searcher: the new driver's stop rules (Tune restores its state with a
        plain ``__dict__`` update too, hence the call in ``next_trial``)."""
        bound = LIVE.get(getattr(self, "_key", ""))
        if bound is not None:
            self._should_stop = bound["should_stop"]

    def next_trial(self) -> Any:
        self._rebind()
        if self._should_stop is not None and self._should_stop():
            self.set_finished()
            return None
        return super().next_trial()


class RayTuneTuner(Tuner):
    """``--tuner ray``: Ray Tune's searcher and scheduler; its own driver runs the sweep."""

    name = "ray"
    driver = "ray_tune"
    resumable = True
    takes = ("scheduler",)

    def __init__(self, spec: SweepSpec, options: TunerOptions) -> None:
        self.spec = spec
        self.options = options
        self.check(spec, options)
        self.scheduler = options.scheduler or "fifo"
        self.points: list[dict[str, Any]] = []  # Tune's points_to_evaluate
        self.restore_path: Path | None = None  # set by restore(): Tune's experiment folder
        self.resume: dict[str, Any] | None = None  # what the driver's callback continues from
        self.restored: Restored | None = None

    @classmethod
    def check(cls, spec: SweepSpec, options: TunerOptions) -> None:
        """An unknown scheduler, or a space a scheduler cannot use (PBT with nothing to mutate),
        or several objectives (its loop reports one metric to one searcher and scheduler)."""
        if spec.multi:
            raise TunerError(f"--tuner ray: Ray Tune's loop optimizes one metric, this space has "
                             f"{len(spec.metrics)} ({', '.join(m.name for m in spec.metrics)}); "
                             "use --tuner optuna, ax or random (any of them on --engine ray)")
        make_scheduler(options.scheduler or "fifo", spec, options.extra, options.seed)

    @classmethod
    def from_spec(cls, spec: SweepSpec, options: TunerOptions) -> RayTuneTuner:
        return cls(spec, options)

    def ask(self, n: int) -> list[Any]:
        raise TunerError("--tuner ray: Ray Tune proposes inside its own loop (the ray_tune driver)")

    def enqueue(self, params: dict[str, Any]) -> None:
        """Evaluate ``params`` first (Tune's ``points_to_evaluate``)."""
        self.points.append(dict(params))

    def make_scheduler(self) -> Any:
        return make_scheduler(self.scheduler, self.spec, self.options.extra, self.options.seed)

    def restore(self) -> Restored:
        """Tune's experiment folder is restored by the driver (``Tuner.restore``); what finished
        and what was running come from the recorder's log, written before MLflow is. A trial
        recorded ``interrupted`` (Ctrl-C) or started and never finished (a crash) runs again
        once, under a new number."""
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
        done = {tid: rec for tid, rec in finished.items() if rec.get("reason") != "interrupted"}
        for rec in done.values():
            out.finished.append(TrialResult.from_record(rec))
        running = {tid: rec for tid, rec in started.items() if tid not in done}
        for rec in running.values():
            out.interrupted.append(interrupted_result(int(rec["number"]), rec["params"]))
        used = [int(r["number"]) for r in started.values()] + [int(r["number"]) for r in finished.values()]
        budget = self.options.budget or self.options.extra.get("budget") or 0
        self.restore_path = path
        self.resume = {
            "done_ids": set(done), "interrupted_ids": set(running),
            "numbers": {tid: int(r["number"]) for tid, r in {**started, **finished}.items()
                        if int(r["number"]) != trial_number(tid)},
            "finished": {int(r["number"]) for r in done.values()},
            "rerun_from": max([budget, *(n + 1 for n in used)]),
        }
        self.restored = out
        return out


__all__ = ["LIVE", "SCHEDULERS", "BudgetedSearch", "RayTuneTuner", "domains", "param_space", "ray_domain",
           "read_log", "trial_number"]
