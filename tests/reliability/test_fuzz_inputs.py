"""Fuzzing the front door: malformed spaces and bad CLI arguments always give exit 2 and one
line on stderr, never a traceback, never an MLflow run or a sweep state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.spec import SpecError, parse_spec

VALID = {
    "objective": "branin",
    "metric": {"name": "value", "goal": "minimize"},
    "fixed": {"steps": 2},
    "params": {
        "x1": {"type": "float", "low": -5.0, "high": 10.0},
        "x2": {"type": "float", "low": 0.0, "high": 15.0, "log": False},
        "k": {"type": "choice", "values": ["a", "b"]},
        "n": {"type": "int", "low": 1, "high": 4, "when": {"k": "a"}},
    },
    "budget": {"trials": 2},
}

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def broken_specs(draw) -> str:
    """A YAML text: the valid spec with one to three fields broken, or arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "metric", "param", "budget"]))
        if where == "top":
            key = draw(st.sampled_from(["objective", "metric", "params", "budget", "fixed", "extra"]))
            if draw(st.booleans()):
                spec.pop(key, None)
            else:
                spec[key] = draw(junk)
        elif where == "metric" and isinstance(spec.get("metric"), dict):
            spec["metric"][draw(st.sampled_from(["name", "goal", "other"]))] = draw(junk)
        elif where == "param" and isinstance(spec.get("params"), dict) and spec["params"]:
            name = draw(st.sampled_from(sorted(spec["params"])))
            field = draw(st.sampled_from(["type", "low", "high", "log", "values", "when", "default", "nope"]))
            if isinstance(spec["params"][name], dict):
                spec["params"][name][field] = draw(junk)
        elif where == "budget" and isinstance(spec.get("budget"), dict):
            spec["budget"][draw(st.sampled_from(["trials", "report_every", "timeout", "x"]))] = draw(junk)
    return yaml.safe_dump(spec)


def run_cli(capsys, argv: list[str], folder: Path) -> tuple[int, str]:
    capsys.readouterr()
    old = os.getcwd()
    os.chdir(folder)
    try:
        code = main(argv)
    finally:
        os.chdir(old)
    return code, capsys.readouterr().err


def check_rejected(code: int, err: str, folder: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not (folder / "mlflow.db").exists() and not (folder / ".harness").exists()


def is_invalid(text: str) -> bool:
    try:
        parse_spec(yaml.safe_load(text))
    except (SpecError, yaml.YAMLError):
        return True
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=broken_specs())
def test_malformed_spaces_exit_2_with_one_line(capsys, text):
    assume(is_invalid(text))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(text)
        code, err = run_cli(capsys, ["sweep", "space.yaml", "--devices", "cpu"], folder)
        check_rejected(code, err, folder)


bad_options = st.one_of(
    st.tuples(st.just("--workers"), st.integers(-5, 0).map(str)),
    st.tuples(st.just("--trials"), st.integers(-5, 0).map(str)),
    st.tuples(st.just("--trials"), st.text(alphabet="xyz.-", min_size=1, max_size=5)),
    st.tuples(st.just("--devices"), st.text(alphabet="gpu:;/ ", min_size=1, max_size=6)),
    st.tuples(st.just("--tuner"), st.text(alphabet="qwxz", min_size=1, max_size=6)),
    st.tuples(st.just("--sampler"), st.text(alphabet="qwxz", min_size=1, max_size=6)),
    st.tuples(st.just("--pruner"), st.text(alphabet="qwxz", min_size=1, max_size=6)),
    st.tuples(st.just("--timeout"), st.floats(-100, 0).map(str)),
    st.tuples(st.just("--trials-per-device"), st.integers(-3, 0).map(str)),
    st.tuples(st.sampled_from(["--nope", "--seedz", "-q"]), st.just("1")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=bad_options, command=st.sampled_from(["sweep", "trial"]))
def test_bad_arguments_exit_2_with_one_line(capsys, option, command):
    flag, value = option
    trial_flags = {"--nope", "--seedz", "-q", "--devices"}
    assume(command == "sweep" or flag in trial_flags)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(yaml.safe_dump(VALID))
        code, err = run_cli(capsys, [command, "space.yaml", flag, value], folder)
        check_rejected(code, err, folder)
