"""The compiled batch-1 path computes what the training modules compute.

Tolerance: against the training modules in float64, every spike of every layer at every
control step is identical and outputs agree within 1e-9 (they differ only by summation
order). The float32 modules are compared loosely (1e-4) over a short run.
"""

import copy

import numpy as np
import pytest
import torch

from snn_control.config import ModelConfig
from snn_control.models import build_networks
from snn_control.models import FastPolicy, FastPredictor
from snn_control.spiking import SpikingNet, Surrogate
from snn_control.spiking.fast import FastSpikingNet


def _inputs(steps, dim, seed=0):
    """Smooth inputs of unit scale, so the nets fire at varied rates."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.3, size=(steps, dim)), axis=0)
    return np.tanh(x) * 2.0


def _net(rank, xi, recurrent, hidden=(64, 64), substeps=3):
    torch.manual_seed(1)
    return SpikingNet(5, 3, hidden=hidden, recurrent=recurrent, rank=rank, substeps=substeps,
                      surrogate=Surrogate("fast_sigmoid", 10.0), dt=0.002, tau_mem=0.01,
                      tau_syn=0.005, tau_ada=0.1, xi=xi, learn_tau=True, readout_tau_mem=0.01,
                      readout_tau_syn=0.005)


@pytest.mark.parametrize("rank,xi,recurrent", [
    (8, 0.05, (True, False)),   # the predictor's shape: low-rank, ALIF, first layer recurrent
    (None, 0.0, (False, True)),  # dense LIF, second layer recurrent
    (16, 0.2, (True, True)),
])
def test_fast_net_matches_float64_module_spike_for_spike(rank, xi, recurrent):
    net = _net(rank, xi, recurrent)
    with torch.no_grad():  # trained-looking time constants: spread per neuron
        for layer in net.layers:
            layer.log_tau_mem.add_(torch.randn_like(layer.log_tau_mem) * 0.3)
    fast = FastSpikingNet(net)
    ref = copy.deepcopy(net).double()
    state = ref.initial_state(1, torch.zeros(1, dtype=torch.float64))
    total_spikes = 0
    with torch.no_grad():
        for x in _inputs(150, 5):
            y_ref, state = ref.step(torch.as_tensor(x)[None], state)
            y = fast.step(x)
            spikes_ref = np.stack([s.spikes[0].numpy() for s in state.layers])
            assert np.array_equal(fast.spikes, spikes_ref)
            np.testing.assert_allclose(y, y_ref[0].numpy(), rtol=0, atol=1e-9)
            total_spikes += spikes_ref.sum()
    assert total_spikes > 100  # the comparison saw real activity
    assert fast.spike_counts.sum() > 0 and np.all(fast.firing_rates_hz() >= 0)


def test_fast_net_reset_restarts_the_episode():
    net = _net(8, 0.05, (True, False))
    fast = FastSpikingNet(net)
    xs = _inputs(20, 5)
    first = [fast.step(x).copy() for x in xs]
    fast.reset()
    again = [fast.step(x).copy() for x in xs]
    np.testing.assert_array_equal(np.array(first), np.array(again))


def test_fast_net_refuses_unequal_layer_sizes():
    with pytest.raises(ValueError, match="equal layer sizes"):
        FastSpikingNet(_net(8, 0.05, (True, False), hidden=(64, 32)))


@pytest.mark.parametrize("kind,extra", [("snn", {}), ("snn", {"momentum_prior": True, "action_term": True}),
                                        ("snn", {"goal_error": True}), ("gru", {}), ("gru", {"goal_error": True}),
                                        ("snn", {"goal_integral_gain": 2.0, "goal_integral_tau_s": 0.5}),
                                        ("snn", {"policy_recurrent": True}),
                                        ("snn", {"policy_fine_error_m": 0.05, "goal_integral_gain": 1.0}),
                                        ("snn", {"goal_integral_gain": 1.0, "goal_integral_radius_m": 0.05}),
                                        ("snn", {"goal_integral_gain": 2.0, "goal_integral_closing_m_s": 0.03}),
                                        ("snn", {"action_damping": 0.5, "goal_integral_gain": 2.0})])
def test_fast_policy_and_predictor_match_modules(kind, extra):
    cfg = ModelConfig(kind=kind, hidden=48, rank=8, substeps=2, gru_hidden=32, mlp_hidden=32, **extra)
    torch.manual_seed(0)
    predictor, policy = build_networks(cfg, 9, 6, 3, effector=(6, 9), control_period_s=0.02, velocity=(0, 6))
    with torch.no_grad():
        predictor.delta_scale.uniform_(0.01, 0.1)
        if predictor.action_term is not None:
            predictor.action_term.weight.normal_(0, 0.1)
    fast_pol, fast_pred = FastPolicy(policy), FastPredictor(predictor)
    dtype = torch.float64 if kind == "snn" else torch.float32  # baselines run their own torch modules
    pol_ref, pred_ref = copy.deepcopy(policy).to(dtype), copy.deepcopy(predictor).to(dtype)
    s_pol, s_pred = pol_ref.initial_state(1, torch.zeros(1, dtype=dtype)), pred_ref.initial_state(1, torch.zeros(1, dtype=dtype))
    tol = 1e-9 if kind == "snn" else 1e-6
    xs = _inputs(60, 12)
    with torch.no_grad():
        for x in xs:
            obs, goal = x[:9], x[9:]
            a = fast_pol.act(obs, goal)
            p = fast_pred.predict(obs, a)
            a_ref, _, s_pol = pol_ref.step(torch.as_tensor(obs, dtype=dtype)[None], torch.as_tensor(goal, dtype=dtype)[None], s_pol)
            p_ref, s_pred = pred_ref.step(torch.as_tensor(obs, dtype=dtype)[None], a_ref, s_pred)
            np.testing.assert_allclose(a, a_ref[0].double().numpy(), atol=tol, rtol=0)
            np.testing.assert_allclose(p, p_ref[0].double().numpy(), atol=tol, rtol=0)
    assert np.all(np.abs(a) <= 1.0)
    assert (fast_pol.firing_rates_hz().size > 0) == (kind == "snn")


def test_goal_integral_moves_the_goal_by_the_integrated_error_within_its_bound():
    from snn_control.models.networks import GoalIntegral

    rule = GoalIntegral(gain=2.0, tau_s=1.0, limit_m=0.01, period_s=0.02, effector=(0, 3))
    obs, goal = np.zeros((1, 3)), np.array([[0.1, 0.0, -0.1]])  # a steady 10 cm error on x and z
    integral, seen = None, []
    for _ in range(40):
        shifted, integral = rule.shifted(obs, goal, integral)
        seen.append(shifted - goal)
    assert seen[0][0, 0] == pytest.approx(2.0 * 0.1 * 0.02)  # gain x error x period after one step
    assert seen[0][0, 1] == 0.0 and seen[0][0, 2] < 0  # each axis by its own error
    np.testing.assert_allclose(seen[-1], [[0.02, 0.0, -0.02]])  # held at gain x limit: no wind-up
    torch_shifted, _ = rule.shifted(torch.zeros(1, 3), torch.tensor(goal), None)
    np.testing.assert_allclose(torch_shifted.numpy() - goal, seen[0])


def test_goal_integral_with_a_radius_integrates_only_near_the_goal():
    from snn_control.models.networks import GoalIntegral

    rule = GoalIntegral(gain=1.0, tau_s=1.0, limit_m=0.1, period_s=0.02, effector=(0, 3), radius_m=0.05)
    obs = np.zeros((2, 3))
    goal = np.array([[0.1, 0.0, 0.0], [0.03, 0.0, 0.0]])  # 10 cm away: outside; 3 cm: inside
    shifted, integral = rule.shifted(obs, goal, None)
    np.testing.assert_allclose(integral, [[0.0, 0.0, 0.0], [0.03 * 0.02, 0.0, 0.0]])
    np.testing.assert_allclose(shifted, goal + integral)
    shifted, integral = rule.shifted(obs, goal, np.array([[0.01, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert 0 < integral[0, 0] < 0.01  # outside, what was integrated only leaks
    torch_shifted, torch_integral = rule.shifted(torch.zeros(2, 3), torch.tensor(goal), None)
    np.testing.assert_allclose(torch_integral.numpy(), [[0.0, 0.0, 0.0], [0.03 * 0.02, 0.0, 0.0]])
    cfg = ModelConfig(hidden=16, rank=4, goal_integral_gain=1.0, goal_integral_radius_m=0.05)
    _, policy = build_networks(cfg, 9, 6, 3, effector=(6, 9), control_period_s=0.02)
    assert policy.goal_integral.radius_m == 0.05  # the config's setting reaches the rule


def test_goal_integral_with_a_closing_gate_integrates_only_while_the_arm_is_not_closing_in():
    from snn_control.models.networks import GoalIntegral

    rule = GoalIntegral(gain=1.0, tau_s=1.0, limit_m=0.1, period_s=0.02, effector=(0, 3), closing_m_s=0.03)
    goal = np.array([[0.05, 0.0, 0.0], [0.05, 0.0, 0.0]])
    # the first arm closes in at 5 cm/s (1 mm per step), the second is held 4 cm off
    first = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    _, state = rule.shifted(first, goal, None)  # no distance before: both integrate
    assert state.shape == (2, 4) and np.allclose(state[:, 3], [0.05, 0.04])
    after = np.array([[0.001, 0.0, 0.0], [0.01, 0.0, 0.0]])
    shifted, state = rule.shifted(after, goal, state)
    decay = np.exp(-0.02)
    np.testing.assert_allclose(state[0, :3], [decay * 0.05 * 0.02, 0.0, 0.0])  # closing: only leaks
    np.testing.assert_allclose(state[1, :3], [(decay + 1.0) * 0.04 * 0.02, 0.0, 0.0])  # held off: adds
    np.testing.assert_allclose(shifted, goal + state[:, :3])
    torch_shifted, torch_state = rule.shifted(torch.tensor(after), torch.tensor(goal), torch.tensor(state))
    np_shifted, np_state = rule.shifted(after, goal, state)
    np.testing.assert_allclose(torch_state.numpy(), np_state)
    np.testing.assert_allclose(torch_shifted.numpy(), np_shifted)
    cfg = ModelConfig(hidden=16, rank=4, goal_integral_gain=1.0, goal_integral_closing_m_s=0.03)
    _, policy = build_networks(cfg, 9, 6, 3, effector=(6, 9), control_period_s=0.02)
    assert policy.goal_integral.closing_m_s == 0.03  # the config's setting reaches the rule


def test_action_damping_subtracts_the_joint_velocities_within_the_action_range():
    torch.manual_seed(0)
    plain = build_networks(ModelConfig(hidden=32, rank=4), 9, 6, 3, effector=(6, 9), velocity=(0, 6))[1]
    damped = build_networks(ModelConfig(hidden=32, rank=4, action_damping=0.5), 9, 6, 3, effector=(6, 9),
                            velocity=(0, 6))[1]
    damped.load_state_dict(plain.state_dict())
    assert damped.action_damping.gain == 0.5  # the config's setting reaches the rule
    obs = torch.tensor([[0.2, -0.4, 0.0, 3.0, -3.0, 0.1, 0.3, 0.0, 0.5]])  # joint velocities first
    goal = torch.tensor([[0.3, 0.1, 0.4]])
    with torch.no_grad():
        a, _, _ = plain.step(obs, goal, plain.initial_state(1, obs))
        b, _, _ = damped.step(obs, goal, damped.initial_state(1, obs))
    expected = (a - 0.5 * obs[:, :6]).clamp(-1, 1)
    torch.testing.assert_close(b, expected)
    assert b[0, 3] == -1.0 and b[0, 4] == 1.0  # a fast joint saturates the action, within its range
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="action_damping: for a spiking policy"):
        build_networks(ModelConfig(kind="gru", gru_hidden=8, mlp_hidden=8, action_damping=0.5), 9, 6, 3,
                       effector=(6, 9), velocity=(0, 6))
    with pytest.raises(ValueError, match="joint velocities' slice"):
        build_networks(ModelConfig(hidden=16, rank=4, action_damping=0.5), 9, 6, 3, effector=(6, 9))
