"""Datasets for the diffusion trainer: four 2-D toys and scikit-learn's 8x8 digits.

Nothing is downloaded: the toys are generated with numpy (the usual recipes from the
FFJORD / tiny-diffusion code bases), the digits ship inside scikit-learn (1,797 images).

Every dataset is split, from `data_seed` alone, into

- ``train``   the points the denoiser is fitted on,
- ``heldout`` the reference set that samples are judged against,
- ``floor``   independent draws of the data with the held-out set's size, so that
              ``metric(floor_k, heldout)`` is the metric's noise floor (see metrics.py).

For the toys every split is a fresh, independent draw of the generator. The digits are
finite: a third (599 images) is held out and the floor draws are random subsets of the
training images of the same size (still independent draws of the data distribution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TOYS = ("moons", "swiss_roll", "8gaussians", "checkerboard")
DATASETS = (*TOYS, "digits")
DIGITS_HELDOUT_FRACTION = 1 / 3


@dataclass
class Splits:
    """Normalized train / held-out / noise-floor splits of one dataset."""

    train: torch.Tensor  # [n_train, dim]
    heldout: torch.Tensor  # [n_eval, dim]
    floor: list[torch.Tensor]  # n_floor x [n_eval, dim]
    clip: float | None  # clip predicted x0 to [-clip, clip] while sampling (images only)
    image_shape: tuple[int, int] | None  # (8, 8) for digits, None for the 2-D toys

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


# ----------------------------------------------------------------------------- 2-D toys


def _moons(n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Two interleaving half circles (as sklearn.datasets.make_moons), Gaussian noise 0.05."""
    n_upper = n // 2
    theta = np.pi * rng.random(n)  # [n], uniform angle, not a grid
    upper = np.stack([np.cos(theta), np.sin(theta)], 1)  # [n, 2]
    lower = np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], 1)  # [n, 2]
    x = np.where((np.arange(n) < n_upper)[:, None], upper, lower)
    return x + noise * rng.standard_normal((n, 2))


def _swiss_roll(n: int, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    """The (x, z) plane of sklearn's swiss roll: t in [1.5 pi, 4.5 pi], radius t."""
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))  # [n]
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1)  # [n, 2]
    return x + noise * rng.standard_normal((n, 2))


def _eight_gaussians(n: int, rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    """Eight Gaussians of std 0.1 on the unit circle (FFJORD's recipe, before scaling)."""
    angles = 2 * np.pi * rng.integers(0, 8, n) / 8  # [n]
    centers = np.stack([np.cos(angles), np.sin(angles)], 1)  # [n, 2]
    return centers + std * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 4x4 checkerboard of uniform squares on [-2, 2]^2, eight of them filled (FFJORD)."""
    x1 = 4 * rng.random(n) - 2  # [n]
    x2 = rng.random(n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2  # [n]
    return np.stack([x1, x2], 1)


_TOY_SAMPLERS = {
    "moons": _moons,
    "swiss_roll": _swiss_roll,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
}


def sample_toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n raw (unnormalized) points of a 2-D toy, [n, 2] float64."""
    if name not in _TOY_SAMPLERS:
        raise ValueError(f"unknown 2-D toy {name!r}; expected one of {TOYS}")
    return _TOY_SAMPLERS[name](n, rng)


# ----------------------------------------------------------------------------- splits


def load_splits(
    name: str,
    *,
    n_train: int = 20_000,
    n_eval: int = 5_000,
    n_floor: int = 3,
    data_seed: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """Build the normalized splits of `name`, fixed by `data_seed` alone.

    Toys are standardized per coordinate with the training set's mean and std; digits are
    mapped from [0, 16] to [-1, 1]. For digits `n_train` and `n_eval` are ignored: 1,198
    training and 599 held-out images.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    rng = np.random.default_rng(data_seed)
    if name == "digits":
        train, heldout, floor = _digit_splits(rng, n_floor)
        clip, image_shape = 1.0, (8, 8)
    else:
        train = sample_toy(name, n_train, rng)
        heldout = sample_toy(name, n_eval, rng)
        floor = [sample_toy(name, n_eval, rng) for _ in range(n_floor)]
        mean, std = train.mean(0), train.std(0)
        train, heldout = (train - mean) / std, (heldout - mean) / std
        floor = [(f - mean) / std for f in floor]
        clip, image_shape = None, None

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    return Splits(
        train=as_tensor(train),
        heldout=as_tensor(heldout),
        floor=[as_tensor(f) for f in floor],
        clip=clip,
        image_shape=image_shape,
    )


def _digit_splits(
    rng: np.random.Generator, n_floor: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    from sklearn.datasets import load_digits

    images = load_digits().data / 8.0 - 1.0  # [1797, 64] in [-1, 1]
    perm = rng.permutation(len(images))
    n_heldout = int(round(len(images) * DIGITS_HELDOUT_FRACTION))  # 599
    heldout, train = images[perm[:n_heldout]], images[perm[n_heldout:]]
    floor = [train[rng.choice(len(train), n_heldout, replace=False)] for _ in range(n_floor)]
    return train, heldout, floor
