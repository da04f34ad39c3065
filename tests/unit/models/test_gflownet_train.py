"""The ``train`` entry point: reports, pruning, config validation, determinism, search spaces."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from models.gflownet.train import Config, train

ROOT = Path(__file__).resolve().parents[3]
TINY = {"ndim": 2, "height": 4, "hidden": 32, "batch_size": 16, "n_eval_samples": 1000}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is faster, and kinder to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Prune(Exception):
    pass


def test_train_reports_at_the_expected_steps_and_returns_finite_metrics() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    final = train(TINY | {"n_iterations": 10, "report_every": 3}, report=lambda s, m: calls.append((s, m)))
    assert [s for s, _ in calls] == [3, 6, 9, 10]
    for key in ("loss", "l1", "logz_error", "modes_found", "trajectories", "l1_sampled"):
        assert key in final and math.isfinite(final[key]), key
        assert all(key in m for _, m in calls)
    assert all(isinstance(v, float) for v in final.values())
    assert calls[-1][1]["trajectories"] == 160.0
    assert 0.0 <= final["l1"] <= 2.0
    assert final["modes_total"] == 0.0  # H = 4 has no top band
    assert final["logz_true"] == pytest.approx(math.log(16 * 0.1 + 4 * 0.5), abs=1e-12)


def test_an_exception_raised_by_report_propagates() -> None:
    steps: list[int] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        steps.append(step)
        if step >= 4:
            raise Prune

    with pytest.raises(Prune):
        train(TINY | {"n_iterations": 50, "report_every": 2}, report=report)
    assert steps == [2, 4]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"height": 1}, "height"),
        ({"ndim": 0}, "ndim"),
        ({"r0": 0.0}, "r0"),
        ({"r0": -1.0}, "r0"),
        ({"loss": "kl"}, "loss"),
        ({"backward_policy": "random"}, "backward_policy"),
        ({"activation": "swish"}, "activation"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"temperature": 0.0}, "temperature"),
        ({"lr": 0.0}, "lr"),
        ({"hidden": 2.5}, "hidden"),
        ({"batch_size": "many"}, "batch_size"),
        ({"replay_size": 3}, "replay_size"),
        ({"height": 64, "ndim": 4}, "height"),
        ({"learning_rate": 1e-3}, "learning_rate"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"gflownet config: .*{field}"):
        train(TINY | change)


def test_config_coerces_tuner_values() -> None:
    cfg = Config.from_dict({"hidden": 64.0, "lr": 1, "depth": 3})
    assert (cfg.hidden, cfg.lr, cfg.depth) == (64, 1.0, 3)
    assert isinstance(cfg.hidden, int) and isinstance(cfg.lr, float)
    assert Config.from_dict({"batch_size": 16, "n_trajectories": 100}).iterations == 7
    assert Config.from_dict({"n_iterations": 5}).iterations == 5


def test_same_seed_same_result_other_seed_differs() -> None:
    cfg = TINY | {"n_iterations": 8, "report_every": 8, "epsilon": 0.1}
    a, b, c = train(cfg, seed=3), train(cfg, seed=3), train(cfg, seed=4)
    assert a == b
    assert a["l1"] != c["l1"]


def test_report_frequency_does_not_change_training() -> None:
    cfg = TINY | {"n_iterations": 12}
    assert train(cfg | {"report_every": 12})["l1"] == train(cfg | {"report_every": 5})["l1"]


@pytest.mark.parametrize(
    "extra",
    [
        {"loss": "tb"},
        {"loss": "db", "backward_policy": "learned"},
        {"loss": "subtb", "lambda_": 0.5},
        {"loss": "fm"},
        {"loss": "tb", "replay_size": 64, "epsilon": 0.2, "temperature": 1.5},
        {"loss": "subtb", "ndim": 3, "height": 3, "activation": "elu", "depth": 1},
    ],
)
def test_every_loss_and_option_trains(extra: dict) -> None:
    metrics = train(TINY | {"n_iterations": 6, "report_every": 3} | extra)
    assert all(math.isfinite(v) for v in metrics.values())


def test_tb_learns_a_small_grid() -> None:
    """A few seconds of TB on 5x5 beat the uniform policy by far and find log Z."""
    metrics = train({"ndim": 2, "height": 5, "hidden": 64, "batch_size": 32, "lr": 3e-3,
                     "n_iterations": 150, "report_every": 150, "n_eval_samples": 0})
    assert metrics["l1"] < 0.05  # the uniform policy scores about 1
    assert metrics["logz_error"] < 0.02
    assert "l1_sampled" not in metrics


def test_artifact_dir_gets_a_png(tmp_path: Path) -> None:
    train(TINY | {"n_iterations": 2}, artifact_dir=str(tmp_path))
    assert (tmp_path / "distribution.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["gflownet", "gflownet-quick"])
def test_search_spaces_are_valid_configs(name: str) -> None:
    spec = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    assert spec["objective"] == "gflownet"
    assert spec["metric"] == {"name": "l1", "goal": "minimize"}
    defaults = {k: p["default"] for k, p in spec["params"].items()}
    Config.from_dict(spec["fixed"] | defaults)  # every key known, every default valid
    assert spec["params"]["lambda_"]["when"] == {"loss": "subtb"}
    assert set(spec["params"]["loss"]["values"]) == {"tb", "db", "subtb", "fm"}


def test_quick_search_space_trains() -> None:
    spec = yaml.safe_load((ROOT / "search_spaces" / "gflownet-quick.yaml").read_text())
    config = spec["fixed"] | {k: p["default"] for k, p in spec["params"].items() if "when" not in p}
    steps: list[int] = []
    metrics = train(config | {"report_every": spec["budget"]["report_every"]},
                    report=lambda step, _: steps.append(step))
    assert steps[-1] == 25 and len(steps) == 5  # 3200 trajectories in batches of 128
    assert metrics["l1"] < 1.2  # the uniform policy scores 1.40


def plain_loop(config: dict, seed: int) -> list[dict[str, float]]:
    """An independent reference: one ``PolicyMLP`` module run on the rows, ``torch.optim.Adam``
    with two parameter groups, the module's own sampler; its reports (l1, logz, loss)."""
    from models.gflownet.env import Hypergrid
    from models.gflownet.metrics import evaluate, policy_outputs
    from models.gflownet.nets import PolicyMLP
    from models.gflownet.sampling import sample_trajectories
    from models.gflownet.train import batch_loss

    cfg = Config.from_dict(config)
    torch.manual_seed(seed)
    policy = PolicyMLP(cfg.ndim, cfg.height, cfg.hidden, cfg.depth, cfg.activation)
    env = Hypergrid(cfg.ndim, cfg.height, cfg.r0, cfg.r1, cfg.r2)
    opt = torch.optim.Adam([{"params": list(policy.mlp.parameters()), "lr": cfg.lr},
                            {"params": [policy.log_z], "lr": cfg.logz_lr}])
    gen, eval_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    visits = torch.zeros(env.n_states, dtype=torch.long)
    reports, total = [], 0.0
    for it in range(1, cfg.iterations + 1):
        traj = sample_trajectories(env, policy, cfg.batch_size, gen, epsilon=cfg.epsilon,
                                   temperature=cfg.temperature)
        visits.index_add_(0, traj.terminal, torch.ones_like(traj.terminal))
        loss = batch_loss(cfg, env, policy, traj)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach())
        if it % cfg.report_every == 0:
            m = evaluate(env, policy_outputs(policy, env), float(policy.log_z.detach()), cfg.loss == "fm",
                         visits, eval_gen, cfg.n_eval_samples)
            reports.append(m | {"loss": total / cfg.report_every})
            total = 0.0
    return reports


