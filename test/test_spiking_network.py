import math

import pytest
import torch

from snn_control.spiking import LowRankLinear, SpikingNet, Surrogate, make_connection
from snn_control.spiking.init import analog_input_std, psp_kernel, spiking_input_std


def _net(**kw):
    args = dict(hidden=[64, 64], recurrent=[True, False], rank=8, substeps=3,
                surrogate=Surrogate("fast_sigmoid", 10.0), dt=0.002, tau_mem=0.01, tau_syn=0.005,
                tau_ada=0.1, xi=0.05, learn_tau=True, readout_tau_mem=0.01, readout_tau_syn=0.005)
    args.update(kw)
    return SpikingNet(5, 3, **args)


def test_low_rank_parameter_count():
    conn = make_connection(512, 256, 32)
    assert isinstance(conn, LowRankLinear)
    assert sum(p.numel() for p in conn.parameters()) == 32 * (512 + 256) + 256  # W1, W2, bias of W2
    dense = make_connection(512, 256, None)
    assert sum(p.numel() for p in dense.parameters()) == 512 * 256 + 256


def test_low_rank_init_matches_dense_std():
    conn = LowRankLinear(400, 300, 40)
    conn.init_like_dense(0.1)
    assert conn.dense_weight().std().item() == pytest.approx(0.1, rel=0.05)
    w1 = conn.down.weight
    assert torch.allclose(w1 @ w1.T, torch.eye(40), atol=1e-5)  # orthogonal rows


def test_fluctuation_driven_init_gives_unit_membrane_std():
    beta_syn, beta_mem = math.exp(-0.002 / 0.005), math.exp(-0.002 / 0.01)
    # analog: U_steady = sum_j w_j x_j * G, G = sum(kernel) = 1 / (1 - beta_syn)
    assert sum(psp_kernel(beta_syn, beta_mem)) == pytest.approx(1 / (1 - beta_syn), rel=1e-6)
    std = analog_input_std(100, beta_syn, beta_mem, 1.0)
    w = torch.randn(2000, 100) * std
    u = (w @ torch.randn(100, 200)) / (1 - beta_syn)
    assert u.std().item() == pytest.approx(1.0, rel=0.05)
    # spiking: simulate Poisson inputs through the filter and compare the membrane std
    n, p = 200, 20 * 0.002
    std = spiking_input_std(n, 20.0, 0.002, beta_syn, beta_mem, 1.0)
    w = torch.randn(n, 500) * std
    current = torch.zeros(500)
    voltage = torch.zeros(500)
    samples = []
    for t in range(3000):
        current = beta_syn * current + (torch.rand(n) < p).float() @ w
        voltage = beta_mem * voltage + (1 - beta_mem) * current
        if t > 500:
            samples.append(voltage)
    assert torch.stack(samples).std().item() == pytest.approx(1.0, rel=0.1)


def test_state_reset_and_detach():
    net = _net()
    x = torch.randn(4, 5)
    state = net.initial_state(4, x)
    assert all(float(t.abs().sum()) == 0 for layer in state.layers for t in layer)
    y, state = net.step(x, state)
    assert y.shape == (4, 3)
    assert state.readout.output.requires_grad
    detached = state.detach()
    assert not detached.readout.output.requires_grad
    assert not any(t.requires_grad for layer in detached.layers for t in layer)


def test_input_held_for_substeps_and_spikes_counted():
    net = _net(substeps=5)
    net.count_spikes = True
    x = torch.randn(2, 5) * 3
    state = net.initial_state(2, x)
    for _ in range(10):
        _, state = net.step(x, state)
    assert net.counted_substeps == 10 * 5 * 2
    assert net.spike_counts[0] > 0


def test_gradient_flows_to_input_gain_and_time_constants():
    net = _net()
    x = torch.randn(8, 5) * 2
    state = net.initial_state(8, x)
    loss = 0
    for _ in range(5):
        y, state = net.step(x, state)
        loss = loss + y.pow(2).mean()
    loss.backward()
    assert net.input_gain.grad.abs().sum() > 0
    assert net.layers[0].log_tau_mem.grad.abs().sum() > 0


def test_slope_is_shared_and_settable():
    net = _net()
    net.set_slope(3.0)
    assert all(layer.surrogate.slope == 3.0 for layer in net.layers)


def test_input_gain_calibration_gives_unit_power_inputs_and_firing():
    net = _net()
    features = torch.randn(1000, 5) * torch.tensor([0.1, 0.3, 1.0, 2.0, 0.2])
    net.calibrate_input_gain(features)
    scaled = features * net.input_gain
    assert torch.allclose(scaled.pow(2).mean(0).sqrt(), torch.ones(5), atol=0.02)
    net.count_spikes = True
    state = net.initial_state(64, features)
    with torch.no_grad():
        for t in range(30):
            _, state = net.step(features[t * 64 % 900:(t * 64 % 900) + 64], state)
    assert all(count > 0 for count in net.spike_counts)
