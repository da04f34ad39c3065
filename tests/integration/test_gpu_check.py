"""benchmarks/gpu_check.sh on this machine's CPU path: it says there is no CUDA and exits 0."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, harness_env


@pytest.mark.slow  # about 80 s: three sweeps; make test-slow
def test_gpu_check_cpu_path():
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--spaces", "locoprop-quick", "--trials", "2", "--ks", "1,2"],
        cwd=ROOT, env=harness_env(), capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "no CUDA device here" in out
    assert "(a) 2 trials ran on ['cpu']: OK" in out
    lines = out.splitlines()
    # the header's two-word columns ('x K=1', 'trial s', ...) are one cell each in the rows
    header = next(line for line in lines if line.startswith("space"))
    cells = header.replace("x K=1", "x_K=1").replace("trial s", "trial_s").replace(
        "slots busy", "slots_busy").replace("peak MB/trial", "peak_MB/trial").replace(
        "GPU util %", "GPU_util_%").replace("GPU mem MB", "GPU_mem_MB").split()
    rows = [dict(zip(cells, line.split(), strict=True)) for line in lines
            if line.startswith("locoprop-quick")]
    assert [row["K"] for row in rows] == ["1", "2"]
    assert all(row["failed"] == "0" for row in rows), rows
    assert all(float(row["trials/min"]) > 0 and 0 < float(row["slots_busy"]) <= 1.0 for row in rows), rows
    assert out.rstrip().endswith("OK")
