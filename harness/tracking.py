"""MLflow layout: a sweep is a parent run, each trial a child run under it.

Only the driver writes, and it writes from one background thread, so the sweep loop never
waits on the store: dispatch stays fast and SQLite (the embedded default) has one writer.
A write that fails is retried; what still cannot be written is counted and reported, and
never stops the trials (the tuner's state keeps every result).

Parent run tags: ``harness.tuner``, ``harness.objective``, ``harness.seed``, ``harness.engine``,
``harness.sweep``, ``harness.spec_hash``, git commit, package versions; the resolved spec as an
artifact; metrics ``best_so_far`` (step = finished trials) and ``best_so_far_by_steps``
(step = cumulative training steps). Child run: params, step metrics, final metrics,
``elapsed_s``, ``seconds``, tags ``harness.state``, ``harness.device``, ``harness.reason``,
and ``traceback.txt`` when it failed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness import names as N
from harness.trials import TrialResult, TrialState

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# a server that went away must not hold the writer for minutes per call: fail fast, and let
# the writer's backlog retry in order when the server is back
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = N.TAG_PARENT


class TrackingError(RuntimeError):
    """The tracking store cannot be used (one line, for the CLI)."""


def resolve_uri(uri: str | None) -> str | None:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the working folder.

    ``none`` turns tracking off. A relative SQLite path is made absolute, so worker processes
    and later commands find the same file.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.lower() == "none":
        return None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


@dataclass
class SweepInfo:  # noqa: D101 - fields are the parent run's tags
    name: str
    experiment: str
    tuner: str
    objective: str
    engine: str
    seed: int
    spec_yaml: str
    spec_hash: str
    metric: str
    goal: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # the spec's fixed values


class Tracker(Protocol):
    parent_run_id: str | None
    failed_writes: int

    def start_sweep(self, info: SweepInfo, parent_run_id: str | None = None,
                    join: bool = False) -> str | None: ...

    def trial_started(self, number: int, params: Mapping[str, Any], seed: int, device: str,
                      tags: Mapping[str, str] | None = None) -> None: ...

    def reconcile(self, results: list[TrialResult]) -> None: ...

    def trial_report(self, number: int, step: int, metrics: Mapping[str, float]) -> None: ...

    def trial_finished(
        self, result: TrialResult, *, elapsed: float, best: float | None, finished: int,
        cum_steps: int, artifact_dir: str | None = None,
    ) -> None: ...

    def finish_sweep(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """``--tracking-uri none``: for GPU checks on machines without MLflow."""

    parent_run_id: str | None = None
    failed_writes = 0

    def start_sweep(self, info: SweepInfo, parent_run_id: str | None = None,
                    join: bool = False) -> str | None:
        return None

    def trial_started(self, number: int, params: Mapping[str, Any], seed: int, device: str,
                      tags: Mapping[str, str] | None = None) -> None:
        pass

    def reconcile(self, results: list[TrialResult]) -> None:
        pass

    def trial_report(self, number: int, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def trial_finished(self, result: TrialResult, **kwargs: Any) -> None:
        pass

    def finish_sweep(self, status: str = "FINISHED") -> None:
        pass

    def pareto_update(self, flags: Mapping[int, bool], metrics: list[tuple[str, float, int]]) -> None:
        pass

    def log_front(self, front: dict[str, Any], files: list[Path] | None = None) -> None:
        pass


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before anything is created, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from harness.masking import mask_url

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status >= 500:
                raise TrackingError(f"tracking server {mask_url(uri)} is unhealthy (HTTP {resp.status})")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking server {mask_url(uri)} does not answer ({reason}); start it or pass --tracking-uri"
        ) from None


_WAL_PATHS: set[str] = set()


def sqlite_wal(uri: str) -> None:
    """Open the MLflow SQLite store at ``uri`` in WAL mode with ``synchronous=NORMAL``.

    MLflow commits every write on its own, and SQLite's default (a rollback journal, fsync at
    each commit) made the store the bottleneck of short trials: ~260 ms of writes per trial
    on a slow disk, 76 ms in WAL mode (benchmarks/dispatch.py). WAL with NORMAL stays
    consistent through any crash and loses nothing when a process is killed; only a power cut
    can take the last commits back. Readers (``mlflow ui``) no longer block the writer.
    Only connections to this file are changed (Optuna's SQLite storage, say, is left alone).
    """
    if not uri.startswith("sqlite:///"):
        return
    path = os.path.realpath(uri[len("sqlite:///"):])
    if not _WAL_PATHS:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _wal_on_connect)
    _WAL_PATHS.add(path)


def _wal_on_connect(dbapi_conn: Any, record: Any) -> None:
    import sqlite3

    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    cur = dbapi_conn.cursor()
    try:
        files = {os.path.realpath(row[2]) for row in cur.execute("PRAGMA database_list") if row[2]}
        if files & _WAL_PATHS:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def init_sqlite(uri: str) -> None:
    """Create a new SQLite store crash-safely: migrate a private file, then link it into place.

    MLflow builds a new database with a chain of migrations that are not one transaction; a
    driver killed half-way would leave a store no later command can open.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.init")
    tmp.unlink(missing_ok=True)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{tmp}", (path.parent / "mlartifacts").as_uri())
    store.engine.dispose()
    try:
        os.link(tmp, path)  # atomic, and never replaces a store another process just made
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _ms(t: float | None = None) -> int:
    return int((time.time() if t is None else t) * 1000)


def _str(value: Any) -> str:
    return str(value)[:6000]


_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAILED: "FAILED"}


