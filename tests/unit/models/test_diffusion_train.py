"""The diffusion `train` entry point: reports, pruning, config validation, determinism,
search spaces, the denoiser's fast paths, and the quality claims (digits here, moons slow)."""

from __future__ import annotations

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
from models.diffusion.denoiser import Denoiser, Padding, Shape, denoise, pack
from models.diffusion.train import (
    Config,
    DiffusionPopulation,
    adamw_rows_,
    clip_rows_,
    train,
)
from models.functional_optim import adam_init

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


@pytest.mark.filterwarnings("ignore:grad and param do not obey")
def test_rows_get_each_members_ordinary_gradient() -> None:
    """Backward through the population's loss (3 members of different widths and depths,
    padded, vmapped) writes into each row exactly the gradient of that member's own denoiser
    at its own shape (float64, 1e-12), and zeros into its padded entries (before masking)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        configs = [TINY | {"width": 16, "depth": 2}, TINY | {"width": 24, "depth": 1},
                   TINY | {"width": 8, "depth": 3}]  # fmt: skip
        pop = DiffusionPopulation(TINY, capacity=3, group_overhead=math.inf)
        for seed, c in enumerate(configs):
            pop.add(c, seed)
        (pop,) = pop.groups  # type: ignore[assignment]  # the one padded row group
        for block in range(3):  # leave the zero-initialized identity start
            for i in range(3):
                w = pop._leaves[f"blocks.{block}.fc2.weight"].data[i]
                w.copy_(torch.randn_like(w) * 0.1)
        pop.flat.mul_(pop.grad_mask)  # keep the padding exact
        g = torch.Generator().manual_seed(0)
        xt, t = torch.randn(3, 32, 2, generator=g), torch.randint(0, 20, (3, 32), generator=g)
        target = torch.randn(3, 32, 2, generator=g)
        pop.grad.zero_()
        assert pop._loss is not None
        pop._loss(pop._leaves, xt, t, target, *pop._extras).sum().backward()
        for i, m in enumerate(pop.members):
            own = {k: v.requires_grad_(True) for k, v in pop.own(m).items()}
            out = denoise(own, xt[i], t[i], shape=m.shape, T=20, t_scale=1000.0 / 20)
            F.mse_loss(out, target[i]).backward()
            ref = pack({k: v.grad for k, v in own.items()}, m.shape, pop.shape)
            ref_row = torch.cat([v.reshape(-1) for v in ref.values()])
            torch.testing.assert_close(pop.grad[i], ref_row, rtol=1e-12, atol=1e-14)
    finally:
        torch.set_default_dtype(dtype)


def test_masked_layer_norm_and_bypass_equal_the_member_alone() -> None:
    """A member packed into a wider and deeper shape computes what it computes alone."""
    torch.manual_seed(0)
    net = Denoiser(dim=2, T=10, width=8, depth=1, input_embedding="sinusoidal")
    torch.nn.init.normal_(net.blocks[0].fc2.weight, std=0.1)
    own = {k: v.detach() for k, v in net.named_parameters()}
    big = Shape(2, 20, 3, "sinusoidal")
    pad = Padding(torch.tensor(8.0), (torch.arange(20) < 8).float(), torch.tensor(1))
    x, t = torch.randn(16, 2), torch.randint(0, 10, (16,))
    out = denoise(pack(own, net.shape, big), x, t, shape=big, T=10, t_scale=100.0, pad=pad)
    torch.testing.assert_close(out, net(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_row", [True, False])
def test_adamw_and_clipping_per_row_match_torch(per_row: bool) -> None:
    """adamw_rows_ (per row: torch's fused kernel; all rows: functional_optim.adam_step with
    [K] hyperparameters) and clip_rows_ equal, row by row, torch.optim.AdamW and
    torch.nn.utils.clip_grad_norm_ on each member alone, for 200 steps with per-member
    learning rates (changing), weight decays and clipping norms (0 = off), float64."""
    g = torch.Generator().manual_seed(0)
    k, n = 3, 500
    flat = torch.randn(k, n, generator=g, dtype=torch.float64)
    refs = [torch.nn.Parameter(flat[i].clone()) for i in range(k)]
    lrs, wds, clips = [1e-2, 3e-3, 5e-2], [0.1, 0.0, 0.01], [5.0, 0.0, 0.5]
    opts = [torch.optim.AdamW([r], lr=lr, weight_decay=wd) for r, lr, wd in zip(refs, lrs, wds, strict=True)]
    state = adam_init([flat])
    for step in range(200):
        grad = torch.randn(k, n, generator=g, dtype=torch.float64) * (10 if step % 3 else 0.1)
        scale = 0.5 * (1 + math.cos(math.pi * step / 200))
        for i, r in enumerate(refs):
            r.grad = grad[i].clone()
            if clips[i] > 0:
                torch.nn.utils.clip_grad_norm_([r], clips[i])
            opts[i].param_groups[0]["lr"] = lrs[i] * scale
            opts[i].step()
        clip_rows_(grad, clips)
        rows = list(range(k))
        adamw_rows_(flat, grad, state, rows, [lr * scale for lr in lrs], wds, per_row=per_row)
    for i, r in enumerate(refs):
        torch.testing.assert_close(flat[i], r.detach(), rtol=1e-12, atol=1e-12)
    assert (flat[0] - refs[0].detach()).abs().max() < 1e-12 < (flat[0].abs().mean())


def test_train_step_moves_the_weights_and_the_ema() -> None:
    pop = DiffusionPopulation(TINY, capacity=1)
    pop.add(TINY, 0)
    w0, e0 = pop.weights(0), pop.weights(0, ema=True)
    assert all(torch.equal(w0[k], e0[k]) for k in w0)
    for _ in range(3):
        pop.train_step()
    w, e = pop.weights(0), pop.weights(0, ema=True)
    assert all(not torch.equal(w[k], w0[k]) for k in ("in_proj.weight", "out.2.bias"))
    assert all(not torch.equal(e[k], e0[k]) for k in ("in_proj.weight", "out.2.bias"))
    assert pop.members[0].step == 3


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
