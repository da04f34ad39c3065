"""Reading sweeps back: from the MLflow store and the local state folder.

Used by ``harness ls``, ``harness best`` and ``harness trial --from-run``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def sweep_runs(uri: str, *, sweep: str | None = None, experiment: str | None = None,
               extra_filter: str | None = None) -> list[Any]:
    """Parent runs (``harness.kind = sweep``), newest first."""
    client = _client(uri)
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return []
    flt = "tags.`harness.kind` = 'sweep'"
    if sweep is not None:
        flt += f" and tags.`harness.sweep` = '{sweep}'"
    if extra_filter:
        flt += f" and {extra_filter}"
    return client.search_runs(exp_ids, filter_string=flt, max_results=5000, order_by=["attributes.start_time DESC"])


def trial_runs(uri: str, parent: Any) -> list[Any]:
    client = _client(uri)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=50000,
    )


def list_sweeps(uri: str | None, state_root: Path) -> list[SweepRow]:
    rows: dict[str, SweepRow] = {}
    if uri is not None:
        for run in sweep_runs(uri):
            t, m = run.data.tags, run.data.metrics
            name = t.get("harness.sweep", run.info.run_name)
            if name in rows:  # several processes share one sweep: keep the newest parent
                continue
            rows[name] = SweepRow(
                name=name, objective=t.get("harness.objective", "?"), tuner=t.get("harness.tuner", "?"),
                engine=t.get("harness.engine", "?"), finished=int(m.get("trials_finished", 0)),
                budget=int(t["harness.budget"]) if "harness.budget" in t else None,
                best=m.get("best_so_far"), state=STATE_MAP.get(run.info.status, run.info.status.lower()),
                started=run.info.start_time / 1000, where="mlflow",
                shared=t.get("harness.shared") == "true",
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

    client = _client(uri)
    text = client.download_artifacts(run.info.run_id, "spec.yaml")
    return parse_spec(yaml.safe_load(Path(text).read_text()), source=f"run {run.info.run_id} spec.yaml")


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
    """The ``top`` best complete trials of a sweep, each as a document ``harness trial --params`` takes."""
    parent = find_sweep(uri, sweep)
    spec = load_run_spec(uri, parent)
    metric, goal = spec.metric.name, spec.metric.goal
    parents = sweep_runs(uri, sweep=sweep)
    children: list[Any] = []
    for p in parents:
        children += trial_runs(uri, p)
    done = [c for c in children if c.data.tags.get("harness.state") == "complete"
            and metric in c.data.metrics and math.isfinite(c.data.metrics[metric])]
    if not done:
        raise RecordError(f"sweep '{sweep}' has no complete trial yet")
    done.sort(key=lambda c: c.data.metrics[metric], reverse=goal == "maximize")
    docs = []
    for c in done[:top]:
        docs.append({
            "sweep": sweep,
            "trial": int(c.data.tags.get("harness.trial", -1)),
            "run_id": c.info.run_id,
            "metric": {"name": metric, "goal": goal, "value": c.data.metrics[metric]},
            "seed": int(c.data.tags.get("harness.seed", 0)),
            "params": typed_params(spec, c.data.params),
        })
    return spec, docs


def run_for_rerun(uri: str, run_id: str) -> tuple[SweepSpec, dict[str, Any], int, str]:
    """A finished trial's spec (with its sweep's fixed values), params, seed and experiment."""
    client = _client(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise RecordError(f"--from-run {run_id}: no such run in {uri}") from None
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id is None:
        raise RecordError(f"--from-run {run_id}: not a trial run (it has no parent sweep run)")
    parent = client.get_run(parent_id)
    spec = load_run_spec(uri, parent)
    exp = client.get_experiment(run.info.experiment_id)
    return spec, typed_params(spec, run.data.params), int(run.data.tags.get("harness.seed", 0)), exp.name


def fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"
