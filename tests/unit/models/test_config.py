"""models/config.py: the one way the trainers build their dataclass Config from a mapping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from models.config import config_from_mapping


@dataclass
class Cfg:
    n: int = 1
    rate: float = 0.5
    name: str = "a"
    flag: bool = False
    steps: int | None = None
    beta: float | None = None
    derived: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"toy config: n must be >= 0, got {self.n}")


def build(**values: Any) -> Cfg:
    return config_from_mapping(Cfg, values, "toy")


def test_empty_mapping_takes_the_defaults() -> None:
    assert build() == Cfg()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("n", 3, 3),
        ("n", 256.0, 256),  # a tuner's float for an int parameter
        ("n", np.int64(7), 7),
        ("n", np.float32(4.0), 4),
        ("n", 10**400, 10**400),  # no detour through float
        ("rate", 1, 1.0),
        ("rate", np.float64(0.25), 0.25),
        ("rate", np.int32(2), 2.0),
        ("rate", Fraction(1, 4), 0.25),
        ("rate", float("inf"), float("inf")),  # range rules belong to each Config
        ("name", "b", "b"),
        ("name", np.str_("c"), "c"),
        ("flag", True, True),
        ("flag", np.bool_(True), True),
        ("steps", None, None),
        ("steps", 5.0, 5),
        ("beta", None, None),
        ("beta", 1, 1.0),
    ],
)
def test_values_are_coerced_to_the_annotated_type(field: str, value: Any, expected: Any) -> None:
    got = getattr(build(**{field: value}), field)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("n", 2.5, "an integer"),
        ("n", float("nan"), "an integer"),
        ("n", float("inf"), "an integer"),
        ("n", "3", "an integer"),
        ("n", True, "an integer"),  # a bool is never a count
        ("n", np.bool_(False), "an integer"),
        ("n", None, "an integer"),
        ("rate", False, "a number"),
        ("rate", "fast", "a number"),
        ("rate", [0.1], "a number"),
        ("name", 3, "a string"),
        ("name", None, "a string"),
        ("flag", 1, "a bool"),
        ("flag", "true", "a bool"),
        ("steps", 2.5, "an integer or null"),
        ("beta", "x", "a number or null"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field_rule_and_value(
    field: str, value: Any, rule: str
) -> None:
    with pytest.raises(ValueError) as info:
        build(**{field: value})
    message = str(info.value)
    assert message == f"toy config: {field} must be {rule}, got {value!r}"
    assert "\n" not in message


def test_an_unknown_key_names_the_key_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^toy config: unknown key 'nn'; known: \[") as info:
        build(nn=1)
    assert "'n'" in str(info.value) and "'beta'" in str(info.value)
    with pytest.raises(ValueError, match="unknown key 'derived'"):  # init=False is not settable
        build(derived=1)


def test_dataclass_checks_still_run_and_keep_their_message() -> None:
    with pytest.raises(ValueError, match=r"^toy config: n must be >= 0, got -1$"):
        build(n=-1.0)


def test_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ValueError, match="toy config: must be a mapping"):
        config_from_mapping(Cfg, [("n", 1)], "toy")  # type: ignore[arg-type]


def test_an_unsupported_annotation_is_a_programming_error() -> None:
    @dataclass
    class Odd:
        xs: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="unsupported field annotation"):
        config_from_mapping(Odd, {"xs": [1]}, "odd")


@pytest.mark.parametrize("trainer", ["gflownet", "diffusion", "locoprop"])
def test_every_trainer_uses_it(trainer: str) -> None:
    """The three trainers share its rules and its messages."""
    import importlib

    Config = importlib.import_module(f"models.{trainer}.train").Config
    with pytest.raises(ValueError, match=rf"^{trainer} config: unknown key 'bogus'; known: \["):
        Config.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match=rf"^{trainer} config: batch_size must be an integer, got 2\.5$"):
        Config.from_dict({"batch_size": 2.5})
    with pytest.raises(ValueError, match=rf"^{trainer} config: lr must be a number, got True$"):
        Config.from_dict({"lr": True})
    assert Config.from_dict({"batch_size": 128.0}).batch_size == 128
