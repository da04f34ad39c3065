"""The command line: parse, call one function, print. No logic of its own."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

try:  # typer >= 0.24 vendors click; its exceptions live there
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as cx

from harness.display import LiveSweep, summary_table, trials_table

app = typer.Typer(
    name="harness",
    help=(
        "Tune GFlowNet, diffusion and LocoProp trainers (or your own) with Optuna, Ax, Ray Tune "
        "or random search; every trial is logged to MLflow.\n\n"
        "Quick start:  harness sweep branin --trials 16 --workers 2   then   harness ui"
    ),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# piped output (logs, grep) gets wide lines instead of rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

SpaceArg = Annotated[str, typer.Argument(help="A search-space YAML file, or the name of a shipped one (see `harness spaces`).")]
PopulationOpt = Annotated[int | None, typer.Option(help="Run up to K trials of the same trainer per worker as one batched model (each still its own trial, seed and MLflow child run; members of equal structure share a population). Default: off on CPU, 16 on CUDA. A trainer without a population form runs one trial per process. Ray Tune's loop and --engine ray keep one trial per actor.")]
TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here); 'none' disables tracking.")]


def _sweep_options(**kw: object) -> object:
    from harness.runner import SweepOptions

    return SweepOptions(command=shlex.join(["harness", *sys.argv[1:]]), **kw)  # type: ignore[arg-type]


@app.command()
def sweep(
    space: SpaceArg,
    tuner: Annotated[str, typer.Option(help="Who proposes trials: optuna | ax | ray (Ray Tune) | random (and any installed harness.tuners plugin); optuna:cmaes = --tuner optuna --sampler cmaes, ray:asha = --tuner ray --scheduler asha.")] = "optuna",
    engine: Annotated[str | None, typer.Option(help="Where trials run: local (worker processes on this machine) | ray (Ray actors; a local Ray, or the cluster at --ray-address). Default: ray for --tuner ray, else local.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trial budget (default: the space's budget.trials).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel worker processes (default: one per GPU slot, else half the CPU cores).")] = None,
    devices: Annotated[str, typer.Option(help="auto | cpu | GPU indices such as 0,1.")] = "auto",
    trials_per_device: Annotated[int, typer.Option(help="Trials sharing one GPU at a time.")] = 1,
    tracking_uri: TrackingOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the space file's stem).")] = None,
    name: Annotated[str | None, typer.Option(help="Sweep name (default: <space>-<tuner>-<timestamp>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the tuner and of the trials' seeds.")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Stop dispatching new trials after this many seconds.")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.")] = None,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe | random | gp | cmaes | nsga2 (several objectives: tpe, random, gp, nsga2).")] = "tpe",
    pruner: Annotated[str, typer.Option(help="Optuna pruner: none | median | hyperband | sha.")] = "none",
    storage: Annotated[str | None, typer.Option(help="Optuna storage: memory, a journal file path, sqlite:///... or postgresql://... (default: a journal file in .harness/sweeps/NAME/).")] = None,
    enqueue: Annotated[str | None, typer.Option(help="A YAML list of known configurations to evaluate before the tuner's own suggestions.")] = None,
    defaults_first: Annotated[bool, typer.Option("--defaults-first", help="Evaluate the space's default configuration first.")] = False,
    resume_: Annotated[bool, typer.Option("--resume", help="Continue the sweep --name NAME from its saved state (the same space file is required).")] = False,
    ax_method: Annotated[str | None, typer.Option(help="Ax generation method: fast | quality | random_search (default fast).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Ray Tune scheduler: fifo | asha | hyperband | pbt (default fifo).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (auto, or host:port of `ray start --head`) instead of starting a local Ray.")] = None,
    population: PopulationOpt = None,
    population_size: Annotated[int | None, typer.Option("--population-size", help="NSGA-II's population (generation) size (optuna's default 50; only with --sampler nsga2).")] = None,
) -> None:
    """Run a sweep: the tuner proposes, workers train, MLflow records every trial."""
    from harness.runner import UsageError, launch, prepare

    if resume_:
        if name is None:
            raise UsageError("--resume needs --name NAME of the sweep to continue (see 'harness ls')")
        _resume(name, space=space, trials=trials, workers=workers, tracking_uri=tracking_uri)
        return

    options = _sweep_options(
        space=space, tuner=tuner, engine=engine, trials=trials, workers=workers, devices=devices,
        trials_per_device=trials_per_device, tracking_uri=tracking_uri, experiment=experiment,
        name=name, seed=seed, timeout=timeout, trial_timeout=trial_timeout, sampler=sampler,
        pruner=pruner, storage=storage, enqueue=enqueue, defaults_first=defaults_first,
        engine_options={"address": ray_address} if ray_address else {},
        tuner_options={k: v for k, v in (("ax_method", ax_method), ("scheduler", scheduler),
                                         ("population_size", population_size)) if v is not None},
        population=population,
    )
    p = prepare(options)  # type: ignore[arg-type]
    pops = f", populations of up to {p.population}" if p.population > 1 else ""
    console.print(f"sweep [bold]{p.name}[/]: {p.trials} trials of {p.spec.objective} on {len(p.slots)} worker(s) ({', '.join(sorted(set(p.slots)))}){pops}")
    _run_live(p.trials, p.name, lambda live: launch(options, live, prepared=p))  # type: ignore[arg-type]


@app.command("resume")
def resume_cmd(
    name: Annotated[str, typer.Argument(help="The sweep to continue (see `harness ls`).")],
    trials: Annotated[int | None, typer.Option(help="A new, larger trial budget.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes this time.")] = None,
) -> None:
    """Continue a crashed or interrupted sweep from its saved state, under the same MLflow run."""
    _resume(name, trials=trials, workers=workers)


def _resume(name: str, **kw: object) -> None:
    from harness.runner import resume

    console.print(f"resuming sweep [bold]{name}[/]")
    _run_live(kw.get("trials") or 0, name, lambda live: resume(  # type: ignore[arg-type]
        name, on_update=live, command=shlex.join(["harness", *sys.argv[1:]]), **kw))


def _run_live(total: int, title: str, run: object) -> None:
    """Run with a live display; print the summary; on Ctrl-C say how to resume, exit 130."""
    from harness.runner import SweepInterrupted

    try:
        with LiveSweep(console, total, title) as live:
            summary = run(live)  # type: ignore[operator]
    except SweepInterrupted as exc:
        _print_summary(exc.summary)
        err.print(f"interrupted: finished trials are recorded; continue with  harness resume {exc.summary.name}",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    _print_summary(summary)


@app.command()
def trial(
    space: Annotated[str | None, typer.Argument(help="A search-space YAML file or shipped name (optional with --from-run).")] = None,
    params: Annotated[str | None, typer.Option("--params", help="A YAML of parameter values, e.g. the output of `harness best` (its seed is used unless --seed is given).")] = None,
    member: Annotated[int | None, typer.Option("--member", help="With --params holding a Pareto front (`harness best` of a multi-objective sweep): which member to run, 0 .. N-1.")] = None,
    from_run: Annotated[str | None, typer.Option("--from-run", help="Rerun a finished trial's exact configuration (same params and seed) from its MLflow run id.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value for a parameter or a fixed value; repeatable. Unset parameters take their default, else the middle of their range.")] = None,
    devices: Annotated[str, typer.Option(help="auto | cpu | GPU indices.")] = "auto",
    tracking_uri: TrackingOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the space file's stem).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: <space>-trial-<timestamp>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the trial (default 0, or the original run's with --from-run).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail the trial after this many seconds.")] = None,
) -> None:
    """Run one configuration and log it (tag harness.tuner = manual)."""
    from harness.runner import UsageError, parse_set, run_trial

    if space is None and from_run is None:
        raise UsageError("harness trial needs a SPACE or --from-run RUN_ID")
    options = _sweep_options(space=space or "", devices=devices, tracking_uri=tracking_uri,
                             experiment=experiment, name=name, seed=seed or 0, trial_timeout=trial_timeout)
    overrides = parse_set(set_ or [])
    with LiveSweep(console, 1, "trial") as live:
        summary = run_trial(options, overrides, live, params_file=params, from_run=from_run,  # type: ignore[arg-type]
                            seed=seed, member=member)
    _print_summary(summary)
    r = summary.stats.results[0] if summary.stats.results else None
    if r is not None:
        console.print(f"trial {r.state.value}: {summary.spec.metric.name} = {r.value}" + (f"  ({r.reason})" if r.reason else ""))
        console.print({k: v for k, v in r.metrics.items()})


@app.command("ls")
def ls(
    tracking_uri: TrackingOpt = None,
) -> None:
    """List the sweeps in the tracking store and the local state folder (.harness/sweeps)."""
    from rich.table import Table

    from harness.display import fmt
    from harness.records import fmt_time, list_sweeps
    from harness.runner import STATE_ROOT
    from harness.tracking import resolve_uri

    rows = list_sweeps(resolve_uri(tracking_uri), STATE_ROOT)
    if not rows:
        console.print("no sweeps yet: start one with  harness sweep SPACE")
        return
    t = Table(title="sweeps", title_justify="left")
    for col in ("name", "objective", "tuner", "engine", "trials", "best", "state", "started"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.name, r.objective, r.tuner, r.engine, r.trials(), fmt(r.best), r.state, fmt_time(r.started))
    console.print(t)


@app.command()
def best(
    sweep: Annotated[str, typer.Argument(help="The sweep's name (see `harness ls`).")],
    top: Annotated[int, typer.Option(help="Show the K best trials.")] = 1,
    format: Annotated[str | None, typer.Option("--format", help="yaml | json (default yaml; a multi-objective sweep: its front as a table)")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Print the best trial's parameters as YAML that `harness trial --params FILE` accepts
    (a multi-objective sweep: its Pareto front, every member's params, metrics, run id, seed)."""
    import json

    import yaml

    from harness.records import best_trials
    from harness.runner import UsageError
    from harness.tracking import resolve_uri

    if format not in (None, "yaml", "json"):
        raise UsageError(f"--format {format}: use yaml or json")
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    uri = resolve_uri(tracking_uri)
    if uri is None:
        raise UsageError("harness best reads the tracking store: not --tracking-uri none")
    spec, docs = best_trials(uri, sweep, top)  # a multi-objective sweep: its whole front
    if spec.multi and format is None:
        from harness.display import front_table

        console.print(front_table(spec, docs))
        return
    out: object = docs[0] if top == 1 and not spec.multi else docs
    if format == "json":
        print(json.dumps(out, indent=2))
    else:
        print(yaml.safe_dump(out, sort_keys=False), end="")