class MLflowTracker:
    """Writes the sweep to MLflow from one background thread."""

    FLUSH_EVERY_S = 5.0
    RETRY_EVERY_S = 2.0  # while the store is away, retry the backlog this often
    FINAL_RETRY_S = 60.0  # at the end, wait this long for the store before giving up

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # mlflow resets it on import
        self.uri = uri
        try:
            init_sqlite(uri)  # before the client: constructing it creates (migrates) the store
            sqlite_wal(uri)
        except Exception as exc:
            raise TrackingError(f"tracking store {uri}: cannot create: {str(exc).splitlines()[0][:300]}") from None
        self.client = MlflowClient(tracking_uri=uri)
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.failed_writes = 0
        self.pending_writes = 0
        self.errors: list[str] = []
        self._runs: dict[int, str] = {}  # trial number -> child run id (writer thread only)
        self._settled: set[int] = set()  # trials whose final state is written
        self.metric = "value"
        self._pending: dict[int, list[Any]] = {}  # buffered step metrics (writer thread only)
        self._last_flush: dict[int, float] = {}
        self._ops: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- synchronous start: fail before any trial runs when the store does not answer ---------
    def start_sweep(self, info: SweepInfo, parent_run_id: str | None = None,
                    join: bool = False) -> str:
        """Create the parent run, or reopen ``parent_run_id``; with ``join``, reuse the parent run
        already made for a sweep of this name (a resumed or shared sweep keeps one parent)."""
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401  (import cost paid here)

        try:
            exp = self.client.get_experiment_by_name(info.experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        info.experiment, artifact_location=self._artifact_location(info.experiment)
                    )
                except Exception:  # another process of a shared sweep created it first
                    exp = self.client.get_experiment_by_name(info.experiment)
                    if exp is None:
                        raise
                    self.experiment_id = exp.experiment_id
            else:
                self.experiment_id = exp.experiment_id
            if parent_run_id is None and join:
                parent_run_id = self._elect_parent(info.name)
            created = parent_run_id is None
            if parent_run_id is None:
                tags = {
                    N.TAG_TUNER: info.tuner,
                    N.TAG_OBJECTIVE: info.objective,
                    N.TAG_SEED: str(info.seed),
                    N.TAG_ENGINE: info.engine,
                    N.TAG_SWEEP: info.name,
                    N.TAG_SPEC_HASH: info.spec_hash,
                    N.TAG_METRIC: info.metric,
                    N.TAG_GOAL: info.goal,
                    N.TAG_KIND: N.KIND_SWEEP,
                    **info.tags,
                }
                run = self.client.create_run(self.experiment_id, run_name=info.name, tags=tags)
                parent_run_id = run.info.run_id
                self.client.log_batch(
                    parent_run_id,
                    params=[Param(k, _str(v)) for k, v in list(info.params.items())[:100]],
                )
                self.client.log_text(parent_run_id, info.spec_yaml, N.ARTIFACT_SPEC)
                if join:  # several processes may have raced to create it: all keep the first
                    first = self._elect_parent(info.name)
                    if first is not None and first != parent_run_id:
                        self.client.delete_run(parent_run_id)
                        parent_run_id = first
                        self.client.update_run(parent_run_id, status="RUNNING")
            if not created:  # resume or a shared sweep: the same parent run, open again
                self.client.update_run(parent_run_id, status="RUNNING")
        except Exception as exc:
            from harness.masking import mask_url

            raise TrackingError(
                f"tracking store {mask_url(self.uri)} does not answer: {str(exc).splitlines()[0][:300]}"
            ) from None
        self.parent_run_id = parent_run_id
        self.metric = info.metric
        self._thread = threading.Thread(target=self._loop, name="harness-tracker", daemon=True)
        self._thread.start()
        return parent_run_id

    def _elect_parent(self, name: str) -> str | None:
        """The first parent run created for sweep ``name`` (by start time, then id), if any."""
        found = self.client.search_runs(
            [self.experiment_id], max_results=100,
            filter_string=f"{N.flt(N.TAG_KIND, N.KIND_SWEEP)} and {N.flt(N.TAG_SWEEP, name)}",
        )
        if not found:
            return None
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id

    def _artifact_location(self, experiment: str) -> str | None:
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///"):])
            return (db.parent / "mlartifacts" / experiment).as_uri()
        return None

    # -- the writer thread --------------------------------------------------------------------
    def _loop(self) -> None:
        """Run writes in order; a write that fails waits in the backlog, and everything after it
        too, until the store answers again (the sweep goes on meanwhile)."""
        from collections import deque

        backlog: deque[Callable[[], None]] = deque()
        last_fail = 0.0
        closing_since: float | None = None
        while True:
            try:
                op = self._ops.get(timeout=self.RETRY_EVERY_S if backlog else None)
            except queue.Empty:
                op = None
            else:
                if op is None:
                    closing_since = time.monotonic()
                else:
                    backlog.append(op)
            while backlog and time.monotonic() - last_fail >= (0 if closing_since else self.RETRY_EVERY_S):
                try:
                    backlog[0]()
                    backlog.popleft()
                except Exception as exc:  # the store went away: keep it, retry later
                    last_fail = time.monotonic()
                    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    if not self.errors or self.errors[-1] != msg:
                        self.errors.append(msg)
                    if closing_since is not None:
                        time.sleep(self.RETRY_EVERY_S)
                    break
            self.pending_writes = len(backlog)
            if closing_since is not None and (
                not backlog or time.monotonic() - closing_since > self.FINAL_RETRY_S
            ):
                self.failed_writes = len(backlog)
                return

    def _submit(self, op: Callable[[], None]) -> None:
        if self._thread is not None:
            self._ops.put(op)

    # -- trial events (called from the sweep loop; never block) -------------------------------
    def trial_started(self, number: int, params: Mapping[str, Any], seed: int, device: str,
                      tags: Mapping[str, str] | None = None) -> None:
        params = dict(params)
        start = _ms()
        attempts = 0

        def op() -> None:
            from mlflow.entities import Param

            nonlocal attempts
            attempts += 1
            if attempts > 1:  # a retry: the store may have made the run before the reply was lost
                found = self.client.search_runs(
                    [self.experiment_id], max_results=1,
                    filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and {N.flt(N.TAG_TRIAL, str(number))}",
                )
                if found:
                    self._runs[number] = found[0].info.run_id
                    self._last_flush[number] = time.monotonic()
                    if params:
                        self.client.log_batch(found[0].info.run_id,
                                              params=[Param(k, _str(v)) for k, v in params.items()])
                    return
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{number}",
                start_time=start,
                tags={
                    PARENT_TAG: self.parent_run_id,
                    N.TAG_TRIAL: str(number),
                    N.TAG_STATE: N.STATE_RUNNING,
                    N.TAG_SEED: str(seed),
                    N.TAG_DEVICE: device,
                    N.TAG_KIND: N.KIND_TRIAL,
                    **dict(tags or {}),
                },
            )
            self._runs[number] = run.info.run_id
            self._last_flush[number] = time.monotonic()
            if params:
                self.client.log_batch(run.info.run_id, params=[Param(k, _str(v)) for k, v in params.items()])

        self._submit(op)

    def reconcile(self, results: list[TrialResult]) -> None:
        """Resume: write what the tuner's state knows and MLflow does not (it is the truth).

        A child run missing for a finished trial is created; one left ``running`` by a crash
        gets the trial's recorded outcome (``interrupted`` for trials that were running).
        """
        results = list(results)

        def op() -> None:
            for run in self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                max_results=50000,
            ):
                number = int(run.data.tags.get(N.TAG_TRIAL, -1))
                self._runs[number] = run.info.run_id
                if run.data.tags.get(N.TAG_STATE, N.STATE_RUNNING) != N.STATE_RUNNING:
                    self._settled.add(number)
            for r in results:
                if r.number not in self._settled:
                    self._write_result(r, elapsed=0.0, end=_ms())

        self._submit(op)

    def trial_report(self, number: int, step: int, metrics: Mapping[str, float]) -> None:
        ts = _ms()
        metrics = dict(metrics)

        def op() -> None:
            from mlflow.entities import Metric

            buf = self._pending.setdefault(number, [])
            buf.extend(Metric(k, v, ts, step) for k, v in metrics.items() if _loggable(v))
            if len(buf) >= 500 or time.monotonic() - self._last_flush.get(number, 0) > self.FLUSH_EVERY_S:
                self._flush(number)

        self._submit(op)

    def _flush(self, number: int) -> None:
        buf = self._pending.pop(number, [])
        run_id = self._runs.get(number)
        self._last_flush[number] = time.monotonic()
        if run_id is None:
            return
        for i in range(0, len(buf), 1000):
            self.client.log_batch(run_id, metrics=buf[i: i + 1000])

    def trial_finished(
        self, result: TrialResult, *, elapsed: float, best: float | None, finished: int,
        cum_steps: int, artifact_dir: str | None = None,
    ) -> None:
        end = _ms()

        def op() -> None:
            from mlflow.entities import Metric

            self._write_result(result, elapsed, end, artifact_dir)
            if self.parent_run_id:
                progress = [Metric(N.METRIC_TRIALS_FINISHED, float(finished), end, finished)]
                if best is not None:
                    progress += [Metric(N.METRIC_BEST_SO_FAR, best, end, finished),
                                 Metric(N.METRIC_BEST_SO_FAR_BY_STEPS, best, end, cum_steps)]
                self.client.log_batch(self.parent_run_id, metrics=progress)

        self._submit(op)

    def _write_result(self, result: TrialResult, elapsed: float, end: int,
                      artifact_dir: str | None = None) -> None:
        """The child run's final state (created here if it does not exist yet)."""
        from mlflow.entities import Metric, Param, RunTag

        if result.number not in self._runs:  # started before a crash, or its create failed
            run_id = self.client.create_run(
                self.experiment_id, run_name=f"trial-{result.number}", start_time=end,
                tags={PARENT_TAG: self.parent_run_id, N.TAG_TRIAL: str(result.number),
                      N.TAG_KIND: N.KIND_TRIAL, N.TAG_SEED: str(result.seed)},
            ).info.run_id
            self._runs[result.number] = run_id
            self.client.log_batch(run_id, params=[Param(k, _str(v)) for k, v in result.params.items()])
        run_id = self._runs[result.number]
        self._flush(result.number)
        final = [Metric(k, v, end, result.steps) for k, v in result.metrics.items() if _loggable(v)]
        final += [Metric(N.METRIC_ELAPSED, elapsed, end, 0), Metric(N.METRIC_SECONDS, result.seconds, end, 0),
                  Metric(N.METRIC_STEPS, float(result.steps), end, 0)]
        if result.state is TrialState.COMPLETE and result.value is not None and not result.metrics:
            final.append(Metric(self.metric, result.value, end, result.steps))  # reconciled
        tags = [RunTag(N.TAG_STATE, result.state.value)]
        if result.device != "?":
            tags.append(RunTag(N.TAG_DEVICE, result.device))
        if result.reason:
            tags.append(RunTag(N.TAG_REASON, result.reason[:5000]))
        self.client.log_batch(run_id, metrics=final, tags=tags)
        if result.traceback:
            self.client.log_text(run_id, result.traceback, N.ARTIFACT_TRACEBACK)
        if artifact_dir and Path(artifact_dir).is_dir() and any(Path(artifact_dir).iterdir()):
            self.client.log_artifacts(run_id, artifact_dir)
        self.client.set_terminated(run_id, _STATUS[result.state], end_time=end)
        self._last_flush.pop(result.number, None)
        self._settled.add(result.number)

    def finish_sweep(self, status: str = "FINISHED") -> None:
        """Drain the writer thread, then close the parent run."""
        parent = self.parent_run_id

        def op() -> None:
            if parent:
                self.client.set_terminated(parent, status)

        self._submit(op)
        if self._thread is not None:
            self._ops.put(None)
            self._thread.join()
            self._thread = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until every queued write is done (the measurement's end point)."""
        done = threading.Event()
        self._submit(done.set)
        if self._thread is not None:
            done.wait(timeout)

    # -- multi-objective sweeps (issue 17) ---------------------------------------------------
    def pareto_update(self, flags: Mapping[int, bool], metrics: list[tuple[str, float, int]]) -> None:
        """Tag child runs ``harness.pareto`` = ``true`` / ``false`` (trial number -> on the front)
        and log parent metrics ``(name, value, step)`` (``hypervolume``, ``hypervolume_by_steps``)."""
        flags = dict(flags)
        metrics = list(metrics)
        ts = _ms()

        def op() -> None:
            from mlflow.entities import Metric, RunTag

            for number, on in flags.items():
                run_id = self._runs.get(number)
                if run_id is not None:
                    self.client.log_batch(run_id, tags=[RunTag(N.TAG_PARETO, "true" if on else "false")])
            if self.parent_run_id and metrics:
                self.client.log_batch(self.parent_run_id,
                                      metrics=[Metric(k, float(v), ts, int(step)) for k, v, step in metrics])

        self._submit(op)

    def log_front(self, front: dict[str, Any], files: list[Path] | None = None) -> None:
        """The sweep's ``pareto.json`` (each member's ``run_id`` filled in from the child runs) and
        the front's figures, as parent-run artifacts (replaced when logged again)."""
        import copy
        import json

        front = copy.deepcopy(front)
        files = list(files or [])

        def op() -> None:
            if not self.parent_run_id:
                return
            for member in front.get("front", []):
                if member.get("run_id") is None:
                    member["run_id"] = self._runs.get(member.get("number", -1))
            self.client.log_text(self.parent_run_id, json.dumps(front, indent=2, default=str), N.ARTIFACT_PARETO)
            for f in files:
                if Path(f).is_file():
                    self.client.log_artifact(self.parent_run_id, str(f))

        self._submit(op)


def _loggable(v: Any) -> bool:
    import math

    return isinstance(v, int | float) and math.isfinite(float(v))


def make_tracker(uri: str | None) -> Tracker:
    return NullTracker() if uri is None else MLflowTracker(uri)
