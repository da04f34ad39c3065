"""The LocoProp trainer's configuration: fields, defaults, validation.

Every field is a trial's hyperparameter; models/locoprop/population.py classifies each as
structural (members of one population share it) or per member (see ``FIELDS`` there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..config import config_from_mapping
from .locoprop import METHODS, OPTIMIZERS

TASKS = ("autoencoder", "classifier")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# One set of constants per optimizer, shared by backprop and LocoProp's local optimizer.
# The official notebook's flags (beta1 = 0.999, beta2 = 0.9, eps = 1e-5 for both Adam and
# RMSprop) stall backprop with Adam on digits (train loss ~28 vs ~17 with the defaults
# below; see .notes/locoprop-results.md); pass them explicitly to reproduce that setup.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"beta1": 0.0, "beta2": 0.0, "eps": 0.0},  # unused by SGD
    "rmsprop": {"beta1": 0.9, "beta2": 0.9, "eps": 1e-5},  # momentum, decay, eps (in the sqrt)
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


def _bad(field: str, why: str, value: Any) -> ValueError:
    return ValueError(f"locoprop config: {field} {why}, got {value!r}")


@dataclass
class Config:
    task: str = "autoencoder"  # autoencoder | classifier
    method: str = "locoprop-m"  # bp | locoprop-s | locoprop-m
    optimizer: str = "rmsprop"  # sgd | rmsprop | adam (the local optimizer for LocoProp)
    lr: float = 1e-3  # base learning rate (peak of the warm-up / decay schedule)
    gamma: float = 10.0  # LocoProp activation step: targets a - gamma g or f(a) - gamma g
    K: int = 10  # LocoProp local iterations per batch
    batch_size: int = 100
    epochs: int = 30
    warmup_epochs: int = 2  # linear warm-up, then linear decay to the end
    # Optimizer constants; None takes OPTIMIZER_DEFAULTS[optimizer] (see there).
    beta1: float | None = None  # Adam beta1 / RMSprop momentum
    beta2: float | None = None  # Adam beta2 / RMSprop decay
    eps: float | None = None
    test_fraction: float = 0.2
    dtype: str = "float32"  # float32 | float64
    report_every: int = 1  # epochs

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Build from a flat dict; ValueError naming the field for an unknown key or bad value."""
        cfg = config_from_mapping(cls, d, "locoprop")
        cfg.validate()
        for key, value in OPTIMIZER_DEFAULTS.get(cfg.optimizer, {}).items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        return cfg

    def validate(self) -> None:
        for field, allowed in (
            ("task", TASKS),
            ("method", METHODS),
            ("optimizer", OPTIMIZERS),
            ("dtype", tuple(DTYPES)),
        ):
            if getattr(self, field) not in allowed:
                raise _bad(field, f"must be one of {allowed}", getattr(self, field))
        checks = (
            ("lr", self.lr > 0 and math.isfinite(self.lr), "must be > 0"),
            ("gamma", self.gamma > 0 and math.isfinite(self.gamma), "must be > 0"),
            ("K", self.K >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("warmup_epochs", 0 <= self.warmup_epochs < self.epochs, "must be in [0, epochs)"),
            ("beta1", self.beta1 is None or 0 <= self.beta1 < 1, "must be in [0, 1)"),
            ("beta2", self.beta2 is None or 0 <= self.beta2 < 1, "must be in [0, 1)"),
            ("eps", self.eps is None or self.eps > 0, "must be > 0"),
            ("test_fraction", 0 < self.test_fraction < 1, "must be in (0, 1)"),
            ("report_every", self.report_every >= 1, "must be >= 1"),
        )
        for field, ok, why in checks:
            if not ok:
                raise _bad(field, why, getattr(self, field))
