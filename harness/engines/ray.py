"""Ray engine: trials of any ask/tell tuner (optuna, ax, random) run as Ray actors.

One actor per slot, reused across trials (no process start per trial). Without
``--ray-address`` the engine starts a local Ray (``ray.init(num_cpus=..., include_dashboard=False)``);
with one it joins that cluster (``auto`` or ``host:port``). A session that is already running in
this process (a test's, a notebook's) is used as it is and left running.

Each actor runs :func:`harness.engines.base.run_task`, as the local engine's workers do. Reports
are sent, without waiting, to a small mailbox actor that the driver long-polls; a trial's result
comes back as the return value of its ``run`` call (one hop), and is handed on only after all
the trial's reports. ``poll`` waits on both at once. A prune decision is
fire-and-forget too: ``stop_trial`` calls the actor's ``stop`` method (the actor runs two
threads, so the call lands while the trial runs), which sets a flag the trial's next
``report`` turns into ``TrialPruned``. An exception, a NaN, a timeout (the actor is killed
and replaced) or a dead actor becomes a failed trial, and the sweep goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from harness.engines.base import Done, Engine, EngineError, Event, TrialTask, run_task

DONE_GRACE_S = 2.0  # how long a result waits for reports still in flight before it is handed on
TAIL = 64  # the last reports a trial's result carries back with it


# -- Ray session -------------------------------------------------------------------------------
def check_address(address: str | None) -> None:
    """Fail fast (``EngineError``, one line) when ``--ray-address`` does not answer.

    Called by ``prepare``, before any MLflow run exists. ``auto`` needs a cluster started on
    this machine (``ray start --head``); ``host:port`` and ``ray://host:port`` need the port to
    accept a connection within 3 s.
    """
    if not address:
        return
    if address == "auto":
        current = Path("/tmp/ray/ray_current_cluster")
        if not current.exists() and not os.environ.get("RAY_ADDRESS"):
            raise EngineError("--ray-address auto: no Ray cluster runs on this machine "
                              "(start one with 'ray start --head')")
        target = current.read_text().strip() if current.exists() else os.environ["RAY_ADDRESS"]
        if target.startswith("ray://") or ":" not in target:
            return
        host, port = _host_port(target, "auto")
    else:
        host, port = _host_port(address, address)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            why = "no answer within 3 s"
        raise EngineError(f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({why})") from None
    if not address.startswith("ray://"):
        problem = _gcs_problem(f"{host}:{port}")
        if problem and ("AuthenticationError" in problem or "InvalidAuthToken" in problem):
            raise EngineError(
                f"--ray-address {address}: the cluster refused this process's token (token "
                "authentication is on there: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, or "
                "RAY_AUTH_TOKEN_PATH, to the cluster's token; 'ray get-auth-token' prints it)")
        if problem:
            raise EngineError(f"--ray-address {address}: {host}:{port} answers, but not as a Ray "
                              f"cluster ({problem})")


_GCS_PING = """
import sys
import ray._raylet as r
r.GcsClient(address=sys.argv[1]).internal_kv_get(b"session_name", namespace=b"session", timeout=5)
"""


def _gcs_problem(address: str) -> str | None:
    """Ask the Ray head's GCS for its session, in a subprocess (Ray's C++ client logs to stderr
    and may retry for a long time): None when it answers, else the error's first line."""
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PING, address], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "no answer within 20 s"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln and not ln.startswith("[")]
    return (errors or lines or ["the check failed"])[-1][:300]


