"""Pareto fronts, hypervolume and the Branin-Currin test problem (issue 17).

Fronts are checked against a brute-force O(n^2) definition of dominance; hypervolume
against hand arithmetic in 2-D and an exact unit-cell count in 3-D; the test problem
against BoTorch's published numbers (/work/shared/REFERENCES.md, "Multi-objective").
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.pareto import (
    Front,
    default_reference,
    front_records,
    hypervolume,
    hypervolume_curve,
    pareto_mask,
)
from harness.spec import load_spec
from harness.testfunctions import branin_currin

MIN, MAX = "minimize", "maximize"


def brute_front(points: np.ndarray, goals: list[str]) -> np.ndarray:
    """Dominance straight from the definition, one pair at a time."""
    sign = np.array([1.0 if g == MIN else -1.0 for g in goals])
    out = np.ones(len(points), dtype=bool)
    for i, a in enumerate(points):
        if np.isnan(a).any():
            out[i] = False
            continue
        for b in points:
            if np.isnan(b).any():
                continue
            if all(sign * b <= sign * a) and any(sign * b < sign * a):
                out[i] = False
                break
    return out


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_front_matches_brute_force(m: int, seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    # a coarse integer grid makes ties in single objectives and exact duplicates common
    pts = rng.integers(0, 6, size=(n, m)).astype(float)
    pts = np.vstack([pts, pts[: n // 4]])  # exact duplicates of some rows
    goals = [MIN if rng.random() < 0.5 else MAX for _ in range(m)]
    goals[0] = MAX if seed % 2 else MIN  # one objective maximized in half the cases
    assert (pareto_mask(pts, goals) == brute_front(pts, goals)).all()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_front_matches_brute_force_hypothesis(data):
    m = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(0, 30))
    vals = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3), st.just(math.nan))
    pts = np.array(data.draw(st.lists(st.lists(vals, min_size=m, max_size=m), min_size=n, max_size=n)),
                   dtype=float).reshape(n, m)
    goals = data.draw(st.lists(st.sampled_from([MIN, MAX]), min_size=m, max_size=m))
    assert (pareto_mask(pts, goals) == brute_front(pts, goals)).all()


def test_front_edge_cases():
    goals = [MIN, MIN]
    assert pareto_mask(np.zeros((0, 2)), goals).tolist() == []
    # duplicates of a front point are all on it; a tie in one objective and worse in the other is not
    pts = [[1, 1], [1, 1], [1, 2], [0, 3], [math.nan, 0]]
    assert pareto_mask(pts, goals).tolist() == [True, True, False, True, False]
    assert pareto_mask([[3.0], [1.0], [1.0], [2.0]], [MIN]).tolist() == [False, True, True, False]
    assert pareto_mask([[3.0], [1.0], [3.0]], [MAX]).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="goal"):
        pareto_mask([[1.0]], ["lower"])
    with pytest.raises(ValueError, match="2 goals for 1 objectives"):
        pareto_mask([[1.0]], goals)


def test_front_is_fast_for_thousands():
    pts = np.random.default_rng(0).random((3000, 3))
    mask = pareto_mask(pts, [MIN, MAX, MIN])
    assert 0 < mask.sum() < 3000


def test_hypervolume_2d_by_hand():
    # Minimize both; front (1,4), (2,2), (4,1); reference (5,5). Sweep over the second
    # objective: y in [4,5] is covered from x=1 (width 4, area 4*1 = 4), y in [2,4] from x=2
    # (width 3, area 3*2 = 6), y in [1,2] from x=4 (width 1, area 1*1 = 1): 4 + 6 + 1 = 11.
    front = [[1, 4], [2, 2], [4, 1]]
    assert hypervolume(front, [MIN, MIN], [5, 5]) == pytest.approx(11.0)
    # a dominated point, a duplicate, a point on the reference boundary, one beyond it: still 11
    extra = front + [[3, 3], [2, 2], [5, 0], [6, 0.5], [math.nan, 0]]
    assert hypervolume(extra, [MIN, MIN], [5, 5]) == pytest.approx(11.0)
    # the same problem with the second objective maximized (values and reference negated)
    flipped = [[x, -y] for x, y in extra]
    assert hypervolume(flipped, [MIN, MAX], [5, -5]) == pytest.approx(11.0)
    assert hypervolume(front, [MIN, MIN], [0.5, 0.5]) == 0.0
    assert hypervolume(np.zeros((0, 2)), [MIN, MIN], [1, 1]) == 0.0
    # one objective: the distance from the best value to the reference
    assert hypervolume([[3.0], [1.5]], [MIN], [4.0]) == pytest.approx(2.5)


def grid_count_3d(points: np.ndarray, ref: int) -> int:
    """Unit cells of [0, ref)^3 dominated by integer points (minimization): the exact volume."""
    count = 0
    for cell in itertools.product(range(ref), repeat=3):
        if (points <= np.array(cell)).all(axis=1).any():
            count += 1
    return count


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_3d_against_cell_count(seed: int):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 8, size=(25, 3)).astype(float)
    expected = grid_count_3d(pts, 8)
    assert hypervolume(pts, [MIN, MIN, MIN], [8, 8, 8]) == pytest.approx(expected)
    # the same volume with the middle objective maximized
    flipped = pts * np.array([1, -1, 1])
    assert hypervolume(flipped, [MIN, MAX, MIN], [8, -8, 8]) == pytest.approx(expected)


def test_hypervolume_curve_is_the_running_prefix_volume():
    rng = np.random.default_rng(1)
    pts = rng.random((40, 2)) * 10
    pts[5] = np.nan
    pts[7] = pts[3]  # a duplicate adds nothing
    for goals, r in (([MIN, MIN], [9.0, 9.0]), ([MIN, MAX], [9.0, 1.0])):
        curve = hypervolume_curve(pts, goals, r)
        assert len(curve) == len(pts)
        assert all(b >= a for a, b in itertools.pairwise(curve))
        for k in (1, 6, 8, 20, 40):
            assert curve[k - 1] == pytest.approx(hypervolume(pts[:k], goals, r))
    assert hypervolume_curve(np.zeros((0, 2)), [MIN, MIN], [9.0, 9.0]) == []


def test_default_reference_is_nadir_plus_ten_percent_of_range():
    front = [[1, 4], [2, 2], [4, 1], [5, 5]]  # (5,5) is dominated: not part of the nadir
    # nadir (4, 4), range (3, 3): reference (4 + 0.3, 4 + 0.3)
    assert default_reference(front, [MIN, MIN]) == pytest.approx([4.3, 4.3])
    flipped = [[x, -y] for x, y in front]
    assert default_reference(flipped, [MIN, MAX]) == pytest.approx([4.3, -4.3])
    ref = default_reference(front, [MIN, MIN])
    assert hypervolume(front, [MIN, MIN], ref) > 0
    with pytest.raises(ValueError, match="no complete points"):
        default_reference([[math.nan, 1.0]], [MIN, MIN])


def trial(number, branin, currin, **more):
    metrics = {"branin": branin, "currin": currin, "seconds": 0.5, **more}
    return {"number": number, "params": {"x0": number / 10, "x1": 0.5}, "metrics": metrics,
            "run_id": f"run{number}", "seed": 100 + number}


def test_front_records():
    trials = [trial(0, 4.0, 1.0), trial(1, 1.0, 4.0), trial(2, 3.0, 3.0, extra=1.0), trial(3, 2.0, 2.0),
              trial(4, 1.0, 4.0), {"number": 5, "params": {}, "metrics": {"branin": 0.0}, "run_id": None,
                                   "seed": 1}]
    front = front_records(trials, ["branin", "currin"], [MIN, MIN], reference=[5.0, 5.0])
    assert isinstance(front, Front)
    assert [r["number"] for r in front.members] == [1, 4, 3, 0]  # by branin, then number
    assert front.members[0] == {"number": 1, "params": {"x0": 0.1, "x1": 0.5},
                                "metrics": {"branin": 1.0, "currin": 4.0, "seconds": 0.5},
                                "run_id": "run1", "seed": 101}
    # (1,4), (2,2), (4,1) against (5,5): 4*1 + 3*2 + 1*1 = 11, as in the 2-D hand case
    assert front.hypervolume == pytest.approx(11.0) and front.reference_source == "spec"
    doc = json.loads(json.dumps(front.to_json()))
    assert doc["reference_point"] == {"branin": 5.0, "currin": 5.0} and doc["trials"] == 6
    assert doc["metrics"] == [{"name": "branin", "goal": MIN}, {"name": "currin", "goal": MIN}]
    assert [r["run_id"] for r in doc["front"]] == ["run1", "run4", "run3", "run0"]

    default = front_records(trials, ["branin", "currin"], [MIN, MIN])
    assert default.reference_source == "default" and default.reference == pytest.approx([4.3, 4.3])
    assert front_records([], ["branin", "currin"], [MIN, MIN]).members == []
    # quality against cost: seconds is an ordinary metric here; maximizing currin flips the order
    by_cost = front_records(trials, ["currin", "seconds"], [MAX, MIN], reference=[0.0, 1.0])
    assert [r["number"] for r in by_cost.members] == [1, 4]


# --- the test problem -----------------------------------------------------------------------


def test_branin_currin_value_and_curve():
    reports: list[tuple[int, dict[str, float]]] = []
    out = branin_currin({"x0": 0.5, "x1": 0.5, "steps": 5}, device="cpu", seed=0,
                        report=lambda step, metrics: reports.append((step, dict(metrics))))
    assert out["branin"] == pytest.approx(24.13, abs=5e-3) and out["currin"] == pytest.approx(7.405, abs=5e-3)
    assert [s for s, _ in reports] == [1, 2, 3, 4, 5]
    for name in ("branin", "currin"):
        values = [r[name] for _, r in reports]
        assert all(b < a for a, b in itertools.pairwise(values))  # a falling learning curve
        assert values[-1] == pytest.approx(out[name])


def test_branin_currin_grid_hypervolume_approaches_max():
    import torch
    from botorch.test_functions.multi_objective import BraninCurrin

    spec = load_spec("branin-currin")
    ref = [spec.reference_point[m.name] for m in spec.metrics]
    goals = [m.goal for m in spec.metrics]
    # A 1001 x 1001 grid (the front is thin in x: 301^2 points reach only 98.6%), evaluated in
    # one batch; the trainer gives the same numbers on a few of its points.
    g = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    x = torch.cartesian_prod(g, g)
    y = BraninCurrin()(x).numpy()
    for i in (0, 123_456, len(x) - 1):
        out = branin_currin({"x0": float(x[i, 0]), "x1": float(x[i, 1]), "steps": 1})
        assert [out["branin"], out["currin"]] == pytest.approx(y[i].tolist())
    # Too many points for the O(n^2) mask: thin them first with the 2-D sweep (sort by branin,
    # keep a point when its currin beats every point before it), which keeps the whole front.
    ys = y[np.lexsort((y[:, 1], y[:, 0]))]
    thin = ys[ys[:, 1] < np.minimum.accumulate(np.r_[np.inf, ys[:-1, 1]])]
    assert pareto_mask(thin, goals).all()
    hv = hypervolume(thin, goals, ref)
    max_hv = 59.36011874867746  # BoTorch's BraninCurrin.max_hv
    assert max_hv * 0.99 < hv <= max_hv * (1 + 1e-9)


def test_a_hypervolume_of_zero_says_why():
    from harness.pareto import zero_volume_reason

    pts = [[5.5, 1.0], [1.0, 7.0], [6.0, 6.0]]  # none is better than (5, 5) in both objectives
    assert hypervolume(pts, [MIN, MIN], [5.0, 5.0]) == 0.0
    why = zero_volume_reason(pts, [MIN, MIN], [5.0, 5.0])
    assert why == ("hypervolume 0: no complete trial is better than the reference point [5.0, 5.0] in every "
                   "objective (not better: objective 1 in 2 of 3, objective 2 in 2 of 3); move the reference "
                   "point (the spec's metrics' reference) past the values the trials reach")
    assert zero_volume_reason(pts, [MIN, MIN], [5.0, 8.0]) is None  # (1, 7) is inside: volume > 0
    assert zero_volume_reason([[5.0, 1.0]], [MIN, MIN], [5.0, 5.0]) is not None  # on the boundary: no volume
    assert zero_volume_reason(pts, [MIN, MIN], None) is None
    assert zero_volume_reason([[math.nan, 1.0]], [MIN, MIN], [5.0, 5.0]) is None  # nothing complete
    assert zero_volume_reason([[-1.0, 1.0]], [MAX, MIN], [0.0, 5.0]) is not None  # -1 is worse when maximized
    trials = [trial(0, 5.5, 1.0), trial(1, 1.0, 7.0)]
    doc = front_records(trials, ["branin", "currin"], [MIN, MIN], reference=[5.0, 5.0]).to_json()
    assert doc["hypervolume"] == 0.0 and doc["note"].startswith("hypervolume 0: no complete trial")
    assert "note" not in front_records(trials, ["branin", "currin"], [MIN, MIN], reference=[5.0, 8.0]).to_json()


def test_three_objectives_are_drawn_as_a_scatter_matrix_without_a_staircase(tmp_path):
    """A staircase through two of three objectives joins points that are not neighbours: with 3+
    objectives every pair gets its own panel, the front (of all objectives) highlighted, no line."""
    import matplotlib.pyplot as plt

    from harness.pareto_plots import front_figures, write_fronts

    rng = np.random.default_rng(0)
    pts = rng.random((30, 3))
    goals = [MIN, MAX, MIN]
    front = pts[pareto_mask(pts, goals)]
    fig, pfig = front_figures({"trials": pts}, ["a", "b", "c"], goals, "t", reference=[1.0, 0.0, 1.0])
    assert len(fig.axes) == 9
    for k, ax in enumerate(fig.axes):
        i, j = divmod(k, 3)
        assert len(ax.lines) == 0, "no staircase"
        if i == j:
            continue
        drawn = [c.get_offsets() for c in ax.collections]  # dominated, front, reference point
        assert np.array_equal(np.asarray(drawn[1]), front[:, [j, i]])  # the same front in every panel
        assert np.array_equal(np.asarray(drawn[2]), [[[1.0, 0.0, 1.0][j], [1.0, 0.0, 1.0][i]]])
    plt.close(fig)
    assert [t.type for t in pfig.data] == ["splom", "splom", "splom"]
    assert [d["label"] for d in pfig.data[1].dimensions] == ["a", "b", "c"]
    assert np.array_equal(np.column_stack([d["values"] for d in pfig.data[1].dimensions]), front)
    # two objectives keep the staircase, one line per front
    fig2, _ = front_figures({"trials": pts[:, :2]}, ["a", "b"], goals[:2], "t")
    assert len(fig2.axes) == 1 and len(fig2.axes[0].lines) == 1
    plt.close(fig2)
    paths = write_fronts({"x": pts, "y": pts[::-1] * 0.9}, ["a", "b", "c"], goals, tmp_path, "two groups")
    assert [p.name for p in paths] == ["pareto.png", "pareto.html"] and all(p.stat().st_size > 0 for p in paths)
