"""LocoProp trainer: exactness of the local updates (float64), the train() contract, configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from models.locoprop.data import load
from models.locoprop.locoprop import (
    LocalPhase,
    backprop_grads,
    backprop_step,
    local_lr_decay,
    local_targets,
    locoprop_step,
)
from models.locoprop.nets import Net, make_net
from models.locoprop.optim import Optimizer
from models.locoprop.train import Config, train

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread is faster and does not fight the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(task: str, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    data = load(dtype=F64)
    x = data.x_train[:n]
    return x, (x if task == "autoencoder" else data.y_train[:n])


def perturbed_net(task: str, seed: int = 0) -> Net:
    """A float64 net away from its init (non-zero biases), so no gradient is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    net = make_net(task, generator=gen, dtype=F64)
    net.params.add_(0.1 * torch.randn(net.params.shape, generator=gen, dtype=F64))
    return net


def backprop_grad(net: Net, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dLoss/dparams by autograd, flat."""
    p = net.params.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net.loss(net.forward(x, p).pre[-1], target), p)
    return g


def sgd(net: Net) -> Optimizer:
    return Optimizer("sgd", net.params, beta1=0.0, beta2=0.0, eps=0.0)


# ---------------------------------------------------------------- exactness (float64)


@pytest.mark.parametrize("task", ["autoencoder", "classifier"])
@pytest.mark.parametrize("kind", ["s", "m"])
def test_first_local_gradient_is_gamma_times_backprop_gradient(task: str, kind: str) -> None:
    net, (x, target), gamma = perturbed_net(task), batch(task), 3.7
    trace, g = backprop_grads(net, x, target)
    phase = LocalPhase.from_backprop(net, trace, g, gamma, kind)
    local = net.layer_views(phase.grad(net.params, torch.empty_like(net.params)))
    bp = net.layer_views(backprop_grad(net, x, target))
    for i, ((lw, lb), (bw, bb)) in enumerate(zip(local, bp, strict=True)):
        assert bw.abs().max() > 1e-4, f"layer {i}: degenerate test"
        torch.testing.assert_close(lw, gamma * bw, rtol=1e-6, atol=1e-9, msg=f"W of layer {i}")
        torch.testing.assert_close(lb, gamma * bb, rtol=1e-6, atol=1e-9, msg=f"b of layer {i}")


@pytest.mark.parametrize("task", ["autoencoder", "classifier"])
@pytest.mark.parametrize("kind", ["s", "m"])
def test_one_locoprop_step_k1_sgd_equals_one_backprop_sgd_step(task: str, kind: str) -> None:
    gamma, lr = 5.0, 0.05
    loco, bp = perturbed_net(task), perturbed_net(task)
    start = bp.params.clone()
    x, target = batch(task)
    locoprop_step(loco, sgd(loco), x, target, lr=lr / gamma, gamma=gamma, K=1, kind=kind)
    backprop_step(bp, sgd(bp), x, target, lr=lr)
    assert (bp.params - start).abs().max() > 1e-4  # the step did something
    torch.testing.assert_close(loco.params, bp.params, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["locoprop-s", "locoprop-m"])
def test_train_k1_sgd_follows_the_backprop_trajectory(method: str) -> None:
    """Through train(): every step equal, so the whole run (schedule included) is equal."""
    common = {"optimizer": "sgd", "epochs": 2, "warmup_epochs": 1, "dtype": "float64"}
    bp = train({**common, "method": "bp", "lr": 0.02}, seed=3)
    loco = train({**common, "method": method, "lr": 0.02 / 8, "gamma": 8.0, "K": 1}, seed=3)
    assert bp["train_loss"] == pytest.approx(loco["train_loss"], rel=1e-10)
    assert bp["test_loss"] == pytest.approx(loco["test_loss"], rel=1e-10)


def bregman(act: str, a: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """D_F(a, a_hat) = F(a) - F(a_hat) - f(a_hat)(a - a_hat), F' = f, written out, summed."""
    if act == "tanh":
        big_f, a_hat = (lambda z: torch.log(torch.cosh(z))), torch.atanh(y_hat)
    else:
        big_f, a_hat = (lambda z: torch.log(1 + torch.exp(z))), torch.log(y_hat / (1 - y_hat))
    return (big_f(a) - big_f(a_hat) - y_hat * (a - a_hat)).sum()


def bregman_dual(act: str, a: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The same divergence as F(a) + F*(y_hat) - y_hat a (the notebook's tanh_loss form)."""
    if act == "tanh":
        big_f = torch.log(torch.cosh(a))
        conj = 0.5 * ((1 + y_hat) * torch.log(1 + y_hat) + (1 - y_hat) * torch.log(1 - y_hat))
    else:
        big_f = torch.log(1 + torch.exp(a))
        conj = y_hat * torch.log(y_hat) + (1 - y_hat) * torch.log(1 - y_hat)
    return (big_f + conj - y_hat * a).sum()


@pytest.mark.parametrize("acts", [["tanh"], ["sigmoid"], ["tanh", "sigmoid"]])
@pytest.mark.parametrize("form", [bregman, bregman_dual])
def test_matching_loss_gradient_is_autograd_of_bregman_divergence(acts: list[str], form) -> None:
    """Closed form x^T (f(xW + b) - y_hat) vs autograd of the explicit divergence.

    ["tanh", "sigmoid"] is a 6-6-6 net: both layers share one batched group with
    different transfer functions.
    """
    gen = torch.Generator().manual_seed(1)
    width = 6
    net = Net([width] * (len(acts) + 1), acts, "bce", generator=gen, dtype=F64)
    net.params.add_(0.2 * torch.randn(net.params.shape, generator=gen, dtype=F64))
    assert len(net.groups) == 1
    xs = [torch.randn(9, width, generator=gen, dtype=F64) for _ in acts]  # [batch, fan_in]
    u = torch.rand(len(acts), 9, width, generator=gen, dtype=F64)
    y_hats = [
        0.9 * (2 * u[i] - 1) if act == "tanh" else 0.05 + 0.9 * u[i] for i, act in enumerate(acts)
    ]

    closed = LocalPhase(net, xs, y_hats, "m").grad(net.params, torch.empty_like(net.params))

    p = net.params.clone().requires_grad_(True)
    loss = sum(
        form(act, torch.addmm(b, x, w), y)
        for (w, b), act, x, y in zip(net.layer_views(p), acts, xs, y_hats, strict=True)
    )
    (auto,) = torch.autograd.grad(loss, p)
    torch.testing.assert_close(closed, auto, rtol=1e-9, atol=1e-10)


def test_squared_local_loss_gradient_is_autograd() -> None:
    net, (x, target) = perturbed_net("autoencoder"), batch("autoencoder")
    trace, g = backprop_grads(net, x, target)
    a_hats = local_targets(trace, g, 2.0, "s")
    w0 = net.params.clone()
    net.params.add_(0.05 * torch.randn(net.params.shape, dtype=F64))  # away from the start
    closed = LocalPhase(net, trace.inputs, a_hats, "s").grad(net.params, torch.empty_like(w0))
    p = net.params.clone().requires_grad_(True)
    loss = sum(
        0.5 * (torch.addmm(b, xi, w) - t).pow(2).sum()
        for (w, b), xi, t in zip(net.layer_views(p), trace.inputs, a_hats, strict=True)
    )
    (auto,) = torch.autograd.grad(loss, p)
    torch.testing.assert_close(closed, auto, rtol=1e-9, atol=1e-10)


def test_local_lr_decay_is_the_official_schedule() -> None:
    got = [local_lr_decay(k, 10) for k in range(10)]
    want = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.25]
    assert got == pytest.approx(want)
    assert local_lr_decay(0, 1) == 1.0


@pytest.mark.parametrize("kind", ["s", "m"])
def test_batched_local_phase_equals_independent_per_layer_updates(kind: str) -> None:
    """K SGD steps of the grouped phase == each layer alone, its input held fixed."""
    net, (x, target) = perturbed_net("autoencoder"), batch("autoencoder")
    assert any(len(g.layers) > 1 for g in net.groups)  # something is really batched
    trace, g = backprop_grads(net, x, target)
    targets = local_targets(trace, g, 4.0, kind)
    layers = [(w.clone(), b.clone()) for w, b in net.layer_views(net.params)]
    lr, K = 0.01, 6  # K = 6 reaches the 0.25 floor at k = 5
    LocalPhase(net, trace.inputs, targets, kind).run(sgd(net), lr, K)
    acts = {"linear": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
    for i, ((w, b), xi, t) in enumerate(zip(layers, trace.inputs, targets, strict=True)):
        for k in range(K):
            a = xi @ w + b
            r = (a if kind == "s" else acts[net.acts[i]](a)) - t
            step = lr * max(1 - k / K, 0.25)
            w, b = w - step * xi.T @ r, b - step * r.sum(0)
        got_w, got_b = net.layer_views(net.params)[i]
        torch.testing.assert_close(got_w, w, rtol=1e-10, atol=1e-12, msg=f"layer {i}")
        torch.testing.assert_close(got_b, b, rtol=1e-10, atol=1e-12, msg=f"layer {i}")


def test_local_optimizer_state_is_kept_across_batches() -> None:
    x, _ = batch("autoencoder", 64)
    kept, reset = perturbed_net("autoencoder"), perturbed_net("autoencoder")
    opt = Optimizer("rmsprop", kept.params, beta1=0.9, beta2=0.9, eps=1e-5)
    for xb in (x[:32], x[32:]):
        locoprop_step(kept, opt, xb, xb, lr=1e-3, gamma=10.0, K=3, kind="m")
        fresh = Optimizer("rmsprop", reset.params, beta1=0.9, beta2=0.9, eps=1e-5)
        locoprop_step(reset, fresh, xb, xb, lr=1e-3, gamma=10.0, K=3, kind="m")
    assert opt.t == 6
    assert (kept.params - reset.params).abs().max() > 1e-6  # momentum carried over


def test_optimizers_follow_their_update_rules() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=gen, dtype=F64) for _ in range(3)]
    p0 = torch.randn(5, generator=gen, dtype=F64)
    # Adam with eps = 0 matches torch.optim.Adam exactly.
    ours, theirs = p0.clone(), p0.clone().requires_grad_(True)
    opt = Optimizer("adam", ours, beta1=0.8, beta2=0.95, eps=0.0)
    ref = torch.optim.Adam([theirs], lr=0.1, betas=(0.8, 0.95), eps=0.0)
    for g in grads:
        opt.step(g, 0.1)
        theirs.grad = g.clone()
        ref.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-12, atol=1e-12)
    # RMSprop, TF1 style: ms starts at 1, eps inside the sqrt, lr inside the momentum.
    ours, p, ms, mom = p0.clone(), p0.clone(), torch.ones(5, dtype=F64), torch.zeros(5, dtype=F64)
    opt = Optimizer("rmsprop", ours, beta1=0.5, beta2=0.9, eps=1e-3)
    for g in grads:
        opt.step(g, 0.1)
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.5 * mom + 0.1 * g / torch.sqrt(ms + 1e-3)
        p = p - mom
    torch.testing.assert_close(ours, p, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- train() contract

QUICK = {"epochs": 3, "warmup_epochs": 1, "K": 2}


@pytest.mark.parametrize("method", ["bp", "locoprop-s", "locoprop-m"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_train_runs_and_reports_every_epoch(method: str, optimizer: str) -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    # Local SGD on the batch-summed local loss needs lr < 2 / lambda_max(x^T x), about 1e-3.
    lr = 1e-3 if optimizer != "sgd" else (0.05 if method == "bp" else 3e-4)
    out = train(
        {**QUICK, "method": method, "optimizer": optimizer, "lr": lr},
        report=lambda s, m: calls.append((s, m)),
    )
    assert [s for s, _ in calls] == [1, 2, 3]
    assert set(out) == {"train_loss", "test_loss"} and all(math.isfinite(v) for v in out.values())
    assert calls[-1][1] == out
    assert out["train_loss"] < 44.0  # better than the untrained net (about 45)


def test_report_every_and_final_step() -> None:
    steps: list[int] = []
    train({**QUICK, "epochs": 5, "report_every": 2}, report=lambda s, m: steps.append(s))
    assert steps == [2, 4, 5]


def test_classifier_reports_accuracy_and_learns() -> None:
    out = train({"task": "classifier", "epochs": 5, "warmup_epochs": 1, "K": 5})
    assert set(out) == {"train_loss", "test_loss", "train_acc", "test_acc"}
    assert out["test_acc"] > 0.85


def test_same_seed_same_result_different_seed_differs() -> None:
    a, b, c = (train(QUICK, seed=s) for s in (7, 7, 8))
    assert a == b
    assert a != c


def test_exception_from_report_propagates() -> None:
    class Pruned(Exception):
        pass

    steps: list[int] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        steps.append(step)
        if step == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train({**QUICK, "epochs": 5}, report=report)
    assert steps == [1, 2]


def test_divergence_returns_nan_metrics() -> None:
    out = train({"method": "bp", "optimizer": "sgd", "lr": 1e38, "epochs": 3, "warmup_epochs": 0})
    assert not math.isfinite(out["train_loss"])


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"K": 0}, "K"),
        ({"K": -3}, "K"),
        ({"K": 2.5}, "K"),
        ({"K": float("inf")}, "K"),
        ({"epochs": float("nan")}, "epochs"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"method": "dfa"}, "method"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"task": "gan"}, "task"),
        ({"lr": 0.0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 5000}, "batch_size"),
        ({"beta1": 1.0}, "beta1"),
        ({"report_every": 0}, "report_every"),
        ({"dtype": "float16"}, "dtype"),
        ({"gama": 1.0}, "gama"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"locoprop config: .*{field}"):
        train(config)