@pytest.mark.parametrize("extra", [{"loss": "tb"}, {"loss": "db", "backward_policy": "learned"},
                                   {"loss": "subtb", "depth": 3, "epsilon": 0.1},
                                   {"loss": "fm", "temperature": 1.5, "depth": 1}])
@pytest.mark.parametrize(("ndim", "height", "table"), [(2, 4, True), (3, 8, False)])
def test_train_equals_a_plain_module_and_torch_adam_in_float64(
    extra: dict, ndim: int, height: int, table: bool
) -> None:
    """train() (stacked parameters, functional Adam; the grid table where 4x4's 16 states are
    fewer than a batch's 16 x 7 rows, the rows on 8^3) against the plain loop."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        config = TINY | {"ndim": ndim, "height": height, "n_iterations": 8, "report_every": 4} | extra
        assert Config.from_dict(config).uses_table == table
        calls: list[dict[str, float]] = []
        train(config, seed=5, report=lambda s, m: calls.append(m))
        reference = plain_loop(config, seed=5)
    finally:
        torch.set_default_dtype(dtype)
    assert len(calls) == len(reference) == 2
    for mine, theirs in zip(calls, reference, strict=True):
        for key in ("l1", "logz", "loss", "l1_sampled", "modes_found"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-10, abs=1e-13), key
