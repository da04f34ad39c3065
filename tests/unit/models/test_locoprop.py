"""LocoProp trainer: exactness of the math (float64) against autograd and against a direct
per-layer transcription of the paper, the train() contract, configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from models.locoprop.data import load
from models.locoprop.locoprop import (
    Hyper,
    Stack,
    backward,
    forward,
    layer_views,
    local_grads,
    local_lr_decay,
    local_targets,
    losses,
)
from models.locoprop.nets import Net, make_net
from models.locoprop.train import Config, train

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[3]
ACTS = {
    "linear": lambda a: a,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda a: torch.softmax(a, dim=-1),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread is faster and does not fight the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(task: str, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch as one member's rows: x [1, n, 64], target [1, n, 64] or labels [1, n]."""
    data = load(dtype=F64)
    x = data.x_train[:n]
    return x[None], (x if task == "autoencoder" else data.y_train[:n])[None]


def perturbed_net(task: str, seed: int = 0) -> Net:
    """A float64 net away from its init (non-zero biases), so no gradient is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    net = make_net(task, generator=gen, dtype=F64)
    net.params.add_(0.1 * torch.randn(net.params.shape, generator=gen, dtype=F64))
    return net


# ---------------------------------------------------------------- an independent reference


def ref_forward(net: Net, params: torch.Tensor, x: torch.Tensor):
    """Plain per-layer matmuls on one member: x [batch, in] -> inputs, pre, post, and logits."""
    inputs, pre, post = [], [], []
    for (w, b), act in zip(net.layer_views(params), net.acts, strict=True):
        a = x @ w + b
        inputs.append(x)
        pre.append(a)
        x = ACTS[act](a)
        post.append(x)
    return inputs, pre, post


def ref_loss(net: Net, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if net.loss_kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
    return F.cross_entropy(logits, target)


def backprop_grad(net: Net, params: torch.Tensor, x: torch.Tensor, target: torch.Tensor):
    """dLoss/dparams by autograd, flat (x, target: one member's batch, no leading R)."""
    p = params.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref_loss(net, ref_forward(net, p, x)[1][-1], target), p)
    return g


class RefOptimizer:
    """tf.compat.v1.train's SGD / RMSprop (ms from 1) / Adam, written out for one tensor."""

    def __init__(self, name: str, p: torch.Tensor, beta1: float, beta2: float, eps: float) -> None:
        self.name, self.b1, self.b2, self.eps, self.t = name, beta1, beta2, eps, 0
        self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)
        self.ms, self.mom = torch.ones_like(p), torch.zeros_like(p)

    def step(self, p: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
        self.t += 1
        if self.name == "sgd":
            return p - lr * g
        if self.name == "rmsprop":
            self.ms = self.b2 * self.ms + (1 - self.b2) * g * g
            self.mom = self.b1 * self.mom + lr * g / torch.sqrt(self.ms + self.eps)
            return p - self.mom
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        lr_t = lr * math.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        return p - lr_t * self.m / (torch.sqrt(self.v) + self.eps)


def ref_lr(step: int, total: int, warmup: int, base: float) -> float:
    return base * (step + 1) / warmup if step < warmup else base * (total - step) / (total - warmup)


def reference_train(config: dict, seed: int) -> list[tuple[int, dict[str, float]]]:
    """The paper's algorithm for one trial, layer by layer, autograd for g: its reports."""
    cfg = Config.from_dict(config)
    data = load(test_fraction=cfg.test_fraction, dtype=F64)
    net = make_net(cfg.task, generator=torch.Generator().manual_seed(seed), dtype=F64)
    params = net.params.clone()
    opts = [RefOptimizer(cfg.optimizer, params, cfg.beta1, cfg.beta2, cfg.eps)]  # type: ignore[arg-type]
    auto = cfg.task == "autoencoder"
    target_all = data.x_train if auto else data.y_train
    n = data.x_train.shape[0]
    per_epoch = n // cfg.batch_size
    total, warmup = cfg.epochs * per_epoch, cfg.warmup_epochs * per_epoch
    shuffle = torch.Generator().manual_seed(seed)
    step, reports = 0, []
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=shuffle)
        for j in range(per_epoch):
            idx = perm[j * cfg.batch_size : (j + 1) * cfg.batch_size]
            x, t = data.x_train[idx], target_all[idx]
            lr = ref_lr(step, total, warmup, cfg.lr)
            step += 1
            if cfg.method == "bp":
                params = opts[0].step(params, backprop_grad(net, params, x, t), lr)
                continue
            p = params.clone().requires_grad_(True)
            inputs, pre, post = ref_forward(net, p, x)
            g = torch.autograd.grad(ref_loss(net, pre[-1], t), pre)
            base = pre if cfg.method == "locoprop-s" else post
            targets = [(b - cfg.gamma * gi).detach() for b, gi in zip(base, g, strict=True)]
            for k in range(cfg.K):
                grad = torch.zeros_like(params)
                views = net.layer_views(grad)
                for i, ((w, b), xi, ti) in enumerate(
                    zip(net.layer_views(params), inputs, targets, strict=True)
                ):
                    a = xi.detach() @ w + b
                    r = (a if cfg.method == "locoprop-s" else ACTS[net.acts[i]](a)) - ti
                    views[i][0].copy_(xi.detach().T @ r)
                    views[i][1].copy_(r.sum(0))
                params = opts[0].step(params, grad, lr * max(1 - k / cfg.K, 0.25))
        if epoch % cfg.report_every == 0 or epoch == cfg.epochs:
            m = {}
            for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
                logits = ref_forward(net, params, x)[1][-1]
                m[f"{split}_loss"] = ref_loss(net, logits, x if auto else y).item()
                if not auto:
                    m[f"{split}_acc"] = (logits.argmax(1) == y).double().mean().item()
            reports.append((epoch, m))
    return reports


