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
    rows = [line for line in out.splitlines() if line.startswith("locoprop-quick")]
    assert [row.split()[1] for row in rows] == ["1", "2"]
    assert all(row.split()[4] == "0" for row in rows), "no trial failed"
    assert out.rstrip().endswith("OK")
