"""The Ray Tune backend, without starting Ray: inclusive integer bounds, log scales, conditional
parameters sampled after their parents, the schedulers' settings, and the resume state handed
to the driver (read from the recorder's event log)."""

from __future__ import annotations

import dataclasses

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


def test_budgets_and_trial_numbers():
    assert ray_backend.max_steps(SPEC, {}) == 12  # fixed.epochs
    assert ray_backend.max_steps(SPEC, {"max_t": 30}) == 30
    assert ray_backend.trial_number("a1b2c_00007") == 7


def test_each_scheduler_is_built_with_its_type_and_the_settings_of_the_space():
    """The settings come from the space (max_t = fixed.epochs = 12) and the options; the built
    scheduler carries them (Tune keeps them private: read here, checked against known values)."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        PopulationBasedTraining,
    )

    make, settings = ray_backend.make_scheduler, ray_backend.scheduler_settings
    assert type(make("fifo", SPEC, {})) is FIFOScheduler and settings("fifo", SPEC, {}) == {}

    assert settings("asha", SPEC, {}) == {"time_attr": "step", "max_t": 12, "grace_period": 1,
                                          "reduction_factor": 3.0, "stop_last_trials": False}
    asha = make("asha", SPEC, {})
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "step" and asha._max_t == 12
    # ASHA's rungs sit at grace * rf^k below max_t: 1, 3, 9 (and 2, 6, 18 for grace 2, max_t 30)
    assert sorted(m for m, _ in asha._brackets[0]._rungs) == [1, 3, 9]
    wider = make("asha", SPEC, {"max_t": 30, "grace_period": 2})
    assert sorted(m for m, _ in wider._brackets[0]._rungs) == [2, 6, 18]

    hb = make("hyperband", SPEC, {"reduction_factor": 2})
    assert isinstance(hb, HyperBandScheduler) and not isinstance(hb, ASHAScheduler)
    assert (hb._time_attr, hb._max_t_attr, hb._eta) == ("step", 12, 2)

    pbt = make("pbt", SPEC, {})
    assert isinstance(pbt, PopulationBasedTraining)
    assert (pbt._time_attr, pbt._perturbation_interval, pbt._quantile_fraction) == ("step", 3, 0.25)
    unconditional = {n for n, p in SPEC.params.items() if not p.when}
    assert set(pbt._hyperparam_mutations) == unconditional == {"n", "act", "h", "lr", "opt"}
    assert pbt._hyperparam_mutations["n"].upper == 4  # the same inclusive-bound domain

    with pytest.raises(TunerError, match="--scheduler nope"):
        make("nope", SPEC, {})


def test_the_backend_is_no_tuner_yet_keeps_the_entry_point_and_its_own_loop():
    """``--tuner ray`` is Ray Tune's own loop: nothing asks it for a trial, so it is not a Tuner
    with an ``ask`` that raises; the registry name ``ray`` still builds it and names its driver."""
    from harness.tuners.base import Tuner, TunerOptions, tuner_class

    cls = tuner_class("ray")
    assert cls is ray_backend.RayTuneBackend and cls.driver == "ray_tune" and cls.takes == ("scheduler",)
    backend = cls.from_spec(SPEC, TunerOptions(seed=3, scheduler="asha"))
    assert not isinstance(backend, Tuner) and not hasattr(backend, "ask")
    assert backend.resume is None and backend.shared_progress() is None
    backend.enqueue({"n": 2})
    search = backend.searcher(lambda: None, 2)
    assert isinstance(search, ray_backend.BudgetedSearch) and search._points_to_evaluate == [{"n": 2}]
    assert search.max_concurrent == 2
    for name, concurrent in (("fifo", 2), ("hyperband", 0), ("pbt", 0)):  # these two pause trials
        other = cls.from_spec(SPEC, TunerOptions(seed=3, scheduler=name))
        assert other.searcher(lambda: None, 2).max_concurrent == concurrent
    assert type(backend.make_scheduler()).__name__ == "AsyncHyperBandScheduler"
    assert list(backend.param_space()) == SPEC.order()
    with pytest.raises(TunerError, match="--scheduler nope"):
        cls.check(SPEC, TunerOptions(scheduler="nope"))


def test_the_searcher_keeps_the_running_drivers_stop_rule_through_tunes_save_and_restore():
    """Tune pickles the searcher (``tuner.pkl``) and restores a saved state onto the resumed
    driver's searcher with a ``__dict__`` update: the new driver's stop rule must survive both."""
    import pickle

    first = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None)
    assert pickle.loads(pickle.dumps(first))._should_stop is None  # a lambda: not saved
    saved = first.get_state()
    assert "_should_stop" not in saved
    resumed = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: "interrupted")
    resumed.set_state({**saved, "_should_stop": None})  # a state saved before this version, too
    assert resumed.next_trial() is None and resumed.is_finished()  # the new stop rule was asked


def _fn(config: dict) -> None:
    """A trainable for Tune's search to name (never run here)."""


