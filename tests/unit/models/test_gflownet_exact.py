"""Exact evaluation, the sampler and the losses, checked against independent computations."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from models.gflownet.env import Hypergrid
from models.gflownet.losses import subtrajectory_balance
from models.gflownet.metrics import (
    exact_policy_table,
    modes_found,
    policy_outputs,
    terminal_distribution,
    true_log_flows,
)
from models.gflownet.nets import PolicyMLP, TabularPolicy, forward_log_probs, n_outputs
from models.gflownet.sampling import ReplayBuffer, sample_trajectories
from models.gflownet.train import Config, batch_loss

LOSSES = ["tb", "db", "subtb", "fm"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is faster, and kinder to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uniform_policy(env: Hypergrid) -> TabularPolicy:
    table = torch.zeros(env.n_states, n_outputs(env.ndim), dtype=torch.float64)
    return TabularPolicy(env, table, 0.0)


def exact_l1(env: Hypergrid, policy: torch.nn.Module) -> float:
    x = env.all_states()
    p = terminal_distribution(env, forward_log_probs(env, policy_outputs(policy, env), x))
    reward = env.reward(x)
    return float((p - reward / reward.sum()).abs().sum())


def test_dp_of_uniform_policy_equals_enumeration_of_every_trajectory_3x3() -> None:
    env = Hypergrid(2, 3)
    x = env.all_states()
    p = terminal_distribution(env, forward_log_probs(env, policy_outputs(uniform_policy(env), env), x))

    @cache
    def terminal_probs(state: tuple[int, ...]) -> dict[tuple[int, ...], float]:
        """Enumerate every continuation: each valid action (increments + stop) equally likely."""
        moves = [i for i in range(2) if state[i] < 2]
        share = 1 / (len(moves) + 1)
        out = {state: share}
        for i in moves:
            child = tuple(v + (j == i) for j, v in enumerate(state))
            for end, q in terminal_probs(child).items():
                out[end] = out.get(end, 0.0) + share * q
        return out

    brute = terminal_probs((0, 0))
    assert sum(brute.values()) == pytest.approx(1.0)
    for k, state in enumerate(map(tuple, x.tolist())):
        assert float(p[k]) == pytest.approx(brute[state], abs=1e-15)


def test_uniform_policy_l1_on_8x8_matches_reference() -> None:
    env = Hypergrid(2, 8)
    assert exact_l1(env, uniform_policy(env)) == pytest.approx(1.40, abs=5e-3)


@pytest.mark.parametrize(("ndim", "height"), [(2, 3), (2, 8), (3, 5), (2, 16), (4, 4)])
def test_true_flow_policy_has_exact_l1_below_1e_6(ndim: int, height: int) -> None:
    env = Hypergrid(ndim, height)
    table, log_z = exact_policy_table(env)
    policy = TabularPolicy(env, table, log_z)
    assert exact_l1(env, policy) < 1e-6
    assert log_z == pytest.approx(env.log_partition(), abs=1e-12)


def test_true_flows_satisfy_flow_matching_at_every_state() -> None:
    env = Hypergrid(2, 5)
    log_f = true_log_flows(env)
    x = env.all_states()
    reward = env.reward(x)
    n_par = env.n_parents(x).clamp(min=1)
    for k, state in enumerate(x.tolist()):
        children = [state[:i] + [state[i] + 1] + state[i + 1 :] for i in range(2) if state[i] < 4]
        out = sum(math.exp(log_f[c[0] + 5 * c[1]]) / int(n_par[c[0] + 5 * c[1]]) for c in children)
        assert math.exp(log_f[k]) == pytest.approx(float(reward[k]) + float(out), rel=1e-12)


def test_sampler_follows_the_dp_distribution_with_epsilon_and_temperature() -> None:
    """Histograms of the Gumbel-max sampler against the DP of the law it should follow."""
    env = Hypergrid(2, 3)
    torch.manual_seed(0)
    table = torch.randn(env.n_states, n_outputs(2), dtype=torch.float32)
    policy = TabularPolicy(env, table, 0.0)
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    x = env.all_states()

    def histogram(**kw: float) -> torch.Tensor:
        traj = sample_trajectories(env, policy, n, gen, **kw)
        return torch.bincount(traj.terminal, minlength=9).double() / n

    def dp(logits: torch.Tensor) -> torch.Tensor:
        return terminal_distribution(env, forward_log_probs(env, logits, x))

    cases = {
        "on-policy": (histogram(), dp(table)),
        "temperature 2": (histogram(temperature=2.0), dp(table / 2)),
        "epsilon 1 (uniform policy)": (histogram(epsilon=1.0), dp(torch.zeros_like(table))),
    }
    # epsilon = 0.5: P_F mixes half the policy and half the uniform law over valid actions
    pf = forward_log_probs(env, table, x).exp()
    valid = env.forward_mask(x).double()
    mix = 0.5 * pf.double() + 0.5 * valid / valid.sum(-1, keepdim=True)
    cases["epsilon 0.5"] = (histogram(epsilon=0.5), dp(mix.log()))
    for name, (hist, exact) in cases.items():
        l1 = float((hist - exact).abs().sum())
        assert l1 < 0.03, name  # sampling noise at n = 40k is about 0.01
    # and the laws differ from each other by more than the tolerance
    assert float((cases["on-policy"][1] - cases["temperature 2"][1]).abs().sum()) > 0.06


def test_trajectories_are_well_formed() -> None:
    env = Hypergrid(3, 4)
    policy = PolicyMLP(3, 4, hidden=16, depth=1)
    traj = sample_trajectories(env, policy, 64, torch.Generator().manual_seed(1), epsilon=0.3)
    b, t, _ = traj.states.shape
    assert traj.actions.shape == (b, t) and t <= env.max_actions
    assert bool((traj.lengths >= 1).all())
    stop_at_end = traj.actions.gather(1, (traj.lengths - 1)[:, None])[:, 0] == env.stop
    assert bool(stop_at_end.all())
    for i in range(b):  # each step increments one coordinate, no stop before the end
        L = int(traj.lengths[i])
        coords = traj.states[i, :L, :3]
        assert int(coords[0].sum()) == 0 and bool((coords < 4).all())
        assert bool((traj.actions[i, : L - 1] < env.stop).all())
        steps = coords[1:] - coords[:-1]
        assert bool((steps.sum(-1) == 1).all())
        assert torch.equal(env.all_states()[traj.terminal[i]], coords[-1])


def random_perturbation(table: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return table + 0.3 * torch.randn(table.shape, generator=g, dtype=table.dtype)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backward_policy", ["uniform", "learned"])
def test_each_loss_is_zero_on_the_exact_policy_and_positive_elsewhere(
    loss: str, backward_policy: str
) -> None:
    env = Hypergrid(2, 6)
    cfg = Config(ndim=2, height=6, loss=loss, backward_policy=backward_policy, lambda_=0.8)
    table, log_z = exact_policy_table(env)
    exact = TabularPolicy(env, table, log_z)
    # off-policy trajectories (epsilon 0.5): the balance conditions hold on any trajectory
    traj = sample_trajectories(env, exact, 256, torch.Generator().manual_seed(0), epsilon=0.5)
    assert float(batch_loss(cfg, env, exact, traj).detach()) < 1e-12
    wrong = TabularPolicy(env, random_perturbation(table, 1), log_z)
    assert float(batch_loss(cfg, env, wrong, traj).detach()) > 1e-3
    if loss == "fm":  # FM has no log Z: wrong rewards (stop edge flows) alone
        wrong_stop = table.clone()
        wrong_stop[:, env.stop] += 0.1
        wrong_z = TabularPolicy(env, wrong_stop, log_z)
    else:  # wrong log Z alone
        wrong_z = TabularPolicy(env, table, log_z + 0.1)
    assert float(batch_loss(cfg, env, wrong_z, traj).detach()) > 1e-4


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_are_finite_with_gradients_on_a_network_and_padding(loss: str) -> None:
    env = Hypergrid(2, 5)
    cfg = Config(ndim=2, height=5, loss=loss, backward_policy="learned")
    policy = PolicyMLP(2, 5, hidden=32, depth=2)
    gen = torch.Generator().manual_seed(0)
    traj = sample_trajectories(env, policy, 32, gen)
    buffer = ReplayBuffer(64, env)
    buffer.add(traj)
    padded = buffer.sample(48, gen)  # padded to the longest possible trajectory
    for batch in (traj, padded):
        value = batch_loss(cfg, env, policy, batch)
        value.backward()
        assert float(value.detach()) > 0
        grads = [p.grad for p in policy.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        policy.zero_grad()


def test_padding_does_not_change_the_loss() -> None:
    env = Hypergrid(2, 5)
    policy = PolicyMLP(2, 5, hidden=32, depth=2)
    traj = sample_trajectories(env, policy, 32, torch.Generator().manual_seed(0))
    for loss in LOSSES:
        cfg = Config(ndim=2, height=5, loss=loss, backward_policy="learned")
        short = float(batch_loss(cfg, env, policy, traj).detach())
        long = float(batch_loss(cfg, env, policy, traj.pad_to(env.max_actions, env.stop)).detach())
        assert short == pytest.approx(long, rel=1e-5), loss


def test_subtb_matches_a_loop_over_subtrajectories() -> None:
    g = torch.Generator().manual_seed(0)
    b, t = 3, 5
    log_flow = torch.randn(b, t + 1, generator=g, dtype=torch.float64)
    log_pf = torch.randn(b, t, generator=g, dtype=torch.float64)
    log_pb = torch.randn(b, t, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 1])
    lam = 0.7
    total = 0.0
    for k in range(b):
        num = den = 0.0
        length = int(lengths[k])
        for i in range(length + 1):
            for j in range(i + 1, length + 1):
                r = log_flow[k, i] + (log_pf[k, i:j] - log_pb[k, i:j]).sum() - log_flow[k, j]
                num += lam ** (j - i) * float(r) ** 2
                den += lam ** (j - i)
        total += num / den
    got = float(subtrajectory_balance(log_flow, log_pf, log_pb, lengths, lam, torch.ones(b, dtype=torch.bool)))
    assert got == pytest.approx(total / b, rel=1e-12)
    # a padded (masked) trajectory counts nowhere: the mean stays over the member's own rows
    pad = torch.randn(1, t + 1, generator=g, dtype=torch.float64)
    masked = subtrajectory_balance(torch.cat([log_flow, pad]), torch.cat([log_pf, pad[:, :t]]),
                                   torch.cat([log_pb, pad[:, 1:]]), torch.cat([lengths, lengths[:1]]),
                                   torch.tensor(lam, dtype=torch.float64),
                                   torch.tensor([True, True, True, False]))
    assert float(masked) == pytest.approx(total / b, rel=1e-12)


def test_modes_found_counts_corner_regions() -> None:
    env = Hypergrid(2, 8)
    visits = torch.zeros(env.n_states, dtype=torch.long)
    assert modes_found(env, visits) == 0
    visits[env.index(torch.tensor([[1, 1], [6, 1], [0, 0], [3, 3]]))] = 1
    assert modes_found(env, visits) == 2
    env20 = Hypergrid(2, 20)  # two top-band states per side: same corner counts once
    visits20 = torch.zeros(env20.n_states, dtype=torch.long)
    corner_states = env20.all_states()[env20.is_mode(env20.all_states())]
    lower_left = corner_states[(corner_states < 10).all(-1)]
    assert len(lower_left) == 4
    visits20[env20.index(lower_left)] = 1
    assert modes_found(env20, visits20) == 1


def test_replay_buffer_wraps_around() -> None:
    env = Hypergrid(2, 4)
    policy = PolicyMLP(2, 4, hidden=8, depth=1)
    gen = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(40, env)
    for _ in range(3):
        buffer.add(sample_trajectories(env, policy, 16, gen))
    assert buffer.size == 40 and buffer.ptr == 8
    batch = buffer.sample(10, gen)
    assert batch.states.shape == (10, env.max_actions, 3)
    assert bool((batch.actions.gather(1, (batch.lengths - 1)[:, None]) == env.stop).all())
