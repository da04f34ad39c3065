from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.masking import mask_url
from harness.spec import parse_spec
from harness.tuners.base import (
    TrialResult,
    TrialState,
    TunerError,
    TunerOptions,
    make_tuner,
    sample_uniform,
)
from harness.tuners.optuna import distributions

SPEC = parse_spec({
    "objective": "x:y",
    "metric": {"name": "v"},
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "n": {"type": "int", "low": 1, "high": 3},
        "h": {"type": "int", "low": 16, "high": 512, "log": True},
        "loss": {"type": "choice", "values": ["tb", "subtb"]},
        "lam": {"type": "float", "low": 0.5, "high": 0.99, "when": {"loss": "subtb"}},
    },
})


def check_in_space(params):
    assert 1e-4 <= params["lr"] <= 1e-1
    assert params["n"] in (1, 2, 3)
    assert 16 <= params["h"] <= 512 and isinstance(params["h"], int)
    assert params["loss"] in ("tb", "subtb")
    assert ("lam" in params) == (params["loss"] == "subtb")
    if "lam" in params:
        assert 0.5 <= params["lam"] <= 0.99


def test_uniform_sampling_respects_domain_and_conditions():
    rng = np.random.default_rng(0)
    draws = [sample_uniform(SPEC, rng) for _ in range(2000)]
    for d in draws:
        check_in_space(d)
    # inclusive integer bounds: both ends are reached
    assert {d["n"] for d in draws} == {1, 2, 3}
    hs = [d["h"] for d in draws]
    assert min(hs) == 16 and max(hs) == 512
    # log-uniform: about half the draws of lr fall below the geometric middle
    below = np.mean([d["lr"] < math.sqrt(1e-4 * 1e-1) for d in draws])
    assert 0.45 < below < 0.55