def test_a_resumed_search_with_a_larger_budget_adds_the_missing_samples():
    """``harness resume NAME --trials 5`` of a 3-trial Ray Tune sweep: Tune's saved search holds 3
    samples; the restored one makes up 2 more, indexed 3 and 4, from the same space; with an
    equal budget it adds none."""
    from ray import cloudpickle
    from ray.tune.experiment import Experiment

    first = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None, samples=3)
    first.add_configurations([Experiment("tune", _fn, config={"x": ray_backend.tune.uniform(2, 3)},
                                         num_samples=3)])
    assert [ray_backend.trial_number(first.next_trial().trial_id) for _ in range(3)] == [0, 1, 2]
    assert first.next_trial() is None and first.is_finished()
    saved = cloudpickle.dumps(first.get_state())  # as Tune saves it into the experiment folder

    resumed = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None, samples=5)
    resumed.set_state(cloudpickle.loads(saved))
    more = [resumed.next_trial() for _ in range(3)]
    assert [ray_backend.trial_number(t.trial_id) for t in more[:2]] == [3, 4] and more[2] is None
    assert all(2 <= t.config["x"] <= 3 for t in more[:2]) and resumed.total_samples == 5
    same = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None, samples=3)
    same.set_state(cloudpickle.loads(saved))
    assert same.next_trial() is None and same.total_samples == 3


def test_the_search_runs_at_most_workers_trials_and_asks_the_stop_rules_before_each():
    """Tune ignores max_concurrent_trials beside a search algorithm: ours holds --workers (2)
    itself, so a trial is proposed only when one ends, after the stop rules said go on; a
    resumed search takes the new driver's --workers (3), not the saved one."""
    from ray import cloudpickle
    from ray.tune.experiment import Experiment

    stop: list[str | None] = [None]
    search = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: stop[0], samples=6,
                                        max_concurrent=2)
    search.add_configurations([Experiment("tune", _fn, config={"x": ray_backend.tune.uniform(0, 1)},
                                          num_samples=6)])
    first = [search.next_trial() for _ in range(3)]
    assert first[2] is None and not search.is_finished()  # two run: the third waits
    search.on_trial_complete(first[0].trial_id)
    assert ray_backend.trial_number(search.next_trial().trial_id) == 2
    search.on_trial_complete(first[1].trial_id)
    stop[0] = "timeout after 5 s"  # dispatch stops: no trial is proposed any more
    assert search.next_trial() is None and search.is_finished()
    resumed = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None, samples=6,
                                         max_concurrent=3)
    resumed.set_state(cloudpickle.loads(cloudpickle.dumps(search.get_state())))
    assert resumed.max_concurrent == 3
    more = [resumed.next_trial() for _ in range(3)]  # trial 2 still runs: two more, not three
    assert [t and ray_backend.trial_number(t.trial_id) for t in more] == [3, 4, None]


def test_a_search_stopped_by_a_rule_proposes_the_rest_when_resumed():
    """A sweep whose dispatch --timeout (or Ctrl-C) stopped after 2 of 5 samples: the resumed
    search proposes samples 2, 3 and 4, then is finished."""
    from ray import cloudpickle
    from ray.tune.experiment import Experiment

    stop: list[str | None] = [None]
    first = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: stop[0], samples=5)
    first.add_configurations([Experiment("tune", _fn, config={"x": ray_backend.tune.uniform(0, 1)},
                                         num_samples=5)])
    assert [ray_backend.trial_number(first.next_trial().trial_id) for _ in range(2)] == [0, 1]
    stop[0] = "timeout after 5 s"
    assert first.next_trial() is None and first.is_finished()
    resumed = ray_backend.BudgetedSearch(random_state=0, should_stop=lambda: None, samples=5)
    resumed.set_state(cloudpickle.loads(cloudpickle.dumps(first.get_state())))
    rest = [resumed.next_trial() for _ in range(4)]
    assert [t and ray_backend.trial_number(t.trial_id) for t in rest] == [2, 3, 4, None]
    assert resumed.is_finished()


