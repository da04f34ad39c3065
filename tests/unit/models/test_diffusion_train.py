"""The diffusion `train` entry point: reports, pruning, config validation, determinism,
search spaces, the denoiser's fast paths, and the quality claims (digits here, moons slow)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from models.diffusion.data import TOYS
from models.diffusion.denoiser import Denoiser
from models.diffusion.train import (
    Config,
    FlatAdamW,
    build,
    clip_grad_norm_,
    flatten_parameters,
    train,
    train_step,
)

ROOT = Path(__file__).resolve().parents[3]
TINY: dict[str, Any] = {
    "n_train": 500, "n_eval": 300, "width": 16, "depth": 1, "T": 20, "sampling_steps": 5,
    "batch_size": 32, "warmup_steps": 2,
}  # fmt: skip
ALL_METRICS = ("swd", "mmd", "energy")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Prune(Exception):
    pass


def test_train_reports_at_the_expected_steps_and_returns_finite_metrics() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    final = train(
        TINY | {"n_steps": 10, "report_every": 4}, report=lambda s, m: calls.append((s, m))
    )
    assert [s for s, _ in calls] == [4, 8, 10]
    for _, m in calls[:-1]:  # intermediate: loss and the primary metric
        assert {"loss", "swd", "swd_ratio"} <= set(m) and all(math.isfinite(v) for v in m.values())
    assert calls[-1][1] == {k: final[k] for k in calls[-1][1]}  # the last report is the result
    for m in ALL_METRICS:
        for key in (m, f"{m}_ratio", f"{m}_floor"):
            assert key in final and math.isfinite(final[key]) and final[key] >= 0, key
    assert final["steps"] == 10.0 and math.isfinite(final["loss"])
    assert all(isinstance(v, float) for v in final.values())


def test_an_exception_raised_by_report_propagates_and_stops_training() -> None:
    calls: list[int] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        calls.append(step)
        raise Prune

    with pytest.raises(Prune):
        train(TINY | {"n_steps": 50, "report_every": 5}, report=report)
    assert calls == [5]


def test_same_seed_same_result_other_seed_other_result() -> None:
    cfg = TINY | {"n_steps": 8, "report_every": 100}
    a, b, c = train(cfg, seed=3), train(cfg, seed=3), train(cfg, seed=4)
    drop = ("train_seconds", "sample_seconds", "total_seconds")
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    assert a["swd"] != c["swd"]


def test_zero_steps_evaluates_the_initialization() -> None:
    calls: list[int] = []
    out = train(TINY | {"n_steps": 0}, report=lambda s, m: calls.append(s))
    assert calls == [0] and out["steps"] == 0.0 and math.isfinite(out["swd_ratio"])


@pytest.mark.parametrize(
    ("extra", "dataset"),
    [
        ({"prediction": "eps", "sampler": "ddpm", "schedule": "linear"}, "moons"),
        ({"prediction": "x0", "sampler": "ddim", "input_embedding": "none"}, "swiss_roll"),
        ({"prediction": "v", "sampler": "ddpm", "sampling_steps": None}, "8gaussians"),
        ({"prediction": "v", "sampler": "ddim", "grad_clip": 0.0}, "checkerboard"),
    ],
)
def test_every_toy_prediction_and_sampler_trains(extra: dict[str, Any], dataset: str) -> None:
    assert dataset in TOYS
    out = train(TINY | extra | {"dataset": dataset, "n_steps": 5})
    assert all(math.isfinite(out[f"{m}_ratio"]) for m in ALL_METRICS)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("T", 0, "T"),
        ("T", "100", "T"),
        ("T", 2.5, "T"),
        ("schedule", "sigmoid", "schedule"),
        ("dataset", "mnist", "dataset"),
        ("sampling_steps", 21, "sampling_steps"),  # > T = 20
        ("sampling_steps", 0, "sampling_steps"),
        ("sampler", "euler", "sampler"),
        ("prediction", "score", "prediction"),
        ("lr", -1e-3, "lr"),
        ("ema_decay", 1.0, "ema_decay"),
        ("width", 0, "width"),
        ("batch_size", True, "batch_size"),
        ("input_embedding", "fourier", "input_embedding"),
        ("bogus", 1, "bogus"),
    ],
)
def test_bad_config_raises_a_value_error_naming_the_field(key: str, value: Any, field: str) -> None:
    with pytest.raises(ValueError, match=rf"diffusion config: .*\b{field}\b"):
        train(TINY | {key: value})


def test_config_accepts_integral_floats_and_takes_defaults() -> None:
    cfg = Config.from_dict({"T": 200.0, "lr": 1, "sampling_steps": None})
    assert cfg.T == 200 and isinstance(cfg.T, int) and cfg.lr == 1.0 and cfg.sampling_steps is None
    assert cfg.width == Config().width


@pytest.mark.parametrize("name", ["diffusion", "diffusion-quick"])
def test_search_spaces_are_valid_configs(name: str) -> None:
    spec = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    assert spec["objective"] == "diffusion"
    assert spec["metric"] == {"name": "swd_ratio", "goal": "minimize"}
    fields = {f.name for f in dataclasses.fields(Config)}
    params = spec["params"]
    assert set(params) | set(spec["fixed"]) <= fields
    assert {
        "lr",
        "width",
        "depth",
        "T",
        "schedule",
        "batch_size",
        "ema_decay",
        "sampler",
        "sampling_steps",
    } <= set(params)
    assert spec["fixed"]["dataset"] == "moons" and spec["fixed"]["n_eval"] >= 5000
    for p in params.values():
        if p["type"] == "choice":
            assert p["default"] in p["values"]
        else:
            assert p["low"] <= p["default"] <= p["high"]
    # every sampled configuration is valid: sampling_steps <= T at the extremes
    assert params["sampling_steps"]["high"] <= params["T"]["low"]
    defaults = {k: p["default"] for k, p in params.items()}
    cfg = Config.from_dict(
        spec["fixed"] | defaults | {"report_every": spec["budget"]["report_every"]}
    )
    if name == "diffusion":  # the defaults are the trainer's own (best-known) defaults
        assert dataclasses.replace(cfg, report_every=Config().report_every) == Config()


def test_denoiser_gathers_time_embeddings_exactly() -> None:
    """With more rows than steps the denoiser embeds all T steps once and gathers rows;
    the result equals embedding each row's step directly, and a shared t [1] broadcasts."""
    torch.manual_seed(0)
    net = Denoiser(dim=2, T=10, width=16, depth=2, input_embedding="sinusoidal")
    for block in net.blocks:  # leave the zero-initialized identity start
        torch.nn.init.normal_(block.fc2.weight, std=0.1)
    x, t = torch.randn(32, 2), torch.randint(0, 10, (32,))
    rows = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(32)])
    torch.testing.assert_close(net(x, t), rows)
    torch.testing.assert_close(net(x, torch.tensor([3])), net(x, torch.full((32,), 3)))
    assert net(x, t).shape == (32, 2)


