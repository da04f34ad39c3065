"""Population engine: each local worker runs up to K trials of one trainer as batched models.

``--population K`` with a trainer that has a population form (``train.population``, see
models/population.py). A worker process holds :class:`~models.population.Population` objects,
each of one structural signature; every member is a full trial (its own number, seed, reports,
prune, failure and result). The engine owns the placement: ``free_slots`` counts member places
(K per worker), ``submit`` routes a task to a running population of the same signature with a
free place on the least loaded worker (so every worker computes), else starts a new population
on that worker beside the ones it runs. Members join at their own
step 0 while others are midway (continuous batching) and leave when pruned, failed or done.

Messages to a worker: ``("task", TrialTask, population_id)``, ``("stop", number)`` (a prune:
the member leaves at once, its last reported step is its last), ``None`` (exit). The worker
sends the same ``Report`` / ``Done`` events as a one-trial worker.

Fair time: a worker may hold populations of several sweeps at once (``harness benchmark`` runs
its sweeps together), so a member's wall time is mostly waiting while its worker serves the
others. A member's ``seconds`` is its own share of the work instead: each population's step
time divided among the members it served at that step (plus its own join). ``--trial-timeout``
counts that share, in the worker, and fails that member alone. The engine keeps a guard for a
worker that hangs: when every member of a worker is past K x its timeout in wall time, the
worker is killed. Each advance serves every population of the worker once, in turn, so no
sweep's members wait on another's.

A dead worker ends each of its members: ``died`` (failed) when it held one member, the suspect;
``lost`` when it held several, which the ask/tell driver records as interrupted and runs again
once (a killed worker fails only its members, each rerun once).
"""

from __future__ import annotations

import os
import time
import traceback as tb
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.engines.base import Done, Event, Report, TrialTask, metric_numbers
from harness.engines.local import LocalEngine, _die_with_parent, _prepare_worker


@dataclass
class _Member:
    task: TrialTask
    pid: str
    slot: int
    t0: float
    last_step: int = 0
    work: float = 0.0  # its share of the work so far: its populations' step times / members served


