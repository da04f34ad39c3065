"""What the CLI shows: a live progress display while a sweep runs, and tables after."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.recorder import SweepStats


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.6g}"


class LiveSweep:
    """A progress bar with done / running / pruned / failed and the best value so far."""

    def __init__(self, console: Console, total: int, title: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(title, total=total, status="starting workers...")

    def __enter__(self) -> LiveSweep:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stats: SweepStats) -> None:
        best = fmt(stats.best.value) if stats.best else "-"
        status = (
            f"[green]{stats.complete} done[/] [cyan]{stats.running} running[/] "
            f"[yellow]{stats.pruned} pruned[/] [red]{stats.failed} failed[/]  best {best}"
        )
        if stats.stopped_early:
            status += f"  [bold red]stopping: {stats.stopped_early}[/]"
        self.progress.update(self.task, total=stats.budget, completed=stats.finished, status=status)


def summary_table(summary: Any) -> Table:
    """The end-of-sweep table: counts, best trial, timing."""
    s: SweepStats = summary.stats
    t = Table(title=f"sweep {summary.name}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("objective", f"{summary.spec.objective}  ({summary.spec.metric.name}, {summary.spec.metric.goal})")
    t.add_row("trials", f"{s.finished} / {s.budget}: {s.complete} complete, {s.pruned} pruned, {s.failed} failed")
    if s.stopped_early:
        t.add_row("stopped", s.stopped_early)
    if s.interrupted:
        t.add_row("interrupted", f"{s.interrupted} trial(s), re-run once on resume")
    if summary.spec.multi:  # no single best: the front's hypervolume (the front table follows)
        t.add_row("hypervolume", hypervolume_text(summary))
    elif s.best is not None:
        t.add_row("best", f"{fmt(s.best.value)}  (trial {s.best.number})")
        t.add_row("best params", ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}"
                                           for k, v in s.best.params.items()) or "-")
    t.add_row("wall time", f"{s.wall_seconds():.1f} s (+ {summary.startup_seconds:.1f} s worker start-up)")
    t.add_row("utilization", f"{summary.utilization:.2f} of {summary.workers} worker(s)")
    if summary.parent_run_id:
        t.add_row("mlflow", f"{summary.tracking_uri}  experiment '{summary.experiment}'  run {summary.parent_run_id}")
    if summary.failed_writes:
        t.add_row("[red]not logged", f"{summary.failed_writes} MLflow write(s) failed: {summary.tracking_errors[:1]}")
    reasons: dict[str, int] = {}
    for r in s.results:
        if r.state.value == "failed":
            key = (r.reason or "unknown").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        t.add_row("failures", ", ".join(f"{k} x{n}" for k, n in sorted(reasons.items())))
    return t


def trials_table(stats: SweepStats, metric: str, top: int = 10, goal: str = "minimize") -> Table:
    """The best ``top`` complete trials."""
    done = [r for r in stats.results if r.state.value == "complete" and r.value is not None]
    done.sort(key=lambda r: r.value, reverse=goal == "maximize")  # type: ignore[arg-type,return-value]
    t = Table(title=f"top {min(top, len(done))} trials by {metric}", title_justify="left")
    t.add_column("trial", justify="right")
    t.add_column(metric, justify="right")
    t.add_column("params")
    t.add_column("seconds", justify="right")
    for r in done[:top]:
        params = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in r.params.items())
        t.add_row(str(r.number), fmt(r.value), params, f"{r.seconds:.1f}")
    return t


def front_table(spec: Any, docs: list[dict[str, Any]]) -> Table:
    """A multi-objective sweep's Pareto front (``harness best``): one row per member."""
    names = [m.name for m in spec.metrics]
    t = Table(title=f"Pareto front: {len(docs)} trials ({', '.join(f'{m.name} {m.goal}' for m in spec.metrics)})",
              title_justify="left")
    t.add_column("trial", justify="right")
    for n in names:
        t.add_column(n, justify="right")
    t.add_column("params")
    t.add_column("seed", justify="right")
    t.add_column("run id")
    for d in docs:
        params = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in d["params"].items())
        t.add_row(str(d["trial"]), *[fmt(d["metrics"].get(n)) for n in names], params, str(d["seed"]), d["run_id"])
    return t


