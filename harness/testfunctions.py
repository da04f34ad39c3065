"""Cheap objectives with known optima, for tests, demos and tuner benchmarks.

BoTorch's synthetic test functions (imported at module level: workers pre-import the
objective's module, so the import is paid at start-up, not inside the first trial) (Branin, Hartmann6) behind a learning-curve wrapper: the
trial "trains" for ``steps`` steps and reports
``value + scale * (exp(-3 * step / steps) - exp(-3))``, so intermediate values fall to the exact
function value at the last step, as a real training curve would, and pruners have
something to prune on. ``step_seconds`` makes each step take time, like a real trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from botorch.test_functions import Branin, Hartmann

BRANIN_MIN = 0.397887
HARTMANN6_MIN = -3.32237


def _curve(
    value: float,
    config: Mapping[str, Any],
    report: Callable[[int, Mapping[str, float]], None] | None,
) -> dict[str, float]:
    steps = int(config.get("steps", 20))
    every = int(config.get("report_every", 1))
    pause = float(config.get("step_seconds", 0.0))
    scale = float(config.get("curve_scale", 10.0))
    for step in range(1, steps + 1):
        if pause:
            time.sleep(pause)
        if report is not None and (step % every == 0 or step == steps):
            gap = scale * (math.exp(-3.0 * step / steps) - math.exp(-3.0))
            report(step, {"value": value + gap})
    return {"value": value}


def branin(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
           report: Callable[[int, Mapping[str, float]], None] | None = None,
           artifact_dir: str | None = None) -> dict[str, float]:
    """Branin on x1 in [-5, 10], x2 in [0, 15]; global minimum 0.397887 at three points."""
    x = torch.tensor([[float(config["x1"]), float(config["x2"])]], dtype=torch.float64)
    value = float(Branin()(x).item())
    return _curve(value, config, report)


def hartmann6(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
              report: Callable[[int, Mapping[str, float]], None] | None = None,
              artifact_dir: str | None = None) -> dict[str, float]:
    """Hartmann6 on [0, 1]^6; global minimum -3.32237."""
    x = torch.tensor([[float(config[f"x{i}"]) for i in range(1, 7)]], dtype=torch.float64)
    value = float(Hartmann(dim=6)(x).item())
    return _curve(value, config, report)


def sleep(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
          report: Callable[[int, Mapping[str, float]], None] | None = None,
          artifact_dir: str | None = None) -> dict[str, float]:
    """Sleeps ``seconds`` and returns ``(x - 0.5)^2``: the dispatch benchmark's objective."""
    time.sleep(float(config.get("seconds", 0.2)))
    x = float(config.get("x", 0.0))
    if report is not None:
        report(1, {"value": (x - 0.5) ** 2})
    return {"value": (x - 0.5) ** 2}
