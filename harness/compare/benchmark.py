"""Planning and running a benchmark: every tuner on every seed, on an equal budget.

:func:`plan_benchmark` validates everything before the first sweep starts; :func:`run_benchmark`
runs the sweeps one after another. ``harness benchmark`` then compares them
(:func:`harness.compare.run.run_compare`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import names as N

STEPS_ONLY_TRIAL_CAP = 10_000  # `benchmark --budget-steps B` without --trials: the step budget decides


@dataclass
class BenchmarkPlan:
    id: str
    space: str
    tuners: list[str]
    seeds: list[int]
    experiment: str
    sweeps: list[Any]  # SweepOptions, interleaved: every tuner on seed 0, then on seed 1, ...
    trials: int
    budget_steps: int | None


def parse_seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; a comma list names them (``0,5,9``; ``7,`` is seed 7 alone)."""
    from harness.runner import UsageError

    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise UsageError(f"--seeds {text}: give a count (3) or a comma list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text}: give a positive count or distinct non-negative seeds")
    return seeds


def plan_benchmark(space: str, *, tuners: str, seeds: str, trials: int | None = None,
                   budget_steps: int | None = None, workers: int | None = None, devices: str = "auto",
                   tracking_uri: str | None = None, experiment: str | None = None,
                   bid: str | None = None, pruner: str = "none", command: str | None = None,
                   population: int | None = None) -> BenchmarkPlan:
    """Validate everything before the first sweep starts: tuners installed, seeds, budget, space."""
    from harness.runner import SweepOptions, UsageError, prepare
    from harness.tuners.base import TunerError, registered_tuners

    names = [t.strip() for t in tuners.split(",") if t.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--tuners {tuners}: give distinct tuner names, e.g. optuna,random")
    installed = registered_tuners()
    missing = [t for t in names if t not in installed]
    if missing:
        raise TunerError(f"--tuners: {', '.join(missing)} not installed (installed: {', '.join(sorted(installed))})")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if budget_steps is not None and budget_steps < 1:
        raise UsageError(f"--budget-steps must be >= 1, got {budget_steps}")
    seed_list = parse_seeds(seeds)
    bid = bid or f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    if any(c in bid for c in "/\\'\" ") or bid.startswith("."):
        raise UsageError(f"--id {bid!r}: a benchmark id has no quotes, spaces or '/'")
    stem = Path(space).stem
    cap = trials if trials is not None else (STEPS_ONLY_TRIAL_CAP if budget_steps is not None else None)
    sweeps = []
    for seed in seed_list:
        for tuner in names:
            tags = {N.TAG_BENCHMARK: bid}
            if budget_steps is not None:
                tags[N.TAG_BUDGET_STEPS] = str(budget_steps)
            sweeps.append(SweepOptions(
                space=space, tuner=tuner, engine="ray" if tuner == "ray" else "local", seed=seed,
                trials=cap, workers=workers, devices=devices, budget_steps=budget_steps,
                tracking_uri=tracking_uri, experiment=experiment, tags=tags,
                name=f"{stem}-{tuner}-s{seed}-{bid}", command=command,
                pruner=pruner if tuner == "optuna" else "none",
                population=None if tuner == "ray" else population,  # Ray Tune: one trial per actor
            ))
    p = prepare(sweeps[0])  # the space, the objective, the devices and the store, checked once
    if p.uri is None:
        raise UsageError("harness benchmark compares sweeps read back from MLflow: not --tracking-uri none")
    for s in sweeps[1:]:
        if (s.state_root / s.name / "state.json").exists():
            raise UsageError(f"--id {bid}: sweeps of that benchmark exist already; choose another id")
    return BenchmarkPlan(id=bid, space=space, tuners=names, seeds=seed_list, experiment=p.experiment,
                         sweeps=sweeps, trials=p.trials, budget_steps=budget_steps)


def run_benchmark(plan: BenchmarkPlan,
                  progress: Callable[[int, Any], AbstractContextManager[Any]] | None = None) -> Iterator[Any]:
    """Run the plan's sweeps one after another; yield each :class:`SweepSummary` as it finishes.

    ``progress(i, options)`` returns a context manager whose value receives live updates.
    """
    from harness.runner import launch

    for i, options in enumerate(plan.sweeps):
        with (progress(i, options) if progress else nullcontext(None)) as live:
            summary = launch(options, live)
        yield summary
