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
    if s.best is not None:
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