LOG = [
    {"event": "started", "key": "abc_00000", "number": 0, "params": {"n": 1}, "seed": 11},
    {"event": "started", "key": "abc_00001", "number": 1, "params": {"n": 2}, "seed": 12},
    {"event": "started", "key": "abc_00002", "number": 2, "params": {"n": 3}, "seed": 13},
    {"event": "finished", "key": "abc_00000", "number": 0, "params": {"n": 1}, "state": "complete",
     "value": 1.5, "steps": 3, "seconds": 2.5, "seed": 11, "reason": None},
    {"event": "note", "message": "not a trial event"},
    {"event": "finished", "key": "abc_00002", "number": 2, "params": {"n": 3}, "state": "failed",
     "value": None, "steps": 1, "seconds": 0.5, "seed": 13, "reason": "interrupted"},
    {"event": "started", "key": "abc_00002", "number": 5, "params": {"n": 3}, "seed": 13},  # its re-run
]


def write_log(folder, lines, torn: bool = False) -> None:
    import json

    from harness.trials import EVENT_LOG

    (folder / EVENT_LOG).write_text("".join(json.dumps(r) + "\n" for r in lines)
                                    + ('{"event": "fini' if torn else ""))


def test_restore_reads_the_recorders_log_into_an_explicit_resume_state(tmp_path):
    """What finished and what was running come from the recorder's log (written before MLflow),
    through the one reader of it; the driver gets them as a frozen RayResume, no global."""
    from harness.tuners.base import TunerOptions

    opts = TunerOptions(seed=0, state_dir=tmp_path, budget=4)
    backend = ray_backend.RayTuneBackend(SPEC, opts)
    assert backend.restore().finished == [] and backend.resume is None  # nothing ran: afresh
    write_log(tmp_path, LOG, torn=True)  # the last line cut by a kill
    with pytest.raises(TunerError, match="saved no experiment"):  # trials ran, Tune saved nothing
        backend.restore()
    experiment = tmp_path / "ray" / "tune"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # what Tune's can_restore looks for
    restored = backend.restore()
    assert [(r.number, r.state.value, r.value, r.seed, r.seconds) for r in restored.finished] == [
        (0, "complete", 1.5, 11, 2.5)]
    assert sorted((r.number, r.reason, r.seed) for r in restored.interrupted) == [
        (1, "interrupted", 12), (5, "interrupted", 13)]
    assert backend.resume == ray_backend.RayResume(
        path=experiment.resolve(), done=frozenset({"abc_00000"}),
        running=frozenset({"abc_00001", "abc_00002"}), numbers=(("abc_00002", 5),),
        finished=frozenset({0}), rerun_from=6)  # past the budget (4) and every number used (5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.resume.rerun_from = 0  # type: ignore[misc]
    assert not hasattr(ray_backend, "LIVE") and not hasattr(ray_backend, "read_log")


def test_the_event_log_has_one_reader_that_skips_what_is_not_a_trial_event(tmp_path):
    from harness.events import read_events

    write_log(tmp_path, LOG)
    started, finished = read_events(tmp_path)
    assert {k: r["number"] for k, r in started.items()} == {"abc_00000": 0, "abc_00001": 1, "abc_00002": 5}
    assert {k: r["reason"] for k, r in finished.items()} == {"abc_00000": None, "abc_00002": "interrupted"}


def test_the_drivers_callback_continues_from_the_resume_state(tmp_path):
    """A resumed sweep's callback, built from the RayResume: a trial finished before the crash
    is not run again, an interrupted one runs again under the next number past the budget, a
    new one keeps its index; the recorder's log says so. Pickled into Tune's experiment, it
    leaves the recorder behind."""
    import pickle

    from ray.tune.experiment import Trial

    from harness.drivers.ray_tune import RecorderCallback
    from harness.events import read_events
    from harness.recorder import Recorder
    from harness.tracking import NullTracker

    resume = ray_backend.RayResume(path=tmp_path, done=frozenset({"abc_00000"}),
                                   running=frozenset({"abc_00001"}), finished=frozenset({0}),
                                   rerun_from=4)
    spec = parse_spec({"objective": "x:y", "metric": {"name": "v"},
                       "params": {"n": {"type": "int", "low": 1, "high": 3}}})
    rec = Recorder(spec, NullTracker(), budget=4, state_dir=tmp_path)
    cb = RecorderCallback(spec, rec, objective="x:y", seed=0, budget=4, scheduler="fifo", gpu=False,
                          trial_timeout=None, resume=resume)
    for tid in ("abc_00000", "abc_00001", "abc_00002"):
        cb.on_trial_start(0, [], Trial("fn", config={"n": 2}, trial_id=tid, stub=True))
    rec.close()
    started, _ = read_events(tmp_path)
    assert {k: r["number"] for k, r in started.items()} == {"abc_00001": 4, "abc_00002": 2}
    assert resume.rerun_from == 4 and cb.rerun_from == 5  # the frozen state is not consumed
    assert pickle.loads(pickle.dumps(cb)).recorder is None
