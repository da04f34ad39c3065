"""Cheap objectives with known optima, for tests, demos and tuner benchmarks.

BoTorch's synthetic test functions (imported at module level: workers pre-import the
objective's module, so the import is paid at start-up, not inside the first trial) (Branin, Hartmann6) behind a learning-curve wrapper: the
trial "trains" for ``steps`` steps and reports
``value + scale * (exp(-3 * step / steps) - exp(-3))``, so intermediate values fall to the exact
function value at the last step, as a real training curve would, and pruners have
something to prune on. ``step_seconds`` makes each step take time, like a real trainer.

``branin_currin`` is the two-objective problem of the multi-objective sweeps (issue 17):
BoTorch's ``BraninCurrin`` (Belakaria et al. 2019, "Max-value Entropy Search for
Multi-Objective Bayesian Optimization"), both objectives minimized, reference point
(18, 6), maximum hypervolume 59.36011874867746 (``/work/shared/REFERENCES.md``,
"Multi-objective"). Each of its two metrics follows the same learning curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from botorch.test_functions import Branin, Hartmann
from botorch.test_functions.multi_objective import BraninCurrin

BRANIN_MIN = 0.397887
HARTMANN6_MIN = -3.32237


def _curve(
    value: float,
    config: Mapping[str, Any],
    report: Callable[[int, Mapping[str, float]], None] | None,
) -> dict[str, float]:
    return _curves({"value": value}, config, report)


def _curves(
    values: Mapping[str, float],
    config: Mapping[str, Any],
    report: Callable[[int, Mapping[str, float]], None] | None,
) -> dict[str, float]:
    """The learning curve of the module docstring, applied to every metric in ``values``."""
    steps = int(config.get("steps", 20))
    every = int(config.get("report_every", 1))
    pause = float(config.get("step_seconds", 0.0))
    scale = float(config.get("curve_scale", 10.0))
    for step in range(1, steps + 1):
        if pause:
            time.sleep(pause)
        if report is not None and (step % every == 0 or step == steps):
            gap = scale * (math.exp(-3.0 * step / steps) - math.exp(-3.0))
            report(step, {name: value + gap for name, value in values.items()})
    return dict(values)


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


def branin_currin(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
                  report: Callable[[int, Mapping[str, float]], None] | None = None,
                  artifact_dir: str | None = None) -> dict[str, float]:
    """Branin-Currin on x0, x1 in [0, 1]: metrics ``branin`` and ``currin``, both minimized.

    BoTorch's ``BraninCurrin`` (rescaled Branin and Currin's exponential function);
    ``f(0.5, 0.5) = (24.13, 7.405)``; reference point (18, 6), maximum hypervolume
    59.36011874867746.
    """
    x = torch.tensor([[float(config["x0"]), float(config["x1"])]], dtype=torch.float64)
    b, c = (float(v) for v in BraninCurrin()(x)[0])
    return _curves({"branin": b, "currin": c}, config, report)


def sleep(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
          report: Callable[[int, Mapping[str, float]], None] | None = None,
          artifact_dir: str | None = None) -> dict[str, float]:
    """Sleeps ``seconds`` and returns ``(x - 0.5)^2``: the dispatch benchmark's objective."""
    time.sleep(float(config.get("seconds", 0.2)))
    x = float(config.get("x", 0.0))
    if report is not None:
        report(1, {"value": (x - 0.5) ** 2})
    return {"value": (x - 0.5) ** 2}
