"""The paper's claim at the tuned settings (slow, 10-20 s per seed on one core: `-m slow`).

Settings from `benchmarks/locoprop_claim.py` (16 Sobol configurations per method, tuned on
seed 0); checked here on seeds the tuning never saw.
"""

from __future__ import annotations

import pytest
import torch

from models.locoprop.train import train

FIXED = {"task": "autoencoder", "batch_size": 100, "epochs": 30, "warmup_epochs": 2}
TUNED = {
    "bp-adam": {"method": "bp", "optimizer": "adam", "lr": 0.013},
    "bp-rmsprop": {"method": "bp", "optimizer": "rmsprop", "lr": 0.0035},
    "locoprop-m": {
        "method": "locoprop-m",
        "optimizer": "rmsprop",
        "lr": 8e-4,
        "gamma": 15.3,
        "K": 10,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_locoprop_m_reaches_lower_training_loss_than_adam_and_rmsprop(seed: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss = {name: train(FIXED | cfg, seed=seed)["train_loss"] for name, cfg in TUNED.items()}
    finally:
        torch.set_num_threads(threads)
    assert loss["locoprop-m"] < min(loss["bp-adam"], loss["bp-rmsprop"]), loss