SMALL = {"test_fraction": 0.8, "batch_size": 50, "dtype": "float64", "epochs": 2, "warmup_epochs": 1}


@pytest.mark.parametrize("method", ["bp", "locoprop-s", "locoprop-m"])
@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam"])
def test_train_equals_the_reference_transcription(method: str, optimizer: str) -> None:
    lr = {"sgd": 0.05 if method == "bp" else 2e-4, "adam": 2e-3, "rmsprop": 1e-3}[optimizer]
    cfg = {**SMALL, "method": method, "optimizer": optimizer, "lr": lr, "gamma": 7.0, "K": 3}
    reports: list = []
    train(cfg, seed=5, report=lambda s, m: reports.append((s, m)))
    want = reference_train(cfg, 5)
    assert [s for s, _ in reports] == [s for s, _ in want] == [1, 2]
    assert want[-1][1]["train_loss"] < want[0][1]["train_loss"] - 0.1  # it trains
    for (_, got), (_, ref) in zip(reports, want, strict=True):
        assert got == pytest.approx(ref, rel=1e-10, abs=0)


def test_classifier_equals_the_reference_transcription() -> None:
    cfg = {**SMALL, "task": "classifier", "method": "locoprop-m", "optimizer": "adam", "lr": 2e-3}
    reports: list = []
    train(cfg, seed=2, report=lambda s, m: reports.append((s, m)))
    want = reference_train(cfg, 2)
    assert set(want[-1][1]) == {"train_loss", "test_loss", "train_acc", "test_acc"}
    for (_, got), (_, ref) in zip(reports, want, strict=True):
        assert got == pytest.approx(ref, rel=1e-10, abs=0)


# ---------------------------------------------------------------- the pieces (float64)


def member(net: Net) -> torch.Tensor:
    return net.params[None].clone()  # [1, n]


@pytest.mark.parametrize("task", ["autoencoder", "classifier"])
def test_backward_is_autograd_of_the_loss(task: str) -> None:
    net, (x, target) = perturbed_net(task), batch(task)
    p = member(net)
    inputs, pre, post = forward(net, layer_views(net, p), x)
    got = backward(net, layer_views(net, p), pre, post, target)
    q = p.clone().requires_grad_(True)
    _, pre_q, _ = forward(net, layer_views(net, q), x)
    want = torch.autograd.grad(losses(net, pre_q[-1], target).sum(), pre_q)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert b.abs().max() > 1e-6, f"layer {i}: degenerate test"
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13, msg=f"layer {i}")


@pytest.mark.parametrize("task", ["autoencoder", "classifier"])
@pytest.mark.parametrize("kind", ["s", "m"])
def test_first_local_gradient_is_gamma_times_backprop_gradient(task: str, kind: str) -> None:
    net, (x, target), gamma = perturbed_net(task), batch(task), 3.7
    p = member(net)
    pv = layer_views(net, p)
    inputs, pre, post = forward(net, pv, x)
    g = backward(net, pv, pre, post, target)
    targets = local_targets(pre, post, g, gamma, kind == "m")
    local = torch.empty_like(p)
    xts = [t.transpose(1, 2) for t in inputs]
    local_grads(net, pv, inputs, xts, targets, kind == "m", layer_views(net, local))
    bp = backprop_grad(net, net.params, x[0], target[0])  # autograd on the parameters
    for i, ((lw, lb), (bw, bb)) in enumerate(
        zip(net.layer_views(local[0]), net.layer_views(bp), strict=True)
    ):
        assert bw.abs().max() > 1e-4, f"layer {i}: degenerate test"
        torch.testing.assert_close(lw, gamma * bw, rtol=1e-10, atol=1e-12, msg=f"W of layer {i}")
        torch.testing.assert_close(lb, gamma * bb, rtol=1e-10, atol=1e-12, msg=f"b of layer {i}")


