"""The comparison's statistics on hand-made sweeps (no MLflow): history, targets, ranks, tests, curves."""

from __future__ import annotations

import numpy as np
import pytest

from harness.compare import SweepRecord, TrialPoint, compare_sweeps, paired_test
from harness.plots import curves


def sweep(tuner: str, seed: int, values: list[float | None], goal: str = "minimize", steps: int = 10,
          startup: float = 0.0) -> SweepRecord:
    """Trials finishing one second apart; None is a pruned trial that used half the steps."""
    trials = [TrialPoint(number=i, state="complete" if v is not None else "pruned", value=v,
                         steps=steps if v is not None else steps // 2, seconds=1.0, elapsed=startup + i + 1.0)
              for i, v in enumerate(values)]
    return SweepRecord(run_id=f"{tuner}{seed}", name=f"{tuner}-s{seed}", tuner=tuner, seed=seed,
                       experiment_id="1", metric="loss", goal=goal, benchmark="b", budget=len(values),
                       status="finished", trials=trials)


def test_history_counts_pruned_costs_but_not_their_values():
    s = sweep("a", 0, [5.0, None, 3.0, 4.0])
    h = s.history()
    assert [e.trials for e in h] == [1, 2, 3, 4]
    assert [e.steps for e in h] == [10, 15, 25, 35]
    assert [e.best for e in h] == [5.0, 5.0, 3.0, 3.0]
    assert s.final_best == 3.0 and s.count("pruned") == 1
    hit = s.reach(4.0)
    assert (hit.trials, hit.steps, hit.seconds) == (3, 25, 3.0)


def test_startup_is_kept_out_of_the_time_to_target():
    s = sweep("ray", 0, [2.0, 1.0], startup=12.0)
    assert s.startup == pytest.approx(12.0)
    assert s.reach(1.0).seconds == pytest.approx(2.0)
    assert s.seconds_used == pytest.approx(2.0)


def test_interrupted_trials_cost_steps_and_do_not_count():
    s = sweep("a", 0, [2.0, 1.0])
    s.trials.insert(1, TrialPoint(number=9, state="failed", value=None, steps=4, seconds=0.5, elapsed=1.5,
                                  interrupted=True))
    assert [e.trials for e in s.history()] == [1, 1, 2]
    assert s.steps_used == 24 and s.failed == 1


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_ranks_target_and_winner_follow_the_goal(goal):
    sign = 1 if goal == "minimize" else -1
    recs = []
    for seed in range(4):
        recs.append(sweep("good", seed, [sign * 1.0 + 0.01 * seed], goal))
        recs.append(sweep("bad", seed, [sign * 2.0 + 0.02 * seed], goal))
    comp = compare_sweeps(recs, uri="x", experiment="e", target=None)
    assert [r.tuner for r in comp.rows] == ["good", "bad"]
    assert comp.rows[0].mean_rank == 1.0 and comp.rows[1].mean_rank == 2.0
    worst = max(s.final_best for s in recs) if goal == "minimize" else min(s.final_best for s in recs)
    assert comp.target == worst
    (pair,) = comp.pairs
    assert pair.holds and pair.better == "good" and "good beats bad" in pair.statement
    assert pair.n == 4 and pair.p_value < 0.05 and pair.p_holm == pair.p_value and pair.p_wilcoxon == 0.125


def test_ties_share_ranks_and_equal_results_show_no_difference():
    recs = [sweep(t, s, [1.0]) for t in ("a", "b") for s in range(3)]
    comp = compare_sweeps(recs, uri="x", experiment="e")
    assert [r.mean_rank for r in comp.rows] == [1.5, 1.5]
    assert not comp.pairs[0].holds and "no difference" in comp.pairs[0].statement


def test_paired_test_needs_two_common_seeds():
    p = paired_test("a", "b", {0: 1.0, 1: 2.0}, {1: 3.0, 2: 1.0})
    assert p.n == 1 and not p.holds and "no test" in p.statement


def test_t_interval_and_holm_adjustment():
    from scipy import stats

    va = {0: 1.0, 1: 2.0, 2: 3.5}
    vb = {0: 2.0, 1: 3.5, 2: 4.0}
    p = paired_test("a", "b", va, vb)
    d = np.array([-1.0, -1.5, -0.5])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (p.ci_low, p.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert p.p_value == pytest.approx(stats.ttest_rel([1.0, 2.0, 3.5], [2.0, 3.5, 4.0]).pvalue)
    recs = [sweep(t, s, [v[s]]) for t, v in (("a", va), ("b", vb), ("c", {0: 9.0, 1: 9.5, 2: 9.9}))
            for s in range(3)]
    comp = compare_sweeps(recs, uri="x", experiment="e")
    ps = sorted(x.p_value for x in comp.pairs)
    holm = sorted(x.p_holm for x in comp.pairs)
    assert holm[0] == pytest.approx(3 * ps[0])
    assert holm[1] == pytest.approx(max(3 * ps[0], 2 * ps[1]))
    assert holm[2] == pytest.approx(max(holm[1], ps[2]))
    for x in comp.pairs:
        assert x.verdict == ("holds" if x.p_holm < 0.05 else "suggestive" if x.p_value < 0.05 else "n.s.")


def test_curves_mean_and_band_over_seeds_carried_forward():
    recs = [sweep("a", 0, [4.0, 2.0]), sweep("a", 1, [3.0, 3.0, 1.0])]
    comp = compare_sweeps(recs, uri="x", experiment="e")
    (c,) = curves(comp, "trials")
    assert c.x[:3].tolist() == [1.0, 2.0, 3.0] and c.x[3] > 3.0
    assert c.mean[:3].tolist() == [3.5, 2.5, 1.5]  # the first sweep's 2.0 carried to trial 3
    assert c.lo[2] == 1.0 and c.hi[2] == 2.0
    assert np.isfinite(c.mean).all()


def test_verdict_normalizes_on_the_best_and_the_median_configuration_and_needs_two():
    from harness.ranking import verdict

    recs = [sweep("a", s, [3.0, 1.0 + s]) for s in range(3)] + [sweep("b", s, [4.0, 2.5]) for s in range(3)]
    comp = compare_sweeps(recs, uri="x", experiment="e")
    # every complete trial is a configuration: the best is 1.0, the median of the twelve values
    # 1, 2, 2.5 x3, 3 x4, 4 x3 is 3.0 (the first trials' values count: they are configurations tried)
    assert (comp.verdict.optimum, comp.verdict.worst) == (1.0, 3.0)
    assert "median" in comp.verdict.range_source
    assert comp.to_dict()["verdict"]["normalization"] == {"optimum": 1.0, "worst": 3.0,
                                                          "source": comp.verdict.range_source}
    want = verdict({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 2.5, 1: 2.5, 2: 2.5}}, 1.0, 3.0)
    assert {t: d["mean_rank"] for t, d in comp.verdict.verdict.tuners.items()} == \
        {t: d["mean_rank"] for t, d in want.tuners.items()}
    assert comp.verdict.budgets["trials"].x.tolist() == [1.0, 2.0]
    alone = compare_sweeps([sweep("a", 0, [1.0]), sweep("b", 0, [1.0])], uri="x", experiment="e")
    assert alone.verdict is None and any("no verdict" in n for n in alone.notes)


def test_one_diverged_trial_no_longer_flattens_the_verdict():
    """The issue's real locoprop benchmark: one trial at 1e25 made worst = 1e25, so every regret was
    ~1e-23 and both IQMs printed 0.000. The median configuration keeps the scale."""
    a = [sweep("a", s, [40.0, 20.0 + s]) for s in range(5)]
    b = [sweep("b", s, [1e25 if s == 0 else 45.0, 30.0 + s]) for s in range(5)]
    comp = compare_sweeps(a + b, uri="x", experiment="e")
    rows = comp.verdict.verdict.tuners
    assert comp.verdict.worst == pytest.approx(np.median([40.0] * 5 + [20, 21, 22, 23, 24, 1e25] + [45.0] * 4
                                                         + [30, 31, 32, 33, 34]))
    assert rows["a"]["iqm"] < rows["b"]["iqm"] and rows["b"]["iqm"] > 0.1


def test_trials_with_the_same_params_are_one_configuration():
    from harness.compare.stats import value_range

    recs = [sweep("a", 0, [1.0, 5.0]), sweep("a", 1, [3.0, 9.0])]
    for r in recs:  # trial 0 of both seeds tried the same params: one configuration, mean 2.0
        r.trials[0].config = '{"x": 1}'
    opt, worst, source = value_range(recs, "minimize")
    assert opt == 2.0 and worst == 5.0 and "per-configuration mean" in source  # means 2, 5, 9


def test_compare_warns_when_budgets_differ():
    from harness.compare.read import budget_warning

    same = [sweep("a", 0, [1.0, 2.0]), sweep("b", 0, [2.0, 3.0])]
    assert budget_warning(same) is None and not any("budgets" in n for n in compare_sweeps(
        same, uri="x", experiment="e").notes)
    other = same + [sweep("c", 0, [1.0, 2.0, 0.5])]
    warn = budget_warning(other)
    assert warn is not None and "trials 2, 3" in warn
    assert warn in compare_sweeps(other, uri="x", experiment="e").notes
    steps = [sweep("a", 0, [1.0]), sweep("b", 0, [2.0])]
    steps[0].budget_steps = 100
    assert "training steps 100, unset" in budget_warning(steps)


def test_pair_test_uses_the_exact_wilcoxon_p():
    from scipy import stats

    va = {s: float(s) for s in range(5)}
    vb = {s: float(s) + 1.0 + 0.1 * s for s in range(5)}
    p = paired_test("a", "b", va, vb)
    d = [va[s] - vb[s] for s in range(5)]
    assert p.p_wilcoxon == pytest.approx(stats.wilcoxon(d, method="exact").pvalue) == pytest.approx(0.0625)