@app.command()
def spaces() -> None:
    """List the shipped search spaces."""
    from rich.table import Table

    from harness.spec import SpecError, load_spec, shipped_spaces

    t = Table(title="shipped search spaces (harness sweep NAME)", title_justify="left")
    for col in ("name", "objective", "metric", "params", "trials"):
        t.add_column(col)
    for path in shipped_spaces():
        try:
            s = load_spec(path)
            t.add_row(path.stem, s.objective, f"{s.metric.name} ({s.metric.goal})",
                      ", ".join(s.params), str(s.budget.trials))
        except SpecError as exc:
            t.add_row(path.stem, "[red]invalid", str(exc), "", "")
    console.print(t)


@app.command()
def ui(
    tracking_uri: TrackingOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Bind address; 127.0.0.1 keeps the UI private to this machine.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the tracking store (bound to 127.0.0.1 by default)."""
    from harness.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri is None:
        raise cx.UsageError("--tracking-uri none: there is no store to show")
    console.print(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", uri,
           "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}))


FormatOpt = Annotated[str, typer.Option("--format", help="table | csv | json | markdown")]
TargetOpt = Annotated[float | None, typer.Option(help="Target value for steps / seconds / trials to reach (default: the worst per-sweep final best).")]
OptimumOpt = Annotated[float | None, typer.Option(help="Optimum for the verdict's normalized regret (default: the best complete value of all compared sweeps).")]
WorstOpt = Annotated[float | None, typer.Option(help="Worst value for the verdict's normalized regret (default: the worst complete value of all compared sweeps).")]


@app.command()
def benchmark(
    space: SpaceArg,
    tuners: Annotated[str, typer.Option(help="Comma list of tuners: optuna (= optuna:tpe), optuna:gp, optuna:cmaes, optuna:nsga2, ax, random, ray (= Ray Tune), ray:asha, and installed plugins.")] = "optuna,random",
    seeds: Annotated[str, typer.Option(help="A count (3 = seeds 0,1,2) or a comma list of seeds.")] = "3",
    trials: Annotated[int | None, typer.Option(help="Trial budget of every sweep (default: the space's, or only --budget-steps).")] = None,
    budget_steps: Annotated[int | None, typer.Option(help="Step budget of every sweep: stop dispatching once its trials (pruned ones included) used this many training steps.")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel workers of every sweep.")] = None,
    devices: Annotated[str, typer.Option(help="auto | cpu | GPU indices such as 0,1.")] = "auto",
    pruner: Annotated[str, typer.Option(help="Optuna's pruner (the other tuners run without one).")] = "none",
    id: Annotated[str | None, typer.Option("--id", help="Benchmark id, tagged harness.benchmark on every sweep (default: bench-<timestamp>). Rerun with the same id: unfinished sweeps continue, finished ones are skipped, or continued to a larger --trials.")] = None,
    target: TargetOpt = None,
    optimum: OptimumOpt = None,
    worst: WorstOpt = None,
    format: FormatOpt = "table",
    out: Annotated[Path | None, typer.Option(help="Folder for the plots and tables (default: .harness/benchmarks/ID).")] = None,
    tracking_uri: TrackingOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the space file's stem).")] = None,
    population: PopulationOpt = None,
    engine: Annotated[str | None, typer.Option(help="Where the ask/tell tuners' trials run, shared by every sweep: local (worker processes here; default) | ray (Ray actors). Ray Tune's sweeps run on Ray, apart.")] = None,
    concurrent: Annotated[int | None, typer.Option(help="Sweeps running at once (default: all of them, sharing the --workers processes: one sweep's tuner thinks while another's trial runs). On CPU, N sweeps get N x --workers processes, one thread each by default. Each sweep keeps its own --workers cap of trials in flight, seed, budget and MLflow run.")] = None,
    sequential: Annotated[bool, typer.Option("--sequential", help="Run the sweeps one after another, each on its own workers (the slower way; for comparison).")] = False,
    simulated: Annotated[bool, typer.Option("--simulated", help="Run on a simulated clock over the space's table (harness tabulate) and its surrogate, then print the verdict.")] = False,
    charge_tuner_time: Annotated[bool, typer.Option("--charge-tuner-time/--no-charge-tuner-time", help="--simulated: add the tuner's own ask/tell wall time to the simulated clock (default on).")] = True,
    table: Annotated[Path | None, typer.Option(help="--simulated: the table (default: benchmarks/tables/SPACE.parquet).")] = None,
    log_sweeps: Annotated[bool, typer.Option("--log-sweeps", help="--simulated: also log every simulated sweep and trial to MLflow (slow); default: one summary run.")] = False,
) -> None:
    """Run every tuner with every seed on an equal budget, then compare them (harness compare)."""
    if simulated:
        from harness.simulate import parse_seeds, render, run_simulated_benchmark

        sim_log = console if format == "table" else err
        bench = run_simulated_benchmark(
            space, tuners=tuners.split(","), seeds=parse_seeds(seeds), trials=trials, workers=workers or 1,
            table=table, charge_tuner_time=charge_tuner_time, pruner=pruner, bid=id, out=out,
            tracking_uri=tracking_uri, log_sweeps=log_sweeps, optimum=optimum, worst=worst,
            progress=lambda sw: sim_log.print(f"  {sw.tuner} seed {sw.seed}: {sw.wall_seconds:.1f} s real, "
                                              f"{sw.sim_seconds:.0f} s simulated", markup=False, highlight=False))
        print(render(bench, format))
        return
    from contextlib import contextmanager

    from harness.builder import SweepsInterrupted
    from harness.compare import FORMATS, plan_benchmark, run_benchmark, run_compare
    from harness.runner import UsageError

    if format not in FORMATS:
        raise UsageError(f"--format {format}: use one of {', '.join(FORMATS)}")
    plan = plan_benchmark(space, tuners=tuners, seeds=seeds, trials=trials, budget_steps=budget_steps,
                          workers=workers, devices=devices, tracking_uri=tracking_uri, experiment=experiment,
                          bid=id, pruner=pruner, command=shlex.join(["harness", *sys.argv[1:]]),
                          population=population, concurrent=concurrent, engine=engine)
    log = console if format == "table" else err
    budget = f"{plan.trials} trials" + (f", {plan.budget_steps} training steps" if plan.budget_steps else "")
    how = "one after another" if sequential else (
        f"together on {plan.workers} worker(s)" + (f", populations of up to {plan.population}" if plan.population > 1 else ""))
    log.print(f"benchmark [bold]{plan.id}[/]: {', '.join(plan.tuners)} x seeds {', '.join(map(str, plan.seeds))} "
              f"on {space}, each sweep {budget} (experiment '{plan.experiment}'), {how}")
    if plan.finished:
        log.print(f"  {len(plan.finished)} sweep(s) of {plan.id} finished already: skipped", markup=False)
    if plan.extended:
        log.print(f"  {len(plan.extended)} finished sweep(s) of {plan.id} continue to {plan.trials} trials",
                  markup=False)
    if len(plan.unfinished) > len(plan.extended):
        log.print(f"  {len(plan.unfinished) - len(plan.extended)} sweep(s) of {plan.id} continue where they stopped",
                  markup=False)

    @contextmanager
    def progress(i: int, options: object):  # type: ignore[no-untyped-def]
        with LiveSweep(log, plan.trials, f"[{i + 1}] {options.name}") as live:  # type: ignore[attr-defined]
            yield live

    def said(s: object) -> None:
        from harness.display import sweep_line

        log.print(sweep_line(s), markup=False, highlight=False)
        if s.error:  # type: ignore[attr-defined]
            err.print(f"  {s.name} failed alone: {s.error}; the others went on (rerun with --id {plan.id} "  # type: ignore[attr-defined]
                      "to continue it)", markup=False, highlight=False, soft_wrap=True)

    try:
        ran = run_benchmark(plan, sequential=sequential, concurrent=concurrent, progress=progress, on_sweep=said)
    except SweepsInterrupted:
        err.print(f"interrupted: finished trials are recorded; continue with the same command and --id {plan.id}",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    fill = f", population fill rate {ran.fill_rate:.2f}" if ran.fill_rate is not None else ""
    log.print(f"benchmark {plan.id}: {len(ran.summaries)} sweep(s) in {ran.seconds:.1f} s{fill}",
              markup=False, highlight=False)
    comp = run_compare(tracking_uri_of(tracking_uri), experiment=plan.experiment, benchmark=plan.id,
                       target=target, out=out or Path(".harness") / "benchmarks" / plan.id, order=plan.tuners,
                       optimum=optimum, worst=worst)
    _print_comparison(comp, format)


@app.command()
def tabulate(
    space: SpaceArg,
    configs: Annotated[int, typer.Option(help="Configurations: a scrambled Sobol design over the space.")] = 64,
    seeds: Annotated[int, typer.Option(help="Seeds per configuration (0 .. S-1).")] = 3,
    engine: Annotated[str, typer.Option(help="Where trials run: local | ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Parallel workers.")] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads per local worker.")] = 1,
    design_seed: Annotated[int, typer.Option(help="Seed of the scrambled Sobol design.")] = 0,
    dense: Annotated[int, typer.Option(help="A second stage: this many more configurations (x SEEDS) around the best decile of the Sobol stage, where tuners compete (0: none).")] = 0,
    out: Annotated[Path | None, typer.Option(help="The Parquet table (default: benchmarks/tables/SPACE.parquet; a .sha256 beside it).")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds (rerun to resume).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial after this many seconds.")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Evaluate CONFIGS x SEEDS configurations; store every learning curve, seconds per step and final
    metrics in one tidy Parquet table (also an MLflow artifact). Resumable: rerun the same command."""
    from harness.builder import SweepInterrupted
    from harness.runner import UsageError
    from harness.tabulate import TabulateOptions
    from harness.tabulate import tabulate as run_tabulate

    total = (configs + max(dense, 0)) * seeds
    if dense < 0:
        raise UsageError(f"--dense must be >= 0, got {dense}")
    try:
        s = run_tabulate(TabulateOptions(space, configs=configs, seeds=seeds, design_seed=design_seed, dense=dense, engine=engine,
                                         workers=workers, threads=threads, out=out, time_limit=time_limit,
                                         trial_timeout=trial_timeout, tracking_uri=tracking_uri),
                         progress=lambda d, n: err.print(f"  {d}/{n} trials", markup=False) if d % 25 == 0 or d == n else None)
    except SweepInterrupted:
        err.print("interrupted: every finished trial is kept; rerun the same command to continue", markup=False)
        raise typer.Exit(130) from None
    console.print(f"{s.out}: {s.trials} trials of {total}, {s.configs} configurations with every seed "
                  f"({s.ran} run now, {s.seconds:.0f} s); sha256 {s.sha256}"
                  + (f"; MLflow run {s.run_id}" if s.run_id else ""), markup=False, highlight=False)


@app.command()
def compare(
    experiment: Annotated[str | None, typer.Option(help="The experiment whose sweeps to compare (needed when the store holds several).")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Only the sweeps of this benchmark id (tag harness.benchmark).")] = None,
    target: TargetOpt = None,
    optimum: OptimumOpt = None,
    worst: WorstOpt = None,
    format: FormatOpt = "table",
    out: Annotated[Path | None, typer.Option(help="Write plots and tables to this folder, and log them as a comparison run in MLflow.")] = None,
    log_run: Annotated[bool, typer.Option("--log-run/--no-log-run", help="With --out: also log a comparison run (harness.kind = comparison).")] = True,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Compare tuners from the sweeps in MLflow: final best over seeds, cost to a target, ranks, tests."""
    from harness.compare import FORMATS, run_compare
    from harness.runner import UsageError

    if format not in FORMATS:
        raise UsageError(f"--format {format}: use one of {', '.join(FORMATS)}")
    comp = run_compare(tracking_uri_of(tracking_uri), experiment=experiment, benchmark=benchmark,
                       target=target, out=out, log_run=log_run, optimum=optimum, worst=worst)
    _print_comparison(comp, format)


def tracking_uri_of(uri: str | None) -> str | None:
    from harness.tracking import resolve_uri

    return resolve_uri(uri)


def _print_comparison(comp: object, format: str) -> None:
    from harness.compare import render_text, tables

    if format == "table":
        for part in tables(comp):  # type: ignore[arg-type]
            console.print(part)
    else:
        print(render_text(comp, format), end="")  # type: ignore[arg-type]


def _print_summary(summary: object) -> None:
    console.print(summary_table(summary))
    s = summary.stats  # type: ignore[attr-defined]
    if s.complete and summary.spec.multi:  # type: ignore[attr-defined]
        from harness.display import front_summary

        console.print(front_summary(summary))
    elif s.complete:
        console.print(trials_table(s, summary.spec.metric.name, goal=summary.spec.metric.goal))  # type: ignore[attr-defined]
    if summary.tracking_uri:  # type: ignore[attr-defined]
        console.print(f"open the MLflow UI:  harness ui --tracking-uri {summary.tracking_uri}")  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Entry point: every input error is one line on stderr and exit code 2."""
    from harness.engines.base import EngineError
    from harness.files import StateFileError
    from harness.objective import ObjectiveError
    from harness.records import RecordError
    from harness.runner import UsageError
    from harness.spec import SpecError
    from harness.tracking import TrackingError
    from harness.tuners.base import TunerError

    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="harness", standalone_mode=False)
        if isinstance(rv, int):  # typer.Exit(code) comes back as the return value here
            return rv
    except (SpecError, ObjectiveError, TunerError, EngineError, UsageError, TrackingError,
            RecordError, StateFileError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except cx.NoArgsIsHelpError:
        return 0
    except cx.UsageError as exc:
        hint = f" (see 'harness {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else " (see 'harness --help')"
        err.print(f"error: {exc.format_message()}{hint}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted", markup=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
