from types import SimpleNamespace

import numpy as np
import pytest
import torch

from snn_control import config as C
from snn_control.config import ModelConfig
from snn_control.models import GRUPredictor, MLPPolicy, build_networks, parameter_count
from snn_control.models.checkpoint import networks_for
from test.conftest import steady_readout


def test_spiking_nets_shapes_and_first_layer_recurrent():
    pred, pol = build_networks(ModelConfig(hidden=32, rank=8, substeps=2), 15, 6, 3)
    assert pred.net.layers[0].recurrent is not None and pred.net.layers[1].recurrent is None
    assert all(layer.recurrent is None for layer in pol.net.layers)
    obs, act, goal = torch.randn(4, 15), torch.rand(4, 6), torch.randn(4, 3)
    nxt, _ = pred.step(obs, act, pred.initial_state(4, obs))
    a, potential, _ = pol.step(obs, goal, pol.initial_state(4, obs))
    assert nxt.shape == (4, 15) and a.shape == (4, 6)
    assert torch.all(a.abs() <= 1) and torch.allclose(a, torch.tanh(potential))


def test_parameter_counts():
    pred, pol = build_networks(ModelConfig(hidden=32, rank=8, substeps=2), 10, 2, 2)
    n, d = 32, 8
    layer1 = (12 * n + n) + (d * n + n * d + n) + 3 * n  # input, low-rank recurrent, 3 taus
    layer2 = (d * n + n * d + n) + 3 * n
    readout = n * 10 + 10 + 2 * 10
    assert parameter_count(pred) == 12 + layer1 + layer2 + readout  # 12 = input gains
    gru, mlp = build_networks(ModelConfig(kind="gru", gru_hidden=500, mlp_hidden=500), 15, 6, 3)
    assert parameter_count(gru) == 3 * (21 * 500 + 500 * 500 + 2 * 500) + 500 * 15 + 15
    assert parameter_count(mlp) == 18 * 500 + 500 + 500 * 500 + 500 + 500 * 6 + 6


def test_shipped_panda_snn_is_at_most_a_fifth_of_the_gru_baseline():
    def total(name):
        cfg = C.load(f"config/{name}.yaml")
        names = [f"q{i}" for i in range(1, 7)] + [f"dq{i}" for i in range(1, 7)] + ["ee_x", "ee_y", "ee_z"]
        pred, pol = networks_for(cfg, SimpleNamespace(obs_dim=15, act_dim=6, goal_dim=3, effector=(12, 15),
                                                      control_period_s=0.02, obs_names=names))
        return parameter_count(pred) + parameter_count(pol)

    assert 5 * total("panda_snn") <= total("panda_gru")


def test_gru_carries_hidden_state_and_mlp_is_deterministic():
    gru = GRUPredictor(4, 2, 16)
    obs, act = torch.randn(3, 4), torch.randn(3, 2)
    h0 = gru.initial_state(3, obs)
    _, h1 = gru.step(obs, act, h0)
    out_a, _ = gru.step(obs, act, h1)
    out_b, _ = gru.step(obs, act, h0)
    assert not torch.allclose(out_a, out_b)  # same input, different carried state
    mlp = MLPPolicy(4, 2, 2, 16).eval()
    goal = torch.randn(3, 2)
    assert torch.equal(mlp.step(obs, goal, None)[0], mlp.step(obs, goal, None)[0])


def test_fixed_time_constants_are_not_trainable():
    pred, _ = build_networks(ModelConfig(hidden=16, rank=4, learn_tau=False), 4, 2, 2)
    assert not any(p.requires_grad for n, p in pred.named_parameters() if "log_tau" in n)


