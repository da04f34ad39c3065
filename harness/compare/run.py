"""The commands' work: read the sweeps, compute the comparison, write the files, log a comparison run.

With an output folder, :func:`run_compare` writes the best-so-far plots (:mod:`harness.plots`),
the verdict's figures (:mod:`harness.ranking_plots`: the critical-difference diagram and the
regret / rank curves against trials and seconds, PNG and HTML), the tables as CSV, markdown and
JSON, and logs the folder as the artifacts of a run tagged ``harness.kind = comparison``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import names as N
from harness.compare.read import budget_warning, load_sweeps
from harness.compare.render import render_text
from harness.compare.stats import Comparison, compare_sweeps
from harness.records import RecordError, client


def run_compare(uri: str | None, *, experiment: str | None = None, benchmark: str | None = None,
                target: float | None = None, out: Path | None = None, log_run: bool = True,
                order: list[str] | None = None, optimum: float | None = None,
                worst: float | None = None) -> Comparison:
    """Read the sweeps, compute the comparison; with ``out``, write the plots and tables there and
    log them as the artifacts of a comparison run (``harness.kind = comparison``).

    ``optimum`` / ``worst`` normalize the verdict's regret (default: the best and the worst
    complete value over all the compared sweeps).
    """
    if uri is None:
        raise RecordError("harness compare reads the tracking store: not --tracking-uri none")
    from harness.tracking import TrackingError

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise RecordError(f"no MLflow store at {uri[len('sqlite:///'):]} (run 'harness benchmark SPACE' "
                          "here, or pass --tracking-uri)")
    try:
        records = load_sweeps(uri, experiment=experiment, benchmark=benchmark)
        exp_name = client(uri).get_experiment(records[0].experiment_id).name
    except RecordError:
        raise
    except Exception as exc:  # the store itself fails: one line, not a traceback
        raise TrackingError(f"tracking store {uri} does not answer: {str(exc).splitlines()[0][:300]}") from None
    warn = budget_warning(records)
    if warn is not None:  # also in the notes; on stderr so a --format json reader sees it too
        print(f"warning: {warn}", file=sys.stderr)
    try:
        comp = compare_sweeps(records, uri=uri, experiment=exp_name, benchmark=benchmark, target=target,
                              order=order, optimum=optimum, worst=worst)
    except ValueError as exc:  # --optimum / --worst the wrong way round for the goal
        raise RecordError(f"--optimum / --worst: {exc}") from None
    if out is not None:
        from harness.plots import write_plots

        out.mkdir(parents=True, exist_ok=True)
        comp.plots = write_plots(comp, out)
        comp.plots.setdefault("files", [])
        comp.plots["files"] += write_verdict_plots(comp, out)
        comp.plots["files"] += write_front_overlay(records, out, what=comp.benchmark or comp.experiment)
        for fmt in ("csv", "markdown"):
            (out / f"compare.{'md' if fmt == 'markdown' else fmt}").write_text(render_text(comp, fmt))
        if log_run:
            comp.plots["run_id"] = log_comparison(comp, out)
        (out / "compare.json").write_text(render_text(comp, "json"))
        if log_run:
            client(uri).log_artifact(comp.plots["run_id"], str(out / "compare.json"))
    return comp


def write_verdict_plots(comp: Comparison, out: Path) -> list[str]:
    """The CD diagram (when the Friedman test ran) and the regret / rank curves per budget axis."""
    rep = comp.verdict
    if rep is None:
        return []
    from harness.ranking_plots import cd_diagram, regret_rank_curves

    v = rep.verdict
    what = f"{comp.experiment} / {comp.benchmark}" if comp.benchmark else comp.experiment
    paths: list[Path] = []
    if v.cd is not None and v.friedman is not None:
        ranks = {t: d["mean_rank"] for t, d in v.tuners.items()}
        paths += cd_diagram(ranks, v.cd, out / "cd_diagram", groups=v.groups,
                            title=f"{what}: mean ranks of the final regret (Friedman p = {v.friedman.pvalue:.3g})",
                            notes=[v.summary])
    labels = {"trials": "finished trials", "seconds": "wall seconds since the first trial started"}
    for axis, b in rep.budgets.items():
        paths += regret_rank_curves(b.best, rep.optimum, rep.worst, comp.goal, out / f"regret_rank_{axis}",  # type: ignore[arg-type]
                                    x=b.x, xlabel=labels[axis],
                                    title=f"{what}: {comp.metric}, {len(rep.seeds)} seeds")
    return [p.name for p in paths]


def write_front_overlay(records: list[Any], out: Path, what: str) -> list[str]:
    """Multi-objective sweeps: every tuner's front in one plot (its complete points pooled over its
    seeds, so each staircase is the best that tuner attained), PNG and HTML."""
    objectives = records[0].objectives if records else None
    if not objectives:
        return []
    import numpy as np

    from harness.pareto_plots import write_fronts

    names = [o["name"] for o in objectives]
    fronts: dict[str, Any] = {}
    seeds: dict[str, set[int]] = {}
    for s in records:
        pts = [t.objectives for t in s.trials if t.objectives is not None]
        if pts:
            fronts.setdefault(s.tuner, []).extend(pts)
            seeds.setdefault(s.tuner, set()).add(s.seed)
    if not fronts:
        return []
    groups = {f"{t} ({len(seeds[t])} seeds)": np.asarray(p, dtype=float) for t, p in fronts.items()}
    reference = [o.get("reference") for o in objectives]
    paths = write_fronts(groups, names, [o["goal"] for o in objectives], out,
                         title=f"{what}: each tuner's front, pooled over its seeds",
                         reference=None if any(r is None for r in reference) else reference, stem="fronts")
    return [p.name for p in paths]


def log_comparison(comp: Comparison, out: Path) -> str:
    """A run tagged ``harness.kind = comparison`` in the sweeps' experiment, holding the files."""
    from mlflow.entities import RunTag

    c = client(comp.uri)
    label = comp.benchmark or comp.experiment
    tags: dict[str, Any] = {
        N.TAG_KIND: N.KIND_COMPARISON, N.TAG_METRIC: comp.metric, N.TAG_GOAL: comp.goal,
        N.TAG_COMPARED_RUNS: ",".join(s.run_id for s in comp.sweeps)[:5000],
        N.TAG_TUNERS: ",".join(r.tuner for r in comp.rows), N.TAG_TEST: comp.test}
    if comp.benchmark:
        tags[N.TAG_BENCHMARK] = comp.benchmark
    if comp.target is not None:
        tags[N.TAG_TARGET] = repr(comp.target)
    run = c.create_run(comp.sweeps[0].experiment_id, run_name=f"compare-{label}-{datetime.now():%H%M%S}",
                       tags=tags)
    rid = run.info.run_id
    # the table as the run's description; no metrics, so the UI's chart view keeps to the sweeps' curves
    c.log_batch(rid, tags=[RunTag(N.TAG_NOTE, render_text(comp, "markdown"))])
    c.log_artifacts(rid, str(out))
    c.set_terminated(rid, "FINISHED")
    return rid
