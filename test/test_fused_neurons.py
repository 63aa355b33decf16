"""The fused neuron substep (training speed-up) gives the reference's values and gradients.

Tolerance: in float64, the loss is bitwise equal and every parameter gradient agrees with
the op-by-op reference within 1e-10 relative (norm of the difference over the norm).
"""

import copy

import pytest
import torch

from snn_control.config import ModelConfig
from snn_control.models import build_networks, spiking_nets
from snn_control.spiking import fused


def _grads(model, obs, actions, use_fused):
    for net in spiking_nets(model):
        net.fused = use_fused
    state = model.initial_state(obs.shape[1], obs)
    loss = obs.new_zeros(())
    for k in range(actions.shape[0]):
        predicted, state = model.step(obs[k], actions[k], state)
        if k >= 2:
            loss = loss + ((predicted - obs[k + 1]) ** 2).mean()
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check(neuron, surrogate, compiled=False):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=48, rank=8, substeps=3, neuron=neuron, surrogate=surrogate, slope=8.0)
    predictor, _ = build_networks(cfg, 9, 6, 3)
    predictor = predictor.double()
    with torch.no_grad():
        predictor.net.input_gain.mul_(4.0)  # enough drive that both layers spike
    obs = torch.randn(13, 16, 9, dtype=torch.float64)
    actions = torch.rand(12, 16, 6, dtype=torch.float64) * 2 - 1
    fused.use_compiled_kernels(compiled)
    try:
        loss_ref, g_ref = _grads(copy.deepcopy(predictor), obs, actions, False)
        loss_fused, g_fused = _grads(copy.deepcopy(predictor), obs, actions, True)
    finally:
        fused.use_compiled_kernels(False)
    assert loss_ref == loss_fused
    assert set(g_ref) == set(g_fused) and any("log_tau" in n for n in g_ref)
    for name in g_ref:
        diff = (g_ref[name] - g_fused[name]).norm() / g_ref[name].norm().clamp(min=1e-30)
        assert diff < 1e-10, f"{name}: relative gradient difference {float(diff):.2e}"


@pytest.mark.parametrize("neuron,surrogate", [("alif", "multi_gaussian"), ("lif", "fast_sigmoid"),
                                              ("alif", "rectangular")])
def test_fused_step_matches_reference_values_and_gradients(neuron, surrogate):
    _check(neuron, surrogate)


def test_compiled_fused_step_matches_reference():
    _check("alif", "multi_gaussian", compiled=True)  # falls back to eager (and still passes) without a compiler


def test_fused_path_is_skipped_without_gradients():
    torch.manual_seed(0)
    predictor, _ = build_networks(ModelConfig(hidden=16, rank=4, substeps=2), 4, 2, 2)
    predictor.net.fused = True
    obs, act = torch.randn(3, 4), torch.rand(3, 2)
    with torch.no_grad():
        nxt, _ = predictor.step(obs, act, predictor.initial_state(3, obs))
    assert nxt.grad_fn is None and torch.isfinite(nxt).all()
