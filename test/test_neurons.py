"""Neuron dynamics against values computed by hand from the equations of Huebotter et al. 2025."""

import math

import pytest
import torch

from snn_control.spiking.neurons import (TAU_MAX, TAU_MIN, Decays, LeakyReadout, NeuronState,
                                         SpikingLayer, decay_factors, neuron_step)
from snn_control.spiking.surrogate import Surrogate

DT = 0.002
B_SYN, B_MEM, B_ADA = math.exp(-DT / 0.005), math.exp(-DT / 0.01), math.exp(-DT / 0.1)


def _decays(n=1):
    return Decays(torch.full((n,), B_SYN), torch.full((n,), B_MEM), torch.full((n,), B_ADA))


def _zero(n=1):
    z = torch.zeros(1, n)
    return NeuronState(z, z, z, z)


def test_constant_input_membrane_response_below_threshold():
    drive = torch.full((1, 1), 0.05)  # small: never spikes
    state, current, voltage = _zero(), 0.0, 0.0
    for _ in range(10):
        state = neuron_step(drive, state, _decays(), 0.0, Surrogate("fast_sigmoid", 10))
        current = B_SYN * current + 0.05
        voltage = B_MEM * voltage + (1 - B_MEM) * current
        assert state.current.item() == pytest.approx(current, rel=1e-6)
        assert state.voltage.item() == pytest.approx(voltage, rel=1e-6)
        assert state.spikes.item() == 0.0
    # steady state of the two filters: U -> I -> drive / (1 - b_syn)
    for _ in range(2000):
        state = neuron_step(drive, state, _decays(), 0.0, Surrogate("fast_sigmoid", 10))
    assert state.voltage.item() == pytest.approx(0.05 / (1 - B_SYN), rel=1e-4)


def test_spike_and_subtractive_reset():
    state = NeuronState(torch.tensor([[3.0]]), torch.tensor([[1.0]]), torch.zeros(1, 1), torch.zeros(1, 1))
    new = neuron_step(torch.zeros(1, 1), state, _decays(), 0.0, Surrogate("fast_sigmoid", 10))
    current = B_SYN * 3.0
    voltage = B_MEM * 1.0 + (1 - B_MEM) * current  # about 1.18: crosses threshold 1
    assert voltage > 1.0
    assert new.spikes.item() == 1.0
    assert new.voltage.item() == pytest.approx(voltage - 1.0, rel=1e-6)  # U - theta


def test_threshold_adaptation_raises_threshold_and_decays():
    xi = 0.05
    adaptation = torch.tensor([[2.0]])  # theta = 1 + 0.05 * 2 = 1.1
    state = NeuronState(torch.tensor([[1.6]]), torch.tensor([[1.08]]), adaptation, torch.zeros(1, 1))
    new = neuron_step(torch.zeros(1, 1), state, _decays(), xi, Surrogate("fast_sigmoid", 10))
    voltage = B_MEM * 1.08 + (1 - B_MEM) * (B_SYN * 1.6)
    assert 1.0 < voltage < 1.1  # would spike as LIF, not as ALIF
    assert new.spikes.item() == 0.0
    assert new.adaptation.item() == pytest.approx(B_ADA * 2.0)
    # and with a spike: a += 1, reset subtracts the adapted threshold
    state = NeuronState(torch.tensor([[3.0]]), torch.tensor([[1.5]]), adaptation, torch.zeros(1, 1))
    new = neuron_step(torch.zeros(1, 1), state, _decays(), xi, Surrogate("fast_sigmoid", 10))
    voltage = B_MEM * 1.5 + (1 - B_MEM) * (B_SYN * 3.0)
    assert new.spikes.item() == 1.0
    assert new.voltage.item() == pytest.approx(voltage - 1.1, rel=1e-6)
    assert new.adaptation.item() == pytest.approx(B_ADA * 2.0 + 1.0)


def test_reset_is_detached_from_graph():
    v0 = torch.tensor([[1.5]], requires_grad=True)
    state = NeuronState(torch.zeros(1, 1), v0, torch.zeros(1, 1), torch.zeros(1, 1))
    new = neuron_step(torch.zeros(1, 1), state, _decays(), 0.0, Surrogate("fast_sigmoid", 1.0))
    new.voltage.sum().backward()
    assert v0.grad.item() == pytest.approx(B_MEM)  # no gradient through the reset term


def test_time_constants_clamped_and_learnable():
    log_tau = torch.tensor([math.log(1e-5), math.log(0.01), math.log(100.0)])
    beta = decay_factors(log_tau, DT)
    assert beta.tolist() == pytest.approx([math.exp(-DT / TAU_MIN), math.exp(-DT / 0.01), math.exp(-DT / TAU_MAX)])
    layer = SpikingLayer(3, 4, recurrent=True, rank=None, analog_input=True, dt=DT, tau_mem=0.01,
                         tau_syn=0.005, tau_ada=0.1, xi=0.05, learn_tau=True, surrogate=Surrogate())
    names = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert {"log_tau_mem", "log_tau_syn", "log_tau_ada"} <= names
    assert layer.log_tau_mem.shape == (4,)  # per neuron


def test_lif_has_no_trainable_adaptation_time_constant():
    layer = SpikingLayer(3, 4, recurrent=False, rank=None, analog_input=True, dt=DT, tau_mem=0.01,
                         tau_syn=0.005, tau_ada=0.1, xi=0.0, learn_tau=True, surrogate=Surrogate())
    assert not layer.log_tau_ada.requires_grad


def test_readout_is_leaky_integrator():
    readout = LeakyReadout(2, 1, dt=DT, tau_mem=0.01, tau_syn=0.005, learn_tau=False, scale=0.5)
    with torch.no_grad():
        readout.weight.weight.copy_(torch.tensor([[1.0, 2.0]]))
        readout.weight.bias.zero_()
    state = readout.initial_state(1, torch.zeros(1))
    spikes = torch.tensor([[1.0, 1.0]])
    state = readout.step(spikes, state, readout.decays())
    assert state.current.item() == pytest.approx(1.5)
    assert state.output.item() == pytest.approx((1 - B_MEM) * 1.5, rel=1e-6)
