"""Sample-quality metrics of models/diffusion: zero on identical sets, growing with a shift,
equal to direct computations, and calibrated by the noise floor."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy

from models.diffusion.data import DATASETS, load_splits
from models.diffusion.metrics import (
    Evaluator,
    energy_distance,
    median_bandwidth,
    mmd,
    random_projections,
    sliced_wasserstein,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cloud(n: int, dim: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_each_metric_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    x = _cloud(600)
    proj = random_projections(2, 256)
    h = median_bandwidth(x)
    metrics = {
        "swd": lambda a, b: float(sliced_wasserstein(a, b, proj)),
        "mmd": lambda a, b: mmd(a, b, h),
        "energy": energy_distance,
    }
    for name, metric in metrics.items():
        assert metric(x, x.clone()) == pytest.approx(0.0, abs=1e-6), name
        values = [metric(x, x + torch.tensor([shift, 0.0])) for shift in (0.05, 0.2, 0.5, 1.0, 2.0)]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (name, values)
        assert values[0] > 0, name


def test_sliced_wasserstein_of_a_translation() -> None:
    """Every 1-D projection of a translated set moves by theta . delta, so
    SW2^2 = mean_theta (theta . delta)^2 -> |delta|^2 / D over uniform directions."""
    x = _cloud(1000, dim=3)
    delta = torch.tensor([1.0, -2.0, 0.5])
    proj = random_projections(3, 256)
    swd = float(sliced_wasserstein(x, x + delta, proj))
    assert swd == pytest.approx(float((proj @ delta).square().mean().sqrt()), rel=1e-4)
    assert swd == pytest.approx(float(delta.norm()) / math.sqrt(3), rel=0.1)
    with pytest.raises(ValueError, match="equal-size"):
        sliced_wasserstein(x, x[:10], proj)


def test_mmd_and_energy_match_direct_formulas() -> None:
    """Blockwise sums (blocks of 256 rows) == the full-matrix V-statistics; the 1-D energy
    distance == scipy.stats.energy_distance."""
    x, y = _cloud(300, seed=1).double(), (_cloud(280, seed=2) * 1.3 + 0.2).double()
    h = 0.7

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).square() / (2 * h * h)).mean()

    want_mmd = math.sqrt(k(x, x) + k(y, y) - 2 * k(x, y))
    assert mmd(x, y, h) == pytest.approx(want_mmd, rel=1e-6)
    d = torch.cdist
    want_e = math.sqrt(2 * d(x, y).mean() - d(x, x).mean() - d(y, y).mean())
    assert energy_distance(x, y) == pytest.approx(want_e, rel=1e-6)
    u, v = x[:, :1], y[:, :1]
    assert energy_distance(u, v) == pytest.approx(
        scipy_energy(u[:, 0].numpy(), v[:, 0].numpy()), rel=1e-6
    )


def test_median_bandwidth() -> None:
    x = _cloud(200)
    d = torch.cdist(x, x)
    i, j = torch.triu_indices(200, 200, offset=1)
    assert median_bandwidth(x) == pytest.approx(float(np.median(d[i, j].numpy())), rel=1e-3)


def test_noise_floor_calibrates_the_ratios() -> None:
    """A fresh independent draw of the data scores a ratio near 1 on every metric; the
    held-out set itself scores 0; a shifted draw scores far above 1."""
    data = load_splits("moons", n_train=100, n_eval=1000, n_floor=3, data_seed=0)
    ev = Evaluator(data.heldout, data.floor[:2], n_projections=256)
    assert ev.projections.shape == (256, 2)
    fresh = ev(data.floor[2])
    for m in ("swd", "mmd", "energy"):
        assert 0.4 < fresh[f"{m}_ratio"] < 2.5, (m, fresh)
        assert fresh[f"{m}_floor"] > 0
    same = ev(data.heldout.clone())
    assert all(same[m] == pytest.approx(0.0, abs=1e-6) for m in ("swd", "mmd", "energy"))
    shifted = ev(data.floor[2] + torch.tensor([0.3, 0.0]))
    assert all(shifted[f"{m}_ratio"] > 3 for m in ("swd", "mmd", "energy")), shifted
    assert set(ev(data.floor[2], metrics=("swd",))) == {"swd", "swd_ratio", "swd_floor"}
    with pytest.raises(ValueError, match="shape"):
        ev(data.floor[2][:10])


@pytest.mark.parametrize("name", DATASETS)
def test_datasets_are_normalized_and_fixed_by_the_data_seed(name: str) -> None:
    a = load_splits(name, n_train=2000, n_eval=500, n_floor=2, data_seed=3)
    b = load_splits(name, n_train=2000, n_eval=500, n_floor=2, data_seed=3)
    c = load_splits(name, n_train=2000, n_eval=500, n_floor=2, data_seed=4)
    torch.testing.assert_close(a.train, b.train)
    torch.testing.assert_close(a.heldout, b.heldout)
    assert not torch.equal(a.heldout, c.heldout)
    assert all(f.shape == a.heldout.shape for f in a.floor)
    assert not torch.equal(a.floor[0], a.floor[1])
    if name == "digits":
        assert a.train.shape == (1198, 64) and a.heldout.shape == (599, 64)
        assert a.train.min() >= -1 and a.train.max() <= 1 and a.clip == 1.0
        # no held-out image is also a training image (the dataset has no exact duplicates)
        assert (torch.cdist(a.heldout, a.train).min(1).values > 0).all()
    else:
        assert a.train.shape == (2000, 2) and a.heldout.shape == (500, 2) and a.clip is None
        torch.testing.assert_close(a.train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(a.train.std(0), torch.ones(2), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_splits("mnist")