def _host_port(address: str, shown: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EngineError(f"--ray-address {shown}: expected auto, host:port or ray://host:port")
    return host.strip("[]"), int(port)


def ensure_ray(address: str | None, slots: list[str]) -> bool:
    """Join ``address`` or start a local Ray sized for ``slots``; True when this call started or
    joined it (so the caller shuts it down), False when a session already runs in this process.

    A local Ray gets one CPU per slot (at least the machine's count) and exactly the GPUs the
    slots name (``--devices 1,3`` -> Ray's GPU ids are 1 and 3)."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.WARNING)
    gpus = sorted({s.split(":", 1)[1] for s in slots if s.startswith("cuda:")}, key=int)
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            if gpus:  # the raylet reads the GPUs it may hand out from here
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            # workers import what the driver imports, as the local engine's do: the driver's
            # own sys.path entries (its folder, PYTHONPATH), beyond Python's and the venv's
            roots = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
            own = [str(Path(p or ".").resolve()) for p in sys.path
                   if Path(p or ".").is_dir() and not roots & set(Path(p or ".").resolve().parents)]
            extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            path = os.pathsep.join(dict.fromkeys([*own, *extra]))
            ray.init(num_cpus=max(len(slots), os.cpu_count() or 1), num_gpus=len(gpus),
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, auth failures, ...
        where = f"--ray-address {address}" if address else "a local Ray"
        raise EngineError(f"{where}: cannot start or join Ray: {str(exc).splitlines()[0][:300]}") from None
    finally:
        if gpus and not address:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return True


# -- actors ------------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class Mailbox:
    """Reports and results from the workers, taken by the driver in batches."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.event = asyncio.Event()

    async def put(self, item: Any) -> None:
        self.items.append(item)
        self.event.set()

    async def take(self, timeout: float) -> list[Any]:
        if not self.items and timeout > 0:
            try:
                await asyncio.wait_for(self.event.wait(), timeout)
            except TimeoutError:
                pass
        items, self.items = self.items, []
        self.event.clear()
        return items


class Worker:
    """One slot: pins threads, pre-imports the objective, runs trials one after another."""

    def __init__(self, wid: int, slot: str, threads: int, objective: str, mailbox: Any) -> None:
        self.wid = wid
        self.mailbox = mailbox
        self.stop_flag = -1
        self.device = "cuda" if slot.startswith("cuda") else "cpu"
        self.label = slot
        if self.device == "cuda":
            ids = ray.get_gpu_ids()
            self.label = f"cuda:{ids[0]}" if ids else slot
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        from harness.objective import load_objective

        try:
            load_objective(objective)  # pay the import before the first trial, not during it
        except Exception:
            pass  # the trial fails with the import error and its traceback
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)

    def ready(self) -> str:
        return self.label

    def stop(self, number: int) -> None:
        self.stop_flag = number

    def run(self, task: TrialTask) -> tuple[int, list[tuple[int, Event]], Done]:
        """One trial; returns (reports sent, the last reports, result). The driver hands the
        result on once it has every report: the last ones ride along with the result, so it
        need not wait for the mailbox to deliver them."""
        sent = 0
        tail: deque[tuple[int, Event]] = deque(maxlen=TAIL)

        def send(event: Event) -> None:
            nonlocal sent
            sent += 1
            tail.append((sent, event))
            self.mailbox.put.remote((self.wid, task.number, sent, event))  # fire-and-forget

        done = run_task(task, self.device, send, lambda n: self.stop_flag == n, time.perf_counter)
        return sent, list(tail), replace(done, device=self.label)


RemoteWorker = ray.remote(Worker)


@dataclass
class _Slot:
    wid: int
    slot: str
    label: str = ""  # the device the actor got (cuda:N as Ray assigned it)
    actor: Any = None
    ready_ref: Any = None
    ready: bool = False
    task: TrialTask | None = None
    run_ref: Any = None
    started: float = 0.0
    seen: set[int] = field(default_factory=set)  # report indices handed on (current trial)
    done: tuple[int, Done] | None = None  # (reports sent, result) waiting for its reports
    done_at: float = 0.0


