"""The Ax backend on real Ax: translation (faithful or refused), BO computed ahead while the
workers are busy, early stopping, and the JSON state (saved atomically, read back on resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.spec import parse_spec
from harness.tuners.base import TrialResult, TrialState, TunerError, TunerOptions

ax_backend = pytest.importorskip("harness.tuners.ax")


def spec_of(params: dict, **kw: object):
    return parse_spec({"objective": "x:y", "metric": {"name": kw.get("metric", "val/loss")}, "params": params})


RICH = spec_of({
    "method": {"type": "choice", "values": ["m", "s", "bp"]},
    "gamma": {"type": "float", "low": 1.0, "high": 100.0, "log": True, "when": {"method": ["m", "s"]}},
    "K": {"type": "int", "low": 1, "high": 10, "when": {"method": ["m", "s"]}},
    "inner": {"type": "choice", "values": [1, 2], "when": {"method": "s"}},
    "deep": {"type": "int", "low": 3, "high": 3, "when": {"inner": 2}},
    "flag": {"type": "choice", "values": [True, False]},
    "h": {"type": "int", "low": 16, "high": 512, "log": True},
})


def test_translation_keeps_every_domain_and_the_tree():
    dom = ax_backend.domains(RICH)
    assert dom["gamma"] == ("float", 1.0, 100.0, True)
    assert dom["K"] == ("int", 1, 10, False)
    assert dom["h"] == ("int", 16, 512, True)
    assert dom["deep"] == ("int", 3, 3, False)  # low == high: Ax's fixed parameter
    assert dom["method"] == ("choice", ["bp", "m", "s"])
    assert dom["flag"] == ("choice", [False, True])
    tr = ax_backend.translate(RICH)
    names = {p.ax_name: p.spec_name for p in tr.params}
    # a child active for two values of its parent gets one copy per value (Ax's space is a tree)
    assert sorted(k for k, v in names.items() if v == "gamma") == ["gamma__method_0", "gamma__method_1"]
    assert sorted(k for k, v in names.items() if v == "deep") == ["deep"]
    cfg = {p.ax_name: p.config for p in tr.params}
    assert cfg["method"].dependent_parameters == {"m": ["gamma__method_0", "K__method_0"],
                                                  "s": ["gamma__method_1", "K__method_1", "inner"]}
    # round trip: spec params -> Ax names -> spec params
    for params in ({"method": "bp", "flag": True, "h": 32},
                   {"method": "s", "gamma": 3.0, "K": 2, "inner": 2, "deep": 3, "flag": False, "h": 64},
                   {"method": "m", "gamma": 50.0, "K": 9, "flag": True, "h": 512}):
        ax_params = tr.to_ax(params)
        assert tr.to_spec(ax_params, RICH) == params
    ax_params = tr.to_ax({"method": "s", "gamma": 3.0, "K": 2, "inner": 1, "flag": False, "h": 64})
    assert set(ax_params) == {"method", "gamma__method_1", "K__method_1", "inner", "flag", "h"}


@pytest.mark.parametrize("params, fragment", [
    ({"a": {"type": "choice", "values": ["x", "y"]}, "b": {"type": "choice", "values": [1, 2]},
      "c": {"type": "float", "low": 0.0, "high": 1.0, "when": {"a": "x", "b": 1}}},
     "names 2 parents (a, b)"),
    ({"a": {"type": "choice", "values": [1, "two"]}}, "of one type"),
])
def test_spaces_ax_cannot_express_are_refused(params, fragment):
    spec = spec_of(params)
    with pytest.raises(TunerError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ax_backend.check_space(spec)


SMALL = spec_of({"x": {"type": "float", "low": 0.0, "high": 1.0}}, metric="value")


def test_unknown_method_is_refused():
    with pytest.raises(TunerError, match="--ax-method best: unknown method"):
        ax_backend.AxTuner.from_spec(SMALL, TunerOptions(extra={"ax_method": "best"}))


def test_bo_is_computed_ahead_and_state_is_saved(tmp_path: Path):
    """Center and Sobol trials, then BO (at least trials 4 and 5). After each tell the next suggestion is
    computed on the tuner's thread while the workers train, so ask() returns at once."""
    opts = TunerOptions(seed=0, state_dir=tmp_path, extra={"budget": 6, "ax_init_trials": 3})
    tuner = ax_backend.AxTuner.from_spec(SMALL, opts)
    ahead: list[int] = []  # suggestions already computed when ask() came
    numbers: list[int] = []
    try:
        for i in range(6):
            ahead.append(len(tuner._ready))
            (s,) = tuner.ask(1)
            numbers.append(s.number)
            assert 0.0 <= s.params["x"] <= 1.0
            for step in (1, 2):
                tuner.report(s.number, step, (s.params["x"] - 0.3) ** 2 + 1.0 / step)
            tuner.tell(TrialResult(s.number, s.params, TrialState.COMPLETE,
                                   value=(s.params["x"] - 0.3) ** 2, steps=2))
            if i >= 2:  # 'training' of the next trial: the fit runs meanwhile
                tuner.wait_idle()
        assert tuner.ask(1) == []  # the budget is spent: no spare trial is generated
    finally:
        tuner.close()
    assert numbers == list(range(6))
    nodes = list(tuner.client.summarize()["generation_node"])
    # The initialization budget (3) counts the center point. Trial 3 is Sobol or MBM depending on
    # whether Ax's transition is checked before or after trial 0's result lands (a race between
    # the tell and the suggestion computed ahead); from trial 4 on it is always BO.
    assert nodes[:3] == ["CenterOfSearchSpace", "Sobol", "Sobol"], nodes
    assert nodes[3] in ("Sobol", "MBM") and nodes[4:] == ["MBM", "MBM"], nodes
    assert ahead[3:] == [1, 1, 1], ahead  # computed ahead while the 'workers' trained: ask() had it ready
    saved = json.loads((tmp_path / "ax.json").read_text())
    assert len(saved["experiment"]["trials"]) == 6
    assert not list(tmp_path.glob("*.tmp"))