def hyper(method: str, optimizer: str = "sgd", K: int = 1, gamma: float = 1.0) -> Hyper:
    return Hyper(method, optimizer, K, gamma, 0.9, 0.9, 1e-5)


def stack_of(net: Net, hypers: list[Hyper]) -> Stack:
    """len(hypers) members starting from net's parameters, fresh optimizer state."""
    rows = [Stack.fresh_state(h, net.params[None]) for h in hypers]
    return Stack(
        net,
        hypers,
        net.params[None].repeat(len(hypers), 1),
        *(torch.cat([r[j] for r in rows]) for j in range(3)),
    )


@pytest.mark.parametrize("task", ["autoencoder", "classifier"])
@pytest.mark.parametrize("kind", ["s", "m"])
def test_one_locoprop_step_k1_sgd_equals_one_backprop_sgd_step(task: str, kind: str) -> None:
    """A bp row and a LocoProp row (K = 1, lr / gamma) in ONE stack end the batch equal."""
    gamma, lr = 5.0, 0.05
    net, (x, target) = perturbed_net(task), batch(task)
    stack = stack_of(net, [hyper(f"locoprop-{kind}", gamma=gamma), hyper("bp")])
    assert [h.method for h in stack.hypers] == ["bp", f"locoprop-{kind}"]  # bp rows first
    stack.train_batch(x.expand(2, -1, -1), target.expand(2, *target.shape[1:]), [lr, lr / gamma])
    assert (stack.params[0] - net.params).abs().max() > 1e-4  # the step did something
    torch.testing.assert_close(stack.params[1], stack.params[0], rtol=1e-12, atol=1e-12)
    want = net.params - lr * backprop_grad(net, net.params, x[0], target[0])
    torch.testing.assert_close(stack.params[0], want, rtol=1e-12, atol=1e-12)


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
    """Closed form x^T (f(xW + b) - y_hat) vs autograd of the explicit divergence, for two
    members at once (rows never mix)."""
    gen = torch.Generator().manual_seed(1)
    width = 6
    net = Net([width] * (len(acts) + 1), acts, "bce", generator=gen, dtype=F64)
    p = net.params[None] + 0.2 * torch.randn(2, net.params.numel(), generator=gen, dtype=F64)
    xs = [torch.randn(2, 9, width, generator=gen, dtype=F64) for _ in acts]  # [R, batch, fan_in]
    u = torch.rand(len(acts), 2, 9, width, generator=gen, dtype=F64)
    y_hats = [
        0.9 * (2 * u[i] - 1) if act == "tanh" else 0.05 + 0.9 * u[i] for i, act in enumerate(acts)
    ]
    closed = torch.empty_like(p)
    xts = [x.transpose(1, 2) for x in xs]
    local_grads(net, layer_views(net, p), xs, xts, y_hats, True, layer_views(net, closed))
    for r in range(2):
        q = p[r].clone().requires_grad_(True)
        loss = sum(
            form(act, x[r] @ w + b, y[r])
            for (w, b), act, x, y in zip(net.layer_views(q), acts, xs, y_hats, strict=True)
        )
        (auto,) = torch.autograd.grad(loss, q)
        torch.testing.assert_close(closed[r], auto, rtol=1e-9, atol=1e-10)


def test_squared_local_loss_gradient_is_autograd() -> None:
    net, (x, target) = perturbed_net("autoencoder"), batch("autoencoder")
    p = member(net)
    inputs, pre, post = forward(net, layer_views(net, p), x)
    g = backward(net, layer_views(net, p), pre, post, target)
    a_hats = local_targets(pre, post, g, 2.0, False)
    p = p + 0.05 * torch.randn(p.shape, dtype=F64)  # away from the start
    closed = torch.empty_like(p)
    xts = [t.transpose(1, 2) for t in inputs]
    local_grads(net, layer_views(net, p), inputs, xts, a_hats, False, layer_views(net, closed))
    q = p[0].clone().requires_grad_(True)
    loss = sum(
        0.5 * (xi[0] @ w + b - t[0]).pow(2).sum()
        for (w, b), xi, t in zip(net.layer_views(q), inputs, a_hats, strict=True)
    )
    (auto,) = torch.autograd.grad(loss, q)
    torch.testing.assert_close(closed[0], auto, rtol=1e-9, atol=1e-10)


