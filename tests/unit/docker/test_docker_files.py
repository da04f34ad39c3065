"""docker/: the worker image and the compose file, parsed and validated by real parsers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import ROOT

DOCKER = ROOT / "docker"


def test_dockerfile_is_a_cuda_image_run_as_non_root():
    parser = DockerfileParser(path=str(DOCKER / "Dockerfile"))
    assert parser.baseimage.startswith("nvidia/cuda:") and "runtime" in parser.baseimage
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    runs = [v for k, v in instructions if k == "RUN"]
    torch_at = next(i for i, v in enumerate(runs) if "TORCH_SPEC" in v)
    project_at = next(i for i, v in enumerate(runs) if "pip install -e" in v)
    assert torch_at < project_at, "torch (a chosen CUDA build) is installed before the project"
    copied = " ".join(v for k, v in instructions if k == "COPY")
    for path in ("pyproject.toml", "harness", "models", "search_spaces"):
        assert path in copied
    assert any(k == "ENTRYPOINT" and "harness" in v for k, v in instructions)


def compose_config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run installs it (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    out = subprocess.run([exe, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "POSTGRES_PASSWORD": "pw", "RAY_AUTH_TOKEN": TOKEN})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


TOKEN = "0123456789abcdef0123456789abcdef"


def test_compose_validates_and_binds_loopback_by_default():
    cfg = compose_config()
    services = cfg["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "sweep"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    gpus = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["driver"] == "nvidia" and "gpu" in gpus["capabilities"]
    assert services["mlflow"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "postgresql://" in " ".join(services["mlflow"]["command"])
    for name in ("ray-head", "ray-worker", "sweep"):  # one cluster, one token, auth on
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == TOKEN, name


def test_compose_refuses_to_start_ray_without_a_token():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    out = subprocess.run([exe, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode != 0 and "RAY_AUTH_TOKEN" in out.stderr


def test_compose_opt_out_of_loopback():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed")
    out = subprocess.run([exe, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "HARNESS_BIND": "0.0.0.0", "RAY_AUTH_TOKEN": TOKEN})
    assert out.returncode == 0, out.stderr
    assert "0.0.0.0:5000:5000" in out.stdout