def test_early_stopping_prunes_a_bad_curve_and_restore_reads_everything_back(tmp_path: Path):
    opts = TunerOptions(seed=1, state_dir=tmp_path,
                        extra={"budget": 8, "ax_method": "random_search", "ax_min_curves": 3})
    tuner = ax_backend.AxTuner.from_spec(SMALL, opts)
    try:
        for _ in range(4):  # four good complete curves
            (s,) = tuner.ask(1)
            for step in range(1, 11):
                tuner.report(s.number, step, 0.1 + 1.0 / step)
            tuner.tell(TrialResult(s.number, s.params, TrialState.COMPLETE, value=0.1, steps=10))
        (bad,) = tuner.ask(1)
        stopped_at = None
        for step in range(1, 11):
            if tuner.report(bad.number, step, 5.0 + 1.0 / step):
                stopped_at = step
                break
            tuner.wait_idle()  # a slow trainer: the decision arrives before its next report
        assert stopped_at is not None and stopped_at < 10
        tuner.tell(TrialResult(bad.number, bad.params, TrialState.PRUNED, value=5.2, steps=stopped_at))
        (running,) = tuner.ask(1)  # 'running' when the driver dies
        (failing,) = tuner.ask(1)
        tuner.tell(TrialResult(failing.number, failing.params, TrialState.FAILED, reason="ValueError: x"))
        tuner.wait_idle()
    finally:
        tuner.close()
    status = dict(zip(tuner.client.summarize()["trial_index"], tuner.client.summarize()["trial_status"], strict=True))
    assert status[bad.number] == "EARLY_STOPPED" and status[failing.number] == "FAILED"
    # a new driver reads ax.json back: the running trial is interrupted and queued once more
    again = ax_backend.AxTuner.from_spec(SMALL, opts)
    restored = again.restore()
    try:
        states = {r.number: r.state.value for r in restored.finished}
        assert states == {0: "complete", 1: "complete", 2: "complete", 3: "complete",
                          bad.number: "pruned", failing.number: "failed"}
        assert [r.number for r in restored.interrupted] == [running.number]
        (rerun,) = again.ask(1)
        assert rerun.params == running.params and rerun.number not in status
    finally:
        again.close()