class RayEngine(Engine):
    """Trials as reusable Ray actors, one per slot, on a local or an existing Ray cluster."""

    name = "ray"

    def __init__(self, slots: list[str], address: str | None = None,
                 threads_per_worker: int | None = None, start_timeout: float = 300.0) -> None:
        if not slots:
            raise EngineError("the ray engine needs at least one worker slot")
        self.slots = slots
        self.address = address
        cpus = os.cpu_count() or 1
        self.threads = threads_per_worker or max(1, cpus // len(slots))
        self.start_timeout = start_timeout
        self.startup_seconds = 0.0
        self.init_seconds = 0.0  # of which ray.init
        self._owns_ray = False
        self._objective = ""
        self._mailbox: Any = None
        self._take: Any = None  # the outstanding long poll on the mailbox
        self._slots: list[_Slot] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, objective: str) -> None:
        t0 = time.perf_counter()
        self._owns_ray = ensure_ray(self.address, self.slots)
        self.init_seconds = time.perf_counter() - t0
        self._objective = objective
        self._mailbox = Mailbox.options(name=None).remote()
        self._slots = [_Slot(i, s, label=s) for i, s in enumerate(self.slots)]
        for s in self._slots:
            self._spawn(s)
        deadline = time.monotonic() + self.start_timeout
        pending = [s.ready_ref for s in self._slots]
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            self._check_ready()
            dead = [s for s in self._slots if s.ready_ref is None and not s.ready]
            if dead:
                raise EngineError(f"ray engine: worker {dead[0].wid} died at start")
            if pending and time.monotonic() > deadline:
                res = ray.cluster_resources()
                raise EngineError(
                    f"ray engine: {len(pending)} of {len(self._slots)} workers not placed after "
                    f"{self.start_timeout:.0f} s (cluster: {res.get('CPU', 0):g} CPU, "
                    f"{res.get('GPU', 0):g} GPU; each worker needs {self._resources(self.slots[0])})"
                )
        self.startup_seconds = time.perf_counter() - t0

    def _resources(self, slot: str) -> dict[str, float]:
        if slot.startswith("cuda"):
            per_gpu = sum(1 for s in self.slots if s == slot)
            return {"num_cpus": 0, "num_gpus": 1.0 / per_gpu}
        return {"num_cpus": 1}

    def _spawn(self, s: _Slot) -> None:
        s.actor = RemoteWorker.options(max_concurrency=2, **self._resources(s.slot)).remote(
            s.wid, s.slot, self.threads, self._objective, self._mailbox)
        s.ready_ref = s.actor.ready.remote()
        s.ready = False
        s.task = None
        s.run_ref = None

    def _check_ready(self) -> None:
        refs = [s.ready_ref for s in self._slots if not s.ready and s.ready_ref is not None]
        if not refs:
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for s in self._slots:
            if s.ready_ref is not None and s.ready_ref in done:
                try:
                    s.label = ray.get(s.ready_ref)
                    s.ready = True
                except ray.exceptions.RayError:
                    s.ready_ref = None  # died while starting: replaced by _reap

    def shutdown(self) -> None:
        for s in self._slots:
            if s.actor is not None:
                try:
                    ray.kill(s.actor, no_restart=True)
                except Exception:
                    pass
        self._slots = []
        if self._mailbox is not None:
            try:
                ray.kill(self._mailbox, no_restart=True)
            except Exception:
                pass
            self._mailbox = None
            self._take = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    # -- dispatch --------------------------------------------------------------------------
    def free_slots(self) -> int:
        return sum(1 for s in self._slots if s.ready and s.task is None)

    def running(self) -> list[int]:
        return [s.task.number for s in self._slots if s.task is not None]

    def submit(self, task: TrialTask) -> str:
        for s in self._slots:
            if s.ready and s.task is None:
                s.task, s.started, s.done = task, time.perf_counter(), None
                s.seen = set()
                s.run_ref = s.actor.run.remote(task)
                return s.label
        raise RuntimeError("submit() with no free slot")

    def stop_trial(self, number: int) -> None:
        for s in self._slots:
            if s.task is not None and s.task.number == number:
                s.actor.stop.remote(number)  # fire-and-forget

    def poll(self, timeout: float) -> list[Event]:
        """Wait (up to ``timeout``) for a report batch or a trial's end, whichever comes first.

        A result comes straight back as the ``run`` call's return value (one hop); reports come
        through the mailbox, long-polled by one outstanding ``take`` call.
        """
        events: list[Event] = []
        if self._take is None:
            self._take = self._mailbox.take.remote(1.0)
        runs = {s.run_ref: s for s in self._slots if s.run_ref is not None and s.done is None}
        refs = [self._take, *runs]
        holding = any(s.done is not None for s in self._slots)  # a result waits for its reports
        wait = min(timeout, 0.01) if holding else timeout
        ray.wait(refs, num_returns=1, timeout=max(wait, 0.0))
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        now = time.perf_counter()
        if self._take in ready:
            items = ray.get(self._take)
            self._take = None
            for wid, number, index, report in items:
                s = self._slots[wid] if wid < len(self._slots) else None
                if s is None or s.task is None or s.task.number != number or index in s.seen:
                    continue  # late news of a trial already recorded, or already handed on
                s.seen.add(index)
                events.append(report)
        for ref in ready & set(runs):
            s = runs[ref]
            assert s.task is not None
            try:
                sent, tail, done = ray.get(ref)
                for index, report in tail:
                    if index not in s.seen:
                        s.seen.add(index)
                        events.append(report)
                s.done, s.done_at = (sent, done), now
            except ray.exceptions.RayError as exc:  # the actor died with its trial
                reason = f"worker died ({type(exc).__name__}: {_first_line(exc)})"
                events.append(Done(s.task.number, "died", reason=reason[:500], seconds=now - s.started,
                                   device=s.label))
                self._replace(s)
        for s in self._slots:
            if s.done is not None and (len(s.seen) >= s.done[0] or now - s.done_at > DONE_GRACE_S):
                events.append(s.done[1])
                s.task, s.run_ref, s.done = None, None, None
        events.extend(self._reap(now))
        self._check_ready()
        return events

    def _reap(self, now: float) -> list[Event]:
        """Timed-out trials become failed trials (their actors are killed and replaced); an
        actor that died while idle or starting is replaced."""
        out: list[Event] = []
        for s in self._slots:
            if s.task is None:
                if not s.ready and s.ready_ref is None:
                    self._spawn(s)
            elif s.done is None and s.task.timeout is not None and now - s.started > s.task.timeout:
                out.append(Done(s.task.number, "timeout",
                                reason=f"timeout: trial exceeded {s.task.timeout:g} s",
                                seconds=now - s.started, device=s.label))
                self._replace(s)
        return out

    def _replace(self, s: _Slot) -> None:
        try:
            ray.kill(s.actor, no_restart=True)
        except Exception:
            pass
        self._spawn(s)  # gets work once its ready() answers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Traceback"):
            return line[:200]
    return type(exc).__name__


__all__ = ["Mailbox", "RayEngine", "Worker", "check_address", "ensure_ray"]
