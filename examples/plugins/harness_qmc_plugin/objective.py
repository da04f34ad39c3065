"""A trainer-shaped objective: a noisy quadratic bowl behind a learning curve.

It has the harness's trainer signature and knows nothing about tuners, MLflow or processes::

    train(config, *, device, seed, report, artifact_dir=None) -> dict[str, float]

The final loss is a quadratic in (log10 lr, log2 width, depth, momentum) plus a penalty per
optimizer, with Gaussian noise of scale ``config["noise"]`` drawn from ``seed``; the loss at step
``t`` decays towards it as ``exp(-t / tau)``, and every ``report_every`` steps it is reported.
The minimum (before noise) is 0.0 at lr = 1e-2, width = 128, depth = 3, adam.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def final_loss(config: Mapping[str, Any]) -> float:
    """The noise-free loss the curve decays to."""
    loss = 0.5 * (math.log10(float(config["lr"])) + 2.0) ** 2
    loss += 0.05 * (math.log2(float(config["width"])) - 7.0) ** 2
    loss += 0.1 * (int(config["depth"]) - 3) ** 2
    if config.get("optimizer", "adam") == "sgd":  # sgd needs its momentum right, and is worse anyway
        loss += 0.1 + (float(config.get("momentum", 0.0)) - 0.9) ** 2
    return loss


def train(config: Mapping[str, Any], *, device: str = "cpu", seed: int = 0,
          report: Callable[[int, Mapping[str, float]], None] | None = None,
          artifact_dir: str | None = None) -> dict[str, float]:
    steps = int(config.get("steps", 50))
    every = int(config.get("report_every", 10))
    noise = float(config.get("noise", 0.01))
    rng = np.random.default_rng(seed)
    target = final_loss(config) + noise * float(rng.standard_normal())
    start = target + 4.0
    # a larger learning rate learns faster (up to a point): tau in steps
    tau = steps / (2.0 + 6.0 / (1.0 + abs(math.log10(float(config["lr"])) + 2.0)))
    curve = []
    loss = start
    for step in range(1, steps + 1):
        loss = target + (start - target) * math.exp(-step / tau)
        curve.append(loss)
        if report is not None and (step % every == 0 or step == steps):
            report(step, {"loss": loss})  # raises TrialPruned when the tuner stops the trial
    if artifact_dir:
        with open(os.path.join(artifact_dir, "curve.csv"), "w") as f:
            f.write("step,loss\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(curve, 1)))
    return {"loss": loss, "final_gap": loss - target}