def test_optimizer_defaults_fill_only_missing_constants() -> None:
    cfg = Config.from_dict({"optimizer": "adam", "beta2": 0.99, "K": 4.0})
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.K) == (0.9, 0.99, 1e-8, 4)


@pytest.mark.parametrize("name", ["locoprop", "locoprop-quick"])
def test_search_space_defaults_make_a_valid_config(name: str) -> None:
    spec = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    assert spec["objective"] == "locoprop"
    assert spec["metric"] == {"name": "train_loss", "goal": "minimize"}
    params = {k: p["default"] for k, p in spec["params"].items()}
    for p in spec["params"].values():
        if p["type"] == "choice":
            assert p["default"] in p["values"]
        else:
            assert p["low"] <= p["default"] <= p["high"]
    cfg = Config.from_dict(
        {**spec["fixed"], **params, "report_every": spec["budget"]["report_every"]}
    )
    assert cfg.method in spec["params"]["method"]["values"]


def test_quick_space_trains_in_a_few_seconds() -> None:
    import time

    spec = yaml.safe_load((ROOT / "search_spaces" / "locoprop-quick.yaml").read_text())
    slowest = {k: p["default"] for k, p in spec["params"].items()}
    slowest |= {"method": "locoprop-m", "K": spec["params"]["K"]["high"]}
    t = time.perf_counter()
    out = train({**spec["fixed"], **slowest})
    assert time.perf_counter() - t < 5.0
    assert math.isfinite(out["train_loss"])
