"""Verdict statistics against hand-computed and textbook cases (harness.ranking, harness.ranking_plots)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.ranking import (
    VERDICT_KEYS,
    cd_groups,
    curve_band,
    friedman,
    iqm,
    nemenyi_cd,
    normalized_regret,
    ranks_over_time,
    ranks_per_seed,
    stratified_bootstrap_ci,
    verdict,
)

# Demsar (2006), table 6: AUC of C4.5 (c45), C4.5+m (m), C4.5+cf (cf), C4.5+m+cf (mcf) on 14 data
# sets (higher is better). As printed, the voting row has cf and mcf tied at 0.975; the paper's
# ranks (3.143, 2.000, 2.893, 1.964) come from unrounded AUCs where cf is ahead there, so that
# row's cf is 0.97501 here, which reproduces every number of the worked example.
DEMSAR = np.array([
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.97501, 0.975], [0.957, 0.978, 0.946, 0.970],
])


# -- regret --------------------------------------------------------------------------------
def test_regret_minimize_is_the_fraction_of_the_range_and_clips():
    r = normalized_regret([0.0, 2.5, 10.0, -1.0, 12.0], optimum=0.0, worst=10.0, goal="minimize")
    np.testing.assert_allclose(r, [0.0, 0.25, 1.0, 0.0, 1.0])  # below the optimum -> 0, past the worst -> 1


def test_regret_maximize_measures_the_distance_below_the_optimum():
    # accuracy in [0.5, 0.9]: 0.8 is a quarter of the way down from the optimum
    assert normalized_regret(0.8, optimum=0.9, worst=0.5, goal="maximize") == pytest.approx(0.25)
    np.testing.assert_allclose(normalized_regret([0.95, 0.4], 0.9, 0.5, "maximize"), [0.0, 1.0])


def test_regret_keeps_nan_and_refuses_bounds_the_wrong_way_round():
    assert math.isnan(normalized_regret(float("nan"), 0.0, 1.0))
    with pytest.raises(ValueError, match="below"):
        normalized_regret(0.5, optimum=1.0, worst=0.0, goal="minimize")
    with pytest.raises(ValueError, match="above"):
        normalized_regret(0.5, optimum=0.0, worst=1.0, goal="maximize")
    with pytest.raises(ValueError, match="equal"):
        normalized_regret(0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="goal"):
        normalized_regret(0.5, 0.0, 1.0, goal="max")  # type: ignore[arg-type]


# -- IQM and the bootstrap ------------------------------------------------------------------------
def test_iqm_by_hand():
    # 8 values sorted: 1 2 3 4 5 6 7 100; int(0.25 * 8) = 2 cut from each end -> mean(3, 4, 5, 6) = 4.5
    assert iqm([5, 1, 100, 3, 7, 2, 6, 4]) == pytest.approx(4.5)
    # 5 values: int(1.25) = 1 cut from each end -> mean(2, 3, 50) = 55 / 3
    assert iqm([1, 2, 3, 50, 1000]) == pytest.approx(55 / 3)
    # 3 values: int(0.75) = 0, nothing cut: the IQM is the mean (rliable's trim_mean semantics)
    assert iqm([1, 2, 9]) == pytest.approx(4.0)
    # a 2-D (runs, tasks) matrix is pooled, as rliable's aggregate_iqm does
    assert iqm(np.array([[5, 1], [100, 3], [7, 2], [6, 4]])) == pytest.approx(4.5)
    np.testing.assert_allclose(iqm(np.array([[1, 2, 3, 4], [10, 20, 30, 40]]), axis=1), [2.5, 25.0])
    assert iqm([1.0, 2.0, 3.0, 4.0]) == stats.trim_mean([1.0, 2.0, 3.0, 4.0], 0.25)


def test_bootstrap_interval_covers_the_true_center_about_95_percent_of_the_time():
    rng = np.random.default_rng(20210)
    hits = 0
    for rep in range(200):
        sample = rng.normal(loc=3.0, scale=2.0, size=40)  # symmetric: the true IQM is the mean, 3
        lo, hi = stratified_bootstrap_ci(sample, iqm, reps=1000, seed=rep)
        hits += lo <= 3.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_resamples_within_each_task():
    # two tasks with constant runs: any resample within tasks keeps 4 zeros and 4 tens, so the
    # mean is always 5 and the interval collapses; resampling across tasks would not
    scores = {"task-a": np.zeros(4), "task-b": np.full(4, 10.0)}
    assert stratified_bootstrap_ci(scores, np.mean, reps=500, seed=1) == (5.0, 5.0)
    as_matrix = np.column_stack([np.zeros(4), np.full(4, 10.0)])  # (runs, tasks) as rliable takes it
    assert stratified_bootstrap_ci(as_matrix, np.mean, reps=500, seed=1) == (5.0, 5.0)
    # a statistic without an axis argument is applied replicate by replicate, with the same result
    assert stratified_bootstrap_ci(scores, lambda x: float(np.mean(x)), reps=50, seed=1) == (5.0, 5.0)


def test_bootstrap_is_reproducible_and_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=10), rng.normal(size=400)
    assert stratified_bootstrap_ci(small, seed=3) == stratified_bootstrap_ci(small, seed=3)
    w_small = np.diff(stratified_bootstrap_ci(small, seed=3))[0]
    w_large = np.diff(stratified_bootstrap_ci(large, seed=3))[0]
    assert 0 < w_large < w_small


def test_curve_band_brackets_the_center_step_by_step():
    rng = np.random.default_rng(1)
    values = np.sort(rng.uniform(size=(6, 30)), axis=1)[:, ::-1]  # decreasing like regret
    c, lo, hi = curve_band(values, iqm, reps=300, seed=0, chunk=7)
    np.testing.assert_allclose(c, [iqm(values[:, j]) for j in range(30)])
    assert np.all(lo <= c + 1e-12) and np.all(c <= hi + 1e-12)


# -- ranks -------------------------------------------------------------------------------------
def test_ranks_over_time_average_ties_and_nan_ranks_last():
    curves = {  # (seeds=2, budget=3), minimize
        "a": np.array([[5.0, 3.0, 1.0], [4.0, 4.0, 2.0]]),
        "b": np.array([[5.0, 2.0, 2.0], [np.nan, 3.0, 2.0]]),
        "c": np.array([[6.0, 3.0, 3.0], [1.0, 3.0, 2.0]]),
    }
    per = ranks_per_seed(curves, "minimize")
    # seed 0, step 0: a = b = 5 < c = 6 -> a and b share ranks 1 and 2 -> 1.5 each; c is 3
    # seed 1, step 0: c = 1 < a = 4 < b = nan -> 2, 3, 1
    np.testing.assert_allclose(per["a"][:, 0], [1.5, 2.0])
    np.testing.assert_allclose(per["b"][:, 0], [1.5, 3.0])
    np.testing.assert_allclose(per["c"][:, 0], [3.0, 1.0])
    mean = ranks_over_time(curves, "minimize")
    # step 1: seed 0 b=2 < a=c=3 -> a 2.5, b 1, c 2.5; seed 1 b=c=3 < a=4 -> a 3, b 1.5, c 1.5
    # step 2: seed 0 a 1, b 2, c 3; seed 1 all tied at 2 -> 2 each
    np.testing.assert_allclose(mean["a"], [1.75, 2.75, 1.5])
    np.testing.assert_allclose(mean["b"], [2.25, 1.25, 2.0])
    np.testing.assert_allclose(mean["c"], [2.0, 2.0, 2.5])
    for step in range(3):  # ranks of k tuners always sum to k (k + 1) / 2
        assert sum(m[step] for m in mean.values()) == pytest.approx(6.0)


def test_ranks_flip_with_the_goal_and_need_equal_shapes():
    curves = {"a": np.array([[1.0]]), "b": np.array([[2.0]])}
    assert ranks_over_time(curves, "minimize")["a"][0] == 1.0
    assert ranks_over_time(curves, "maximize")["a"][0] == 2.0
    with pytest.raises(ValueError, match="same shape"):
        ranks_over_time({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})


# -- Friedman, Nemenyi, groups -------------------------------------------------------------------
def test_friedman_reproduces_demsars_worked_example():
    res = friedman(DEMSAR, goal="maximize")
    np.testing.assert_allclose(res.mean_ranks, [3.143, 2.000, 2.893, 1.964], atol=5e-4)
    # Demsar p. 13: chi2_F = 12 * 14 / (4 * 5) * (3.143^2 + 2^2 + 2.893^2 + 1.964^2 - 4 * 5^2 / 4) = 9.28
    assert res.statistic_uncorrected == pytest.approx(9.28, abs=5e-3)
    # and Iman-Davenport F_F = 13 * 9.28 / (14 * 3 - 9.28) = 3.69 (from Demsar's uncorrected chi2)
    chi2 = res.statistic_uncorrected
    assert 13 * chi2 / (14 * 3 - chi2) == pytest.approx(3.69, abs=5e-3)
    # the reported statistic is scipy's, corrected for the ties (the mushroom row is all tied)
    ref = stats.friedmanchisquare(*DEMSAR.T)
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    assert res.statistic > res.statistic_uncorrected and res.pvalue < 0.05
    assert (res.n, res.k) == (14, 4)
    assert res.iman_davenport == pytest.approx(13 * res.statistic / (42 - res.statistic))


def test_friedman_on_the_scipy_docs_example():
    # scipy.stats.friedmanchisquare docs: one subject per block, three measurements
    before = [72, 96, 88, 92, 74, 76, 82]
    immediately_after = [120, 120, 132, 120, 101, 96, 112]
    five_min_after = [76, 95, 104, 96, 84, 72, 76]
    res = friedman(np.column_stack([before, immediately_after, five_min_after]))
    assert res.statistic == pytest.approx(10.571428571428571)
    assert res.pvalue == pytest.approx(0.005063414171757498)


def test_friedman_two_tuners_constant_rows_and_missing_blocks():
    # k = 2 (scipy refuses it): 5 blocks, a better in 4, tied in 1. Ranks: a 1,1,1,1,1.5 b 2,2,2,2,1.5
    # chi2 = 12*5/(2*3) * (1.1^2 + 1.9^2 - 2*9/4) = 10 * 0.32 = 3.2; ties: one row of 2 -> 6;
    # correction 1 - 6 / (5*2*3) = 0.8 -> 4.0, chi2 with 1 degree of freedom
    table = np.array([[1, 2], [1, 2], [1, 2], [1, 2], [3, 3]], dtype=float)
    res = friedman(table)
    assert res.statistic_uncorrected == pytest.approx(3.2)
    assert res.statistic == pytest.approx(4.0)
    assert res.pvalue == pytest.approx(stats.chi2.sf(4.0, 1))
    # every row constant: nothing to tell apart, not a NaN
    flat = friedman(np.ones((4, 3)))
    assert (flat.statistic, flat.pvalue) == (0.0, 1.0)
    np.testing.assert_allclose(flat.mean_ranks, [2.0, 2.0, 2.0])
    # a block with a NaN is dropped; one block left is not testable
    one = friedman(np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 2.0]]))
    assert one.n == 1 and math.isnan(one.pvalue)
    with pytest.raises(ValueError, match="at least 2"):
        friedman(np.ones((3, 1)))


def test_nemenyi_cd_matches_demsar():
    # Demsar 2006, table 5a: q_0.05 = 1.960, 2.343, 2.569, 2.728 for k = 2..5; q_0.10 = 2.291 for k = 4
    for k, q in [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728)]:
        assert nemenyi_cd(k, 6, 0.05) / math.sqrt(k * (k + 1) / 36) == pytest.approx(q, abs=1e-3)
    assert nemenyi_cd(4, 6, 0.10) / math.sqrt(20 / 36) == pytest.approx(2.291, abs=1e-3)
    # his example: k = 4, n = 14 -> CD = 2.569 * sqrt(4 * 5 / (6 * 14)) = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_cd_groups_are_maximal_runs_within_the_critical_difference():
    ranks = {"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.9}
    # with cd 1.0: a-b (0.5), b-c (0.9) within, a-c (1.4) not; d is 1.5 from c: alone
    assert cd_groups(ranks, 1.0) == [["a", "b"], ["b", "c"], ["d"]]
    assert cd_groups(ranks, 10.0) == [["a", "b", "c", "d"]]
    assert cd_groups(ranks, 0.1) == [["a"], ["b"], ["c"], ["d"]]
    # exactly the CD apart is significant (Demsar: "differ by at least the critical difference")
    assert cd_groups({"a": 1.0, "b": 2.0}, 1.0) == [["a"], ["b"]]
    # Demsar's example: with CD 1.25 at 0.05 no pair differs (3.143 - 1.964 = 1.18 < 1.25)
    demsar = dict(zip(["c45", "m", "cf", "mcf"], friedman(DEMSAR, "maximize").mean_ranks, strict=True))
    assert cd_groups(demsar, nemenyi_cd(4, 14)) == [["mcf", "m", "cf", "c45"]]


def test_autorank_agrees_when_installed():
    autorank = pytest.importorskip("autorank")
    pd = pytest.importorskip("pandas")
    res = autorank.autorank(pd.DataFrame(DEMSAR, columns=["c45", "m", "cf", "mcf"]), alpha=0.05,
                            force_mode="nonparametric", verbose=False)
    ours = friedman(DEMSAR, "maximize")
    assert res.pvalue == pytest.approx(ours.pvalue)
    assert res.cd == pytest.approx(nemenyi_cd(4, 14), abs=1e-4)
    np.testing.assert_allclose(res.rankdf.meanrank.loc[["c45", "m", "cf", "mcf"]], ours.mean_ranks)


# -- the verdict ---------------------------------------------------------------------------------
def test_verdict_carries_the_pinned_keys_and_reads_the_ranks():
    finals = {  # minimize on [0, 10]; 6 seeds; good always beats mid, mid always beats bad
        "bad": [9.0, 8.0, 9.5, 7.0, 8.5, 9.0],
        "good": [1.0, 0.5, 2.0, 1.5, 0.0, 1.0],
        "mid": [5.0, 4.0, 6.0, 5.5, 3.0, 4.5],
    }
    v = verdict(finals, optimum=0.0, worst=10.0, goal="minimize", reps=500)
    assert list(v.tuners) == ["good", "mid", "bad"]  # best mean rank first
    for row in v.tuners.values():
        assert set(VERDICT_KEYS) <= set(row)
        lo, hi = row["ci95"]
        assert lo <= row["iqm"] <= hi
    g = v.tuners["good"]
    assert g["normalized_regret"] == pytest.approx(np.mean([0.1, 0.05, 0.2, 0.15, 0.0, 0.1]))  # the mean
    # IQM of the regrets 0, .05, .1, .1, .15, .2: int(1.5) = 1 cut each end -> mean(.05, .1, .1, .15)
    assert g["iqm"] == pytest.approx(0.1)
    assert [v.tuners[t]["mean_rank"] for t in v.tuners] == [1.0, 2.0, 3.0]
    # Friedman on 6 perfectly ordered seeds, k = 3: chi2 = 12*6/12 * (1 + 4 + 9 - 12) = 12
    assert v.friedman is not None and v.friedman.statistic == pytest.approx(12.0)
    assert v.cd == pytest.approx(nemenyi_cd(3, 6))
    # CD(3, 6) = 2.343 * sqrt(12 / 36) = 1.353: good and bad differ (2 apart), neighbours do not
    assert v.groups == [["good", "mid"], ["mid", "bad"]]
    assert "good ranks first" in v.summary and "not significantly better than mid" in v.summary
    d = v.as_dict()
    assert d["tuners"]["good"]["ci95"] == g["ci95"] and d["friedman"]["k"] == 3


def test_verdict_maximize_pairs_seeds_by_id_and_counts_a_missing_result_as_worst():
    finals = {"a": {0: 0.9, 1: 0.8, 2: float("nan")}, "b": {1: 0.7, 2: 0.6, 0: 0.95, 7: 0.99}}
    v = verdict(finals, optimum=1.0, worst=0.5, goal="maximize", reps=200)
    # common seeds 0, 1, 2: seed 0 b wins, seed 1 a wins, seed 2 a has nothing -> b wins
    assert v.paired_seeds == 3
    assert v.tuners["b"]["mean_rank"] == pytest.approx(4 / 3)
    assert v.tuners["a"]["mean_rank"] == pytest.approx(5 / 3)
    # a's regrets: 0.2, 0.4 and 1 for the missing one -> mean 1.6 / 3
    assert v.tuners["a"]["normalized_regret"] == pytest.approx(1.6 / 3)
    assert v.tuners["b"]["seeds"] == 4
    # two tuners: the exact paired test, not Friedman (regret differences -0.1, +0.2, +0.8: distinct)
    assert v.friedman is None and v.cd is None and v.paired is not None
    assert v.paired.name == "wilcoxon signed-rank (exact)"
    assert v.paired.pvalue == pytest.approx(stats.wilcoxon([0.2 - 0.1, 0.4 - 0.6, 1.0 - 0.8],
                                                            method="exact").pvalue)
    assert v.groups == [["b", "a"]] and "finds no difference" in v.summary


def test_verdict_with_one_seed_or_one_tuner_does_not_test():
    v = verdict({"a": [1.0], "b": [2.0]}, 0.0, 4.0)
    assert v.friedman is None and v.cd is None and v.tuners["a"]["mean_rank"] == 1.0
    assert v.tuners["a"]["ci95"] == [0.25, 0.25]
    solo = verdict({"a": [1.0, 2.0]}, 0.0, 4.0)
    assert solo.tuners["a"]["mean_rank"] == 1.0 and "only one tuner" in solo.summary


# -- figures ---------------------------------------------------------------------------------
def test_plots_write_non_empty_png_and_html(tmp_path):
    from harness.ranking_plots import cd_diagram, regret_rank_curves

    ranks = {"optuna": 1.6, "ax": 2.1, "random": 3.4, "ray": 2.9}
    files = cd_diagram(ranks, nemenyi_cd(4, 10), tmp_path / "figs" / "cd")
    assert [f.name for f in files] == ["cd.png", "cd.html"]
    rng = np.random.default_rng(0)
    curves = {t: np.minimum.accumulate(rng.uniform(0, 10, size=(5, 25)) + i, axis=1)
              for i, t in enumerate(["optuna", "ax", "random"])}
    curves["ax"][0, :3] = np.nan  # a seed without a complete trial yet
    more = regret_rank_curves(curves, 0.0, 12.0, "minimize", tmp_path / "curves", reps=200)
    assert [f.name for f in more] == ["curves.png", "curves.html"]
    for f in files + more:
        assert f.stat().st_size > 1000
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = more[1].read_text()
    assert "data:image/png;base64," in page and "optuna" in page and "<table>" in page


# -- small n: exact two-tuner tests, intervals that say what they are, strict JSON ------------------
def test_five_of_five_wins_is_p_0_0625_exactly_not_the_asymptotic_0_025():
    from harness.ranking import paired_exact

    a, b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.4, 0.6, 0.8, 1.0]  # a better on every seed, |d| distinct
    t = paired_exact(a, b)
    assert t.name == "wilcoxon signed-rank (exact)" and t.wins_a == 5 and t.n == 5
    assert t.pvalue == pytest.approx(0.0625) == stats.wilcoxon(a, b, method="exact").pvalue
    assert friedman(np.column_stack([a, b])).pvalue == pytest.approx(0.0253, abs=1e-3)  # what it was
    v = verdict({"a": a, "b": b}, 0.0, 1.0)
    assert v.friedman is None and v.pvalue == pytest.approx(0.0625) and v.groups == [["a", "b"]]
    assert "no difference" in v.summary and "5 of 5" in v.summary


@pytest.mark.parametrize("seed", range(5))
def test_paired_exact_equals_scipy_and_falls_back_to_the_sign_test_on_ties(seed):
    from harness.ranking import paired_exact

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=9), rng.normal(0.5, 1.0, size=9)
    t = paired_exact(a, b)
    ref = stats.wilcoxon(a, b, method="exact")
    assert t.pvalue == pytest.approx(ref.pvalue, rel=1e-12) and t.statistic == ref.statistic
    # ties among |d| (and a zero, dropped): the exact sign test over the nonzero pairs
    d = np.array([1.0, 1.0, -1.0, 2.0, 0.0, 3.0, 3.0])
    s = paired_exact(d, np.zeros_like(d))
    assert s.name.startswith("sign test") and s.n == 6 and s.pairs == 7 and s.wins_b == 5
    assert s.pvalue == pytest.approx(stats.binomtest(1, 6, 0.5).pvalue, rel=1e-12)
    none = paired_exact([1.0, 2.0], [1.0, 2.0])
    assert none.pvalue is None and "nothing to test" in none.note


def test_holm_adjust_by_hand():
    from harness.ranking import holm_adjust

    # sorted 0.01, 0.02, 0.04 (m = 3): 0.03, 0.04, 0.04 (monotone); None stays None
    assert holm_adjust([0.04, None, 0.01, 0.02]) == pytest.approx([0.04, None, 0.03, 0.04])
    assert holm_adjust([0.6, 0.5]) == [1.0, 1.0]


def test_an_interval_from_fewer_than_five_seeds_says_it_is_not_95_percent():
    v = verdict({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.3, 0.5, 0.6, 0.7]}, 0.0, 1.0)
    assert v.tuners["a"]["ci_level"] is None and "not a 95% interval" in v.tuners["a"]["ci_note"]
    assert v.tuners["b"]["ci_level"] == 0.95 and v.tuners["b"]["ci_note"] == ""


def test_verdict_json_is_strict_non_finite_becomes_null_with_a_note():
    import json

    from harness.strict_json import dumps

    # every seed ordered the same way: Iman-Davenport's F is infinite
    v = verdict({"a": [0.1, 0.2, 0.1], "b": [0.5, 0.6, 0.5], "c": [0.9, 0.8, 0.9]}, 0.0, 1.0)
    assert v.friedman is not None and v.friedman.iman_davenport == float("inf")
    d = v.as_dict()
    assert d["friedman"]["iman_davenport"] is None
    assert any("iman_davenport" in n and "inf" in n for n in d["notes"])
    text = json.dumps(d, allow_nan=False)  # would raise on Infinity / NaN
    assert json.loads(text)["friedman"]["iman_davenport"] is None
    strict = json.loads(dumps({"x": float("nan"), "y": [1.0, np.float64("-inf")], "z": np.arange(2)}))
    assert strict["x"] is None and strict["y"] == [1.0, None] and strict["z"] == [0, 1]
    assert len(strict["json_notes"]) == 2


def test_normalization_is_the_best_mean_and_the_median_configuration():
    from harness.ranking import normalization

    # config c2 has one lucky seed (0.0) but a mean of 0.5; c1's mean 0.2 is the optimum;
    # c5 diverged (1e25) and does not move the median of the means (0.2, 0.5, 1, 2, 1e25 -> 1)
    values = {"c1": [0.1, 0.3], "c2": [0.0, 1.0], "c3": [1.0, float("nan")], "c4": [2.0], "c5": [1e25, 1e25]}
    n = normalization(values, "minimize")
    assert (n.optimum, n.worst) == (pytest.approx(0.2), 1.0)
    assert "best per-configuration mean" in n.source and "median" in n.source
    m = normalization({k: [-x for x in v] for k, v in values.items()}, "maximize")
    assert (m.optimum, m.worst) == (pytest.approx(-0.2), -1.0)
    g = normalization(values, "minimize", optimum=0.0)
    assert g.optimum == 0.0 and g.worst == 1.0 and "optimum: given" in g.source
    with pytest.raises(ValueError, match="no configurations"):
        normalization({"c": [float("inf")]}, "minimize")
