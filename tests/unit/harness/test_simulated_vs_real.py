"""benchmarks/simulated_vs_real.py's report from raw per-side files (no run): the hours of real
sweeps are kept as small JSON, and the report must read them back to the same agreement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.oracle import find_table
from harness.tabulate import sha256
from tests.conftest import load_script

SPACE = "locoprop-quick"
TUNERS = ["optuna:tpe", "random", "ax"]


def _script():
    return load_script("benchmarks/simulated_vs_real.py")


def _curves(levels: dict[str, float], seeds: int, trials: int) -> dict[str, dict[str, list[float]]]:
    """Best curves that fall to a tuner's level (plus a small per-seed offset) by the last trial."""
    return {t: {str(s): [lv + 0.01 * s + (trials - i) * 0.1 for i in range(1, trials + 1)] for s in range(seeds)}
            for t, lv in levels.items()}


def _raw(tmp: Path, real: dict[str, float], sim: dict[str, float], digest: str, trials: int = 6) -> Path:
    raw = tmp / "raw"
    (raw / SPACE).mkdir(parents=True)
    (raw / SPACE / "real.json").write_text(json.dumps({
        "space": SPACE, "benchmark_ids": ["svr-x"], "trials": trials,
        "costs": [{"benchmark_id": "svr-x", "wall_seconds": 1.0, "load_before": 0.0, "load_after": 0.0, "cpus": 2}],
        "curves": _curves(real, 6, trials)}))
    mod = _script()
    for t, curves in _curves(sim, 8, trials).items():
        (raw / SPACE / f"sim-{mod.canon(t).replace(':', '-')}.json").write_text(json.dumps({
            "space": SPACE, "tuner": t, "trials": trials, "table_sha256": digest, "wall_seconds": 2.0,
            "curves": {t: curves}}))
    return raw


@pytest.mark.parametrize(("sim", "tau"), [({"optuna:tpe": 18.0, "random": 20.0, "ax": 22.0}, 1.0),
                                          ({"optuna:tpe": 22.0, "random": 20.0, "ax": 18.0}, -1.0)])
def test_report_from_raw_files_gives_the_agreement_of_their_orders(tmp_path: Path, sim: dict[str, float],
                                                                   tau: float) -> None:
    raw = _raw(tmp_path, {"optuna:tpe": 18.5, "random": 20.5, "ax": 22.5}, sim, sha256(find_table(SPACE)))
    out = tmp_path / "svr.json"
    assert _script().main(["--spaces", SPACE, "--tuners", ",".join(TUNERS), "--budgets", "3,6", "--part", "report",
                           "--raw", str(raw), "--reps", "50", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    res = json.loads(text)["spaces"][SPACE]
    assert set(res["budgets"]) == {"3", "6"}
    for b in ("3", "6"):
        a = res["budgets"][b]
        assert a["tau_iqm"] == pytest.approx(tau) and a["tau_rank"] == pytest.approx(tau)
        assert a["real_seeds"] == list(range(6)) and a["sim_seeds"] == list(range(8))
    assert res["table_sha256"] == sha256(find_table(SPACE))
    assert res["normalization"]["optimum"] < res["normalization"]["worst"]


def test_a_space_without_its_real_side_is_not_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path, {"optuna:tpe": 1.0, "random": 2.0, "ax": 3.0}, {"optuna:tpe": 1.0, "random": 2.0, "ax": 3.0},
               "another-table")
    (raw / SPACE / "real.json").unlink()
    out = tmp_path / "svr.json"
    assert _script().main(["--spaces", SPACE, "--tuners", ",".join(TUNERS), "--budgets", "3", "--part", "report",
                           "--raw", str(raw), "--out", str(out)]) == 0
    assert "no raw results of the real side" in capsys.readouterr().out
    assert json.loads(out.read_text())["spaces"] == {}


def test_at_reads_a_budget_and_leaves_out_shorter_sweeps() -> None:
    at = _script().at
    curves = {"a": {0: [3.0, 2.0, 1.0], 1: [5.0, 4.0]}, "b": {0: [math.nan, 7.0, 7.0]}}
    assert at(curves, 3) == {"a": {0: 1.0}, "b": {0: 7.0}}
    got = at(curves, 1)
    assert got["a"] == {0: 3.0, 1: 5.0} and math.isnan(got["b"][0])


def test_a_continuation_runs_only_the_missing_seeds_grouped_by_tuner() -> None:
    groups = _script().missing_groups
    have = {"a": {0: [1.0], 1: [1.0], 2: [1.0]}, "b": {0: [1.0]}, "c": {0: [1.0]}}
    assert groups(have, ["a", "b", "c", "d"], 3) == {(1, 2): ["b", "c"], (0, 1, 2): ["d"]}
    assert groups(have, ["a"], 3) == {}


def test_the_calibrated_surrogate_is_reported_from_its_own_files(tmp_path: Path) -> None:
    """``--surrogate calibrated`` reads sim-TUNER-calibrated.json, never the plain files beside it,
    and says which surrogate the report is of."""
    digest = sha256(find_table(SPACE))
    real = {"optuna:tpe": 18.5, "random": 20.5, "ax": 22.5}
    raw = _raw(tmp_path, real, {"optuna:tpe": 18.0, "random": 20.0, "ax": 22.0}, digest)  # plain: same order
    mod = _script()
    for t, curves in _curves({"optuna:tpe": 22.0, "random": 20.0, "ax": 18.0}, 8, 6).items():  # reversed
        mod._sim_path(raw, SPACE, t, "calibrated").write_text(json.dumps({
            "space": SPACE, "tuner": t, "trials": 6, "table_sha256": digest, "wall_seconds": 2.0,
            "surrogate": "calibrated", "curves": {t: curves}}))
    assert mod._sim_path(raw, SPACE, "optuna:tpe", "calibrated").name == "sim-optuna-calibrated.json"
    taus = {}
    for surrogate in ("plain", "calibrated"):
        out = tmp_path / f"{surrogate}.json"
        assert mod.main(["--spaces", SPACE, "--tuners", ",".join(TUNERS), "--budgets", "6", "--part", "report",
                         "--raw", str(raw), "--reps", "50", "--surrogate", surrogate, "--out", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["surrogate"] == doc["spaces"][SPACE]["surrogate"] == surrogate
        taus[surrogate] = doc["spaces"][SPACE]["budgets"]["6"]["tau_iqm"]
    assert taus == {"plain": pytest.approx(1.0), "calibrated": pytest.approx(-1.0)}


@pytest.mark.parametrize("seeds", [[0, 1, 2], [9], [0], [3, 7], [5, 6, 7, 8, 9]])
def test_the_seeds_option_names_exactly_the_missing_seeds(seeds: list[int]) -> None:
    """A continuation of seed 9 alone must not run seeds 0 .. 8 (a bare ``9`` is a count)."""
    from harness.compare.benchmark import parse_seeds, seeds_text

    assert parse_seeds(seeds_text(seeds)) == seeds