def test_local_lr_decay_is_the_official_schedule() -> None:
    got = [local_lr_decay(k, 10) for k in range(10)]
    want = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.25]
    assert got == pytest.approx(want)
    assert local_lr_decay(0, 1) == 1.0


@pytest.mark.parametrize("kind", ["s", "m"])
def test_local_phase_equals_independent_per_layer_updates(kind: str) -> None:
    """K SGD steps of the stacked phase == each layer alone, its input held fixed."""
    net, (x, target) = perturbed_net("autoencoder"), batch("autoencoder")
    lr, K, gamma = 0.01, 6, 4.0  # K = 6 reaches the 0.25 floor at k = 5
    inputs, pre, post = ref_forward(net, net.params.clone().requires_grad_(True), x[0])
    g = torch.autograd.grad(ref_loss(net, pre[-1], target[0]), pre)
    base = pre if kind == "s" else post
    targets = [(b - gamma * gi).detach() for b, gi in zip(base, g, strict=True)]
    layers = [(w.clone(), b.clone()) for w, b in net.layer_views(net.params)]
    stack = stack_of(net, [hyper(f"locoprop-{kind}", K=K, gamma=gamma)])
    stack.train_batch(x, target, [lr])
    for i, ((w, b), xi, t) in enumerate(zip(layers, inputs, targets, strict=True)):
        xi = xi.detach()
        for k in range(K):
            a = xi @ w + b
            r = (a if kind == "s" else ACTS[net.acts[i]](a)) - t
            step = lr * max(1 - k / K, 0.25)
            w, b = w - step * xi.T @ r, b - step * r.sum(0)
        got_w, got_b = net.layer_views(stack.params[0])[i]
        torch.testing.assert_close(got_w, w, rtol=1e-10, atol=1e-12, msg=f"layer {i}")
        torch.testing.assert_close(got_b, b, rtol=1e-10, atol=1e-12, msg=f"layer {i}")


def test_local_optimizer_state_is_kept_across_batches() -> None:
    x, _ = batch("autoencoder", 64)
    net = perturbed_net("autoencoder")
    h = hyper("locoprop-m", "rmsprop", K=3, gamma=10.0)
    kept, reset = stack_of(net, [h]), stack_of(net, [h])
    for xb in (x[:, :32], x[:, 32:]):
        kept.train_batch(xb, xb, [1e-3])
        reset.buf1.zero_()
        reset.buf2.fill_(1.0)
        reset.train_batch(xb, xb, [1e-3])
    assert kept.step.tolist() == [6.0] and reset.step.tolist() == [6.0]
    moved = (reset.params - net.params).norm()
    assert (kept.params - reset.params).norm() > 0.1 * moved  # momentum and ms carried over


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


def test_quick_space_budget_is_small_and_its_slowest_config_trains() -> None:
    """The quick space's slowest configuration (LocoProp-M, K = 10): 5 epochs of 14 batches,
    each 3 + 2K = 23 matmul passes per layer (about a second on one core; benchmarks/locoprop.py
    times it), and it learns."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "locoprop-quick.yaml").read_text())
    slowest = {k: p["default"] for k, p in spec["params"].items()}
    slowest |= {"method": "locoprop-m", "K": spec["params"]["K"]["high"]}
    cfg = Config.from_dict({**spec["fixed"], **slowest})
    n_train = load().x_train.shape[0]
    assert (cfg.epochs, n_train // cfg.batch_size, 3 + 2 * cfg.K) == (5, 14, 23)
    out = train({**spec["fixed"], **slowest})
    assert out["train_loss"] < 40.0  # the untrained net: about 45


def test_no_import_circle_in_locoprop() -> None:
    """models/locoprop and models/functional_optim import one way, also inside functions."""
    import ast

    root = ROOT / "models"
    files = [*sorted((root / "locoprop").glob("*.py")), root / "functional_optim.py"]
    graph: dict[str, set[str]] = {}
    for f in files:
        name = f.stem if f.parent.name == "locoprop" else f"..{f.stem}"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):  # every import, also inside functions
            if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x / from . import x
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                deps.add(f"..{node.module.split('.')[0]}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for mod in mods:
                    if mod and mod.startswith("models."):
                        parts = mod.split(".")
                        deps.add(parts[2] if parts[1] == "locoprop" and len(parts) > 2 else f"..{parts[1]}")
        graph[name] = deps - {name}

    def reach(start: str, seen: set[str]) -> set[str]:
        for d in graph.get(start, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    for name in graph:
        assert name not in reach(name, set()), f"import circle through models/locoprop/{name}.py"
    assert graph["train"] >= {"population"} and "train" not in reach("population", set())
