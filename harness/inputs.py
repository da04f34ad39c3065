"""Validating a sweep's inputs before anything is created: options, backends, devices, sizing.

:func:`prepare` checks everything that can be wrong with a sweep's input (the space, the
objective, the budget, the tuner / engine pairing and each backend's own options, the device
slots, the population size against free memory, the tracking store, the name) and returns a
:class:`Prepared` sweep; it creates no MLflow run, no worker and no state folder. One line per
fault (``UsageError``, ``SpecError``, ``TunerError``, ``EngineError``: exit 2).

The tuner vocabulary is here too (:func:`parse_tuner`): ``optuna:tpe``, ``optuna:gp``,
``optuna:cmaes``, ``optuna:nsga2``, ``ax``, ``random``, ``ray:asha`` (plain ``optuna`` =
``optuna:tpe``; plugins by name) name the same thing in ``harness sweep``, ``benchmark``,
``benchmark --simulated`` and ``compare``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.objective import check_objective
from harness.spec import SweepSpec, load_spec
from harness.tracking import check_store, resolve_uri
from harness.tuners.base import TunerError, TunerOptions, registered_tuners, tuner_class

STATE_ROOT = Path(".harness") / "sweeps"
POPULATION_CUDA = 16  # --population's default when the workers are GPUs (off on CPU)


class UsageError(ValueError):
    """A combination of options that makes no sense (one line, exit 2)."""


# -- the tuner vocabulary ----------------------------------------------------------------------
@dataclass(frozen=True)
class TunerName:
    """A parsed tuner name: the backend, and its sampler (optuna) or scheduler (ray)."""

    backend: str
    sampler: str | None = None
    scheduler: str | None = None

    @property
    def label(self) -> str:
        """The canonical name (the sweep's ``harness.tuner`` tag): ``optuna`` for ``optuna:tpe``
        (its default), ``optuna:cmaes``, ``ray`` for Ray Tune's default scheduler, ``ray:asha``."""
        part = self.sampler if self.sampler not in (None, "tpe") else None
        part = part or (self.scheduler if self.scheduler not in (None, "fifo") else None)
        return f"{self.backend}:{part}" if part else self.backend


def parse_tuner(name: str, sampler: str | None = None, scheduler: str | None = None) -> TunerName:
    """``optuna:cmaes`` -> (optuna, sampler cmaes); ``ray:asha`` -> (ray, scheduler asha); ``ax``,
    ``random`` and plugins by name. ``sampler`` / ``scheduler`` (``--sampler``, ``--scheduler``)
    apply when the name carries none; a name that carries one and a flag that differs is an error."""
    backend, sep, part = name.strip().partition(":")
    if not backend or (sep and not part):
        raise UsageError(f"--tuner {name!r}: use a tuner name such as optuna, optuna:cmaes, ax, random, ray:asha")
    if backend not in registered_tuners() and backend != "manual":
        known = ", ".join(sorted(registered_tuners()))
        raise TunerError(f"--tuner {name}: unknown tuner (installed: {known})")
    if not part:
        return TunerName(backend, sampler if backend != "ray" else None,
                         scheduler if backend == "ray" else None)
    if backend == "optuna":
        if sampler not in (None, "tpe", part):
            raise UsageError(f"--tuner {name} --sampler {sampler}: the name already says sampler {part}")
        return TunerName(backend, sampler=part)
    if backend == "ray":
        if scheduler not in (None, part):
            raise UsageError(f"--tuner {name} --scheduler {scheduler}: the name already says scheduler {part}")
        return TunerName(backend, scheduler=part)
    raise UsageError(f"--tuner {name}: only optuna (a sampler) and ray (a scheduler) take a ':' part")


def parse_tuners(text: str | list[str], flag: str = "--tuners") -> list[TunerName]:
    """A comma list (``--tuners optuna:cmaes,random``): each parsed, no tuner twice."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    installed = registered_tuners()
    missing = [t for t in items if t.partition(":")[0] not in installed]
    if missing:
        raise TunerError(f"{flag}: {', '.join(missing)} not installed (installed: {', '.join(sorted(installed))})")
    parsed = [parse_tuner(t) for t in items]
    labels = [p.label for p in parsed]
    if not parsed or len(set(labels)) != len(labels):
        raise UsageError(f"{flag} {','.join(items) or text!r}: give distinct tuner names, e.g. optuna,random")
    return parsed


# -- options -------------------------------------------------------------------------------------
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

    @property
    def label(self) -> str:
        """The tuner's canonical name (the ``harness.tuner`` tag), e.g. ``optuna:cmaes``."""
        if self.tuner == "manual":
            return "manual"
        return TunerName(self.tuner, self.sampler if self.tuner == "optuna" else None,
                         self.tuner_options.get("scheduler")).label


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


def prepare(options: SweepOptions, spec: SweepSpec | None = None, *, quiet: bool = False) -> Prepared:
    """Validate everything; raise a one-line error (SpecError, UsageError, ...) on the first fault.
    ``quiet``: notes (a population split, a plain trainer) are not said again (a benchmark's
    other sweeps, prepared like its first)."""
    if ":" in options.tuner:  # --tuner optuna:cmaes = --tuner optuna --sampler cmaes
        t = parse_tuner(options.tuner, None if options.sampler == "tpe" else options.sampler,
                        options.tuner_options.get("scheduler"))
        options.tuner = t.backend
        if t.sampler:
            options.sampler = t.sampler
        if t.scheduler:
            options.tuner_options = {**options.tuner_options, "scheduler": t.scheduler}
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
    slots = engine_slots(options)
    population = _population(options, spec, slots, quiet)
    uri = resolve_uri(options.tracking_uri)
    if uri is not None:
        check_store(uri)
    stem = Path(str(options.space)).stem
    name = options.name or f"{stem}-{options.label.replace(':', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    if any(c in name for c in "/\\") or name.startswith("."):
        raise UsageError(f"--name {name!r}: a sweep name cannot contain '/' or start with '.'")
    return Prepared(
        options=options, spec=spec, name=name, experiment=options.experiment or stem,
        uri=uri, slots=slots,
        state_dir=options.state_root / name, trials=options.trials or spec.budget.trials,
        first=first_configs(spec, options), population=population,
    )


def _population(options: SweepOptions, spec: SweepSpec, slots: list[str], quiet: bool = False) -> int:
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
        if given and not quiet:
            _stderr(f"--population {k}: objective '{spec.objective}' has no population form; "
                    "its trials run one per process")
        return 1
    return _fit_population(k, form, spec, slots, quiet)


def _fit_population(k: int, form: Any, spec: SweepSpec, slots: list[str], quiet: bool = False) -> int:
    """Split (fewer members per worker) or refuse, before any trial starts, populations whose
    members would not fit. A worker holds at most K members in all, whatever populations they
    form (members of different widths, batch sizes or losses may share one, and a population
    computes only its occupied rows), so the estimate is K x the largest ``member_bytes`` of the
    space's defaults and 256 random configurations, against the free memory of a worker's device
    (CUDA: the GPU's free memory shared by its workers; CPU: available RAM shared by all
    workers), keeping 20% spare."""
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
        if not quiet:
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
    "population_size": ("--population-size", "only --tuner optuna --sampler nsga2 takes a population size"),
}
_OPTION_DEFAULTS = {"pruner": "none"}


