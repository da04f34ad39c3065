"""The samplers, tested without any learning: for Gaussian data N(mu, s^2) the optimal
predictors are known in closed form. With x_t = sqrt(a) x0 + sqrt(1 - a) eps and
v_t = a s^2 + 1 - a = Var(x_t):

    E[eps | x_t] = sqrt(1 - a) / v_t (x_t - sqrt(a) mu)
    E[x0  | x_t] = mu + sqrt(a) s^2 / v_t (x_t - sqrt(a) mu)
    E[v   | x_t] = sqrt(a) E[eps | x_t] - sqrt(1 - a) E[x0 | x_t]
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from models.diffusion.sampling import ModelFn, eps_and_x0, sample, training_target
from models.diffusion.schedule import Schedule, make_schedule

MU = torch.tensor([2.0, -1.0], dtype=torch.float64)
S = torch.tensor([0.5, 1.5], dtype=torch.float64)
N = 20_000


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Elementwise work on small tensors: one thread is faster, and on a shared machine two
    threads can be far slower (OpenMP barriers wait for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def oracle(sched: Schedule, prediction: str) -> ModelFn:
    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = sched.abar[t]  # [1]
        var = a * S**2 + 1 - a
        eps = (1 - a).sqrt() / var * (x - a.sqrt() * MU)
        x0 = MU + a.sqrt() * S**2 / var * (x - a.sqrt() * MU)
        return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

    return model


def draw(
    sampler: str, steps: int | None, prediction: str = "eps", name: str = "cosine", T: int = 1000
) -> torch.Tensor:
    sched = make_schedule(name, T)
    g = torch.Generator().manual_seed(0)
    return sample(
        oracle(sched, prediction), sched, N, 2, sampler=sampler, steps=steps,
        prediction=prediction, generator=g,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sampler", "steps"), [("ddpm", None), ("ddim", 250)], ids=["ddpm-500", "ddim-250"]
)
def test_optimal_predictor_reproduces_the_gaussian(sampler: str, steps: int | None) -> None:
    """Cosine T = 500, the full ancestral chain and 250 DDIM steps. Tolerances: the mean within 0.05 (> 4 standard errors, s / sqrt(N)
    = 0.011 for s = 1.5); the std within 3% relative (its standard error is 0.5%, and the
    discretization bias, computed in closed form below, is under 1% for both chains)."""
    x = draw(sampler, steps, T=500)
    for d in range(2):  # the discretization bias, small for these chains
        assert (
            abs(
                _exact_std(sampler, make_schedule("cosine", 500), steps or 500, float(S[d]))
                / float(S[d])
                - 1
            )
            < 0.01
        )
    assert torch.allclose(x.mean(0), MU, atol=0.05, rtol=0), x.mean(0)
    assert torch.allclose(x.std(0) / S, torch.ones(2, dtype=torch.float64), atol=0.03, rtol=0), (
        x.std(0)
    )


def test_predictions_are_interchangeable_for_the_oracle() -> None:
    """eps, x0 and v parameterizations of the same optimal predictor give the same chain."""
    for sampler in ("ddpm", "ddim"):
        ref = draw(sampler, 10, "eps", T=100)
        for prediction in ("x0", "v"):
            torch.testing.assert_close(draw(sampler, 10, prediction, T=100), ref)


def _exact_std(sampler: str, sched: Schedule, steps: int, s: float) -> float:
    """The final std of the (linear, Gaussian) chain, propagated in closed form from x_T ~ N(0, 1)."""
    _, short = sched.respace(steps)
    var = 1.0
    for i in reversed(range(short.T)):
        a = float(short.abar[i])
        v = a * s * s + 1 - a
        dx0, deps = (
            math.sqrt(a) * s * s / v,
            math.sqrt(1 - a) / v,
        )  # d E[x0|x_t] / dx_t, d E[eps|x_t] / dx_t
        if sampler == "ddpm":
            k = float(short.posterior_coef_x0[i]) * dx0 + float(short.posterior_coef_xt[i])
            var = k * k * var + float(short.posterior_var[i])
        else:
            ap = float(short.abar_prev[i])
            var = (math.sqrt(ap) * dx0 + math.sqrt(1 - ap) * deps) ** 2 * var
    return math.sqrt(var)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddpm", 10), ("ddim", 100)])
def test_few_step_chains_match_their_closed_form(sampler: str, steps: int) -> None:
    """With few steps the chains are biased (DDIM shrinks the std by ~15% in 10 steps here);
    the sampled std matches the closed-form std of the same discrete chain within 1.5%
    (3 standard errors of a std from N = 20,000). A wrong respacing would miss it."""
    sched = make_schedule("linear", 1000)
    x = sample(
        oracle(sched, "eps"), sched, N, 2, sampler=sampler, steps=steps,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    for d in range(2):
        want = _exact_std(sampler, sched, steps, float(S[d]))
        assert float(x[:, d].std()) == pytest.approx(want, rel=0.015)
    if steps == 10 and sampler == "ddim":
        assert _exact_std(sampler, sched, steps, 0.5) < 0.9 * 0.5  # the bias is real


def test_conversions_between_parameterizations_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    for a in (0.999, 0.5, 1e-3):
        abar = torch.tensor(a)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        for prediction in ("eps", "x0", "v"):
            target = training_target(prediction, x0, eps, abar.sqrt(), (1 - abar).sqrt())
            e, z = eps_and_x0(prediction, target, xt, abar)
            torch.testing.assert_close(e, eps, atol=1e-3, rtol=1e-3)
            torch.testing.assert_close(z, x0, atol=1e-3, rtol=1e-3)
    # clipping x0 (images) keeps x_t consistent: eps is recomputed from the clipped x0
    abar = torch.tensor(0.5)
    xt = torch.full((1, 1), 3.0)
    e, z = eps_and_x0("x0", torch.full((1, 1), 2.0), xt, abar, clip=1.0)
    assert z.item() == 1.0
    torch.testing.assert_close(abar.sqrt() * z + (1 - abar).sqrt() * e, xt)


def test_unknown_sampler_or_prediction() -> None:
    sched = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="sampler"):
        sample(oracle(sched, "eps"), sched, 4, 2, sampler="euler")
    with pytest.raises(ValueError, match="prediction"):
        sample(oracle(sched, "eps"), sched, 4, 2, prediction="score")
    with pytest.raises(ValueError, match="sampling steps"):
        sample(oracle(sched, "eps"), sched, 4, 2, steps=11)
