"""The Ray Tune backend's translation, without starting Ray: inclusive integer bounds, log
scales, conditional parameters sampled after their parents, schedulers' budgets."""

from __future__ import annotations

import numpy as np
import pytest

from harness.spec import parse_spec
from harness.tuners.base import TunerError

ray_backend = pytest.importorskip("harness.tuners.ray")

SPEC = parse_spec({
    "objective": "x:y", "metric": {"name": "v"}, "fixed": {"epochs": 12},
    "params": {
        "n": {"type": "int", "low": 1, "high": 3},
        "act": {"type": "choice", "values": ["relu", "tanh", "gelu"]},
        "h": {"type": "int", "low": 16, "high": 512, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "opt": {"type": "choice", "values": ["adam", "sgd"]},
        "mom": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
        "nest": {"type": "choice", "values": [True, False], "when": {"opt": "sgd"}},
        "deep": {"type": "int", "low": 2, "high": 4, "when": {"nest": True, "act": ["tanh", "gelu"]}},
    },
})


def sample(space: dict, rng: np.random.Generator) -> dict:
    """Resolve a param space the way Tune does: plain domains first, then sample_from in order."""
    cfg = {k: v.sample(random_state=rng) for k, v in space.items() if not hasattr(v, "func")}
    for k, v in space.items():
        if hasattr(v, "func"):
            cfg[k] = v.func(cfg)
    return {k: v for k, v in cfg.items() if v is not None}


def test_domains_match_the_spec_with_inclusive_integer_bounds():
    d = ray_backend.domains(SPEC)
    assert d["n"] == ("int", 1, 3, False)
    assert d["h"] == ("int", 16, 512, True)
    assert d["lr"] == ("float", 1e-4, 1e-1, True)
    assert d["opt"] == ("choice", ["adam", "sgd"])
    assert ray_backend.ray_domain(SPEC.params["n"]).upper == 4  # Tune excludes its upper bound


def test_sampling_reaches_both_integer_ends_and_keeps_conditions():
    space = ray_backend.param_space(SPEC, seed=3)
    assert list(space) == SPEC.order()  # parents before children
    rng = np.random.default_rng(0)
    draws = [sample(space, rng) for _ in range(3000)]
    assert {d["n"] for d in draws} == {1, 2, 3}
    hs = [d["h"] for d in draws]
    assert min(hs) == 16 and max(hs) == 512
    assert 0.4 < np.mean([h < np.sqrt(16 * 512) for h in hs]) < 0.6  # log-uniform
    for d in draws:
        assert d == SPEC.active_params(d)  # nothing inactive is left in
        assert ("mom" in d) == (d["opt"] == "sgd")
        assert ("deep" in d) == (d.get("nest") is True and d["act"] != "relu")  # two parents
    assert any("deep" in d for d in draws)


def test_budgets_and_schedulers():
    assert ray_backend.max_steps(SPEC, {}) == 12  # fixed.epochs
    assert ray_backend.max_steps(SPEC, {"max_t": 30}) == 30
    for name in ray_backend.SCHEDULERS:
        assert ray_backend.make_scheduler(name, SPEC, {}, 0) is not None
    with pytest.raises(TunerError, match="--scheduler nope"):
        ray_backend.make_scheduler("nope", SPEC, {}, 0)
    assert ray_backend.trial_number("a1b2c_00007") == 7


def test_restore_reads_the_log_and_refuses_only_what_it_cannot_continue(tmp_path):
    """What finished and what was running come from the callback's log (written before MLflow);
    a sweep killed before Tune saved an experiment or ran a trial starts afresh."""
    import json

    from harness.tuners.base import TunerOptions

    opts = TunerOptions(seed=0, state_dir=tmp_path, extra={"budget": 4})
    assert ray_backend.RayTuneTuner(SPEC, opts).restore().finished == []  # nothing ran: afresh
    log = tmp_path / ray_backend.LOG_FILE
    params = {"x": 0.5}
    lines = [
        {"event": "started", "trial_id": "abc_00000", "number": 0, "params": params},
        {"event": "started", "trial_id": "abc_00001", "number": 1, "params": params},
        {"event": "finished", "trial_id": "abc_00000", "number": 0, "params": params, "state": "complete",
         "value": 1.5, "steps": 3, "reason": None},
    ]
    log.write_text("".join(json.dumps(rec) + "\n" for rec in lines) + '{"event": "fini')  # cut by a kill
    started, finished = ray_backend.read_log(log)
    assert set(started) == {"abc_00000", "abc_00001"} and set(finished) == {"abc_00000"}
    with pytest.raises(TunerError, match="saved no experiment"):  # trials ran, Tune saved nothing
        ray_backend.RayTuneTuner(SPEC, opts).restore()
