"""SpecError lines built from pydantic's ValidationError: a union's errors are one line naming
the rule, never the first member's complaint ("values.0.bool: Input should be a valid boolean")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.spec import SpecError, load_spec, parse_spec

BASE = {"objective": "branin", "metric": {"name": "value", "goal": "minimize"}}
SCALAR = "a scalar (bool, int, float or string)"


def with_params(**params):
    return {**BASE, "params": params}


def message(raw) -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, source="space.yaml")
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_nested_list_in_choice_values_names_the_rule_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(with_params(loss={"type": "choice", "values": [[1, 2], 3]})))
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value) == f"{path}: params.loss.values: each value must be {SCALAR}, got [1, 2]"


@pytest.mark.parametrize(
    ("params", "line"),
    [
        ({"k": {"type": "choice", "values": ["a", {"b": 1}]}},
         f"params.k.values: each value must be {SCALAR}, got {{'b': 1}}"),
        ({"k": {"type": "choice", "values": ["a"], "default": [1]}},
         f"params.k.default: must be {SCALAR}, got [1]"),
        ({"k": {"type": "choice", "values": ["a"]},
          "x": {"type": "float", "low": 0, "high": 1, "when": {"k": [["a"]]}}},
         f"params.x.when.k: must be {SCALAR} or a list of scalars, got [['a']]"),
        ({"k": {"type": "choice", "values": ["a"]},
          "x": {"type": "float", "low": 0, "high": 1, "when": {"k": {"a": 1}}}},
         f"params.x.when.k: must be {SCALAR} or a list of scalars, got {{'a': 1}}"),
    ],
)
def test_union_errors_are_one_line_naming_the_rule(params, line) -> None:
    text = message(with_params(**params))
    assert text == f"space.yaml: {line}"
    assert "Input should be" not in text


def test_a_long_value_is_shortened() -> None:
    text = message(with_params(k={"type": "choice", "values": [list(range(100))]}))
    assert text.startswith(f"space.yaml: params.k.values: each value must be {SCALAR}, got [0, 1, 2")
    assert text.endswith("...") and len(text) < 160


@pytest.mark.parametrize(
    ("params", "line"),
    [
        # the tag of the parameter's type is dropped, a parameter *named* like a type is kept
        ({"x": {"type": "float", "low": "a", "high": 1}},
         "params.x.low: Input should be a valid number, unable to parse string as a number"),
        ({"int": {"type": "int", "low": "a", "high": 1}},
         "params.int.low: Input should be a valid integer, unable to parse string as an integer"),
        ({"float": {"type": "choice", "values": ["a", ["b"]]}},
         f"params.float.values: each value must be {SCALAR}, got ['b']"),
        ({"x": {"type": "float", "high": 1}}, "params.x.low: Field required"),
        ({"x": {"type": "float", "low": 0, "high": 1, "float": 2}},
         "params.x.float: Extra inputs are not permitted"),
        ({"x": {"type": "choice", "values": ["a", "a"]}},
         "params.x: values must be distinct, got ['a', 'a']"),
    ],
)
def test_other_errors_keep_pydantics_message_at_the_users_path(params, line) -> None:
    assert message(with_params(**params)) == f"space.yaml: {line}"


def test_errors_outside_params_are_unchanged() -> None:
    assert message({**BASE, "budget": {"trials": [1]}}) == (
        "space.yaml: budget.trials: Input should be a valid integer"
    )
    assert message({**BASE, "metric": {"name": 3}}) == (
        "space.yaml: metric.name: Input should be a valid string"
    )
