"""What a driver used to take from the recorder's tracker and statistics, asked of the recorder
instead: a trial's extra metrics (PBT's new hyperparameters), the settling of another process's
lost trials, the end of the driver's loop. Checked in a real MLflow store."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from harness import names as N
from harness.recorder import Recorder
from harness.spec import parse_spec
from harness.tracking import MLflowTracker, SweepInfo
from harness.trials import Done, TrialResult, TrialState, TrialTask

SPEC = parse_spec({"objective": "x:y", "metric": {"name": "v"},
                   "params": {"n": {"type": "int", "low": 1, "high": 3}}})


def task(number: int, n: int) -> TrialTask:
    return TrialTask(number=number, objective="x:y", params={"n": n}, config=SPEC.config({"n": n}),
                     seed=100 + number)


def test_trial_metrics_reconcile_and_mark_stopped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri)
    tracker.start_sweep(SweepInfo(name="s", experiment="e", tuner="ray", objective="x:y", engine="ray",
                                  seed=0, spec_yaml=SPEC.to_yaml(), spec_hash=SPEC.hash(), metric="v",
                                  goal="minimize"))
    rec = Recorder(SPEC, tracker, budget=3)
    rec.started(task(0, 2), "cpu")
    rec.trial_metrics(0, 3, {"pbt.n": 3.0})
    rec.finished(Done(0, "ok", {"v": 1.0}, steps=4, seconds=0.1), task(0, 2))
    assert rec.stats.complete == 1 and rec.stats.best.value == 1.0  # not a report: no prune value
    rec.reconcile([TrialResult(7, {"n": 1}, TrialState.FAILED, reason="worker died", seed=9)])
    rec.reconcile([])
    rec.started(task(1, 1), "cpu")
    assert rec.stats.running == 1
    rec.mark_stopped()
    assert rec.stats.running == 0 and rec.stats.finished == 1  # nothing counted by stopping
    tracker.wait(timeout=30)
    tracker.finish_sweep()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("e")
    kids = {int(r.data.tags[N.TAG_TRIAL]): r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get(N.TAG_KIND) == "trial"}
    history = client.get_metric_history(kids[0].info.run_id, "pbt.n")
    assert [(m.step, m.value) for m in history] == [(3, 3.0)]
    lost = kids[7].data.tags  # another process's trial, settled by this one
    assert (lost[N.TAG_STATE], lost[N.TAG_REASON]) == ("failed", "worker died")


def test_ctrl_c_after_a_timeout_still_ends_the_sweep_interrupted():
    """Dispatch stopped by --timeout, then Ctrl-C ends the trials still running: the sweep stops
    ``interrupted`` (exit 130, resumable), not ``timeout`` (which would read as finished)."""
    from harness.tracking import NullTracker

    now = [0.0]
    rec = Recorder(SPEC, NullTracker(), budget=3, timeout=5.0, clock=lambda: now[0])
    now[0] = 6.0
    assert rec.should_stop() == "timeout after 5 s" and not rec.interrupted
    rec.request_stop()  # the first Ctrl-C: another rule already stopped dispatch; Ctrl-C wins
    assert rec.interrupted and rec.should_stop() == "interrupted" and rec.stop_reason == "interrupted"
    rec.mark_interrupted()  # what Ray Tune's driver calls when its loop ends: the same state
    assert rec.interrupted and rec.should_stop() == "interrupted" and rec.stop_reason == "interrupted"
