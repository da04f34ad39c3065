"""Every trainer honours ``device``: run on CPU, every tensor any op produces lives there.

On this CPU-only machine the dispatch-level recorder catches tensors created on another
device (a hard-coded ``cuda`` would also crash here); benchmarks/gpu_check.sh confirms the CUDA
side on a GPU machine. A static check keeps hard-coded device names out of models/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.objective import load_objective
from harness.spec import load_spec

MODELS = Path(__file__).resolve().parents[3] / "models"

# the quick spaces' defaults with the smallest budgets that still run every code path
TINY = {
    "gflownet": {"n_trajectories": 64, "batch_size": 16, "n_eval_samples": 100, "report_every": 2},
    "diffusion": {"n_steps": 4, "n_eval": 200, "n_train": 256, "batch_size": 64, "sampling_steps": 3,
                  "n_projections": 16, "report_every": 2},
    "locoprop": {"epochs": 2, "warmup_epochs": 1, "batch_size": 700, "report_every": 1},
}


class DeviceRecorder(TorchDispatchMode):
    """Records the device type of every tensor that an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device.type)
        return out


@pytest.mark.parametrize("name", sorted(TINY))
def test_trainer_runs_on_the_given_device(name):
    spec = load_spec(f"{name}-quick")
    params, _ = spec.defaults()
    config = {**spec.config(params), **TINY[name]}
    reports: list[int] = []
    with DeviceRecorder() as rec:
        out = load_objective(name)(config, device="cpu", seed=0, report=lambda s, m: reports.append(s))
    assert rec.devices == {"cpu"}, f"{name} made tensors on {rec.devices}"
    assert reports, "it reported"
    assert spec.metric.name in out


def test_no_hard_coded_device_in_models():
    offenders = []
    for path in MODELS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("cuda"):
                offenders.append(f"{path.relative_to(MODELS)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "cuda" and isinstance(node.ctx, ast.Load):
                parent_call = node  # .cuda() on a tensor or module; torch.cuda.* utilities are fine
                if not (isinstance(parent_call.value, ast.Name) and parent_call.value.id == "torch"):
                    offenders.append(f"{path.relative_to(MODELS)}:{node.lineno}")
    assert not offenders, f"hard-coded CUDA in models/: {offenders}"


class SyncCounter(TorchDispatchMode):
    """Counts the ops that make a GPU wait for the host: a value read on the host (``.item()``,
    ``bool(t)``) or a copy from the device to the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        self.devices.update(t.device.type for t in outs)
        if func.overloadpacket is torch.ops.aten._local_scalar_dense:
            self.syncs += 1
        elif func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
            ins = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
            if any(t.device.type == "cuda" for t in ins) and any(t.device.type == "cpu" for t in outs):
                self.syncs += 1
        return out


# (key, small, large, training steps added by large): a run with more steps and one report
LONGER = {
    "gflownet": ("n_trajectories", 64, 192, 8),  # batches of 16
    "diffusion": ("n_steps", 4, 24, 20),
    "locoprop": ("epochs", 2, 4, 2 * 3),  # 3 batches of 700 of the digits' training images
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it on a GPU)")
@pytest.mark.parametrize("name", sorted(TINY))
def test_on_cuda_training_steps_do_not_synchronize(name):
    """Every trainer on CUDA: tensors on the GPU, and the host waits for the GPU per report and
    evaluation, not per training step (more steps with the same reports add no syncs)."""
    spec = load_spec(f"{name}-quick")
    params, _ = spec.defaults()
    key, small, large, added = LONGER[name]
    syncs = []
    for value in (small, large):
        config = {**spec.config(params), **TINY[name], key: value, "report_every": 10_000}
        with SyncCounter() as rec:
            out = load_objective(name)(config, device="cuda", seed=0, report=lambda s, m: None)
        assert "cuda" in rec.devices and spec.metric.name in out
        syncs.append(rec.syncs)
    assert syncs[1] - syncs[0] <= added // 4, f"{name}: {syncs} syncs for {small} vs {large} ({added} more steps)"
