"""Train the digits autoencoder (or MLP classifier) with LocoProp-S/M or plain backprop.

Entry point of the `locoprop` objective: `train(config, *, device, seed, report)`. A trial is
a population of one (population.py): the same code trains one member here and K members in a
harness population, so a member's run is its solo run. All methods run in the same loop with
the same data order, batch, optimizer code and learning-rate schedule (linear warm-up, then
linear decay, as in the paper), so a comparison at equal epochs and equal batch is apples to
apples. The math: locoprop.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .config import DTYPES, OPTIMIZER_DEFAULTS, TASKS, Config
from .locoprop import METHODS, lr_at
from .population import POPULATION, LocoPropPopulation

__all__ = ["DTYPES", "METHODS", "OPTIMIZER_DEFAULTS", "TASKS", "Config", "lr_at", "train"]


def train(
    config: Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    report: Callable[[int, dict[str, float]], None] | None = None,
    artifact_dir: str | None = None,
) -> dict[str, float]:
    """Train for `epochs`; report train/test loss every `report_every` epochs and at the end.

    A diverged run (a non-finite loss or parameters) stops and returns its non-finite
    metrics; the harness marks the trial failed."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    pop = LocoPropPopulation(config, capacity=1, device=device)
    slot = pop.add(config, seed)
    while True:
        for ev in pop.advance():
            if ev.kind == "report":
                if report is not None:
                    report(ev.step, ev.metrics)
            elif ev.kind == "done" or slot not in pop.errors:
                return ev.metrics
            else:
                raise pop.errors[slot]


train.population = POPULATION  # type: ignore[attr-defined]
