"""The recorder's live front (issue 17) against brute force, and the multi-objective checks of the tuners."""

from __future__ import annotations

import numpy as np
import pytest

from harness.pareto import LiveFront, hypervolume, pareto_mask
from harness.spec import load_spec
from harness.trials import TrialResult, TrialState, objective_values
from harness.tuners.base import TunerError, TunerOptions


def brute_front(points: list[list[float]]) -> set[int]:
    """Indices not dominated by any other point (both minimized), by the definition."""
    out = set()
    for i, p in enumerate(points):
        if not any(all(q[k] <= p[k] for k in range(2)) and any(q[k] < p[k] for k in range(2))
                   for j, q in enumerate(points) if j != i):
            out.add(i)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_live_front_tags_and_hypervolume_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    ref = [0.9, 0.9]
    front = LiveFront(["a", "b"], ["minimize", "minimize"], ref)
    tags: dict[int, bool] = {}
    points: list[list[float]] = []
    numbers: list[int] = []
    last_hv = 0.0
    for number in range(60):
        if number % 7 == 3:  # a failed trial: never on the front, tagged false
            changes = front.add(number, None)
            assert changes == {number: False}
        else:
            p = [float(v) for v in rng.random(2).round(2)]  # rounding makes ties and duplicates
            points.append(p)
            numbers.append(number)
            changes = front.add(number, p)
            assert number in changes
        tags.update(changes)
        on = {numbers[i] for i in brute_front(points)}
        assert {n for n, flag in tags.items() if flag} == on  # applying only the changes keeps tags exact
        assert front.hypervolume >= last_hv
        last_hv = front.hypervolume
        assert front.hypervolume == pytest.approx(hypervolume(points, ["minimize", "minimize"], ref), abs=1e-12)
    assert set(front.front_numbers) == {numbers[i] for i in np.flatnonzero(pareto_mask(points, ["minimize"] * 2))}


def test_objective_values_read_measured_costs():
    r = TrialResult(3, {}, TrialState.COMPLETE, value=1.5, metrics={"loss": 1.5}, steps=40, seconds=2.5)
    assert objective_values(r, ["loss", "seconds", "steps"]) == [1.5, 2.5, 40.0]
    assert objective_values(r, ["loss", "other"]) is None


def test_optuna_refuses_a_pruner_or_cmaes_with_several_objectives():
    from harness.tuners.optuna import OptunaTuner

    spec = load_spec("branin-currin")
    OptunaTuner.check(spec, TunerOptions(sampler="nsga2"))
    with pytest.raises(TunerError, match="cannot prune a study with several objectives"):
        OptunaTuner.check(spec, TunerOptions(pruner="median"))
    with pytest.raises(TunerError, match="takes one objective"):
        OptunaTuner.check(spec, TunerOptions(sampler="cmaes"))
    OptunaTuner.check(load_spec("branin"), TunerOptions(pruner="median", sampler="cmaes"))  # one objective: as before


def test_ax_objective_string_and_thresholds_from_the_reference_point():
    from ax.api import Client

    from harness.tuners.ax import optimization, translate

    spec = load_spec("branin-currin")
    assert optimization(spec) == {"objective": "-branin, -currin",
                                  "outcome_constraints": ["branin <= 18", "currin <= 6"]}
    client = Client()
    client.configure_experiment(parameters=translate(spec).configs)
    client.configure_optimization(**optimization(spec))
    config = client._experiment.optimization_config
    assert config.is_moo_problem
    assert sorted(str(t) for t in config.objective_thresholds) == [
        "OutcomeConstraint(branin <= 18)", "OutcomeConstraint(currin <= 6)"]
    assert optimization(load_spec("branin")) == {"objective": "-value"}


def test_nsga2_population_size_is_settable_and_checked():
    """A 40-trial NSGA-II sweep with Optuna's default population of 50 never leaves its random first
    generation; population_size=4 evolves from the fifth trial on (Optuna's own generation count)."""
    from harness.tuners.optuna import OptunaTuner

    spec = load_spec("branin-currin")

    def generations(options: TunerOptions) -> list[int]:
        tuner = OptunaTuner.from_spec(spec, options)
        for _ in range(9):
            (s,) = tuner.ask(1)
            x0, x1 = s.params["x0"], s.params["x1"]
            tuner.tell(TrialResult(s.number, s.params, TrialState.COMPLETE, value=x0,
                                   metrics={"branin": x0 + x1, "currin": 2 - x0 * x1}))
        return [t.system_attrs["NSGAIISampler:generation"] for t in tuner.study.get_trials(deepcopy=False)]

    assert generations(TunerOptions(sampler="nsga2", storage="memory", population_size=4)) == [0] * 4 + [1] * 4 + [2]
    assert generations(TunerOptions(sampler="nsga2", storage="memory")) == [0] * 9
    # the runner's tuner_options dict reaches it too (until the CLI flag fills the typed field)
    assert generations(TunerOptions(sampler="nsga2", storage="memory", extra={"population_size": 4}))[4] == 1
    OptunaTuner.check(spec, TunerOptions(sampler="nsga2", population_size=2))
    with pytest.raises(TunerError, match=r"^--population-size 8: only --sampler nsga2 has a population \(got --sampler tpe\)$"):
        OptunaTuner.check(spec, TunerOptions(sampler="tpe", population_size=8))
    for bad in (1, 0, 2.5, True):
        with pytest.raises(TunerError, match=f"--population-size {bad}: must be a whole number >= 2"):
            OptunaTuner.check(spec, TunerOptions(sampler="nsga2", population_size=bad))


def test_the_summary_says_why_a_hypervolume_is_zero_and_uses_the_kept_default_reference(tmp_path):
    from types import SimpleNamespace

    from harness.display import hypervolume_text
    from harness.files import write_atomic
    from harness.front import REFERENCE_FILE
    from harness.recorder import SweepStats

    spec = load_spec("branin-currin")  # reference point (18, 6) in the spec
    stats = SweepStats(budget=2)
    for n, (b, c) in enumerate([(30.0, 2.0), (10.0, 9.0)]):  # neither beats (18, 6) in both
        stats.add(TrialResult(n, {}, TrialState.COMPLETE, value=b, metrics={"branin": b, "currin": c}), spec.metric)
    summary = SimpleNamespace(spec=spec, stats=stats, state_dir=tmp_path)
    assert hypervolume_text(summary) == (
        "0  (reference point 18, 6: spec); hypervolume 0: no complete trial is better than the reference point "
        "[18.0, 6.0] in every objective (not better: objective 1 in 1 of 2, objective 2 in 1 of 2); move the "
        "reference point (the spec's metrics' reference) past the values the trials reach")
    free = spec.model_copy(update={"metrics": [m.model_copy(update={"reference": None}) for m in spec.metrics]})
    summary.spec = free
    assert hypervolume_text(summary) == "-  (no complete trial)"  # no default chosen yet
    write_atomic(tmp_path / REFERENCE_FILE, '{"metrics": ["branin", "currin"], "reference": [40.0, 10.0], '
                                            '"curves_logged": true}')
    # (30, 2) and (10, 9) under (40, 10): 10 * 8 + 30 * 1 - overlap (10 * 1) = 100
    assert hypervolume_text(summary) == "100  (reference point 40, 10: default)"
