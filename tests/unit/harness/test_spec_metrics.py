"""The spec's ``metrics:`` list (issue 17): one form or the other, references, stable hashes."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.spec import Metric, SpecError, SweepSpec, load_spec, parse_spec

PARAMS = {"x0": {"type": "float", "low": 0.0, "high": 1.0}}
SINGLE = {"objective": "branin", "metric": {"name": "value", "goal": "minimize"}, "params": PARAMS,
          "budget": {"trials": 4, "report_every": 1}}
TWO = [{"name": "branin", "goal": "minimize"}, {"name": "currin", "goal": "maximize"}]


def multi(metrics=None, **extra):
    raw = {k: v for k, v in SINGLE.items() if k != "metric"}
    raw["metrics"] = TWO if metrics is None else metrics
    raw.update(extra)
    return raw


def test_single_metric_is_a_list_of_one():
    spec = parse_spec(SINGLE)
    assert spec.metrics == [Metric(name="value", goal="minimize")]
    assert spec.metric is spec.metrics[0] and not spec.multi
    assert spec.metric.better(1.0, 2.0) and spec.reference_point is None


def test_single_metric_hash_and_yaml_are_unchanged():
    # Pinned from the spec code before `metrics:` existed (commit a845405): a saved spec's hash
    # must not move, or resume would refuse every sweep saved before this change.
    spec = parse_spec(SINGLE)
    assert spec.hash() == "575e2b9e0996408f"
    assert load_spec("branin").hash() == "d2ae147ce9824c64"
    text = spec.to_yaml()
    assert "metric:\n  name: value\n  goal: minimize\n" in text and "metrics" not in text
    assert "reference" not in text
    assert parse_spec(yaml.safe_load(text)).hash() == spec.hash()


def test_metrics_list_of_one_hashes_like_metric():
    raw = multi(metrics=[{"name": "value", "goal": "minimize"}])
    assert parse_spec(raw).hash() == parse_spec(SINGLE).hash()


def test_metrics_list():
    spec = parse_spec(multi())
    assert spec.multi and [m.name for m in spec.metrics] == ["branin", "currin"]
    assert spec.metric.name == "branin" and spec.metric.goal == "minimize"
    assert spec.metrics[1].better(2.0, 1.0)  # currin is maximized
    assert spec.hash() != parse_spec(SINGLE).hash()
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec and again.hash() == spec.hash()


def test_seconds_and_steps_are_metric_names():
    spec = parse_spec(multi(metrics=[{"name": "value"}, {"name": "seconds"}, {"name": "steps"}]))
    assert [m.name for m in spec.metrics] == ["value", "seconds", "steps"]
    assert all(m.goal == "minimize" for m in spec.metrics)


def test_reference_on_metrics_and_as_mapping_agree():
    inline = parse_spec(multi(metrics=[{**TWO[0], "reference": 18.0}, {**TWO[1], "reference": 6.0}]))
    mapping = parse_spec(multi(reference_point={"branin": 18.0, "currin": 6}))
    both = parse_spec(multi(metrics=[{**TWO[0], "reference": 18.0}, TWO[1]], reference_point={"currin": 6.0}))
    for spec in (inline, mapping, both):
        assert spec.reference_point == {"branin": 18.0, "currin": 6.0}
        assert [m.reference for m in spec.metrics] == [18.0, 6.0]
    assert inline == mapping == both and inline.hash() == mapping.hash() == both.hash()
    # the mapping is folded into the metrics: to_yaml writes it once, and it round-trips
    text = mapping.to_yaml()
    assert "reference_point" not in text and "reference: 18.0" in text
    assert parse_spec(yaml.safe_load(text)).hash() == mapping.hash()


def test_single_metric_with_reference_keeps_it():
    spec = parse_spec(multi(metrics=[{"name": "value", "reference": 3.0}]))
    assert not spec.multi and spec.reference_point == {"value": 3.0}
    assert spec.hash() != parse_spec(SINGLE).hash() and "reference: 3.0" in spec.to_yaml()


def test_constructed_in_code_with_metric():
    spec = SweepSpec(objective="branin", metric=Metric(name="value"), params=PARAMS)
    assert spec.metric.name == "value" and spec.hash() == parse_spec({**SINGLE, "budget": {}}).hash()


def test_shipped_branin_currin_space():
    spec = load_spec("branin-currin")
    assert spec.objective == "branin_currin" and spec.multi
    assert [(m.name, m.goal) for m in spec.metrics] == [("branin", "minimize"), ("currin", "minimize")]
    assert spec.reference_point == {"branin": 18.0, "currin": 6.0}
    assert set(spec.params) == {"x0", "x1"} and spec.budget.trials == 40


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({**SINGLE, "metrics": TWO}, "give 'metric' (one) or 'metrics' (a list), not both"),
        ({k: v for k, v in SINGLE.items() if k != "metric"}, "metric (or metrics, a list of {name, goal}) is required"),
        (multi(metrics=[]), "metrics: List should have at least 1 item"),
        (multi(metrics=[TWO[0], {**TWO[1], "name": "branin"}]), "'branin' is listed twice"),
        (multi(metrics=[TWO[0], {**TWO[1], "goal": "max"}]), "metrics.1.goal"),
        ({**SINGLE, "metric": {"name": "v", "goal": "max"}}, "s.yaml: metric.goal: "),
        ({**SINGLE, "metric": None}, "s.yaml: metric: "),
        (multi(reference_point={"branin": 1.0, "nope": 2.0}), "reference_point: 'nope' is not a metric"),
        (multi(reference_point={"branin": 1.0}), "every metric or for none (missing: currin)"),
        (multi(metrics=[{**TWO[0], "reference": 1.0}, TWO[1]]), "every metric or for none (missing: currin)"),
        (multi(metrics=[{**TWO[0], "reference": 1.0}, TWO[1]], reference_point={"branin": 2.0, "currin": 0.0}),
         "reference_point: 'branin' is 2.0 but the metric's reference is 1.0"),
        (multi(reference_point={"branin": float("nan"), "currin": 0.0}), "reference_point.branin"),
        (multi(reference_point=[18.0, 6.0]), "reference_point: "),
        (multi(metrics=[{**TWO[0], "reference": "far"}, TWO[1]]), "metrics.0.reference"),
    ],
)
def test_bad_metrics_name_the_rule_in_one_line(raw, fragment):
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, source="s.yaml")
    msg = str(exc.value)
    assert msg.startswith("s.yaml: ") and fragment in msg, msg
    assert "\n" not in msg


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=6),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_broken_metrics_fail_in_one_line(data):
    raw = multi(metrics=[dict(m) for m in TWO], reference_point={"branin": 18.0, "currin": 6.0})
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["metrics", "entry", "reference_point", "metric"]))
        if where == "entry" and isinstance(raw.get("metrics"), list) and raw["metrics"]:
            entry = raw["metrics"][data.draw(st.integers(0, len(raw["metrics"]) - 1))]
            if isinstance(entry, dict):
                entry[data.draw(st.sampled_from(["name", "goal", "reference", "other"]))] = data.draw(JUNK)
        elif data.draw(st.booleans()):
            raw.pop(where, None)
        else:
            raw[where] = data.draw(JUNK)
    try:
        spec = parse_spec(raw, source="s.yaml")
    except SpecError as exc:
        assert str(exc).startswith("s.yaml: ") and "\n" not in str(exc)
    else:
        assert spec.metrics and spec.metric is spec.metrics[0]
        assert parse_spec(yaml.safe_load(spec.to_yaml())).hash() == spec.hash()