def test_optuna_distributions_match_the_spec_exactly():
    d = distributions(SPEC)
    assert d["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["n"] == IntDistribution(1, 3)
    assert d["h"] == IntDistribution(16, 512, log=True)
    assert d["loss"] == CategoricalDistribution(["tb", "subtb"])


@pytest.mark.parametrize("name, kw", [("optuna", {"sampler": "tpe"}), ("optuna", {"sampler": "random"}),
                                      ("optuna", {"sampler": "cmaes"}), ("optuna", {"sampler": "gp"}),
                                      ("random", {})])
def test_tuner_ask_tell_stays_in_space(name, kw):
    tuner = make_tuner(name, SPEC, TunerOptions(seed=1, storage="memory", **kw))
    numbers = []
    for i in range(12):
        (s,) = tuner.ask(1)
        check_in_space(s.params)
        numbers.append(s.number)
        state = TrialState.COMPLETE if i % 4 else TrialState.FAILED
        tuner.tell(TrialResult(s.number, s.params, state, value=float(i) if i % 4 else None))
    assert numbers == list(range(12))


def test_optuna_enqueue_comes_first_and_study_records_states():
    tuner = make_tuner("optuna", SPEC, TunerOptions(seed=0, storage="memory"))
    tuner.enqueue({"lr": 0.01, "n": 2, "h": 64, "loss": "tb"})
    (s,) = tuner.ask(1)
    assert s.params == {"lr": 0.01, "n": 2, "h": 64, "loss": "tb"}
    tuner.tell(TrialResult(s.number, s.params, TrialState.COMPLETE, value=1.5))
    (s2,) = tuner.ask(1)
    tuner.tell(TrialResult(s2.number, s2.params, TrialState.PRUNED, value=3.0))
    trials = tuner.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[0].value == 1.5


def test_unknown_tuner_and_sampler():
    with pytest.raises(TunerError, match="--tuner nope: unknown tuner"):
        make_tuner("nope", SPEC, TunerOptions())
    with pytest.raises(TunerError, match="--sampler bogus"):
        make_tuner("optuna", SPEC, TunerOptions(sampler="bogus", storage="memory"))


def test_random_tuner_is_reproducible_by_seed():
    a = make_tuner("random", SPEC, TunerOptions(seed=5)).ask(5)
    b = make_tuner("random", SPEC, TunerOptions(seed=5)).ask(5)
    c = make_tuner("random", SPEC, TunerOptions(seed=6)).ask(5)
    assert [s.params for s in a] == [s.params for s in b] != [s.params for s in c]


def test_mask_url_hides_password():
    assert mask_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_url("sqlite:///a.db") == "sqlite:///a.db"
    line = "harness sweep x --storage postgresql://u:p%40ss@h/db --tracking-uri http://a:b@m:5000"
    assert mask_url(line) == "harness sweep x --storage postgresql://u:***@h/db --tracking-uri http://a:***@m:5000"


@pytest.mark.timeout(60)
def test_a_journal_lock_left_by_a_killed_driver_is_broken(tmp_path, monkeypatch):
    """The default storage is a journal in a relative folder (.harness/sweeps/NAME). A driver
    killed while holding its lock leaves the lock behind; the next driver must break it after
    the grace period (it once spun forever: the symlink's relative target was never found)."""
    import optuna

    from harness.tuners.optuna import make_storage

    monkeypatch.chdir(tmp_path)
    state_dir = Path(".harness/sweeps/crashy")
    first = make_storage(None, state_dir)
    optuna.create_study(storage=first, study_name="crashy")
    first._backend._lock.acquire()  # held, and never released: the driver died here
    assert (state_dir / "optuna.journal.lock").is_symlink()
    again = optuna.load_study(study_name="crashy", storage=make_storage(None, state_dir))
    again.ask()  # writes to the journal: needs the lock (the timeout marker catches a spin)
    assert [t.number for t in again.trials] == [0]
    assert not (state_dir / "optuna.journal.lock").exists(), "the stale lock was broken and released"


def test_a_shared_study_reports_every_process_progress(tmp_path):
    """Two tuners on one database study stand for two processes: each sees the other's trials
    in shared_progress (interrupted ones left out), and a journal study has no shared view."""
    from harness.tuners.base import INTERRUPTED

    url = f"sqlite:///{tmp_path / 'study.db'}"
    a = make_tuner("optuna", SPEC, TunerOptions(seed=0, storage=url, study_name="s"))
    b = make_tuner("optuna", SPEC, TunerOptions(seed=1, storage=url, study_name="s"))
    try:
        assert a.shared_progress().finished == 0
        (sa,) = a.ask(1)
        (sb,) = b.ask(1)
        a.report(sa.number, 1, 9.0)
        a.report(sa.number, 4, 5.0)
        a.tell(TrialResult(sa.number, sa.params, TrialState.COMPLETE, value=5.0, steps=4))
        b.report(sb.number, 2, 3.0)
        b.tell(TrialResult(sb.number, sb.params, TrialState.PRUNED, value=3.0, steps=2))
        (sc,) = b.ask(1)
        b.tell(TrialResult(sc.number, sc.params, TrialState.COMPLETE, value=2.0, steps=0))
        (sd,) = a.ask(1)
        a.tell(TrialResult(sd.number, sd.params, TrialState.FAILED, reason=INTERRUPTED))
        for tuner in (a, b):
            view = tuner.shared_progress()
            assert (view.finished, view.best, view.cum_steps) == (3, 2.0, 6)
    finally:
        a.close()
        b.close()
    journal = make_tuner("optuna", SPEC, TunerOptions(seed=0, state_dir=tmp_path / "j"))
    assert journal.shared_progress() is None


def test_a_dead_process_trial_is_failed_and_retried_a_live_one_is_not(tmp_path, monkeypatch):
    """Heartbeats on a database study: the trial of a process that stopped beating is failed
    and its configuration retried by another process; a live process's trial is left alone."""
    import time

    from harness.tuners.optuna import LOST

    monkeypatch.setenv("HARNESS_HEARTBEAT_S", "1")  # beats every 0.5 s, stale after 2 s
    url = f"sqlite:///{tmp_path / 'study.db'}"
    dead = make_tuner("optuna", SPEC, TunerOptions(seed=0, storage=url, study_name="s"))
    live = make_tuner("optuna", SPEC, TunerOptions(seed=1, storage=url, study_name="s"))
    other = make_tuner("optuna", SPEC, TunerOptions(seed=2, storage=url, study_name="s"))
    try:
        (d,) = dead.ask(1)
        (lv,) = live.ask(1)
        time.sleep(1.2)  # both have beaten
        dead.close()  # what the database sees of a process that died: no more beats, no tell
        time.sleep(2.8)
        (retry,) = other.ask(1)
        states = {t.number: t.state.name for t in other.study.get_trials(deepcopy=False)}
        assert states[d.number] == "FAIL"
        assert states[lv.number] == "RUNNING"
        assert retry.params == d.params and retry.number not in (d.number, lv.number)
        # the one that found it hands it to its sweep (to settle the MLflow run), once
        assert [(r.number, r.state, r.reason) for r in other.take_lost()] == [
            (d.number, TrialState.FAILED, LOST)]
        assert other.take_lost() == [] and live.take_lost() == []
    finally:
        for t in (dead, live, other):
            t.close()


def test_a_resumed_process_reads_back_only_its_own_trials_of_a_shared_study(tmp_path):
    """Resuming one process of a shared study: its trials left running are failed and queued
    again at once; another live process's running trial is not touched, and finished trials of
    others do not count toward this process's budget."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opts = {"storage": url, "study_name": "s"}
    a = make_tuner("optuna", SPEC, TunerOptions(seed=0, state_dir=tmp_path / "a", **opts))
    b = make_tuner("optuna", SPEC, TunerOptions(seed=1, state_dir=tmp_path / "b", **opts))
    try:
        a1, a2 = a.ask(2)
        a.tell(TrialResult(a1.number, a1.params, TrialState.COMPLETE, value=1.0, steps=1))
        b1, b2 = b.ask(2)
        b.tell(TrialResult(b1.number, b1.params, TrialState.COMPLETE, value=0.5, steps=1))
        a.close()  # a's driver dies with a2 running
        again = make_tuner("optuna", SPEC, TunerOptions(seed=0, state_dir=tmp_path / "a", **opts))
        try:
            restored = again.restore()
            assert [r.number for r in restored.finished] == [a1.number]
            assert [(r.number, r.reason) for r in restored.interrupted] == [(a2.number, "interrupted")]
            states = {t.number: t.state.name for t in again.study.get_trials(deepcopy=False)}
            assert states[a2.number] == "FAIL" and states[b2.number] == "RUNNING"
            (retry,) = again.ask(1)
            assert retry.params == a2.params
        finally:
            again.close()
    finally:
        b.close()


@pytest.mark.parametrize("raw", ["0", "-3", "1.5", "soon"])
def test_a_bad_heartbeat_interval_is_refused(raw, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_HEARTBEAT_S", raw)
    with pytest.raises(TunerError, match=f"^HARNESS_HEARTBEAT_S={raw}: must be a whole number"):
        make_tuner("optuna", SPEC, TunerOptions(storage=f"sqlite:///{tmp_path / 's.db'}"))


@pytest.mark.parametrize("name", ["optuna", "random", "ax"])
def test_a_restored_trial_keeps_its_seed_and_seconds(name, tmp_path):
    """After a resume the front and the summary show what MLflow shows: each finished trial's own
    seed and seconds (they read 0 and 0.0 before), and a trial that was running when the driver
    died gets the seed the driver derived for it."""
    from harness.trials import trial_seed

    extra = {"budget": 6, "ax_method": "random_search"} if name == "ax" else {}
    opts = TunerOptions(seed=4, state_dir=tmp_path, extra=extra)
    tuner = make_tuner(name, SPEC, opts)
    try:
        a, b, c, running = (tuner.ask(1)[0] for _ in range(4))
        tuner.tell(TrialResult(a.number, a.params, TrialState.COMPLETE, value=0.5, steps=3, seconds=1.25, seed=63352))
        tuner.tell(TrialResult(b.number, b.params, TrialState.FAILED, reason="ValueError: x", seconds=0.75, seed=11))
        tuner.tell(TrialResult(c.number, c.params, TrialState.PRUNED, value=2.0, steps=1, seconds=0.5, seed=12))
        getattr(tuner, "wait_idle", lambda: None)()
    finally:
        tuner.close()
    again = make_tuner(name, SPEC, opts)
    try:
        restored = again.restore()
        got = {r.number: (r.state.value, r.seed, r.seconds) for r in restored.finished}
        assert got == {a.number: ("complete", 63352, 1.25), b.number: ("failed", 11, 0.75),
                       c.number: ("pruned", 12, 0.5)}
        assert [(r.number, r.seed) for r in restored.interrupted] == [(running.number, trial_seed(4, running.number))]
    finally:
        again.close()
