"""Agreement of a simulated verdict with a real one (issue 22): Kendall tau-b against scipy, the
seed bootstrap's exact distribution on two seeds, the split-half ceiling on known cases, and the
significant real pairs ordered alike."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.agreement import agreement, kendall, regret_table, scores


def finals_from(table: np.ndarray, names: list[str]) -> dict[str, dict[int, float]]:
    return {t: {s: float(table[s, k]) for s in range(table.shape[0])} for k, t in enumerate(names)}


def test_kendall_is_scipys_tau_b_with_ties_and_none_when_constant():
    a, b = [0.1, 0.2, 0.2, 0.5, 0.4], [1.0, 3.0, 2.0, 2.0, 5.0]
    assert kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert stats.kendalltau(a, b, variant="b").statistic == stats.kendalltau(a, b).statistic
    assert kendall([1, 2, 3], [3, 2, 1]) == -1.0 and kendall([1, 1, 1], [1, 2, 3]) is None


def test_scores_are_the_iqm_and_the_mean_rank():
    reg = np.array([[0.1, 0.5], [0.3, 0.2], [0.0, 0.9], [0.2, 0.4]])
    i, r = scores(reg)
    assert i.tolist() == pytest.approx([np.mean([0.1, 0.2]), np.mean([0.4, 0.5])])  # trim one each end
    assert r.tolist() == pytest.approx([1.25, 1.75])
    table, names, seeds = regret_table({"a": {0: 5.0, 1: float("nan")}, "b": {0: 0.0, 1: 10.0, 2: 1.0}},
                                       0.0, 10.0)
    assert names == ["a", "b"] and seeds == [0, 1] and table.tolist() == [[0.5, 0.0], [1.0, 1.0]]


def test_a_perfect_simulator_agrees_and_a_reversed_one_disagrees():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d", "e"]
    real = rng.normal(0, 0.02, size=(10, 5)) + np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    sim = rng.normal(0, 0.02, size=(30, 5)) + np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    res = agreement(finals_from(sim, names), finals_from(real, names), 0.0, 1.0, reps=300)
    assert res["tau_iqm"] == pytest.approx(1.0) and res["tau_rank"] == pytest.approx(1.0)
    assert res["tau_iqm_ci"] == pytest.approx([1.0, 1.0]) and res["split_half_tau_iqm"] == pytest.approx(1.0)
    # every pair differs on all 10 seeds: exact Wilcoxon p = 2 / 2^10; Holm over 10 pairs keeps them all
    assert res["significant_pairs"] == 10 and res["significant_share"] == 1.0
    assert res["pairs"][0]["p_holm"] == pytest.approx(10 * 2 / 2 ** 10)
    rev = agreement(finals_from(sim[:, ::-1], names), finals_from(real, names), 0.0, 1.0, reps=100)
    assert rev["tau_iqm"] == pytest.approx(-1.0) and rev["significant_share"] == 0.0


def test_split_half_is_about_zero_when_the_tuners_do_not_differ():
    """Under the null (every tuner the same distribution) the halves' orders are unrelated: over
    datasets, the split-half tau averages 0 (on one dataset it need not: its halves share it)."""
    names = list("abcde")
    means = []
    for k in range(12):
        real = np.random.default_rng(k).uniform(0, 1, size=(20, 5))
        res = agreement(finals_from(real, names), finals_from(real, names), 0.0, 1.0, reps=150, seed=k)
        means.append((res["split_half_tau_iqm"], res["split_half_tau_rank"]))
        assert res["tau_iqm"] == pytest.approx(1.0)  # the same data on both sides: perfect by construction
    assert abs(np.mean(means, axis=0)).max() < 0.12
    lo, hi = res["split_half_tau_rank_ci"]
    assert lo < -0.3 and hi > 0.3  # five tuners, ten seeds a half: wide


def test_the_bootstrap_resamples_whole_seeds():
    """Two real seeds that order three tuners oppositely: a replicate is seed 0 twice (tau 1, p 1/4),
    seed 1 twice (tau -1, p 1/4) or one of each (every IQM equal: tau undefined, p 1/2)."""
    names = ["a", "b", "c"]
    real = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    sim = np.array([[0.1, 0.2, 0.3]] * 5)
    res = agreement(finals_from(sim, names), finals_from(real, names), 0.0, 1.0, reps=4000, seed=3)
    assert res["tau_iqm_ci"] == pytest.approx([-1.0, 1.0])
    assert res["tau_iqm_undefined_replicates"] / 4000 == pytest.approx(0.5, abs=0.03)
    assert res["tau_iqm"] is None  # all three real IQMs are 0.2
    assert res["split_half_tau_iqm"] is None  # fewer than 4 seeds: no halves


def test_missing_tuner_in_the_simulation_is_an_error():
    with pytest.raises(ValueError, match="lacks tuners b"):
        agreement({"a": {0: 1.0}}, {"a": {0: 1.0}, "b": {0: 2.0}}, 0.0, 3.0)