def test_a_result_told_before_a_crash_is_not_lost(tmp_path: Path):
    """ax.json is saved in batches; a driver killed after a tell and before the next save must
    still find that result (the results log): no finished trial may run again."""
    opts = TunerOptions(seed=2, state_dir=tmp_path, extra={"budget": 6, "ax_method": "random_search"})
    tuner = ax_backend.AxTuner.from_spec(SMALL, opts)
    try:
        a, b, c, d = (tuner.ask(1)[0] for _ in range(4))
        tuner.wait_idle()
        before = (tmp_path / "ax.json").read_bytes()  # all four asked and saved, none finished
        tuner.report(c.number, 2, 0.7)
        tuner.tell(TrialResult(a.number, a.params, TrialState.COMPLETE, value=0.25, steps=3))
        tuner.tell(TrialResult(b.number, b.params, TrialState.FAILED, reason="ValueError: boom"))
        tuner.tell(TrialResult(c.number, c.params, TrialState.PRUNED, value=0.7, steps=2))
        tuner.wait_idle()
    finally:
        tuner.close()
    (tmp_path / "ax.json").write_bytes(before)  # the driver died before it saved them
    again = ax_backend.AxTuner.from_spec(SMALL, opts)
    try:
        restored = again.restore()
        got = {r.number: (r.state.value, r.value, r.steps) for r in restored.finished}
        assert got[a.number] == ("complete", 0.25, 3)
        assert got[b.number][0] == "failed" and got[c.number][:1] == ("pruned",)
        assert [r.number for r in restored.interrupted] == [d.number]  # only d was running
        (rerun,) = again.ask(1)
        assert rerun.params == d.params
    finally:
        again.close()
    # a new sweep under the same name starts a new log, not the old trials' results
    (tmp_path / "ax.json").unlink()
    fresh = ax_backend.AxTuner.from_spec(SMALL, opts)
    assert not (tmp_path / "ax.results.jsonl").exists()
    fresh.close()


def test_importing_ax_changes_no_global_logging_and_prints_nothing():
    """Importing the backend leaves logging as it was (no logging.disable, Ax's stderr handler at
    its own level, no filter left behind) and prints no INFO line; the level is set through Ax's
    own API when a client is created."""
    import subprocess
    import sys

    from tests.conftest import harness_env

    code = (
        "import logging\n"
        "import harness.tuners.ax as a\n"
        "from ax.utils.common.logger import ROOT_STREAM_HANDLER as h\n"
        "from harness.tuners.ax_space import IMPORT_LOGGER\n"
        "print(logging.root.manager.disable, h.level, len(logging.getLogger(IMPORT_LOGGER).filters) - 1)\n"
        "from harness.spec import parse_spec\n"
        "from harness.tuners.base import TunerOptions\n"
        "spec = parse_spec({'objective': 'x:y', 'metric': {'name': 'v'}, 'params': {'x': {'type': 'float', "
        "'low': 0.0, 'high': 1.0}}})\n"
        "a.AxTuner.from_spec(spec, TunerOptions()).close()\n"
        "print(h.level)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=harness_env(),
                         timeout=120, check=True)
    import logging

    # Ax's own logger keeps its one filter (AxOutputNameFilter, added by its get_logger): ours is gone
    assert run.stdout.split() == ["0", str(logging.INFO), "0", str(logging.ERROR)]
    assert "INFO" not in run.stderr, run.stderr[-2000:]


def test_state_is_written_through_unique_temporary_files(tmp_path: Path, monkeypatch):
    """ax.json goes through harness.files.write_atomic_via (a uniquely named temporary file, then
    os.replace): a save that fails leaves the previous state whole and no temporary file."""
    opts = TunerOptions(seed=0, state_dir=tmp_path, extra={"budget": 3, "ax_method": "random_search"})
    tuner = ax_backend.AxTuner.from_spec(SMALL, opts)
    try:
        (s,) = tuner.ask(1)
        tuner.wait_idle()
        before = (tmp_path / "ax.json").read_bytes()
        seen: list[str] = []

        def broken(path: str) -> None:
            seen.append(Path(path).name)
            Path(path).write_text('{"half": ')
            raise OSError("disk full")

        monkeypatch.setattr(tuner.client, "save_to_json_file", broken)
        with pytest.raises(OSError, match="disk full"):
            tuner._save()
        assert (tmp_path / "ax.json").read_bytes() == before
        assert len(seen) == 1 and seen[0].startswith("ax.json.") and seen[0].endswith(".tmp")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ax.json", "ax.results.jsonl"]
    finally:
        monkeypatch.undo()
        tuner.close()
