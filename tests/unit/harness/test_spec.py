from __future__ import annotations

import math

import pytest

from harness.spec import SpecError, load_spec, parse_spec, shipped_spaces

BASE = {
    "objective": "branin",
    "metric": {"name": "value", "goal": "minimize"},
    "params": {"x1": {"type": "float", "low": -5.0, "high": 10.0}},
}


def with_params(**params):
    return {**BASE, "params": params}


def test_shipped_spaces_are_valid():
    paths = shipped_spaces()
    assert {p.stem for p in paths} >= {"branin", "hartmann6"}
    for p in paths:
        load_spec(p)


def test_shipped_space_by_name_and_budget_defaults():
    spec = load_spec("branin")
    assert spec.objective == "branin" and spec.budget.trials == 16
    assert set(spec.params) == {"x1", "x2"}
    assert spec.config({"x1": 1.0, "x2": 2.0})["report_every"] == 1


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (with_params(a={"type": "floaty", "low": 0, "high": 1}), "params.a.type: unknown parameter type 'floaty'"),
        (with_params(a={"type": "float", "low": 2, "high": 1}), "params.a: low must be <= high"),
        (with_params(a={"type": "float", "low": 0, "high": 1, "log": True}), "log scale needs low > 0"),
        (with_params(a={"type": "int", "low": -1, "high": 8, "log": True}), "log scale needs low > 0"),
        (with_params(a={"type": "choice", "values": []}), "params.a.values: List should have at least 1 item"),
        (with_params(a={"type": "float", "low": 0, "high": 1, "default": 3}), "default 3.0 is outside"),
        (with_params(a={"type": "float", "low": 0, "high": 1, "when": {"b": "x"}}), "names 'b', which is not a parameter"),
        (with_params(b={"type": "choice", "values": ["x"]}, a={"type": "float", "low": 0, "high": 1, "when": {"b": "y"}}), "'y' is not one of b's values"),
        ({**BASE, "metric": {"name": "v", "goal": "max"}}, "metric.goal"),
        ({**BASE, "budget": {"trials": 0}}, "budget.trials"),
        ({**BASE, "colour": 1}, "colour: Extra inputs are not permitted"),
        ({**BASE, "fixed": {"x1": 1}}, "'x1' is both a parameter and a fixed value"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_bad_specs_name_the_field_and_rule(raw, fragment):
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, source="s.yaml")
    msg = str(exc.value)
    assert msg.startswith("s.yaml: ")
    assert fragment in msg
    assert "\n" not in msg


def test_malformed_yaml_names_file_and_line(write_space):
    path = write_space("objective: branin\nparams: {x: [1, 2\n")
    with pytest.raises(SpecError, match=r"space.yaml: line \d+: malformed YAML"):
        load_spec(path)


def test_unknown_space_lists_shipped():
    with pytest.raises(SpecError, match="no such file, nor a shipped space .*branin"):
        load_spec("no-such-space")


def test_conditional_order_and_active():
    spec = parse_spec(with_params(
        lam={"type": "float", "low": 0.5, "high": 0.99, "when": {"loss": "subtb"}},
        loss={"type": "choice", "values": ["tb", "subtb"]},
        k={"type": "int", "low": 1, "high": 4, "when": {"loss": ["tb", "subtb"]}},
    ))
    order = spec.order()
    assert order.index("loss") < order.index("lam")
    assert spec.active_params({"loss": "tb", "lam": 0.7, "k": 2}) == {"loss": "tb", "k": 2}
    assert spec.active_params({"loss": "subtb", "lam": 0.7, "k": 2}) == {"loss": "subtb", "lam": 0.7, "k": 2}


def test_cycle_is_refused():
    with pytest.raises(SpecError, match="cycle"):
        parse_spec(with_params(
            a={"type": "choice", "values": [1, 2], "when": {"b": 1}},
            b={"type": "choice", "values": [1, 2], "when": {"a": 1}},
        ))


def test_defaults_middle_and_overrides():
    spec = parse_spec({**BASE, "fixed": {"steps": 5}, "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "w": {"type": "int", "low": 10, "high": 20},
        "loss": {"type": "choice", "values": ["tb", "subtb"]},
        "lam": {"type": "float", "low": 0.5, "high": 0.9, "when": {"loss": "subtb"}, "default": 0.6},
        "d": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.25},
    }})
    params, fixed = spec.defaults()
    assert math.isclose(params["lr"], 1e-3)  # geometric middle
    assert params["w"] == 15 and params["loss"] == "tb" and params["d"] == 0.25
    assert "lam" not in params and fixed == {}
    params, fixed = spec.defaults({"loss": "subtb", "steps": 9, "w": 12.0})
    assert params["lam"] == 0.6 and params["w"] == 12 and isinstance(params["w"], int)
    assert fixed == {"steps": 9}
    with pytest.raises(SpecError, match="--set nope: not a parameter or fixed value"):
        spec.defaults({"nope": 1})
    with pytest.raises(SpecError, match=r"--set w=99: must be int in \[10, 20\]"):
        spec.defaults({"w": 99})
    with pytest.raises(SpecError, match="must be one of"):
        spec.defaults({"loss": "fm"})


def test_hash_changes_with_the_spec():
    a = parse_spec(BASE)
    b = parse_spec({**BASE, "budget": {"trials": 3}})
    assert a.hash() == parse_spec(BASE).hash() != b.hash()
