"""`harness benchmark` and `harness compare` on a real store: the compared numbers equal the same
numbers computed here directly from the MLflow runs, the plots are real images with one curve per
tuner, and a missing experiment or benchmark is one line, exit 2."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.conftest import harness_env

SPACE = """
objective: tests.objectives:quadratic
metric: {name: value, goal: minimize}
fixed: {y: 2.5}
params:
  x: {type: float, low: -1.0, high: 1.0}
  kind: {type: choice, values: [a, b]}
budget: {trials: 4}
"""
TUNERS = ["optuna", "random"]
SEEDS = [0, 1]
BUDGET_STEPS = 13  # quadratic reports 3 steps a trial: 5 trials (15 steps) per sweep


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "quad.yaml").write_text(SPACE)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "benchmark", "quad.yaml", "--tuners", ",".join(TUNERS),
         "--seeds", str(len(SEEDS)), "--budget-steps", str(BUDGET_STEPS), "--workers", "1",
         "--devices", "cpu", "--tracking-uri", uri, "--id", "b1", "--out", "plots", "--format", "json"],
        cwd=tmp, env=harness_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return tmp, uri, json.loads(proc.stdout)


def direct(uri: str, bid: str) -> dict[str, dict]:
    """Per sweep, straight from the runs: final best, counts, and the cost to reach any target."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quad")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("harness.benchmark") == bid
               and r.data.tags.get("harness.kind") == "sweep"]
    out = {}
    for p in parents:
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        kids.sort(key=lambda r: (r.info.end_time, r.data.metrics["elapsed_s"]))
        complete = [k for k in kids if k.data.tags["harness.state"] == "complete"]
        best = min(k.data.metrics["value"] for k in complete)
        history = client.get_metric_history(p.info.run_id, "best_so_far")
        assert max(history, key=lambda m: m.step).value == best  # the parent's own curve agrees
        out[p.info.run_id] = {"tuner": p.data.tags["harness.tuner"], "seed": int(p.data.tags["harness.seed"]),
                              "best": best, "kids": kids, "complete": len(complete),
                              "pruned": sum(k.data.tags["harness.state"] == "pruned" for k in kids),
                              "failed": sum(k.data.tags["harness.state"] == "failed" for k in kids)}
    return out


def reach(kids: list, target: float) -> tuple[float, float, int]:
    """Steps, seconds (from the first trial's start) and trials until the best reached ``target``."""
    t0 = max(0.0, min(k.data.metrics["elapsed_s"] - k.data.metrics["seconds"] for k in kids))
    steps, best = 0.0, math.inf
    for n, k in enumerate(kids, start=1):
        steps += k.data.metrics["steps"]
        if k.data.tags["harness.state"] == "complete":
            best = min(best, k.data.metrics["value"])
        if best <= target:
            return steps, k.data.metrics["elapsed_s"] - t0, n
    raise AssertionError("target not reached")


def test_benchmark_numbers_equal_the_runs(bench):
    _, uri, doc = bench
    runs = direct(uri, "b1")
    assert sorted((r["tuner"], r["seed"]) for r in runs.values()) == sorted((t, s) for t in TUNERS for s in SEEDS)
    assert doc["benchmark"] == "b1" and doc["metric"] == "value" and doc["goal"] == "minimize"
    assert "t-test" in doc["test"] and "Holm" in doc["test"] and "Wilcoxon" in doc["test"]

    # equal budget in steps: every sweep stopped after the trial that crossed it
    assert {s["steps_used"] for s in doc["sweeps"]} == {15}
    target = max(r["best"] for r in runs.values())  # the default: the worst final best
    assert doc["target"] == target
    by_seed = {t: {r["seed"]: r["best"] for r in runs.values() if r["tuner"] == t} for t in TUNERS}
    ranks = {t: [] for t in TUNERS}
    for seed in SEEDS:
        order = sorted(TUNERS, key=lambda t: by_seed[t][seed])
        for t in TUNERS:
            tied = [i + 1 for i, u in enumerate(order) if by_seed[u][seed] == by_seed[t][seed]]
            ranks[t].append(sum(tied) / len(tied))
    rows = {r["tuner"]: r for r in doc["tuners"]}
    assert set(rows) == set(TUNERS)
    for t in TUNERS:
        mine = [r for r in runs.values() if r["tuner"] == t]
        bests = [r["best"] for r in mine]
        row = rows[t]
        assert row["sweeps"] == 2 and row["seeds"] == SEEDS
        assert (row["complete"], row["pruned"], row["failed"]) == (
            sum(r["complete"] for r in mine), sum(r["pruned"] for r in mine), sum(r["failed"] for r in mine))
        assert row["best_mean"] == pytest.approx(statistics.mean(bests), rel=1e-12)
        assert row["best_std"] == pytest.approx(statistics.stdev(bests), rel=1e-12)
        assert row["best_median"] == pytest.approx(statistics.median(bests), rel=1e-12)
        hits = [reach(r["kids"], target) for r in mine]
        assert row["reached"] == 2
        assert row["steps_to_target"] == pytest.approx(np.mean([h[0] for h in hits]))
        assert row["seconds_to_target"] == pytest.approx(np.mean([h[1] for h in hits]))
        assert row["trials_to_target"] == pytest.approx(np.mean([h[2] for h in hits]))
        assert row["mean_rank"] == pytest.approx(np.mean(ranks[t]))
    (pair,) = doc["pairs"]
    a, b = pair["a"], pair["b"]
    assert pair["n"] == 2
    assert pair["mean_diff"] == pytest.approx(np.mean([by_seed[a][s] - by_seed[b][s] for s in SEEDS]))
    assert pair["ci_low"] <= pair["mean_diff"] <= pair["ci_high"]
    assert pair["p_holm"] == pair["p_value"]  # one pair: nothing to adjust


