"""Reading sweeps back: from the MLflow store and the local state folder.

Used by ``harness ls``, ``harness best`` and ``harness trial --from-run``; the comparison
(:mod:`harness.compare.read`) reads its sweeps and trials through the same functions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import names as N
from harness.spec import ChoiceParam, IntParam, SweepSpec, parse_spec

STATE_MAP = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "interrupted"}


class RecordError(ValueError):
    """A sweep or run that was asked for does not exist (one line, exit 2)."""


@dataclass
class SweepRow:
    name: str
    objective: str = "?"
    tuner: str = "?"
    engine: str = "?"
    finished: int | None = None
    budget: int | None = None
    best: float | None = None
    state: str = "?"
    started: float | None = None
    where: str = ""  # mlflow, local, or both
    shared: bool = False  # several processes on one study: the budget is each one's

    def trials(self) -> str:
        done = "?" if self.finished is None else str(self.finished)
        budget = "?" if self.budget is None else str(self.budget)
        return f"{done} / {budget} each" if self.shared else f"{done} / {budget}"


def client(uri: str) -> Any:
    """An MLflow client on ``uri`` (imported lazily)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def search_all(uri: str, experiment_ids: list[str], filter_string: str, **kwargs: Any) -> list[Any]:
    """Every run matching ``filter_string`` in the experiments, page after page."""
    c = client(uri)
    out: list[Any] = []
    token = None
    while True:
        page = c.search_runs(experiment_ids, filter_string=filter_string, max_results=50000,
                             page_token=token, **kwargs)
        out += page
        token = page.token
        if not token:
            return out


def sweep_runs(uri: str, *, sweep: str | None = None, experiment: str | None = None,
               extra_filter: str | None = None) -> list[Any]:
    """Parent runs (``harness.kind = sweep``), newest first."""
    c = client(uri)
    if experiment is not None:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return []
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in c.search_experiments()]
    if not exp_ids:
        return []
    flt = N.flt(N.TAG_KIND, N.KIND_SWEEP)
    if sweep is not None:
        flt += f" and {N.flt(N.TAG_SWEEP, sweep)}"
    if extra_filter:
        flt += f" and {extra_filter}"
    return c.search_runs(exp_ids, filter_string=flt, max_results=5000, order_by=["attributes.start_time DESC"])


def trial_runs(uri: str, parent: Any) -> list[Any]:
    """The trial (child) runs of one sweep run."""
    return search_all(uri, [parent.info.experiment_id], N.flt(N.TAG_PARENT, parent.info.run_id))


def trial_runs_by_parent(uri: str, experiment_id: str) -> dict[str, list[Any]]:
    """Every trial run of the experiment, by parent run id (one paged query)."""
    out: dict[str, list[Any]] = {}
    for run in search_all(uri, [experiment_id], N.flt(N.TAG_KIND, N.KIND_TRIAL)):
        parent = run.data.tags.get(N.TAG_PARENT)
        if parent:
            out.setdefault(parent, []).append(run)
    return out


