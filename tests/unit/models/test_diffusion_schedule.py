"""Schedules, forward noising and the posterior q(x_{t-1} | x_t, x_0) of models/diffusion."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.diffusion.schedule import cosine_betas, linear_betas, make_schedule


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Elementwise work on small tensors: one thread is faster, and on a shared machine two
    threads can be far slower (OpenMP barriers wait for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 499, 999])
def test_forward_noising_has_the_stated_mean_and_variance(name: str, t: int) -> None:
    """x_t = q_sample(x0, t, eps) over 200,000 draws of eps: the sample mean is
    sqrt(abar_t) x0 and the sample variance 1 - abar_t, each within 5 standard errors
    (SE of the mean sqrt((1 - abar) / n), of the variance (1 - abar) sqrt(2 / (n - 1)))."""
    sched = make_schedule(name, 1000)
    n = 200_000
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64).expand(n, 2)  # [n, 2]
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    xt = sched.q_sample(x0, torch.full((n,), t), eps)  # [n, 2]
    abar = float(np.prod(1 - sched.betas.numpy()[: t + 1]))  # computed here, independently
    mean_se = math.sqrt((1 - abar) / n)
    var_se = (1 - abar) * math.sqrt(2 / (n - 1))
    assert torch.allclose(xt.mean(0), math.sqrt(abar) * x0[0], atol=5 * mean_se, rtol=0)
    assert torch.allclose(
        xt.var(0), torch.full((2,), 1 - abar, dtype=torch.float64), atol=5 * var_se, rtol=0
    )


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_posterior_equals_direct_gaussian_conditioning(name: str, T: int) -> None:
    """q(x_{t-1} | x_t, x0) from the schedule == conditioning the joint Gaussian of
    (x_{t-1}, x_t) given x0, built in numpy from the betas alone:
    x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) e1,  x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2."""
    sched = make_schedule(name, T)
    betas = sched.betas.numpy()
    rng = np.random.default_rng(0)
    for t in sorted({0, T // 2, T - 1}):
        abar_prev = float(np.prod(1 - betas[:t]))  # 1 at t = 0
        alpha = 1 - betas[t]
        x0, xt = rng.normal(size=3), rng.normal(size=3)
        m1, m2 = math.sqrt(abar_prev) * x0, math.sqrt(alpha * abar_prev) * x0
        v11 = 1 - abar_prev
        v12 = math.sqrt(alpha) * (1 - abar_prev)
        v22 = alpha * (1 - abar_prev) + betas[t]
        want_mean = m1 + v12 / v22 * (xt - m2)
        want_var = v11 - v12**2 / v22
        mean, var = sched.q_posterior(
            torch.tensor(x0)[None], torch.tensor(xt)[None], torch.tensor([t])
        )
        np.testing.assert_allclose(mean[0].numpy(), want_mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(var[0, 0]), want_var, rtol=1e-9, atol=1e-15)
    # no noise at the last reverse step: x_{-1} is x0 itself
    _, var0 = sched.q_posterior(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([0]))
    assert float(var0) == 0.0


def test_cosine_schedule_end_values() -> None:
    """Nichol and Dhariwal eq. 17 with s = 0.008: abar_t = f(t + 1) / f(0) until the 0.999
    clip, which only the last step reaches; abar at the end is ~0."""
    T, s = 1000, 0.008

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    sched = make_schedule("cosine", T)
    abar = sched.abar.numpy()
    assert sched.betas[-1].item() == pytest.approx(0.999, abs=1e-15)  # clipped
    assert (sched.betas[:-1] < 0.999).all()
    assert sched.betas[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-12)
    assert sched.betas[0].item() < 1e-4  # starts almost noiseless
    np.testing.assert_allclose(abar[:-1], [f(t + 1) / f(0) for t in range(T - 1)], rtol=1e-9)
    assert abar[-1] < 1e-8
    assert (np.diff(sched.betas.numpy()) >= 0).all()  # monotone
    assert cosine_betas(7).shape == (7,)


def test_linear_schedule_values_and_scaling() -> None:
    """DDPM's 1e-4 .. 0.02 at T = 1000, scaled by 1000 / T for shorter chains."""
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b = linear_betas(100)
    assert b[0].item() == pytest.approx(1e-3) and b[-1].item() == pytest.approx(0.2)
    assert make_schedule("linear", 100).abar[-1].item() < 1e-4


def test_respacing_keeps_abar_at_the_kept_steps() -> None:
    sched = make_schedule("cosine", 100)
    kept, short = sched.respace(100)
    assert kept.tolist() == list(range(100))
    torch.testing.assert_close(short.betas, sched.betas)
    for steps in (1, 2, 7, 33, 99):
        kept, short = sched.respace(steps)
        assert kept.shape == (steps,) and kept[-1] == 99 and len(set(kept.tolist())) == steps
        assert steps == 1 or kept[0] == 0
        torch.testing.assert_close(short.abar, sched.abar[kept])
    with pytest.raises(ValueError, match="sampling steps"):
        sched.respace(101)


def test_bad_schedule_arguments() -> None:
    with pytest.raises(ValueError, match="T must be >= 1"):
        make_schedule("cosine", 0)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("sigmoid", 10)