def test_verdict_equals_ranking_recomputed_from_the_runs(bench, capsys):
    from harness.ranking import VERDICT_KEYS, verdict

    tmp, uri, doc = bench
    runs = direct(uri, "b1")
    # the one normalization: each distinct configuration (its params) is one, its values averaged;
    # optimum = the best configuration mean, worst = the median one (no table of 'quad' exists)
    by_config: dict[str, list[float]] = {}
    for r in runs.values():
        for k in r["kids"]:
            if k.data.tags["harness.state"] == "complete":
                by_config.setdefault(json.dumps(dict(sorted(k.data.params.items()))), []).append(
                    k.data.metrics["value"])
    means = [float(np.mean(v)) for v in by_config.values()]
    finals = {t: {r["seed"]: r["best"] for r in runs.values() if r["tuner"] == t} for t in TUNERS}
    expected = verdict(finals, min(means), float(np.median(means)), "minimize")
    v = doc["verdict"]
    assert (v["optimum"], v["worst"]) == (pytest.approx(min(means)), pytest.approx(float(np.median(means))))
    assert v["normalization"] == {"optimum": v["optimum"], "worst": v["worst"], "source": v["range_source"]}
    assert "median" in v["range_source"]
    assert list(v["tuners"]) == list(expected.tuners)
    rows = {r["tuner"]: r for r in doc["tuners"]}
    for t in TUNERS:
        want = expected.tuners[t]
        assert set(VERDICT_KEYS) <= set(rows[t]) and set(VERDICT_KEYS) <= set(v["tuners"][t])
        for key in ("normalized_regret", "iqm", "mean_rank"):
            assert v["tuners"][t][key] == pytest.approx(want[key], rel=1e-12, abs=1e-15)
        assert rows[t]["normalized_regret"] == pytest.approx(want["normalized_regret"], rel=1e-12, abs=1e-15)
        assert rows[t]["iqm"] == pytest.approx(want["iqm"], rel=1e-12, abs=1e-15)
        assert rows[t]["ci95"] == pytest.approx(want["ci95"], rel=1e-12, abs=1e-15)
        assert rows[t]["ci95"][0] <= rows[t]["iqm"] <= rows[t]["ci95"][1]
        assert rows[t]["mean_rank"] == pytest.approx(want["mean_rank"])
        assert v["tuners"][t]["ci_level"] is None  # 2 seeds: no 95% interval, and it says so
    # two tuners: the exact paired test, no Friedman and no Nemenyi CD
    assert v["friedman"] is None and v["cd"] is None
    assert v["paired_test"]["pvalue"] == expected.paired.pvalue and v["groups"] == expected.groups
    # regret and rank against the budget: one value per finished trial, ranks in [1, 2]
    curves = v["curves"]["trials"]
    assert curves["x"][0] == 1 and set(curves["mean_rank"]) == set(TUNERS)
    assert all(1.0 <= r <= 2.0 for t in TUNERS for r in curves["mean_rank"][t])
    assert "seconds" in v["curves"]
    for name in ("regret_rank_trials", "regret_rank_seconds"):
        assert (tmp / "plots" / f"{name}.png").stat().st_size > 0 and (tmp / "plots" / f"{name}.html").exists()
    assert not (tmp / "plots" / "cd_diagram.png").exists()  # no critical difference for two tuners
    logged = {f.path for f in MlflowClient(uri).list_artifacts(doc["plots"]["run_id"])}
    assert {"regret_rank_trials.png", "regret_rank_trials.html", "compare.json"} <= logged
    json.loads((tmp / "plots" / "compare.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} in compare.json: not strict JSON"))

    assert main(["compare", "--benchmark", "b1", "--tracking-uri", uri]) == 0
    text = capsys.readouterr().out
    assert "normalized regret" in text and "exact paired test over 2 seeds" in text and "groups" in text
    assert main(["compare", "--benchmark", "b1", "--tracking-uri", uri, "--format", "markdown"]) == 0
    assert "not a 95% interval" in capsys.readouterr().out  # 2 seeds (rich wraps the table's text)
    # a given range is used as is; one the wrong way round is one line, exit 2
    assert main(["compare", "--benchmark", "b1", "--tracking-uri", uri, "--format", "json",
                 "--optimum", "-1", "--worst", "100"]) == 0
    given = json.loads(capsys.readouterr().out)["verdict"]
    assert (given["optimum"], given["worst"]) == (-1.0, 100.0) and "--optimum" in given["range_source"]
    assert main(["compare", "--benchmark", "b1", "--tracking-uri", uri, "--optimum", "100", "--worst", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--optimum / --worst" in err and len(err.splitlines()) == 1


def test_plots_are_images_with_one_curve_per_tuner(bench):
    from PIL import Image

    tmp, uri, doc = bench
    out = tmp / "plots"
    for name in ("best_vs_trials.png", "best_vs_steps.png", "best_vs_seconds.png"):
        with Image.open(out / name) as img:
            img.verify()
            assert img.size[0] > 400
    assert doc["plots"]["curves"] == {p: doc_order(doc) for p in ("trials", "steps", "seconds")}
    fig = json.loads((out / "compare.plotly.json").read_text())
    means = [tr for tr in fig["data"] if tr.get("meta") == "mean"]
    assert sorted(tr["name"] for tr in means) == sorted(TUNERS * 3)  # one per tuner in each panel
    assert "plotly" in (out / "compare.html").read_text()[:200000].lower()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quad")
    (run,) = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'comparison'")
    assert run.info.run_id == doc["plots"]["run_id"]
    assert run.data.tags["harness.benchmark"] == "b1"
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"best_vs_trials.png", "best_vs_steps.png", "best_vs_seconds.png", "compare.html",
            "compare.json"} <= logged


def doc_order(doc: dict) -> list[str]:
    return [r["tuner"] for r in doc["tuners"]]


def test_compare_formats_read_the_same_store(bench, capsys):
    _, uri, doc = bench
    assert main(["compare", "--benchmark", "b1", "--tracking-uri", uri, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("experiment,benchmark,metric,goal,target,tuner,")
    assert [ln.split(",")[5] for ln in lines[1:]] == doc_order(doc)
    assert main(["compare", "--experiment", "quad", "--tracking-uri", uri, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| tuner |" in md and "t-test" in md and all(f"| {t} |" in md for t in TUNERS)


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "nope"], "--benchmark nope: no sweeps of that benchmark"),
    (["--experiment", "empty"], "experiment 'empty' has no sweeps to compare"),
    (["--experiment", "missing"], "--experiment missing: no such experiment"),
])
def test_compare_without_sweeps_is_one_line_exit_2(bench, capsys, args, message):
    _, uri, _ = bench
    MlflowClient(uri).get_experiment_by_name("empty") or MlflowClient(uri).create_experiment("empty")
    assert main(["compare", *args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_benchmark_with_a_tuner_not_installed_is_exit_2(tmp_path, capsys):
    (tmp_path / "quad.yaml").write_text(SPACE)
    code = main(["benchmark", str(tmp_path / "quad.yaml"), "--tuners", "optuna,nosuch",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    assert "nosuch not installed" in capsys.readouterr().err


def test_compare_without_a_store_creates_none(tmp_path, capsys):
    assert main(["compare", "--tracking-uri", f"sqlite:///{tmp_path / 'nope.db'}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