def test_flat_parameter_buffer_gets_the_ordinary_gradients() -> None:
    torch.manual_seed(0)
    net = Denoiser(dim=2, T=10, width=8, depth=2)
    ref = copy.deepcopy(net)
    flat = flatten_parameters(net, with_grad=True)
    x, t, y = torch.randn(16, 2), torch.randint(0, 10, (16,)), torch.randn(16, 2)
    F.mse_loss(net(x, t), y).backward()
    F.mse_loss(ref(x, t), y).backward()
    torch.testing.assert_close(flat.grad, torch.cat([p.grad.reshape(-1) for p in ref.parameters()]))
    with torch.no_grad():
        flat.add_(1.0)  # the module's parameters are views of the buffer
    torch.testing.assert_close(next(net.parameters()), next(ref.parameters()) + 1)


def test_flat_adamw_and_clipping_match_torch() -> None:
    """FlatAdamW == torch.optim.AdamW step for step (weight decay, a changing lr, bias
    correction); clip_grad_norm_ == torch.nn.utils.clip_grad_norm_."""
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(1000))
    ref = torch.nn.Parameter(ours.detach().clone())
    start = ours.detach().clone()
    opt, ref_opt = (
        FlatAdamW(ours, lr=1e-2, weight_decay=0.1),
        torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.1),
    )
    for step in range(30):
        grad = torch.randn(1000) * (10 if step % 3 == 0 else 0.1)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        clip_grad_norm_(ours.grad, 5.0)
        torch.nn.utils.clip_grad_norm_([ref], 5.0)
        torch.testing.assert_close(ours.grad, ref.grad)
        opt.lr = ref_opt.param_groups[0]["lr"] = 1e-2 * (step + 1) / 30
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ours - start).abs().mean() > 1e-2  # it moved


def test_train_step_moves_the_weights_and_the_ema() -> None:
    state = build(Config.from_dict(TINY))
    w0, e0 = state.flat.detach().clone(), state.ema_flat.clone()
    torch.testing.assert_close(w0, e0)
    for _ in range(3):
        train_step(state)
    assert not torch.equal(state.flat.detach(), w0) and not torch.equal(state.ema_flat, e0)
    assert state.step == 3


def _quick_config(dataset: str) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "search_spaces" / "diffusion-quick.yaml").read_text())
    defaults = {k: p["default"] for k, p in spec["params"].items()}
    return (
        spec["fixed"]
        | defaults
        | {"dataset": dataset, "report_every": spec["budget"]["report_every"]}
    )


def test_digits_metric_halves_within_the_quick_budget(tmp_path: Path) -> None:
    """Digits with the quick space's defaults and budget (400 steps): the SWD ratio to the
    noise floor on the 599 held-out images falls to at most half of its value at
    initialization (measured: ~14 -> ~3); the sample grid is written as a PNG."""
    cfg = _quick_config("digits")
    init = train(cfg | {"n_steps": 0})
    out = train(cfg, artifact_dir=str(tmp_path))
    assert out["swd_ratio"] <= 0.5 * init["swd_ratio"], (init["swd_ratio"], out["swd_ratio"])
    png = (tmp_path / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_moons_default_config_reaches_swd_ratio_2_in_under_a_minute() -> None:
    """The issue's claim: the default configuration (3,000 steps, width 64, v-prediction,
    DDIM 50 steps) trains on this CPU in under a minute and reaches swd_ratio <= 2."""
    out = train({})
    assert out["swd_ratio"] <= 2.0, out
    assert out["train_seconds"] < 60.0, out
