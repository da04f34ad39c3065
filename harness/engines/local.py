"""Local engine: W spawned worker processes, each pinned to a device slot.

A slot is a device (``cpu`` or one GPU); ``--trials-per-device K`` gives each GPU K slots so
several small trials share it. Each worker sees only its GPU (``CUDA_VISIBLE_DEVICES``) and an
equal share of the CPU threads. A trial's exception, a timeout or a dead worker process becomes
a failed trial and the worker is replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from harness.engines.base import Done, Engine, EngineError, Event, TrialTask, run_task


def detect_gpus() -> int:
    """Number of visible CUDA GPUs, without initialising CUDA in the driver."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        n = min(n, len([v for v in visible.split(",") if v.strip()]))
    return n


def device_slots(devices: str, trials_per_device: int, workers: int | None) -> list[str]:
    """The device of each worker: ``auto`` (GPUs if any, else CPU), ``cpu`` or ``0,1,...``."""
    if trials_per_device < 1:
        raise EngineError(f"--trials-per-device must be >= 1, got {trials_per_device}")
    if workers is not None and workers < 1:
        raise EngineError(f"--workers must be >= 1, got {workers}")
    if devices == "auto":
        n = detect_gpus()
        gpus = [str(i) for i in range(n)]
    elif devices == "cpu":
        gpus = []
    else:
        gpus = [d.strip() for d in devices.split(",") if d.strip()]
        if not gpus or not all(g.isdigit() for g in gpus):
            raise EngineError(f"--devices {devices}: use auto, cpu or GPU indices like 0,1")
    if not gpus:
        return ["cpu"] * (workers or max(1, (os.cpu_count() or 2) // 2))
    slots = [f"cuda:{g}" for g in gpus for _ in range(trials_per_device)]
    if workers is not None and workers > len(slots):
        raise EngineError(
            f"--workers {workers}: more than the {len(slots)} GPU slots "
            f"({len(gpus)} GPU(s) x --trials-per-device {trials_per_device})"
        )
    return slots[: workers or len(slots)]


def _worker_main(
    wid: int,
    slot: str,
    threads: int,
    objective: str,
    tasks: Any,
    results: Any,
    stop_flag: Any,
) -> None:
    """A worker process: pin the device and threads, pre-import the objective, run tasks."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with_parent()
    device = _prepare_worker(slot, threads, objective)
    results.send(("ready", wid))

    def send(event: Event) -> None:
        results.send(("event", wid, event))

    while True:
        task = tasks.get()
        if task is None:
            return
        done = run_task(task, device, send, lambda n: stop_flag.value == n, time.perf_counter)
        # the tag says which physical device ran it, not the worker's remapped view
        results.send(("event", wid, Done(**{**done.__dict__, "device": slot})))


def _prepare_worker(slot: str, threads: int, objective: str) -> str:
    """In a new worker: see only its device, use its share of the threads, pre-import the
    objective (and make the CUDA context); returns the device the trainer is given."""
    if slot.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.split(":", 1)[1]
        device = "cuda"
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        device = "cpu"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import sys

    from harness.objective import load_objective

    try:
        load_objective(objective)  # pay the import before the first trial, not during it
    except Exception:
        pass  # the trial will fail with the import error and its traceback
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(threads)
        if device == "cuda" and torch.cuda.is_available():
            torch.empty(1, device=device)  # create the CUDA context now, not in the first trial
    return device


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver dies (a killed driver leaves no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Worker:
    wid: int
    slot: str
    proc: Any
    tasks: Any
    stop_flag: Any
    task: TrialTask | None = None
    started: float = 0.0
    ready: bool = False
    reader: Any = None  # this worker's result pipe


class LocalEngine(Engine):
    """The embedded default: a process pool on this machine."""

    name = "local"

    def __init__(self, slots: list[str], threads_per_worker: int | None = None,
                 start_timeout: float = 300.0) -> None:
        if not slots:
            raise EngineError("the local engine needs at least one worker slot")
        self.slots = slots
        cpus = os.cpu_count() or 1
        self.threads = threads_per_worker or max(1, cpus // len(slots))
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._objective = ""
        self.startup_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, objective: str) -> None:
        t0 = time.perf_counter()
        self._objective = objective
        self._workers = [self._spawn(i, slot) for i, slot in enumerate(self.slots)]
        self._wait_ready()
        self.startup_seconds = time.perf_counter() - t0

    def _spawn(self, wid: int, slot: str) -> _Worker:
        # One result pipe per worker, written by it alone: a worker killed in the middle of a
        # write can only break its own pipe. (A shared multiprocessing.Queue has one write lock
        # for all writers; a worker SIGKILLed while holding it silences every other worker.)
        reader, writer = self._ctx.Pipe(duplex=False)
        tasks = self._ctx.SimpleQueue()
        flag = self._ctx.Value("q", -1, lock=False)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(wid, slot, self.threads, self._objective, tasks, writer, flag),
            daemon=True,
            name=f"harness-worker-{wid}",
        )
        proc.start()
        writer.close()  # the worker holds the only write end: its death reads as EOF here
        return _Worker(wid, slot, proc, tasks, flag, reader=reader)

    def _receive(self, timeout: float) -> list[tuple]:
        """Messages from any worker within ``timeout`` seconds (returns as soon as one arrives)."""
        from multiprocessing.connection import wait

        readers = {w.reader: w for w in self._workers if w.reader is not None}
        msgs: list[tuple] = []
        for r in wait(list(readers), timeout=timeout):
            try:
                while r.poll():
                    msgs.append(r.recv())
            except (EOFError, OSError):  # the worker died; _reap records and replaces it
                readers[r].reader = None
                r.close()
        return msgs

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not all(w.ready for w in self._workers):
            for msg in self._receive(0.5):
                self._take(msg, [])
            for w in self._workers:
                if not w.ready and w.proc.exitcode is not None:
                    raise EngineError(
                        f"local engine: worker {w.wid} exited at start (code {w.proc.exitcode})"
                    )
            if time.monotonic() > deadline:
                raise EngineError(
                    f"local engine: workers not ready after {self.start_timeout:.0f} s"
                )

    def _busy(self, w: Any) -> bool:
        """Whether worker ``w`` runs anything (shutdown kills a busy worker, asks an idle one)."""
        return w.task is not None

    def shutdown(self) -> None:
        for w in self._workers:
            if w.proc.is_alive():
                if self._busy(w):
                    w.proc.kill()
                else:
                    w.tasks.put(None)
        deadline = time.monotonic() + 5
        for w in self._workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
        for w in self._workers:
            if w.reader is not None:
                w.reader.close()
        self._workers = []

    # -- dispatch --------------------------------------------------------------------------
    def free_slots(self) -> int:
        return sum(1 for w in self._workers if w.task is None and w.ready)

    def running(self) -> list[int]:
        return [w.task.number for w in self._workers if w.task is not None]

    def submit(self, task: TrialTask) -> str:
        for w in self._workers:
            if w.task is None and w.ready:
                w.task = task
                w.started = time.perf_counter()
                w.stop_flag.value = -1
                w.tasks.put(task)
                return w.slot
        raise RuntimeError("submit() with no free slot")

    def stop_trial(self, number: int) -> None:
        for w in self._workers:
            if w.task is not None and w.task.number == number:
                w.stop_flag.value = number

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        for msg in self._receive(timeout):
            self._take(msg, events)
        events.extend(self._reap())
        return events

    def _take(self, msg: tuple, events: list[Event]) -> None:
        w = self._workers[msg[1]] if msg[1] < len(self._workers) else None
        if msg[0] == "ready":
            if w is not None and w.proc.is_alive():
                w.ready = True
            return
        if w is not None and self._accept(w, msg[2]):
            events.append(msg[2])

    def _accept(self, w: Any, event: Event) -> bool:
        """Whether ``event`` belongs to what worker ``w`` runs now (a late result of a trial
        already recorded, killed on timeout, does not); a Done frees the worker."""
        if w.task is None or w.task.number != event.number:
            return False
        if isinstance(event, Done):
            w.task = None
        return True

    def _reap(self) -> list[Event]:
        """Dead workers and timed-out trials become failed trials; their workers are replaced."""
        out: list[Event] = []
        now = time.perf_counter()
        for i, w in enumerate(self._workers):
            if w.task is None:
                if w.proc.exitcode is not None:  # died while idle: replace quietly
                    self._replace(i)
                continue
            elapsed = now - w.started
            if w.proc.exitcode is not None:
                # drain what it sent before dying: its result may already be in the pipe
                late: list[Event] = []
                if w.reader is not None:
                    try:
                        while w.reader.poll(0.05):
                            self._take(w.reader.recv(), late)
                    except (EOFError, OSError):
                        pass
                out.extend(late)
                if w.task is None:
                    continue
                out.append(Done(w.task.number, "died",
                                reason=f"worker died (exit code {w.proc.exitcode})",
                                seconds=elapsed, device=w.slot))
                self._replace(i)
            elif w.task.timeout is not None and elapsed > w.task.timeout:
                out.append(Done(w.task.number, "timeout",
                                reason=f"timeout: trial exceeded {w.task.timeout:g} s",
                                seconds=elapsed, device=w.slot))
                w.proc.kill()
                w.proc.join(timeout=5)
                self._replace(i)
        return out

    def _replace(self, i: int) -> None:
        old = self._workers[i]
        if old.reader is not None:
            old.reader.close()
        new = self._spawn(old.wid, old.slot)
        self._workers[i] = new  # gets work once its "ready" arrives
