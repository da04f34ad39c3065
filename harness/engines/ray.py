"""Ray engine: trials of any ask/tell tuner (optuna, ax, random) run as Ray actors.

One actor per slot, reused across trials (no process start per trial). Without
``--ray-address`` the engine starts a local Ray (``ray.init(num_cpus=..., include_dashboard=False)``);
with one it joins that cluster (``auto`` or ``host:port``). A session that is already running in
this process (a test's, a notebook's) is used as it is and left running.

Each actor runs :func:`harness.engines.base.run_task`, as the local engine's workers do. Reports
and results are sent, without waiting, to a small mailbox actor that the driver drains in
``poll``; a trial's result is handed on only after all its reports. A prune decision is
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from harness.engines.base import Done, EngineError, Event, TrialTask, run_task

DONE_GRACE_S = 2.0  # how long a result waits for reports still in flight before it is handed on


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


def _host_port(address: str, shown: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EngineError(f"--ray-address {shown}: expected auto, host:port or ray://host:port")
    return host.strip("[]"), int(port)


def ensure_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Join ``address`` or start a local Ray; True when this call started or joined it (so the
    caller shuts it down), False when a session was already running in this process."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.WARNING)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # workers import what the driver imports: the same sys.path, as the local engine's
            path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, auth failures, ...
        where = f"--ray-address {address}" if address else "a local Ray"
        raise EngineError(f"{where}: cannot start or join Ray: {str(exc).splitlines()[0][:300]}") from None
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

    def run(self, task: TrialTask) -> Done:
        sent = 0

        def send(event: Event) -> None:
            nonlocal sent
            sent += 1
            self.mailbox.put.remote(("report", self.wid, task.number, event))

        done = run_task(task, self.device, send, lambda n: self.stop_flag == n, time.perf_counter)
        done = replace(done, device=self.label)
        self.mailbox.put.remote(("done", self.wid, task.number, (sent, done)))
        return done


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
    reports: int = 0  # reports received for the current trial
    done: tuple[int, Done] | None = None  # (reports sent, result) waiting for its reports
    done_at: float = 0.0
    events: list[Event] = field(default_factory=list)


class RayEngine:
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
        self._slots: list[_Slot] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, objective: str) -> None:
        t0 = time.perf_counter()
        gpus = sorted({s for s in self.slots if s.startswith("cuda")})
        self._owns_ray = ensure_ray(self.address, num_cpus=max(len(self.slots), os.cpu_count() or 1),
                                    num_gpus=len(gpus) if gpus else None)
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
                s.task, s.started, s.reports, s.done = task, time.perf_counter(), 0, None
                s.run_ref = s.actor.run.remote(task)
                return s.label
        raise RuntimeError("submit() with no free slot")

    def stop_trial(self, number: int) -> None:
        for s in self._slots:
            if s.task is not None and s.task.number == number:
                s.actor.stop.remote(number)  # fire-and-forget

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        waiting = any(s.done is not None for s in self._slots)
        items = ray.get(self._mailbox.take.remote(min(timeout, 0.01) if waiting else timeout))
        for kind, wid, number, payload in items:
            s = self._slots[wid] if wid < len(self._slots) else None
            if s is None or s.task is None or s.task.number != number:
                continue  # late news of a trial already recorded (killed on timeout)
            if kind == "report":
                s.reports += 1
                events.append(payload)
            else:
                s.done, s.done_at = payload, time.perf_counter()
        now = time.perf_counter()
        for s in self._slots:
            if s.done is not None and (s.reports >= s.done[0] or now - s.done_at > DONE_GRACE_S):
                events.append(s.done[1])
                s.task, s.run_ref, s.done = None, None, None
        events.extend(self._reap())
        self._check_ready()
        return events

    def _reap(self) -> list[Event]:
        """Dead actors and timed-out trials become failed trials; their actors are replaced."""
        out: list[Event] = []
        now = time.perf_counter()
        runs = [s.run_ref for s in self._slots if s.task is not None and s.done is None and s.run_ref is not None]
        finished = set(ray.wait(runs, num_returns=len(runs), timeout=0)[0]) if runs else set()
        for s in self._slots:
            if s.task is None:
                if not s.ready and s.ready_ref is None:  # died while idle or starting
                    self._spawn(s)
                continue
            if s.done is not None:
                continue
            elapsed = now - s.started
            if s.run_ref in finished:
                try:
                    ray.get(s.run_ref)
                    continue  # its result is on its way through the mailbox
                except ray.exceptions.RayError as exc:
                    reason = f"worker died ({type(exc).__name__}: {_first_line(exc)})"
                out.append(Done(s.task.number, "died", reason=reason[:500], seconds=elapsed,
                                steps=0, device=s.label))
                self._replace(s)
            elif s.task.timeout is not None and elapsed > s.task.timeout:
                out.append(Done(s.task.number, "timeout",
                                reason=f"timeout: trial exceeded {s.task.timeout:g} s",
                                seconds=elapsed, device=s.label))
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