def list_sweeps(uri: str | None, state_root: Path) -> list[SweepRow]:
    rows: dict[str, SweepRow] = {}
    if uri is not None:
        for run in sweep_runs(uri):
            t, m = run.data.tags, run.data.metrics
            name = t.get(N.TAG_SWEEP, run.info.run_name)
            if name in rows:  # several processes share one sweep: keep the newest parent
                continue
            rows[name] = SweepRow(
                name=name, objective=t.get(N.TAG_OBJECTIVE, "?"), tuner=t.get(N.TAG_TUNER, "?"),
                engine=t.get(N.TAG_ENGINE, "?"), finished=int(m.get(N.METRIC_TRIALS_FINISHED, 0)),
                budget=int(t[N.TAG_BUDGET]) if N.TAG_BUDGET in t else None,
                best=m.get(N.METRIC_BEST_SO_FAR), state=STATE_MAP.get(run.info.status, run.info.status.lower()),
                started=run.info.start_time / 1000, where="mlflow",
                shared=t.get(N.TAG_SHARED) == "true",
            )
    if state_root.is_dir():
        for state_file in sorted(state_root.glob("*/state.json")):
            try:
                st = json.loads(state_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            name = st.get("name", state_file.parent.name)
            row = rows.get(name)
            if row is None:
                row = rows[name] = SweepRow(
                    name=name, objective=st.get("objective", "?"), tuner=st.get("tuner", "?"),
                    engine=st.get("engine", "?"), budget=st.get("trials"), started=st.get("started"),
                    where="local",
                )
            else:
                row.where = "mlflow+local"
            local_state = st.get("status")
            # the local state knows what the store cannot: a driver killed mid-sweep leaves the
            # parent RUNNING in MLflow, but its state says running and no process holds it
            if local_state in ("interrupted", "failed") or row.state in ("?", "running"):
                row.state = local_state or row.state
            if row.finished is None:
                row.finished = st.get("finished")
            if row.budget is None:
                row.budget = st.get("trials")
    return sorted(rows.values(), key=lambda r: r.started or 0, reverse=True)


def find_sweep(uri: str, name: str) -> Any:
    runs = sweep_runs(uri, sweep=name)
    if not runs:
        raise RecordError(f"no sweep named '{name}' in {uri} (see 'harness ls')")
    return runs[-1]  # the first parent created for this name


def load_run_spec(uri: str, run: Any) -> SweepSpec:
    """The resolved spec logged with a sweep's parent run."""
    import yaml

    text = client(uri).download_artifacts(run.info.run_id, N.ARTIFACT_SPEC)
    return parse_spec(yaml.safe_load(Path(text).read_text()), source=f"run {run.info.run_id} {N.ARTIFACT_SPEC}")


def typed_params(spec: SweepSpec, raw: dict[str, str]) -> dict[str, Any]:
    """MLflow stores params as strings; give them back their spec types."""
    out: dict[str, Any] = {}
    for name, text in raw.items():
        p = spec.params.get(name)
        if p is None:
            continue
        if isinstance(p, ChoiceParam):
            matches = [v for v in p.values if str(v) == text]
            out[name] = matches[0] if matches else text
        elif isinstance(p, IntParam):
            out[name] = int(float(text))
        else:
            out[name] = float(text)
    return out


def best_trials(uri: str, sweep: str, top: int = 1) -> tuple[SweepSpec, list[dict[str, Any]]]:
    """The ``top`` best complete trials of a sweep, each as a document ``harness trial --params`` takes
    (a multi-objective sweep: its Pareto front, :func:`front_trials`)."""
    parent = find_sweep(uri, sweep)
    spec = load_run_spec(uri, parent)
    if spec.multi:  # no single best: the Pareto front, every member
        return front_trials(uri, sweep, spec=spec)
    metric, goal = spec.metric.name, spec.metric.goal
    parents = sweep_runs(uri, sweep=sweep)
    children: list[Any] = []
    for p in parents:
        children += trial_runs(uri, p)
    done = [c for c in children if c.data.tags.get(N.TAG_STATE) == "complete"
            and metric in c.data.metrics and math.isfinite(c.data.metrics[metric])]
    if not done:
        raise RecordError(f"sweep '{sweep}' has no complete trial yet")
    done.sort(key=lambda c: c.data.metrics[metric], reverse=goal == "maximize")
    docs = []
    for c in done[:top]:
        docs.append({
            "sweep": sweep,
            "trial": int(c.data.tags.get(N.TAG_TRIAL, -1)),
            "run_id": c.info.run_id,
            "metric": {"name": metric, "goal": goal, "value": c.data.metrics[metric]},
            "seed": int(c.data.tags.get(N.TAG_SEED, 0)),
            "params": typed_params(spec, c.data.params),
        })
    return spec, docs


def run_for_rerun(uri: str, run_id: str) -> tuple[SweepSpec, dict[str, Any], int, str]:
    """A finished trial's spec (with its sweep's fixed values), params, seed and experiment."""
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except Exception:
        raise RecordError(f"--from-run {run_id}: no such run in {uri}") from None
    parent_id = run.data.tags.get(N.TAG_PARENT)
    if parent_id is None:
        raise RecordError(f"--from-run {run_id}: not a trial run (it has no parent sweep run)")
    parent = c.get_run(parent_id)
    spec = load_run_spec(uri, parent)
    exp = c.get_experiment(run.info.experiment_id)
    return spec, typed_params(spec, run.data.params), int(run.data.tags.get(N.TAG_SEED, 0)), exp.name


def fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def front_trials(uri: str, sweep: str, spec: SweepSpec | None = None) -> tuple[SweepSpec, list[dict[str, Any]]]:
    """A multi-objective sweep's Pareto front, recomputed from its child runs' metrics
    (:func:`harness.pareto.pareto_mask`): one document per member, best first in the first
    metric, each one that ``harness trial --params`` takes (``params``, ``metrics``, ``run_id``,
    ``seed``)."""
    from harness.pareto import pareto_mask

    if spec is None:
        spec = load_run_spec(uri, find_sweep(uri, sweep))
    names = [m.name for m in spec.metrics]
    children: list[Any] = []
    for p in sweep_runs(uri, sweep=sweep):
        children += trial_runs(uri, p)
    done = [c for c in children if c.data.tags.get(N.TAG_STATE) == "complete"
            and all(n in c.data.metrics and math.isfinite(c.data.metrics[n]) for n in names)]
    if not done:
        raise RecordError(f"sweep '{sweep}' has no complete trial yet")
    mask = pareto_mask([[c.data.metrics[n] for n in names] for c in done], [m.goal for m in spec.metrics])
    sign = 1.0 if spec.metric.goal == "minimize" else -1.0
    members = sorted((c for c, on in zip(done, mask, strict=True) if on),
                     key=lambda c: (sign * c.data.metrics[names[0]], int(c.data.tags.get(N.TAG_TRIAL, -1))))
    docs = [{
        "sweep": sweep,
        "trial": int(c.data.tags.get(N.TAG_TRIAL, -1)),
        "run_id": c.info.run_id,
        "metrics": {n: c.data.metrics[n] for n in names},
        "seed": int(c.data.tags.get(N.TAG_SEED, 0)),
        "params": typed_params(spec, c.data.params),
    } for c in members]
    return spec, docs
