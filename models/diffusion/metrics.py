"""Sample-quality metrics against held-out data, calibrated by their noise floor.

Three distances between two point sets x [n, D] and y [m, D], all in the data's units:

- sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015): the root mean square,
  over fixed random unit directions, of the 1-D Wasserstein-2 distance of the projections
  (sorted projections matched in order; equal sizes required);
- MMD with an RBF kernel (Gretton et al. 2012, https://jmlr.org/papers/v13/gretton12a.html),
  k(a, b) = exp(-|a - b|^2 / (2 h^2)), h the median pairwise distance of the held-out set
  (fixed once, so the metric is one fixed function); the biased (V-statistic) estimate,
  square-rooted: exactly 0 for identical sets, never negative;
- energy distance (Szekely and Rizzo 2013), sqrt(2 E|x - y| - E|x - x'| - E|y - y'|), also
  the V-statistic (as scipy.stats.energy_distance).

Each is also reported as a ratio to its noise floor: the same metric, with the same sizes,
between independent draws of the data and the held-out set (averaged over the draws). A
ratio of 1.0 means "as close to the held-out set as fresh data is".
"""

from __future__ import annotations

import torch

METRICS = ("swd", "mmd", "energy")
_BLOCK = 256  # rows per block of the pairwise sums (a block of distances stays in cache)


def random_projections(
    dim: int, n: int = 256, seed: int = 0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """n unit directions [n, dim], uniform on the sphere, from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return (p / p.norm(dim=1, keepdim=True)).float().to(device)


def sorted_projections(x: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """Each projection of x, sorted: [P, n]."""
    return torch.sort(projections @ x.T, dim=1).values


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein-2 distance between equal-size sets x, y [n, D]; projections [P, D]."""
    if x.shape != y.shape:
        raise ValueError(f"sliced Wasserstein needs equal-size sets, got {x.shape} and {y.shape}")
    return _swd_sorted(sorted_projections(x, projections), sorted_projections(y, projections))


def _swd_sorted(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    # px, py [P, n]: the i-th smallest projections are matched (the 1-D optimal coupling)
    return (px - py).double().square().mean().sqrt()


def median_bandwidth(x: torch.Tensor, max_points: int = 2000) -> float:
    """Median of the pairwise distances |x_i - x_j|, i < j, of (the first max_points of) x."""
    x = x[:max_points]
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return float(torch.cdist(x, x)[i, j].median())


def pairwise_means(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> tuple[float, float]:
    """(mean_ij k(x_i, y_j), mean_ij |x_i - y_j|) with the RBF kernel
    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)); one pass over blocks of rows."""
    y_sq = y.square().sum(1)  # [m]
    k_sum = d_sum = 0.0
    for start in range(0, x.shape[0], _BLOCK):
        xb = x[start : start + _BLOCK]  # [b, D]
        d2 = torch.addmm(y_sq, xb, y.T, alpha=-2).add_(xb.square().sum(1, keepdim=True))
        d2.clamp_(min=0)  # [b, m] squared distances
        k_sum += float(torch.exp(d2 * (-0.5 / bandwidth**2)).sum(dtype=torch.float64))
        d_sum += float(d2.sqrt_().sum(dtype=torch.float64))
    n = x.shape[0] * y.shape[0]
    return k_sum / n, d_sum / n


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """RBF-kernel MMD (biased estimate, square-rooted) between x [n, D] and y [m, D]."""
    kxx, kyy, kxy = (pairwise_means(a, b, bandwidth)[0] for a, b in ((x, x), (y, y), (x, y)))
    return max(kxx + kyy - 2 * kxy, 0.0) ** 0.5


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance sqrt(2 E|x-y| - E|x-x'| - E|y-y'|) between x [n, D] and y [m, D]."""
    dxx, dyy, dxy = (pairwise_means(a, b, 1.0)[1] for a, b in ((x, x), (y, y), (x, y)))
    return max(2 * dxy - dxx - dyy, 0.0) ** 0.5


class Evaluator:
    """Judges samples against a fixed held-out set, with fixed projections and bandwidth.

    The held-out set's self-terms and the noise floor are computed once, here; each call
    then costs one sort (SWD) or two n x n pairwise sums (MMD, energy).
    """

    def __init__(
        self, heldout: torch.Tensor, floor_draws: list[torch.Tensor], *,
        n_projections: int = 256, seed: int = 0,
    ) -> None:  # fmt: skip
        if not floor_draws:
            raise ValueError("the noise floor needs at least one independent draw of the data")
        for f in floor_draws:
            if f.shape != heldout.shape:
                raise ValueError(
                    f"floor draws must match the held-out set {heldout.shape}, got {f.shape}"
                )
        self.heldout = heldout  # [n, D]
        self.projections = random_projections(
            heldout.shape[1], n_projections, seed, heldout.device
        ).to(heldout.dtype)  # float32, or float64 data in the exactness tests
        self._sorted_heldout = sorted_projections(heldout, self.projections)  # [P, n]
        self.bandwidth = median_bandwidth(heldout)
        self._kyy, self._dyy = pairwise_means(heldout, heldout, self.bandwidth)
        draws = [self.distances(f) for f in floor_draws]
        self.floor = {m: sum(d[m] for d in draws) / len(draws) for m in METRICS}

    def distances(self, x: torch.Tensor, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
        """The named metrics between x [n, D] and the held-out set (same n)."""
        if x.shape != self.heldout.shape:
            raise ValueError(
                f"samples must have the held-out set's shape {tuple(self.heldout.shape)}, "
                f"got {tuple(x.shape)}"
            )
        out = {}
        if "swd" in metrics:
            px = sorted_projections(x, self.projections)
            out["swd"] = float(_swd_sorted(px, self._sorted_heldout))
        if "mmd" in metrics or "energy" in metrics:
            kxx, dxx = pairwise_means(x, x, self.bandwidth)
            kxy, dxy = pairwise_means(x, self.heldout, self.bandwidth)
            out["mmd"] = max(kxx + self._kyy - 2 * kxy, 0.0) ** 0.5
            out["energy"] = max(2 * dxy - dxx - self._dyy, 0.0) ** 0.5
        return {m: v for m, v in out.items() if m in metrics}

    def __call__(self, x: torch.Tensor, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
        """Metrics, their ratios to the noise floor (`<m>_ratio`) and the floors (`<m>_floor`)."""
        out: dict[str, float] = {}
        for name, value in self.distances(x, metrics).items():
            out[name] = value
            out[f"{name}_ratio"] = value / self.floor[name]
            out[f"{name}_floor"] = self.floor[name]
        return out
