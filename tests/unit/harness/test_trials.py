"""Trial outcomes: a metric that is not a number fails the trial with a reason, text included."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from harness.trials import TrialTask, metric_numbers


def returns(config: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A trainer returning ``config['out']`` as its metric ``value`` (and reporting it once)."""
    report = _.get("report")
    if report is not None and config.get("report"):
        report(1, {"value": config["out"]})
    return {"value": config["out"]}


def test_metric_numbers_takes_numbers_and_refuses_text_like_every_other_non_number():
    got = metric_numbers({"a": 1, "b": np.float32(0.25), "c": np.int64(3), "d": float("nan")})
    assert got["a"] == 1.0 and got["b"] == 0.25 and got["c"] == 3.0 and np.isnan(got["d"])
    assert all(type(v) is float for v in got.values())
    with pytest.raises(TypeError, match=r"^metric 'l1' is the string '0\.5', not a number \(return a float\)$"):
        metric_numbers({"ok": 1.0, "l1": "0.5"})
    with pytest.raises(TypeError, match=r"^metric 'l1' is the string b'1', not a number"):
        metric_numbers({"l1": b"1"})
    with pytest.raises(TypeError, match=r"^metric 'l1' is NoneType None, not a number"):
        metric_numbers({"l1": None})
    with pytest.raises(TypeError, match=r"^metric 'l1' is list \[1, 2\], not a number"):
        metric_numbers({"l1": [1, 2]})


@pytest.mark.parametrize("report", [False, True])
def test_a_trainer_returning_a_string_metric_fails_with_a_reason(report):
    from harness.engines.base import run_task

    sent: list[Any] = []
    task = TrialTask(0, f"{__name__}:returns", {}, {"out": "0.5", "report": report}, seed=1)
    done = run_task(task, "cpu", sent.append, lambda n: False, time.perf_counter)
    assert done.status == "error"
    assert done.reason == "TypeError: metric 'value' is the string '0.5', not a number (return a float)"
