"""A sweep's folder ``.harness/sweeps/NAME/``: its lock, its ``state.json``, and reading it back
to resume.

``state.json`` holds the name, the spec's hash, the options a resume needs, the MLflow parent
run id and the status (starting | running | finished | interrupted | failed); ``spec.yaml`` the
resolved spec; beside them the tuner's own state and the write-ahead event log. Every write is
atomic (:func:`harness.files.write_atomic`); the lock (:class:`harness.files.SweepLock`) makes
sure one process drives a sweep.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.files import SweepLock, repair_jsonl, write_atomic
from harness.inputs import STATE_ROOT, Prepared, SweepOptions, UsageError, prepare
from harness.spec import load_spec

FINISHED = "finished"


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Atomically replace the sweep's state.json."""
    write_atomic(state_dir / "state.json", json.dumps(data, indent=2, sort_keys=True))


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The sweep's saved state, or None when it has none (or it cannot be read)."""
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def options_record(options: SweepOptions) -> dict[str, Any]:
    """The options a resume needs, as saved in state.json."""
    keys = ("tuner", "engine", "workers", "devices", "trials_per_device", "experiment", "seed",
            "timeout", "trial_timeout", "sampler", "pruner", "storage", "engine_options",
            "tuner_options", "budget_steps", "population")
    return {k: getattr(options, k) for k in keys}


def begin_state(options: SweepOptions, p: Prepared, resume_state: dict[str, Any] | None) -> dict[str, Any]:
    """Write the sweep's state (status ``starting``) and its spec, first of all, so a driver
    killed from here on can be resumed; refuse a new sweep whose name is taken."""
    spec = p.spec
    shared = options.storage is not None and "://" in options.storage
    if resume_state is None and not shared and (p.state_dir / "state.json").exists():
        raise UsageError(f"--name {p.name}: a sweep of that name exists; continue it with "
                         f"'harness resume {p.name}' or choose another name")
    state: dict[str, Any] = resume_state or {
        "name": p.name, "spec_hash": spec.hash(), "tuner": options.tuner, "engine": options.engine,
        "tracking_uri": p.uri, "experiment": p.experiment, "seed": options.seed,
        "started": time.time(), "objective": spec.objective, "options": options_record(options),
    }
    state.update(trials=p.trials, status="starting", pid=os.getpid())
    write_state(p.state_dir, state)
    (p.state_dir / "spec.yaml").write_text(spec.to_yaml())
    return state


def lock_sweep(state_dir: Path, name: str) -> SweepLock:
    """Take the sweep folder's lock, or refuse in one line naming the process that holds it."""
    lock = SweepLock(state_dir)
    if not lock.acquire():
        raise UsageError(f"sweep {name}: another process is driving it (pid {lock.holder()}); "
                         "wait for it to end, or stop it, then 'harness resume " + name + "'")
    return lock


def repair_state(state_dir: Path, notify: Callable[[str], None]) -> None:
    """A torn last record of any append-only state file (the Optuna journal, the event log, Ax's
    results log) is moved aside, with one line saying so; damage that is not a torn append is
    refused in one line naming the file (StateFileError)."""
    for path in sorted([*state_dir.glob("*.jsonl"), *state_dir.glob("*.journal")]):
        message = repair_jsonl(path)
        if message:
            notify(message)


def check_resumable(name: str, state_root: Path = STATE_ROOT) -> Path:
    """The folder of sweep ``name``, refused in one line when it holds no state."""
    state_dir = state_root / name
    if not (state_dir / "state.json").exists():
        known = ", ".join(sorted(d.name for d in state_root.glob("*") if (d / "state.json").exists())) or "none"
        raise UsageError(f"--resume {name}: no sweep state in {state_dir} (known: {known})")
    return state_dir


def prepare_resume(name: str, state_dir: Path, *, space: str | None = None, trials: int | None = None,
                   workers: int | None = None, command: str | None = None,
                   tracking_uri: str | None = None,
                   notify: Callable[[str], None] | None = None,
                   quiet: bool = False) -> tuple[SweepOptions, Prepared, dict[str, Any]]:
    """Read a sweep's saved state back (call it holding the lock): its options, its own spec
    (validated again), and the state a resume continues from."""
    try:
        state = json.loads((state_dir / "state.json").read_text())
        saved_spec = load_spec(state_dir / "spec.yaml")
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"--resume {name}: the sweep state in {state_dir} cannot be read "
                         "(state.json or spec.yaml is damaged)") from None
    if space is not None and load_spec(space).hash() != saved_spec.hash():
        raise UsageError(
            f"--resume {name}: {space} differs from the spec the sweep started with "
            f"({state_dir / 'spec.yaml'}); start a new sweep or restore the file"
        )
    repair_state(state_dir, notify or _stderr)
    saved = dict(state.get("options", {}))
    if workers is not None:
        saved["workers"] = workers
    if tracking_uri is not None and tracking_uri != state.get("tracking_uri"):
        raise UsageError(f"--resume {name}: the sweep logs to {state.get('tracking_uri')}, not {tracking_uri}")
    options = SweepOptions(
        space=str(state_dir / "spec.yaml"), name=name, state_root=state_dir.parent, command=command,
        tracking_uri=state.get("tracking_uri") or "none", trials=trials or state.get("trials"),
        **{k: v for k, v in saved.items() if k != "experiment"},
        experiment=state.get("experiment"),
    )
    p = prepare(options, saved_spec, quiet=quiet)
    p.first = []
    return options, p, state


def _stderr(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr)


__all__ = ["FINISHED", "begin_state", "check_resumable", "lock_sweep", "options_record", "prepare_resume",
           "read_state", "repair_state", "write_state"]