def test_momentum_prior_fitted_from_data_predicts_constant_velocity_exactly():
    import numpy as np

    pred, _ = build_networks(ModelConfig(hidden=16, rank=4, momentum_prior=True), 2, 1, 1)
    t = np.arange(51, dtype=np.float64)
    rng = np.random.default_rng(0)
    # entry 0 moves at a constant (per-episode) speed; entry 1 is white noise (no momentum)
    episodes = np.stack([np.stack([0.01 * rng.uniform(1, 2) * t, rng.normal(size=51)], axis=1)
                         for _ in range(20)])
    pred.calibrate(episodes.astype(np.float32), np.zeros((20, 50, 1), dtype=np.float32))
    alpha = torch.sigmoid(pred.momentum_logit).detach()
    assert alpha[0] > 0.97 and alpha[1] < 0.1
    with torch.no_grad():
        for p in pred.net.readout.parameters():
            p.zero_()  # network output 0: the prior alone
        obs = torch.tensor([[0.10, 0.0], [0.11, 0.0]])
        state = pred.initial_state(1, obs)
        first, state = pred.step(obs[:1], torch.zeros(1, 1), state)
        second, _ = pred.step(obs[1:], torch.zeros(1, 1), state)
    assert torch.allclose(first, obs[:1])  # no previous observation yet: no momentum
    assert second[0, 0].item() == pytest.approx(0.11 + alpha[0].item() * 0.01, abs=1e-6)


def test_action_term_gives_a_direct_action_gradient():
    pred, _ = build_networks(ModelConfig(hidden=16, rank=4, action_term=True), 3, 2, 1)
    with torch.no_grad():
        for p in pred.net.readout.parameters():
            p.zero_()  # spiking output 0: only the linear action term acts
        pred.action_term.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
        pred.delta_scale.copy_(torch.tensor([0.1, 0.1, 0.1]))
    obs = torch.zeros(1, 3)
    action = torch.tensor([[0.5, -0.5]], requires_grad=True)
    nxt, _ = pred.step(obs, action, pred.initial_state(1, obs))
    assert torch.allclose(nxt, torch.tensor([[0.05, -0.1, 0.0]]))
    nxt[0, 1].backward()
    assert torch.allclose(action.grad, torch.tensor([[0.0, 0.2]]))
    no_term, _ = build_networks(ModelConfig(hidden=16, rank=4), 3, 2, 1)
    assert no_term.action_term is None


def test_goal_error_policy_sees_goal_minus_effector():
    from snn_control.models.networks import policy_input

    obs = np.array([[0.1, 0.2, 0.5, 0.6]])  # effector = entries 2:4
    goal = np.array([[0.7, 0.9]])
    np.testing.assert_allclose(policy_input(obs, goal, (2, 4)), [[0.1, 0.2, 0.5, 0.6, 0.2, 0.3]])
    np.testing.assert_allclose(policy_input(torch.as_tensor(obs), torch.as_tensor(goal), None).numpy(),
                               [[0.1, 0.2, 0.5, 0.6, 0.7, 0.9]])
    cfg = ModelConfig(hidden=16, rank=4, substeps=1, goal_error=True)
    with pytest.raises(ValueError, match="goal_error needs the effector"):
        build_networks(cfg, 4, 2, 2)
    _, policy = build_networks(cfg, 4, 2, 2, effector=(2, 4))
    # the same error from another place: only the obs part differs, so the input's goal part agrees
    a = policy_input(torch.tensor([[0.1, 0.2, 0.5, 0.6]]), torch.tensor([[0.7, 0.9]]), policy.goal_error)
    b = policy_input(torch.tensor([[0.1, 0.2, 0.0, 0.0]]), torch.tensor([[0.2, 0.3]]), policy.goal_error)
    torch.testing.assert_close(a[:, 4:], b[:, 4:])