def _population_worker_main(wid: int, slot: str, threads: int, objective: str, tasks: Any,
                            results: Any, capacity: int) -> None:
    """A worker process that runs populations (see the module doc)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    device = _prepare_worker(slot, threads, objective)
    results.send(("ready", wid))

    def send(event: Event) -> None:
        results.send(("event", wid, event))

    run_populations(objective, device, slot, capacity, tasks.get, tasks.empty, send, time.perf_counter)


def run_populations(objective: str, device: str, slot: str, capacity: int,
                    get: Callable[[], Any], empty: Callable[[], bool],
                    send: Callable[[Event], None], clock: Callable[[], float]) -> None:
    """The worker loop: take messages between advances, advance every population once, send
    each member's reports and its end. Returns on a ``None`` message."""
    from harness.objective import load_objective
    from models.population import population_form

    pops: dict[str, Any] = {}
    members: dict[int, _Member] = {}
    at: dict[tuple[str, int], int] = {}  # (population id, slot) -> trial number

    def leave(number: int) -> _Member:
        m = members.pop(number)
        del at[(m.pid, m.slot)]
        pop = pops.get(m.pid)
        if pop is not None:
            pop.remove(m.slot)
            if not pop.occupied():
                del pops[m.pid]  # its memory goes; a new population of this signature is made anew
        return m

    def end(number: int, status: str, **kw: Any) -> None:
        m = leave(number)
        send(Done(number, status, steps=kw.pop("steps", m.last_step), seconds=m.work, device=slot, **kw))

    def join(task: TrialTask, pid: str) -> None:
        t0 = clock()
        try:
            if task.artifact_dir:
                os.makedirs(task.artifact_dir, exist_ok=True)
            pop = pops.get(pid)
            if pop is None:
                form = population_form(load_objective(objective))
                if form is None:
                    raise TypeError(f"objective '{objective}' has no population form")
                pop = form.make(task.config, capacity=capacity, device=device)
                pops[pid] = pop
            s = pop.add(task.config, task.seed, task.artifact_dir)
        except Exception as exc:
            if pid in pops and not pops[pid].occupied():
                del pops[pid]
            send(Done(task.number, "error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                      traceback=tb.format_exc(), seconds=clock() - t0, device=slot))
            return
        members[task.number] = _Member(task, pid, s, t0, work=clock() - t0)
        at[(pid, s)] = task.number

    while True:
        msgs = [] if members else [get()]  # idle: block for work
        while not empty():
            msgs.append(get())
        for msg in msgs:
            if msg is None:
                return
            if msg[0] == "stop":
                number = msg[1]
                if number in members:
                    reason = msg[2] if len(msg) > 2 else None
                    step = members[number].last_step
                    if reason:  # the engine already recorded it (a timeout): only drop it
                        leave(number)
                    else:
                        end(number, "pruned", reason=f"pruned at step {step}")
            elif msg[0] == "task":
                join(msg[1], msg[2])
        for pid in list(pops):
            pop = pops[pid]
            served = [n for (p, _), n in at.items() if p == pid]
            t0 = clock()
            try:
                events = pop.advance()
            except Exception as exc:  # the whole population is lost; the others go on
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                trace = tb.format_exc()
                for number in [n for (p, _), n in at.items() if p == pid]:
                    end(number, "error", reason=f"population failed: {reason}", traceback=trace)
                pops.pop(pid, None)
                continue
            share = (clock() - t0) / max(1, len(served))
            for number in served:
                members[number].work += share
            for ev in events:
                number = at.get((pid, ev.slot))
                if number is None:
                    continue
                m = members[number]
                if ev.kind == "report":
                    m.last_step = int(ev.step)
                    send(Report(number, int(ev.step), metric_numbers(ev.metrics)))
                elif ev.kind == "done":
                    end(number, "ok", metrics=metric_numbers(ev.metrics),
                        steps=int(ev.step) or m.last_step)
                else:
                    end(number, "error", reason=ev.reason or "member failed", steps=int(ev.step) or m.last_step)
            for number in served:  # --trial-timeout counts the member's own share of the work
                m = members.get(number)
                if m is not None and m.task.timeout is not None and m.work > m.task.timeout:
                    end(number, "timeout", reason=f"timeout: trial exceeded {m.task.timeout:g} s")


@dataclass
class _Pop:
    signature: Any
    numbers: set[int] = field(default_factory=set)


class PopulationEngine(LocalEngine):
    """The local engine with K member places per worker (see the module doc)."""

    def __init__(self, slots: list[str], population: int, threads_per_worker: int | None = None,
                 start_timeout: float = 300.0) -> None:
        super().__init__(slots, threads_per_worker, start_timeout)
        self.population = population
        self._form: Any = None
        self._prefix = uuid.uuid4().hex[:6]
        self._serial = 0
        self._pops: dict[int, dict[str, _Pop]] = {}  # worker id -> population id -> members
        self._members: dict[int, dict[int, TrialTask]] = {}  # worker id -> number -> task
        self._started: dict[int, float] = {}
        self._placement: dict[int, str] = {}
        self._fill_members = 0.0  # integrals over time of members and populations
        self._fill_pops = 0.0
        self._fill_t: float | None = None

    def start(self, objective: str) -> None:
        from harness.objective import load_objective
        from models.population import population_form

        self._form = population_form(load_objective(objective))
        if self._form is None:
            raise ValueError(f"objective '{objective}' has no population form")
        super().start(objective)

    def _spawn(self, wid: int, slot: str) -> Any:
        from harness.engines.local import _Worker

        reader, writer = self._ctx.Pipe(duplex=False)
        tasks = self._ctx.SimpleQueue()
        proc = self._ctx.Process(
            target=_population_worker_main,
            args=(wid, slot, self.threads, self._objective, tasks, writer, self.population),
            daemon=True, name=f"harness-population-{wid}",
        )
        proc.start()
        writer.close()
        self._pops[wid] = {}
        self._members[wid] = {}
        return _Worker(wid, slot, proc, tasks, None, reader=reader)

    # -- placement --------------------------------------------------------------------------
    def free_slots(self) -> int:
        return sum(self.population - len(self._members[w.wid]) for w in self._workers if w.ready)

    def running(self) -> list[int]:
        return [n for w in self._workers for n in self._members[w.wid]]

    def placement(self, number: int) -> tuple[str, int] | None:
        """The population a running trial joined, and its size (K): the child run's tags."""
        pid = self._placement.get(number)
        return (pid, self.population) if pid is not None else None

    def submit(self, task: TrialTask) -> str:
        sig = self._form.signature(task.config)
        ready = [w for w in self._workers if w.ready and len(self._members[w.wid]) < self.population]
        if not ready:
            raise RuntimeError("submit() with no free slot")
        def joinable(w: Any) -> list[str]:  # its populations of this signature with a place
            return [pid for pid, pop in self._pops[w.wid].items()
                    if pop.signature == sig and len(pop.numbers) < self.population]

        # the least loaded worker (every worker computes: a second core or GPU is not left idle
        # while one worker holds every member), one that can join a population on a tie
        w = min(ready, key=lambda w: (len(self._members[w.wid]), not joinable(w)))
        pids = joinable(w)
        if pids:  # join its fullest population of this signature
            best: tuple[Any, str] = (w, max(pids, key=lambda pid: len(self._pops[w.wid][pid].numbers)))
        else:  # a new population on that worker, beside any it runs
            self._serial += 1
            best = (w, f"{self._prefix}-{self._serial}")
            self._pops[w.wid][best[1]] = _Pop(sig)
        w, pid = best
        self._tick()
        self._pops[w.wid][pid].numbers.add(task.number)
        self._members[w.wid][task.number] = task
        self._started[task.number] = time.perf_counter()
        self._placement[task.number] = pid
        w.tasks.put(("task", task, pid))
        return w.slot

    def stop_trial(self, number: int) -> None:
        for w in self._workers:
            if number in self._members[w.wid]:
                w.tasks.put(("stop", number))

    def fill_rate(self) -> float:
        """Mean members per running population / K, averaged over time."""
        self._tick()
        return self._fill_members / self._fill_pops / self.population if self._fill_pops else 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._fill_t is not None:
            dt = now - self._fill_t
            self._fill_members += dt * sum(len(m) for m in self._members.values())
            self._fill_pops += dt * sum(sum(1 for p in pops.values() if p.numbers) for pops in self._pops.values())
        self._fill_t = now

    def _forget(self, wid: int, number: int) -> None:
        self._tick()
        self._members[wid].pop(number, None)
        self._started.pop(number, None)
        pid = self._placement.pop(number, None)
        pops = self._pops[wid]
        if pid in pops:
            pops[pid].numbers.discard(number)
            if not pops[pid].numbers:
                del pops[pid]

    # -- events -----------------------------------------------------------------------------
    def _accept(self, w: Any, event: Event) -> bool:
        if event.number not in self._members[w.wid]:
            return False  # a late event of a member already recorded (timed out)
        if isinstance(event, Done):
            self._forget(w.wid, event.number)
        return True

    def _reap(self) -> list[Event]:
        out: list[Event] = []
        now = time.perf_counter()
        for i, w in enumerate(self._workers):
            members = self._members[w.wid]
            if w.proc.exitcode is not None:
                if members and w.reader is not None:  # what it sent before dying
                    try:
                        while w.reader.poll(0.05):
                            self._take(w.reader.recv(), out)
                    except (EOFError, OSError):
                        pass
                status = "lost" if len(members) > 1 else "died"  # several: none is the suspect
                for number in list(members):
                    out.append(Done(number, status, reason=f"worker died (exit code {w.proc.exitcode})",
                                    seconds=now - self._started.get(number, now), device=w.slot))
                    self._forget(w.wid, number)
                self._replace(i)
                continue
            # the worker times members out by their share of the work; this guards against a
            # worker that hangs: every member past K x its timeout in wall time
            late = [n for n, t in members.items()
                    if t.timeout is not None and now - self._started[n] > t.timeout * self.population]
            if not late or len(late) < len(members):
                continue
            for number in late:
                task = members[number]
                out.append(Done(number, "timeout", reason=f"timeout: trial exceeded {task.timeout:g} s",
                                seconds=(now - self._started[number]) / self.population, device=w.slot))
            w.proc.kill()
            w.proc.join(timeout=5)
            for number in late:
                self._forget(w.wid, number)
            self._replace(i)
        return out

    def _busy(self, w: Any) -> bool:
        return bool(self._members.get(w.wid))


__all__ = ["PopulationEngine", "run_populations"]