def sweep_hypervolume(summary: Any) -> tuple[float, list[float], str, str | None] | None:
    """A multi-objective sweep's hypervolume over this process's complete trials: (value, reference
    point, where the point came from: ``spec`` | ``default``, why it is 0 or None); None without
    a reference point (no complete trial yet)."""
    from harness.front import stored_reference
    from harness.pareto import hypervolume, zero_volume_reason
    from harness.trials import objective_values

    spec = summary.spec
    names, goals = [m.name for m in spec.metrics], [m.goal for m in spec.metrics]
    ref: list[float] | None = [m.reference for m in spec.metrics]  # type: ignore[misc]
    source = "spec"
    if ref is None or any(r is None for r in ref):
        stored, source = stored_reference(getattr(summary, "state_dir", None), names), "default"
        ref = stored[0] if stored is not None else None
    if ref is None:
        return None
    points = [v for r in summary.stats.results if r.state.value == "complete" and not r.interrupted
              and (v := objective_values(r, names)) is not None]
    hv = hypervolume(points, goals, ref) if points else 0.0
    return hv, ref, source, zero_volume_reason(points, goals, ref) if hv == 0.0 else None


def hypervolume_text(summary: Any) -> str:
    """The summary's hypervolume cell: value, reference point, and why when it is 0."""
    got = sweep_hypervolume(summary)
    if got is None:
        return "-  (no complete trial)"
    hv, ref, source, why = got
    text = f"{fmt(hv)}  (reference point {', '.join(fmt(r) for r in ref)}: {source})"
    return f"{text}; {why}" if why else text


def sweep_line(summary: Any) -> str:
    """One line per finished sweep of a benchmark: its result (the best value, or the hypervolume
    of a multi-objective sweep), trials, steps and wall time."""
    s: SweepStats = summary.stats
    if summary.spec.multi:
        got = sweep_hypervolume(summary)
        result = f"hypervolume {fmt(got[0]) if got else '-'}"
    else:
        result = f"best {fmt(s.best.value) if s.best else '-'}"
    return f"  {summary.name}: {result}, {s.finished} trials, {s.cum_steps} steps, {s.wall_seconds():.1f} s"


def trial_run_ids(summary: Any) -> dict[int, str]:
    """Trial number -> its MLflow child run id, read back from the store ({} without one, or when
    it does not answer: the table then shows '-', the sweep's record is in MLflow anyway)."""
    uri, parent = getattr(summary, "tracking_uri", None), getattr(summary, "parent_run_id", None)
    if not uri or not parent:
        return {}
    from harness import names as N
    from harness.records import client, trial_runs

    try:
        runs = trial_runs(uri, client(uri).get_run(parent))
    except Exception:  # a summary must print even when the store is away
        return {}
    return {int(r.data.tags[N.TAG_TRIAL]): r.info.run_id for r in runs if N.TAG_TRIAL in r.data.tags}


def front_summary(summary: Any) -> Table:
    """The end-of-sweep front table with each member's MLflow run id (what the CLI prints)."""
    return front_summary_table(summary.stats, summary.spec, run_ids=trial_run_ids(summary))


def front_summary_table(stats: SweepStats, spec: Any, run_ids: dict[int, str] | None = None) -> Table:
    """The end-of-sweep table of a multi-objective sweep: the front of this process's trials
    (``run_ids``: trial number -> MLflow run id, see :func:`trial_run_ids`)."""
    from harness.pareto import pareto_mask
    from harness.trials import objective_values

    names = [m.name for m in spec.metrics]
    done = [(r, objective_values(r, names)) for r in stats.results if r.state.value == "complete"]
    done = [(r, v) for r, v in done if v is not None]
    mask = pareto_mask([v for _, v in done], [m.goal for m in spec.metrics]) if done else []
    docs = [{"trial": r.number, "metrics": dict(zip(names, v, strict=True)), "params": r.params,
             "seed": r.seed, "run_id": (run_ids or {}).get(r.number, "-")}
            for (r, v), on in zip(done, mask, strict=True) if on]
    sign = 1.0 if spec.metric.goal == "minimize" else -1.0
    docs.sort(key=lambda d: sign * d["metrics"][names[0]])
    return front_table(spec, docs)
