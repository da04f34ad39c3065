"""Objectives used by the tests: importable as ``tests.objectives:NAME`` from worker processes."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

Report = Callable[[int, Mapping[str, float]], None] | None


def misbehave(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
              report: Report = None, artifact_dir: str | None = None) -> dict[str, float]:
    """Behaves as ``config['mode']`` says: ok, raise, nan, hang (past any timeout) or kill."""
    mode = config["mode"]
    x = float(config.get("x", 0.0))
    if report is not None:
        report(1, {"value": x})
    if mode == "raise":
        raise ValueError(f"bad x={x}")
    if mode == "nan":
        return {"value": math.nan}
    if mode == "hang":
        time.sleep(120)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": x}


def quadratic(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
              report: Report = None, artifact_dir: str | None = None) -> dict[str, float]:
    """Deterministic: (x - 0.3)^2 + (y - 2)^2 / 10, with a file artifact; reports 3 steps."""
    value = (float(config["x"]) - 0.3) ** 2 + (float(config.get("y", 2)) - 2) ** 2 / 10
    for step in (1, 2, 3):
        if report is not None:
            report(step, {"value": value * (4 - step)})
    if artifact_dir:
        with open(os.path.join(artifact_dir, "note.txt"), "w") as f:
            f.write(f"device={device} seed={seed}\n")
    return {"value": value, "device_is_cpu": float(device == "cpu")}


def sleepy(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
           report: Report = None, artifact_dir: str | None = None) -> dict[str, float]:
    """``steps`` reports ``pause`` seconds apart; value (x - 0.3)^2, deterministic."""
    value = (float(config["x"]) - 0.3) ** 2
    steps = int(config.get("steps", 3))
    for step in range(1, steps + 1):
        time.sleep(float(config.get("pause", 0.1)))
        if report is not None:
            report(step, {"value": value + (steps - step)})
    return {"value": value}


def contract(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
             report: Report = None, artifact_dir: str | None = None) -> dict[str, float]:
    """The tuner contract's objective: a learning curve over ``steps`` reports ``pause`` s apart
    that falls to (x - 0.3)^2 + small terms of the other params. A trial whose seed is in
    ``fail_seeds`` raises at once, one in ``nan_seeds`` returns NaN at once (neither reports,
    so no pruner can get to them first)."""
    if seed in config.get("fail_seeds", ()):
        raise ValueError(f"planned failure (seed {seed})")
    if seed in config.get("nan_seeds", ()):
        return {"value": math.nan}
    value = (float(config["x"]) - 0.3) ** 2 + 0.01 * float(config.get("n", 1))
    value += 0.01 * abs(math.log10(float(config.get("lr", 1e-2))) + 2)
    value += 0.05 * float(config.get("lam", 0.0))
    steps = int(config.get("steps", 10))
    for step in range(1, steps + 1):
        time.sleep(float(config.get("pause", 0.05)))
        if report is not None:
            report(step, {"value": value + 2.0 * (steps - step) / steps, "lr_seen": float(config.get("lr", 0.0))})
    return {"value": value, "steps_done": float(steps)}


def resumable(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
              report: Report = None, artifact_dir: str | None = None) -> dict[str, float]:
    """A trainer that checkpoints (``artifact_dir/checkpoint.pt``, as ``TrialContext.save``
    writes it) after every step and resumes from it: what PBT and HyperBand need. The 'weight'
    moves toward x at a rate set by ``lr``; the value is its distance to 0.3."""
    import pickle

    path = os.path.join(artifact_dir, "checkpoint.pt") if artifact_dir else None
    state = {"step": 0, "w": 0.0}
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            state = pickle.load(f)
    steps = int(config.get("steps", 10))
    value = abs(state["w"] - 0.3)
    for step in range(state["step"] + 1, steps + 1):
        time.sleep(float(config.get("pause", 0.05)))
        state["w"] += float(config["lr"]) * (float(config["x"]) - state["w"])
        state["step"] = step
        value = abs(state["w"] - 0.3)
        if path:
            with open(path + ".tmp", "wb") as f:
                pickle.dump(state, f)
            os.replace(path + ".tmp", path)
        if report is not None:
            report(step, {"value": value})
    return {"value": value}
