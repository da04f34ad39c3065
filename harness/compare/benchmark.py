"""Planning and running a benchmark: every tuner on every seed, on an equal budget.

:func:`plan_benchmark` validates everything before the first sweep starts; :func:`run_benchmark`
runs the sweeps: by default all at once over ONE shared engine (the process pool, or
populations with ``--population K``; :func:`harness.builder.launch_together`), each with its
own tuner, recorder, seed, parent run, budget, state folder and ``--workers`` in-flight cap;
``--tuner ray`` sweeps keep Ray Tune's own loop and run apart, after them. ``sequential=True``
runs them one after another, each on its own engine (the behaviour before sweeps ran together).
Rerunning with the same ``--id`` continues each unfinished sweep and skips the finished ones; with a
larger ``--trials`` a finished sweep is continued to the new budget (its trials so far are kept).
``harness benchmark`` then compares them (:func:`harness.compare.run.run_compare`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import names as N

STEPS_ONLY_TRIAL_CAP = 10_000  # `benchmark --budget-steps B` without --trials: the step budget decides


@dataclass
class BenchmarkPlan:
    id: str
    space: str
    tuners: list[str]  # canonical labels (optuna, optuna:cmaes, random, ray:asha, ...)
    seeds: list[int]
    experiment: str
    sweeps: list[Any]  # SweepOptions, interleaved: every tuner on seed 0, then on seed 1, ...
    trials: int
    budget_steps: int | None
    finished: set[str] = field(default_factory=set)  # sweeps of this id already finished (skipped)
    unfinished: set[str] = field(default_factory=set)  # sweeps of this id started, to continue
    extended: set[str] = field(default_factory=set)  # finished on a smaller --trials: continued to this one
    workers: int = 1
    population: int = 1


@dataclass
class BenchmarkRun:
    """What running a plan did: the summaries of the sweeps run now, the wall time, the fill rate."""

    summaries: list[Any]
    seconds: float
    fill_rate: float | None = None
    skipped: list[str] = field(default_factory=list)


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


def seeds_text(seeds: list[int]) -> str:
    """The ``--seeds`` text :func:`parse_seeds` reads back as exactly ``seeds``: a count for 0 ..
    n-1, else a comma list (``9,`` for seed 9 alone: a bare ``9`` is a count, seeds 0 .. 8)."""
    if seeds == list(range(len(seeds))):
        return str(len(seeds))
    return ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")


def plan_benchmark(space: str, *, tuners: str, seeds: str, trials: int | None = None,
                   budget_steps: int | None = None, workers: int | None = None, devices: str = "auto",
                   tracking_uri: str | None = None, experiment: str | None = None,
                   bid: str | None = None, pruner: str = "none", command: str | None = None,
                   population: int | None = None, concurrent: int | None = None,
                   engine: str | None = None) -> BenchmarkPlan:
    """Validate everything before the first sweep starts: tuners installed, seeds, budget, space."""
    from harness.inputs import parse_tuners
    from harness.runner import SweepOptions, UsageError, prepare
    from harness.sweep_dir import FINISHED, read_state

    parsed = parse_tuners(tuners)
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if budget_steps is not None and budget_steps < 1:
        raise UsageError(f"--budget-steps must be >= 1, got {budget_steps}")
    if concurrent is not None and concurrent < 1:
        raise UsageError(f"--concurrent must be >= 1, got {concurrent}")
    seed_list = parse_seeds(seeds)
    bid = bid or f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    if any(c in bid for c in "/\\'\" ") or bid.startswith("."):
        raise UsageError(f"--id {bid!r}: a benchmark id has no quotes, spaces or '/'")
    stem = Path(space).stem
    cap = trials if trials is not None else (STEPS_ONLY_TRIAL_CAP if budget_steps is not None else None)
    sweeps = []
    for seed in seed_list:
        for t in parsed:
            tags = {N.TAG_BENCHMARK: bid}
            if budget_steps is not None:
                tags[N.TAG_BUDGET_STEPS] = str(budget_steps)
            ray = t.backend == "ray"
            sweeps.append(SweepOptions(
                space=space, tuner=t.backend, engine="ray" if ray else (engine or "local"), seed=seed,
                trials=cap, workers=workers, devices=devices, budget_steps=budget_steps,
                tracking_uri=tracking_uri, experiment=experiment, tags=tags,
                name=f"{stem}-{t.label.replace(':', '-')}-s{seed}-{bid}", command=command,
                sampler=t.sampler or "tpe", pruner=pruner if t.backend == "optuna" else "none",
                tuner_options={"scheduler": t.scheduler} if t.scheduler else {},
                population=None if ray else population,  # Ray Tune: one trial per actor
            ))
    p = prepare(sweeps[0])  # the space, the objective, the devices and the store, checked once
    if p.uri is None:
        raise UsageError("harness benchmark compares sweeps read back from MLflow: not --tracking-uri none")
    for s in sweeps[1:]:
        if s.tuner != sweeps[0].tuner or s.sampler != sweeps[0].sampler:
            prepare(s, quiet=True)  # each tuner's own checks (its sampler on this space, ...)
    plan = BenchmarkPlan(id=bid, space=space, tuners=[t.label for t in parsed], seeds=seed_list,
                         experiment=p.experiment, sweeps=sweeps, trials=p.trials, budget_steps=budget_steps,
                         workers=len(p.slots), population=p.population)
    for s in sweeps:
        state = read_state(s.state_root / s.name)
        if state is None:
            continue
        short = cap is not None and isinstance(state.get("trials"), int) and state["trials"] < cap
        if state.get("status") == FINISHED and not short:
            plan.finished.add(s.name)
        else:  # unfinished, or finished on a smaller --trials of the same id: continued to this budget
            plan.unfinished.add(s.name)
            if state.get("status") == FINISHED:
                plan.extended.add(s.name)
    return plan


def run_benchmark(plan: BenchmarkPlan, *, sequential: bool = False, concurrent: int | None = None,
                  progress: Callable[[int, Any], AbstractContextManager[Any]] | None = None,
                  on_sweep: Callable[[Any], None] | None = None) -> BenchmarkRun:
    """Run the plan's sweeps that are not finished yet: together over one shared engine (Ray
    Tune's sweeps apart, after them), or ``sequential``-ly each on its own engine. ``on_sweep``
    hears each :class:`~harness.builder.SweepSummary` as its sweep closes; ``progress(i,
    options)`` (sequential runs) returns a context manager whose value receives live updates.
    Ctrl-C: :class:`~harness.builder.SweepsInterrupted` with every summary so far."""
    from harness.builder import SweepInterrupted, SweepsInterrupted
    from harness.inputs import own_loop

    t0 = time.perf_counter()
    todo = [o for o in plan.sweeps if o.name not in plan.finished]
    run = BenchmarkRun([], 0.0, skipped=sorted(plan.finished))

    def heard(summary: Any) -> None:
        run.summaries.append(summary)
        if on_sweep is not None:
            on_sweep(summary)

    together = [] if sequential else [o for o in todo if not own_loop(o.tuner)]
    apart = [o for o in todo if o not in together]
    try:
        if together:
            try:
                run.fill_rate = _together(plan, together, concurrent, heard)
            except SweepsInterrupted:
                raise SweepsInterrupted(run.summaries) from None
        for i, options in enumerate(apart):
            with (progress(i, options) if progress else nullcontext(None)) as live:
                try:
                    heard(_one(plan, options, live))
                except SweepInterrupted as exc:
                    heard(exc.summary)
                    raise SweepsInterrupted(run.summaries) from None
    finally:
        run.seconds = time.perf_counter() - t0
    return run


def _together(plan: BenchmarkPlan, todo: list[Any], concurrent: int | None,
              heard: Callable[[Any], None]) -> float | None:
    """The ask/tell sweeps at once over one shared engine; returns its fill rate."""
    from harness.builder import launch_together, make_engine_for
    from harness.runner import prepare
    from harness.sweep_dir import lock_sweep, prepare_resume

    items = []
    for options in todo:
        if options.name in plan.unfinished:
            state_dir = options.state_root / options.name
            lock = lock_sweep(state_dir, options.name)  # refused when another process drives it
            try:
                o, p, state = prepare_resume(options.name, state_dir, space=plan.space, trials=options.trials,
                                             quiet=True)
            finally:
                lock.release()
            items.append((o, p, state))
        else:
            items.append((options, prepare(options, quiet=True), None))
    first = items[0][1]
    engine = make_engine_for(items[0][0], replace(first, slots=shared_places(first.slots, concurrent, len(items))))
    assert engine is not None  # ask/tell sweeps only
    launch_together(items, engine=engine, cap=len(first.slots), concurrent=concurrent, on_close=heard)
    return engine.fill_rate()


def shared_places(slots: list[str], concurrent: int | None, sweeps: int) -> list[str]:
    """The shared engine's places: ``--concurrent N`` sweeps at once on CPU get N x ``--workers``
    worker processes (each sweep keeps its own ``--workers`` cap, so ``--workers 1 --concurrent
    2`` runs two sequential sweeps side by side on two processes of one thread each); without
    ``--concurrent``, or on GPUs (the places are the device slots), every sweep shares the
    ``--workers`` places (one sweep's tuner thinks while another's trial runs)."""
    if concurrent is None or any(s != "cpu" for s in slots):
        return list(slots)
    return list(slots) * min(concurrent, max(1, sweeps))


def _one(plan: BenchmarkPlan, options: Any, live: Any) -> Any:
    """One sweep on its own engine: started, or continued when this id already started it."""
    from harness.builder import launch, resume

    if options.name in plan.unfinished:
        return resume(options.name, state_root=options.state_root, space=plan.space, trials=options.trials,
                      on_update=live)
    return launch(options, live)
