"""scikit-learn's 8x8 digits (1797 images, shipped with the package: no download).

Pixels are scaled from 0..16 to [0, 1], as the official LocoProp notebook scales MNIST
to [0, 1]. The train/test split is fixed (it does not depend on the training seed), so
every trial of a sweep is judged on the same test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits

SPLIT_SEED = 0  # the split never changes with the training seed


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor  # [n_train, 64] in [0, 1]
    y_train: torch.Tensor  # [n_train] int64 class labels
    x_test: torch.Tensor  # [n_test, 64]
    y_test: torch.Tensor  # [n_test]


def load(
    *, test_fraction: float = 0.2, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> Digits:
    """1797 images split 1437 / 360 for the default test fraction of 0.2."""
    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0  # [1797, 64]
    y = bunch.target.astype(np.int64)  # [1797]
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]

    def put(a: np.ndarray, dt: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dt).to(device)

    return Digits(
        x_train=put(x[train], dtype),
        y_train=put(y[train], torch.int64),
        x_test=put(x[test], dtype),
        y_test=put(y[test], torch.int64),
    )