def test_policy_readout_time_constants_can_be_fixed_alone():
    cfg = ModelConfig(hidden=16, rank=4, substeps=1, policy_readout_learn_tau=False)
    predictor, policy = build_networks(cfg, 4, 2, 2)
    assert not policy.net.readout.log_tau_mem.requires_grad and not policy.net.readout.log_tau_syn.requires_grad
    assert policy.net.layers[0].log_tau_mem.requires_grad  # the hidden layers still learn theirs
    assert predictor.net.readout.log_tau_mem.requires_grad  # and the predictor its readout's
    learning = build_networks(ModelConfig(hidden=16, rank=4, substeps=1), 4, 2, 2)[1]
    assert parameter_count(learning) - parameter_count(policy) == 2 * 2  # mem + syn per output


def test_the_policy_can_run_its_own_substeps_and_readout_time_constants():
    cfg = ModelConfig(hidden=16, rank=4, substeps=2, policy_substeps=4, policy_readout_tau_syn=0.02,
                      policy_readout_tau_mem=0.03, policy_readout_learn_tau=False)
    predictor, policy = build_networks(cfg, 4, 2, 2)
    assert (predictor.net.substeps, policy.net.substeps) == (2, 4)
    tau_syn, tau_mem = policy.net.readout.time_constants()
    torch.testing.assert_close(tau_syn, torch.full((2,), 0.02))
    torch.testing.assert_close(tau_mem, torch.full((2,), 0.03))
    torch.testing.assert_close(predictor.net.readout.time_constants()[0], torch.full((4,), cfg.readout_tau_syn))
    shared = build_networks(ModelConfig(hidden=16, rank=4, substeps=2), 4, 2, 2)[1]
    assert shared.net.substeps == 2
    torch.testing.assert_close(shared.net.readout.time_constants()[0], torch.full((2,), ModelConfig.readout_tau_syn))


def test_a_retimed_readout_keeps_its_steady_output_and_averages_longer():
    from snn_control.spiking.neurons import LeakyReadout

    torch.manual_seed(0)
    readout = LeakyReadout(32, 3, dt=0.005, tau_mem=0.005, tau_syn=0.005, learn_tau=False)
    with torch.no_grad():
        readout.weight.bias.uniform_(-0.5, 0.5)  # the bias is rescaled with the weights
    constant = (torch.rand(1, 32) < 0.3).float()
    before = steady_readout(readout, constant)
    flicker = (torch.rand(200, 1, 32) < 0.3).float()  # spikes that change every substep

    def spread():
        state, out = readout.initial_state(1, constant), []
        with torch.no_grad():
            for s in flicker:
                state = readout.step(s, state, readout.decays())
                out.append(state.output)
        return torch.stack(out[50:]).std(0)

    quick = spread()
    readout.retime(0.02, 0.02)
    torch.testing.assert_close(readout.time_constants()[1], torch.full((3,), 0.02))
    torch.testing.assert_close(steady_readout(readout, constant), before, rtol=1e-4, atol=1e-5)
    assert (spread() < 0.7 * quick).all()


def test_config_refuses_bad_policy_timing():
    for key, value in (("policy_substeps", -1), ("policy_readout_tau_syn", -0.01), ("policy_readout_tau_mem", -1.0)):
        with pytest.raises(C.ConfigError, match=f"model.{key}"):
            C.load("config/panda_snn.yaml", [f"model.{key}={value}"])
    with pytest.raises(C.ConfigError, match="model.policy_substeps: for a spiking policy"):
        C.load("config/panda_gru.yaml", ["model.policy_substeps=4"])
    with pytest.raises(C.ConfigError, match="model.policy_substeps: for a spiking policy trained by"):
        C.load("config/reacher_td3.yaml", ["model.policy_substeps=4"])  # TD3's actor has rl.timesteps
    for value in (0.0005, 8.0):  # outside the range the time constants are clamped to
        with pytest.raises(C.ConfigError, match="model.policy_readout_tau_syn: must be 0 or within"):
            C.load("config/panda_snn.yaml", [f"model.policy_readout_tau_syn={value}"])
    with pytest.raises(C.ConfigError, match="set model.policy_readout_learn_tau: false"):  # a learned one keeps its own
        C.load("config/panda_snn.yaml", ["model.policy_readout_learn_tau=true"])
