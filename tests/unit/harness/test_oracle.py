"""The oracle of a tabulated space (issue 22): seed noise as real seeds have it, exact replay,
safe table reading, the table resolver and the dense design.

Known properties: on a synthetic table whose seed noise is known (log-normal, sigma given), the
simulated seed-to-seed spread of held-out configurations equals the real one (ratio in
[0.8, 1.25]) and sigma itself; where the noise differs by region, the simulated noise follows
the region; a tabulated configuration under a tabulated seed is its table row, bit for bit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.oracle import (
    SHIPPED_TABLES,
    NoiseModel,
    TableError,
    TableOracle,
    find_table,
    load_table,
    noise_spread_ratio,
    table_normalization,
)
from harness.ranking import normalization
from harness.spec import load_spec
from harness.tabulate import config_id, dense_design, from_unit, sha256, to_unit
from harness.trials import TrialTask

SPACE = """\
objective: branin
metric: {name: value, goal: minimize}
fixed: {steps: 8}
params:
  x1: {type: float, low: 0.0, high: 1.0}
  x2: {type: float, low: 0.0, high: 1.0}
budget: {trials: 8, report_every: 2}
"""
STEPS = (2, 4, 6, 8)


def truth(x1: float, x2: float) -> float:
    return 0.1 + x1 ** 2 + 0.5 * x2


def synthetic(sigma: Callable | float, configs: int = 160, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """A tidy table: value = truth(x) * (1 + 1/step) * exp(sigma(x) * eps_seed), eps ~ N(0, 1), one
    eps per (configuration, seed) for the whole curve (a seed is good or bad throughout)."""
    rng = np.random.default_rng(seed)
    sig = sigma if callable(sigma) else (lambda x1, x2: sigma)
    rows = []
    for c in range(configs):
        x1, x2 = (float(v) for v in rng.random(2))
        cid = config_id({"x1": x1, "x2": x2})
        for s in range(seeds):
            eps = float(rng.normal())
            base = {"config_id": cid, "config": c, "seed": s, "state": "complete", "param.x1": x1, "param.x2": x2}
            for step in STEPS:
                v = truth(x1, x2) * (1 + 1 / step) * math.exp(sig(x1, x2) * eps)
                rows.append({**base, "kind": "report", "step": step, "elapsed_s": 0.5 * step,
                             "seconds_per_step": 0.5, "metric.value": v})
            rows.append({**base, "kind": "final", "step": 8, "elapsed_s": 4.0, "seconds_per_step": 0.5,
                         "metric.value": truth(x1, x2) * (1 + 1 / 8) * math.exp(sig(x1, x2) * eps)})
    return pd.DataFrame(rows)



@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("oracle") / "synthetic.yaml"
    path.write_text(SPACE)
    return load_spec(str(path))


def test_simulated_seed_spread_matches_a_known_noise(spec) -> None:
    sigma = 0.3
    table = synthetic(sigma)
    res = noise_spread_ratio(spec, table, sims=30, seed=1)
    assert res["space"] == "log" and res["configs"] == 160
    assert 0.8 <= res["ratio"] <= 1.25 and 0.8 <= res["ratio_median"] <= 1.25, res
    assert res["ratio_ci"][0] <= res["ratio"] <= res["ratio_ci"][1]
    assert res["simulated_sd"] == pytest.approx(sigma, rel=0.15)  # the known sigma itself
    assert res["real_sd"] == pytest.approx(sigma, rel=0.15)
    # without noise the simulation has no seed-to-seed spread at all (what the issue found)
    flat = TableOracle(spec, table, noise=False)
    params = {"x1": 0.31, "x2": 0.77}
    vals = {flat(TrialTask(0, "branin", params, {}, s)).metrics["value"] for s in range(5)}
    assert len(vals) == 1


def test_noise_follows_the_region_it_is_drawn_from(spec) -> None:
    table = synthetic(lambda x1, x2: 0.05 if x1 < 0.5 else 0.4, configs=240, seed=2)
    local = noise_spread_ratio(spec, table, sims=30, seed=0)
    assert 0.8 <= local["ratio_median"] <= 1.25, local
    # a model that ignores where the noise comes from (every configuration a neighbour) keeps the
    # pooled spread but not the typical one: the robust ratio catches it
    pooled = noise_spread_ratio(spec, table, sims=30, seed=0, neighbours=10_000)
    assert 0.8 <= pooled["ratio"] <= 1.25 and pooled["ratio_median"] > 1.5, pooled
    oracle = TableOracle(spec, table)
    model = oracle.noise_model
    assert isinstance(model, NoiseModel)
    for x1, want in ((0.2, 0.05), (0.8, 0.4)):
        sds = []
        for x2 in (0.2, 0.5, 0.8):
            v = [oracle(TrialTask(0, "branin", {"x1": x1, "x2": x2}, {}, 100 + s)).metrics["value"] for s in range(60)]
            sds.append(float(np.std(np.log(v), ddof=1)))
        assert float(np.sqrt(np.mean(np.square(sds)))) == pytest.approx(want, rel=0.35), (x1, sds)


def test_replay_exact_tabulated_seed_and_deterministic_per_seed(spec) -> None:
    table = synthetic(0.3, configs=40)
    oracle = TableOracle(spec, table)
    row = table[(table["config"] == 3) & (table["kind"] == "final")].sort_values("seed")
    params = {"x1": float(row["param.x1"].iloc[0]), "x2": float(row["param.x2"].iloc[0])}
    for s in range(3):  # the table's seeds are kept: seed s is the table's seed s, bit for bit
        c = oracle(TrialTask(0, "branin", params, {}, s))
        assert c.metrics["value"] == float(row["metric.value"].iloc[s])
        assert c.seconds == float(row["elapsed_s"].iloc[s])
    assert oracle.exact == 3 and oracle.predicted == 0
    # a seed the table does not hold: the configuration's mean plus a drawn deviation, reproducible
    a = oracle(TrialTask(0, "branin", params, {}, 17)).metrics["value"]
    b = oracle(TrialTask(5, "branin", params, {}, 17)).metrics["value"]
    c = oracle(TrialTask(0, "branin", params, {}, 18)).metrics["value"]
    assert a == b and a != c and oracle.resampled == 3
    # an untabulated configuration: the surrogate plus a deviation; curves keep their shape
    new = {"x1": 0.123, "x2": 0.456}
    curves = [oracle(TrialTask(0, "branin", new, {}, s)) for s in range(7, 15)]
    # the deviations are real seeds' (3 neighbours x 3 seeds = 9 of them): 8 draws repeat some
    assert oracle.predicted == 8 and len({cv.metrics["value"] for cv in curves}) >= 5
    for cv in curves:
        assert [s for s, _, _ in cv.reports] == list(STEPS) and all(v > 0 for _, _, m in cv.reports
                                                                   for v in m.values())
        assert cv.reports[-1][1] <= cv.seconds


def test_oracle_bounds_are_the_one_normalization(spec) -> None:
    table = synthetic(0.3, configs=30)
    oracle = TableOracle(spec, table)
    f = table[table["kind"] == "final"]
    means = f.groupby("config_id")["metric.value"].mean()
    norm = oracle.normalization()
    assert (norm.optimum, norm.worst) == (pytest.approx(means.min()), pytest.approx(means.median()))
    want = normalization({c: g.tolist() for c, g in f.groupby("config_id")["metric.value"]}, "minimize")
    assert (norm.optimum, norm.worst) == (want.optimum, want.worst)
    assert table_normalization("x", "value", "minimize", table=table).optimum == want.optimum


def test_a_truncated_or_corrupt_table_is_one_line(tmp_path: Path) -> None:
    good = tmp_path / "gflownet-quick.parquet"
    synthetic(0.1, configs=5).to_parquet(good, index=False)
    assert len(load_table(good)) == 5 * 3 * 5
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TableError) as err:
        load_table(cut, "gflownet-quick")
    msg = str(err.value)
    assert str(cut) in msg and "harness tabulate gflownet-quick" in msg and "make tables" in msg
    assert "\n" not in msg
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(TableError, match="truncated or corrupt"):
        load_table(tmp_path / "junk.parquet")
    # a checksum beside it that disagrees: the file changed since it was written
    Path(str(good) + ".sha256").write_text(f"{'0' * 64}  {good.name}\n")
    with pytest.raises(TableError, match="checksum"):
        load_table(good)
    Path(str(good) + ".sha256").write_text(f"{sha256(good)}  {good.name}\n")
    assert len(load_table(good)) == 75
    with pytest.raises(TableError, match="no table"):
        load_table(tmp_path / "absent.parquet")


def test_shipped_tables_are_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = find_table("gflownet-quick")
    assert path == SHIPPED_TABLES / "gflownet-quick.parquet" and path.exists()
    assert find_table("search_spaces/locoprop-quick.yaml").name == "locoprop-quick.parquet"
    # a table the user built in this folder wins
    local = tmp_path / "benchmarks" / "tables"
    local.mkdir(parents=True)
    (local / "gflownet-quick.parquet").write_bytes(path.read_bytes())
    assert find_table("gflownet-quick") == Path("benchmarks/tables/gflownet-quick.parquet")
    with pytest.raises(TableError) as err:
        find_table("no-such-space")
    assert "harness tabulate no-such-space" in str(err.value)
    assert find_table("no-such-space", required=False) is None
    assert os.getcwd() == str(tmp_path)


def test_dense_design_lies_around_the_best_decile(spec) -> None:
    table = synthetic(0.05, configs=100)
    design = dense_design(spec, table, 60, seed=3, radius=0.05)
    assert len(design) == 60
    assert len({config_id(p) for p in design}) == 60
    assert not {config_id(p) for p in design} & set(table["config_id"])
    f = table[table["kind"] == "final"].groupby("config_id")[["metric.value", "param.x1", "param.x2"]].mean()
    elite = f.nsmallest(10, "metric.value")[["param.x1", "param.x2"]].to_numpy()
    for p in design:
        assert spec.params["x1"].contains(p["x1"]) and spec.params["x2"].contains(p["x2"])
        dist = np.abs(elite - np.array([p["x1"], p["x2"]])).max(axis=1).min()
        assert dist <= 0.05 + 1e-9
    # the dense configurations are better on average than the table's (the point of the stage)
    assert np.mean([truth(p["x1"], p["x2"]) for p in design]) < 0.5 * f["metric.value"].mean()


@pytest.mark.parametrize("name", ["lr", "hidden", "depth", "loss", "batch_size", "temperature"])
def test_to_unit_inverts_from_unit(name: str) -> None:
    p = load_spec("gflownet-quick").params[name]
    for u in np.linspace(0.0, 0.999, 37):
        v = from_unit(p, float(u))
        back = from_unit(p, to_unit(p, v))
        assert back == v if not isinstance(v, float) else back == pytest.approx(v, rel=1e-12)


def test_surrogate_calibration_is_monotone_stays_in_range_and_stretches(spec) -> None:
    from scipy.stats import spearmanr

    from harness.surrogate import Surrogate

    table = synthetic(0.02, configs=120)
    raw, cal = Surrogate(spec, table), Surrogate(spec, table, calibrate=True)
    assert raw.calibration is None and cal.calibration is not None
    a, b = cal.calibration
    assert b > 1.0  # the forest's predictions shrink toward the middle: the line stretches them
    configs = [{"x1": float(x1), "x2": float(x2)} for x1, x2 in np.random.default_rng(5).random((200, 2))]
    p, q = raw.predict_finals(configs), cal.predict_finals(configs)
    vals = table["metric.value"]
    assert q.min() >= vals.min() and q.max() <= vals.max()
    inside = (q > vals.min()) & (q < vals.max())
    assert spearmanr(p[inside], q[inside]).statistic == pytest.approx(1.0)  # ranks unchanged
    # the whole curve goes through the same map: the final equals the batched prediction
    assert cal.predict(configs[0]).metrics["value"] == pytest.approx(q[0])
    # and it moves predictions toward the truth at the good end
    truth = np.array([truth_of(c) for c in configs])
    best = np.argsort(truth)[:20]
    assert np.abs(np.log(q[best] / truth[best])).mean() < np.abs(np.log(p[best] / truth[best])).mean()


def truth_of(c: dict) -> float:
    return truth(c["x1"], c["x2"]) * (1 + 1 / 8)