def tuner_options(options: SweepOptions, p: Prepared | None = None) -> TunerOptions:
    """The options every tuner receives (typed fields; ``extra`` holds the rest)."""
    extra = dict(options.tuner_options)
    return TunerOptions(
        seed=options.seed, sampler=options.sampler, pruner=options.pruner, storage=options.storage,
        study_name=p.name if p else options.name, state_dir=p.state_dir if p else None,
        budget=p.trials if p else options.trials, scheduler=extra.pop("scheduler", None),
        ax_method=extra.pop("ax_method", None), population_size=extra.pop("population_size", None),
        extra=extra,
    )


def own_loop(tuner: str) -> bool:
    """Whether the tuner ``tuner`` runs its own loop (Ray Tune) rather than the ask/tell driver."""
    if tuner == "manual":
        return False
    return getattr(tuner_class(tuner), "driver", "ask_tell") != "ask_tell"


def _check_backends(options: SweepOptions, spec: SweepSpec) -> None:
    """The tuner / engine pairing, options meant for another backend, then the chosen tuner's
    and engine's own checks (each backend validates itself: adding one touches one file)."""
    if options.tuner == "manual":
        options.engine = options.engine or "local"
        return
    cls = tuner_class(options.tuner)
    loop = own_loop(options.tuner)
    engine = options.engine or ("ray" if loop else "local")
    if loop and engine != "ray":
        raise UsageError(f"--tuner {options.tuner} --engine {engine}: Ray Tune runs its own trials on Ray "
                         f"(--tuner {options.tuner} implies --engine ray)")
    options.engine = engine
    takes = set(getattr(cls, "takes", ()))  # a protocol-only plugin class may declare none
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


def engine_slots(options: SweepOptions) -> list[str]:
    """The device slot of each worker, for the chosen engine."""
    from harness.engines import ENGINES
    from harness.engines.local import device_slots

    if options.engine not in ENGINES:
        raise UsageError(f"--engine {options.engine}: unknown engine (use one of {', '.join(ENGINES)})")
    return device_slots(options.devices, options.trials_per_device, options.workers)


def _stderr(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr)


__all__ = ["POPULATION_CUDA", "STATE_ROOT", "Prepared", "SweepOptions", "TunerName", "UsageError",
           "engine_slots", "first_configs", "free_bytes_per_worker", "own_loop", "parse_tuner", "parse_tuners",
           "prepare", "tuner_options"]
