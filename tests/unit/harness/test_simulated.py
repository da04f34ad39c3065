"""Tabulate, surrogate and the simulated engine (issue 16).

Known properties: a tabulated configuration replays its table row exactly; simulated time
orders reports and completions as real time would (two workers, unequal trial lengths);
the surrogate answers configurations the table never saw; tabulate writes the tidy table
with the expected columns and resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.engines.simulated import SimulatedEngine
from harness.simulate import TableOracle, simulate_sweep
from harness.spec import load_spec
from harness.surrogate import Curve, Surrogate
from harness.tabulate import BASE_COLUMNS, ROWS, TabulateOptions, row_params, sobol_design, tabulate
from harness.trials import Done, Report, TrialState, TrialTask
from harness.tuners.manual import ManualTuner

SPACE = """\
objective: branin
metric: {name: value, goal: minimize}
fixed: {steps: 8}
params:
  x1: {type: float, low: -5.0, high: 10.0}
  x2: {type: float, low: 0.0, high: 15.0}
  kind: {type: choice, values: [a, b]}
  z: {type: int, low: 1, high: 64, log: true, when: {kind: a}}
budget: {trials: 8, report_every: 2}
"""


@pytest.fixture(scope="module")
def tabulated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tab")
    space = root / "tiny.yaml"
    space.write_text(SPACE)
    opts = dict(space=str(space), seeds=2, out=root / "tiny.parquet", state_root=root / "state",
                tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    first = tabulate(TabulateOptions(configs=6, **opts))  # type: ignore[arg-type]
    rows = root / "state" / "tiny" / ROWS
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a crash mid-write: last row torn
    second = tabulate(TabulateOptions(configs=8, **opts))  # type: ignore[arg-type]
    return {"space": str(space), "first": first, "second": second, "table": pd.read_parquet(second.out),
            "spec": load_spec(str(space)), "root": root}


def test_tabulate_writes_the_tidy_table_and_resumes(tabulated: dict) -> None:
    first, second, df = tabulated["first"], tabulated["second"], tabulated["table"]
    assert first.ran == 12 and first.trials == 12 and first.configs == 6
    assert second.ran == 2 * 2 + 1  # two new configurations x 2 seeds, and the torn row again
    assert second.trials == 16 and second.configs == 8
    for col in [*BASE_COLUMNS, "param.x1", "param.x2", "param.kind", "param.z", "metric.value"]:
        assert col in df.columns
    finals = df[df["kind"] == "final"]
    assert len(finals) == 16 and set(finals["state"]) == {"complete"}
    reports = df[df["kind"] == "report"]
    assert sorted(set(reports["step"])) == [2, 4, 6, 8]  # every reported step, report_every 2
    # the conditional: z only where kind == a
    assert finals[finals["param.kind"] == "b"]["param.z"].isna().all()
    assert finals[finals["param.kind"] == "a"]["param.z"].notna().all()
    assert (finals["seconds_per_step"] > 0).all()
    assert Path(str(second.out) + ".sha256").read_text().split()[0] == second.sha256
    assert second.run_id is not None


def test_sobol_design_respects_the_space() -> None:
    spec = load_spec("gflownet-quick")
    design = sobol_design(spec, 64, seed=1)
    assert design[:16] == sobol_design(spec, 16, seed=1)  # a prefix: growing the table resumes it
    for params in design:
        assert ("lambda_" in params) == (params["loss"] == "subtb")
        for name, v in params.items():
            assert spec.params[name].contains(v), (name, v)
    assert {p["loss"] for p in design} == {"tb", "db", "subtb", "fm"}


def rows_for_params(spec, table) -> list[dict]:  # noqa: ANN001
    """The tabulated configurations as params dicts (design order)."""
    first = table.drop_duplicates(["config"]).sort_values("config")
    return [row_params(r, spec) for _, r in first.iterrows()]


def test_simulated_sweep_replays_the_table_exactly(tabulated: dict) -> None:
    spec, df = tabulated["spec"], tabulated["table"]
    configs = rows_for_params(spec, df)
    seeds = [s for _ in configs for s in (0, 1)]
    configs2 = [c for c in configs for _ in (0, 1)]
    oracle = TableOracle(spec, df)
    sw = simulate_sweep(spec, oracle, ManualTuner(configs2, seeds), seed=0, trials=len(configs2),
                        workers=1, charge_tuner_time=False)
    assert oracle.exact == len(configs2) and oracle.predicted == 0
    finals = df[df["kind"] == "final"].set_index(["config_id", "seed"])
    from harness.tabulate import config_id

    total = 0.0
    for r in sw.results:
        row = finals.loc[(config_id(r.params), r.seed)]
        assert r.state is TrialState.COMPLETE
        assert r.value == row["metric.value"]
        assert r.seconds == row["elapsed_s"] and r.steps == row["step"]
        total += r.seconds
    assert sw.elapsed[-1] == pytest.approx(total)  # one worker: the simulated clock is the sum


def _synthetic(lengths: dict[str, float]) -> SimulatedEngine:
    """An engine whose trial ``name`` lasts ``lengths[name]`` s and reports at 1/2 and at the end."""

    def trace(task: TrialTask) -> Curve:
        t = lengths[task.params["name"]]
        return Curve([(1, t / 2, {"value": t}), (2, t, {"value": t})], t, 2, {"value": t})

    return SimulatedEngine(trace, workers=2, charge_tuner_time=False)


def test_simulated_time_orders_reports_and_completions() -> None:
    lengths = {"A": 10.0, "B": 3.0, "C": 4.0}
    engine = _synthetic(lengths)
    engine.start("none")
    tasks = {n: TrialTask(i, "none", {"name": n}, {}, 0) for i, n in enumerate("ABC")}
    engine.submit(tasks["A"])
    engine.submit(tasks["B"])
    assert engine.free_slots() == 0
    seen: list[tuple[float, str, str]] = []
    while len([e for e in seen if e[1] == "done"]) < 3:
        for ev in engine.poll(1.0):
            name = "ABC"[ev.number]
            seen.append((engine.clock(), "done" if isinstance(ev, Done) else "report", name))
            if isinstance(ev, Done) and name == "B":  # a worker frees at 3 s: C starts there
                engine.submit(tasks["C"])
    times = [t for t, _, _ in seen]
    assert times == sorted(times)
    done = [(t, n) for t, k, n in seen if k == "done"]
    assert done == [(3.0, "B"), (7.0, "C"), (10.0, "A")]
    assert (1.5, "report", "B") in seen and (5.0, "report", "A") in seen and (5.0, "report", "C") in seen


def test_simulated_sweep_elapsed_is_the_simulated_schedule(tmp_path: Path) -> None:
    spec = load_spec("branin")
    lengths = {"A": 10.0, "B": 3.0, "C": 4.0}
    engine_trace = _synthetic(lengths).trace

    def trace(task: TrialTask) -> Curve:
        return engine_trace(TrialTask(task.number, "", {"name": "ABC"[task.number]}, {}, 0))

    tuner = ManualTuner([{"x1": 0.0, "x2": float(i)} for i in range(3)])
    sw = simulate_sweep(spec, trace, tuner, seed=0, trials=3, workers=2, charge_tuner_time=False)
    assert [r.number for r in sw.results] == [1, 2, 0]  # B, C, A: the simulated order
    assert sw.elapsed == [3.0, 7.0, 10.0]  # elapsed_s: sums of simulated seconds
    assert [r.seconds for r in sw.results] == [3.0, 4.0, 10.0]


def test_stop_trial_prunes_at_the_next_report() -> None:
    engine = _synthetic({"A": 10.0})
    engine.start("none")
    engine.submit(TrialTask(0, "none", {"name": "A"}, {}, 0))
    first = engine.poll(1.0)
    assert first == [Report(0, 1, {"value": 10.0})] and engine.clock() == 5.0
    engine.stop_trial(0)
    rest = engine.poll(1.0)
    assert isinstance(rest[0], Report) and isinstance(rest[1], Done)
    assert rest[1].status == "pruned" and rest[1].steps == 2 and rest[1].seconds == 10.0


def test_optuna_pruner_acts_on_the_simulated_engine(tabulated: dict) -> None:
    spec, df = tabulated["spec"], tabulated["table"]
    sw = simulate_sweep(spec, TableOracle(spec, df), "optuna", seed=0, trials=30, pruner="median",
                        charge_tuner_time=False)
    pruned = [r for r in sw.results if r.state is TrialState.PRUNED]
    assert len(sw.results) == 30 and pruned
    # a decision at a report takes effect at the next one (fire-and-forget, as for real)
    assert all(r.steps >= 4 for r in pruned) and any(r.steps < 8 for r in pruned)


def test_surrogate_answers_unseen_configurations(tabulated: dict) -> None:
    spec, df = tabulated["spec"], tabulated["table"]
    sur = Surrogate(spec, df)
    for params in ({"x1": 1.234, "x2": 5.678, "kind": "b"}, {"x1": -3.0, "x2": 12.0, "kind": "a", "z": 7}):
        c = sur.predict(params)
        assert [s for s, _, _ in c.reports] == [2, 4, 6, 8]  # the space's reported steps
        assert all(math.isfinite(m["value"]) for _, _, m in c.reports)
        assert 0 < c.reports[0][1] <= c.reports[-1][1] <= c.seconds
        assert math.isfinite(c.metrics["value"])
    oracle = TableOracle(spec, df)
    sw = simulate_sweep(spec, oracle, "random", seed=3, trials=5, charge_tuner_time=False)
    assert oracle.predicted == 5 and all(r.state is TrialState.COMPLETE for r in sw.results)


def test_cli_refusals(tabulated: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "branin", "--simulated", "--tuners", "ray", "--tracking-uri", "none"]) == 2
    assert "Ray Tune" in capsys.readouterr().err
    assert main(["benchmark", "branin", "--simulated", "--table", "/nonexistent.parquet",
                 "--tracking-uri", "none"]) == 2
    assert "harness tabulate" in capsys.readouterr().err
    assert main(["tabulate", "branin", "--configs", "0", "--tracking-uri", "none"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_simulated_benchmark_prints_the_verdict(tabulated: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = tabulated["root"]
    rc = main(["benchmark", tabulated["space"], "--simulated", "--table", str(tabulated["second"].out),
               "--tuners", "optuna,random", "--seeds", "3", "--trials", "6", "--format", "json",
               "--out", str(root / "bench"), "--tracking-uri", "none"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    row = out["verdicts"]["6"]["tuners"]["optuna"]
    assert set(row) >= {"normalized_regret", "iqm", "ci95", "mean_rank"}
    assert row["ci_level"] is None and "not a 95% interval" in row["ci_note"]  # 3 seeds
    # two tuners: the exact paired test, not an asymptotic Friedman
    assert out["verdicts"]["6"]["friedman"] is None and out["verdicts"]["6"]["paired_test"] is not None
    text = (root / "bench" / "verdict.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in verdict.json: not strict JSON"))


def test_a_seedless_objective_gets_no_seed_noise_and_bounds_are_the_one_normalization(tabulated: dict) -> None:
    from harness.ranking import normalization

    spec, df = tabulated["spec"], tabulated["table"]
    oracle = TableOracle(spec, df)
    params = {"x1": 1.234, "x2": 5.678, "kind": "b"}  # not tabulated
    values = {oracle(TrialTask(0, "branin", params, {}, s)).metrics["value"] for s in range(12)}
    # branin ignores the seed: its table's seeds agree exactly, so no noise is simulated either
    # (tests/unit/harness/test_oracle.py checks a table with known seed noise)
    assert len(values) == 1
    f = df[(df["kind"] == "final") & (df["state"] == "complete")]
    want = normalization({c: g.tolist() for c, g in f.groupby("config_id")["metric.value"]}, "minimize")
    norm = oracle.normalization()
    assert (norm.optimum, norm.worst) == (want.optimum, want.worst)


def test_cli_truncated_table_is_one_line_exit_2(tabulated: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    good = Path(tabulated["second"].out)
    cut = tmp_path / "tiny.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["benchmark", tabulated["space"], "--simulated", "--table", str(cut), "--tuners", "random",
                 "--seeds", "1", "--trials", "2", "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(cut) in err and "harness tabulate" in err and len(err.splitlines()) == 1


def test_tabulate_dense_stage_around_the_best_decile(tabulated: dict) -> None:
    """--dense N: N more configurations x the seeds around the Sobol stage's best decile,
    designed once (a rerun runs the same ones), indexed after the Sobol stage."""
    import shutil

    from harness.tabulate import dense_design

    root = tabulated["root"]
    shutil.copytree(root / "state" / "tiny", root / "dense-state" / "tiny")
    opts = dict(space=tabulated["space"], seeds=2, configs=8, out=root / "dense.parquet",
                state_root=root / "dense-state", tracking_uri="none")
    s = tabulate(TabulateOptions(dense=3, **opts))  # type: ignore[arg-type]
    assert s.ran == 3 * 2 and s.trials == 16 + 6 and s.configs == 11
    df = pd.read_parquet(s.out)
    finals = df[df["kind"] == "final"]
    assert sorted(set(finals["config"])) == list(range(11))
    sobol = tabulated["table"]
    want = dense_design(tabulated["spec"], sobol, n=3, seed=0)
    got = [finals[finals["config"] == i].iloc[0] for i in (8, 9, 10)]
    assert [round(float(r["param.x1"]), 12) for r in got] == [round(float(w["x1"]), 12) for w in want]
    again = tabulate(TabulateOptions(dense=3, **opts))  # type: ignore[arg-type]
    assert again.ran == 0 and again.trials == 22  # resumed: nothing to run, the same design
