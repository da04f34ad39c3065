"""Hypergrid environment: reward, modes, masks, reference values (REFERENCES.md)."""

from __future__ import annotations

import pytest
import torch

from models.gflownet.env import Hypergrid

R_MAX = 0.1 + 0.5 + 2.0


@pytest.mark.parametrize(
    ("height", "x", "expected"),
    [
        (8, (0, 0), 0.6),  # a = 0.5: outer band only
        (8, (1, 1), R_MAX),  # a = |1/7 - 0.5| = 0.357: both bands
        (8, (6, 1), R_MAX),
        (8, (7, 7), 0.6),
        (8, (3, 3), 0.1),  # centre: R0
        (8, (1, 3), 0.1),  # one coordinate out: the products fail
        (8, (0, 1), 0.6),
        (9, (2, 0), 0.1),  # a = 2/8 - 0.5 = 0.25 exactly: 0.25 < a is false
        (9, (1, 1), R_MAX),  # a = 0.375
        (16, (3, 3), 0.6),  # a = 0.3 exactly: not in the top band
        (16, (2, 13), R_MAX),  # a = 0.367
        (16, (12, 12), 0.6),  # a = 0.3 exactly on the other side
        (5, (0, 4), 0.6),  # no top band for H <= 6
    ],
)
def test_reward_at_hand_checked_points(height: int, x: tuple[int, int], expected: float) -> None:
    env = Hypergrid(2, height)
    assert float(env.reward(torch.tensor(x))) == pytest.approx(expected, abs=1e-12)


def test_reward_divides_by_h_minus_1_and_uses_r0() -> None:
    env = Hypergrid(3, 8, r0=0.001)
    x = torch.tensor([[1, 6, 1], [0, 7, 0], [1, 6, 2]])
    assert env.reward(x).tolist() == pytest.approx([2.501, 0.501, 0.001])


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("height", [7, 8, 9, 10, 12, 13, 14, 15, 16])
def test_exactly_2_pow_n_maximum_reward_modes(ndim: int, height: int) -> None:
    env = Hypergrid(ndim, height)
    x = env.all_states()
    reward = env.reward(x)
    n_max = int((reward == reward.max()).sum())
    assert float(reward.max()) == pytest.approx(R_MAX)
    assert n_max == 2**ndim  # one state per corner for these heights
    assert int(env.is_mode(x).sum()) == 2**ndim
    assert env.n_modes() == 2**ndim


def test_h16_float_trap_is_avoided() -> None:
    """Without the epsilon, a = 0.3 (x = 3, 12 at H = 16) is counted through rounding."""
    env = Hypergrid(2, 16)
    x = env.all_states()
    a = (x.double() / 15 - 0.5).abs()
    naive = ((a > 0.3) & (a < 0.4)).all(-1)
    assert int(naive.sum()) == 9  # the trap REFERENCES describes
    assert int(env.is_mode(x).sum()) == 4


@pytest.mark.parametrize("height", [2, 3, 4, 5, 6, 11])
def test_no_top_band_heights_have_no_modes(height: int) -> None:
    assert Hypergrid(2, height).n_modes() == 0


@pytest.mark.parametrize("height", [17, 20, 24])
def test_large_heights_have_2_pow_n_mode_regions(height: int) -> None:
    env = Hypergrid(2, height)
    assert env.n_modes() == 4
    assert int(env.is_mode(env.all_states()).sum()) >= 4


@pytest.mark.parametrize(
    ("ndim", "height", "log_z"), [(2, 8, 3.109), (2, 16, 4.184), (4, 8, 6.345), (2, 64, 7.098)]
)
def test_log_partition_matches_references(ndim: int, height: int, log_z: float) -> None:
    assert Hypergrid(ndim, height).log_partition() == pytest.approx(log_z, abs=5e-4)


@pytest.mark.parametrize(("ndim", "l1"), [(2, 1.071), (4, 0.527)])
def test_uniform_over_terminal_states_l1_matches_references(ndim: int, l1: float) -> None:
    env = Hypergrid(ndim, 8)
    reward = env.reward(env.all_states())
    uniform = torch.full_like(reward, 1 / env.n_states)
    assert float((uniform - reward / reward.sum()).abs().sum()) == pytest.approx(l1, abs=5e-4)


def test_states_index_and_masks() -> None:
    env = Hypergrid(3, 4)
    x = env.all_states()
    assert x.shape == (64, 3)
    assert torch.equal(env.index(x), torch.arange(64))
    fmask = env.forward_mask(torch.tensor([[3, 0, 2], [0, 0, 0]]))
    assert fmask.tolist() == [[False, True, True, True], [True, True, True, True]]
    bmask = env.backward_mask(torch.tensor([3, 0, 2]))
    assert bmask.tolist() == [True, False, True]
    # sampler states carry a stop counter; stop is never invalid
    s = torch.tensor([[3, 0, 3, 0], [3, 3, 3, 5]])
    assert env.forward_invalid(s).tolist() == [[True, False, True, False], [True, True, True, False]]
    levels = env.levels()
    assert len(levels) == env.max_actions == 10
    assert sum(len(level) for level in levels) == 64
    for k, level in enumerate(levels):
        assert bool((x[level].sum(-1) == k).all())


def test_bad_environment_arguments() -> None:
    with pytest.raises(ValueError, match="height"):
        Hypergrid(2, 1)
    with pytest.raises(ValueError, match="ndim"):
        Hypergrid(0, 8)
    with pytest.raises(ValueError, match="r0"):
        Hypergrid(2, 8, r0=0.0)
