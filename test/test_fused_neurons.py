"""The fused training path (each layer's substeps as one span, or a fused substep where
the layer is recurrent) gives the reference's values and gradients.

Tolerance: in float64, the loss is bitwise equal and every parameter gradient agrees with
the op-by-op reference within 1e-10 relative (norm of the difference over the norm). The
whole control step compiled by torch.compile: the same; and in float32 its forward is
bitwise the reference's (the decay factors come from outside the compiled graph).
"""

import contextlib
import copy

import pytest
import torch

from snn_control.config import ModelConfig
from snn_control.models import build_networks, spiking_nets
from snn_control.predictive.updates import decays_held


def _grads(model, obs, actions, goals, use_fused, held=False):
    """Loss and parameter gradients over a short sequence: the predictor's next-state error
    after two warm-up steps, or (``goals`` given) the policy's squared action error.
    ``held``: with the decay factors computed once for the sequence, as the trainer does."""
    for net in spiking_nets(model):
        net.fused = use_fused
    state = model.initial_state(obs.shape[1], obs)
    loss = obs.new_zeros(())
    with decays_held(model) if held else contextlib.nullcontext():
        loss = _sequence_loss(model, obs, actions, goals, state, loss)
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _sequence_loss(model, obs, actions, goals, state, loss):
    for k in range(actions.shape[0]):
        if goals is None:
            predicted, state = model.step(obs[k], actions[k], state)
            error = (predicted - obs[k + 1]) if k >= 2 else None
        else:
            action, _, state = model.step(obs[k], goals, state)
            error = action - actions[k]
        if error is not None:
            loss = loss + (error**2).mean()
    return loss


def _stepped(layer, drive, state, steps, fused=False):
    """The reference for ``layer.span``: ``layer.step`` once per substep, op by op (or with
    the fused substep, as span runs off the CPU); ``state`` None: from rest."""
    decays = layer.decays()
    state = layer.initial_state(drive.shape[-2], drive) if state is None else state
    spikes = []
    for t in range(steps):
        state = layer.step(drive if drive.dim() == 2 else drive[t], state, decays, fused)
        spikes.append(state.spikes)
    return torch.stack(spikes), state


def _check(neuron, surrogate, net="predictor", whole_step=False, held=False):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=48, rank=8, substeps=3, neuron=neuron, surrogate=surrogate, slope=8.0)
    predictor, policy = build_networks(cfg, 9, 6, 3)
    model = (predictor if net == "predictor" else policy).double()
    with torch.no_grad():
        model.net.input_gain.mul_(4.0)  # enough drive that both layers spike
    obs = torch.randn(13, 16, 9, dtype=torch.float64)
    actions = torch.rand(12, 16, 6, dtype=torch.float64) * 2 - 1
    goals = None if net == "predictor" else torch.randn(16, 3, dtype=torch.float64)
    loss_ref, g_ref = _grads(copy.deepcopy(model), obs, actions, goals, False)
    fast = copy.deepcopy(model)
    for n in spiking_nets(fast) if whole_step else []:
        n.compile_step()
    loss_fused, g_fused = _grads(fast, obs, actions, goals, not whole_step, held)
    assert loss_ref == loss_fused
    assert set(g_ref) == set(g_fused) and any("log_tau" in n for n in g_ref)
    for name in g_ref:
        diff = (g_ref[name] - g_fused[name]).norm() / g_ref[name].norm().clamp(min=1e-30)
        assert diff < 1e-10, f"{name}: relative gradient difference {float(diff):.2e}"


@pytest.mark.parametrize("neuron,surrogate", [("alif", "multi_gaussian"), ("lif", "fast_sigmoid"),
                                              ("alif", "rectangular")])
def test_fused_step_matches_reference_values_and_gradients(neuron, surrogate):
    _check(neuron, surrogate)


@pytest.mark.parametrize("neuron,surrogate", [("alif", "multi_gaussian"), ("lif", "fast_sigmoid")])
def test_fused_policy_matches_reference_values_and_gradients(neuron, surrogate):
    """The policy has no recurrence: every layer runs as one span per control step."""
    _check(neuron, surrogate, net="policy")


@pytest.mark.parametrize("net", ["predictor", "policy"])
def test_fused_path_with_held_decays_matches_reference(net):
    """As in an update: the decay factors computed once for the whole sequence."""
    _check("alif", "multi_gaussian", net=net, held=True)


@pytest.mark.parametrize("xi,kind,held", [(0.5, "multi_gaussian", True), (0.5, "fast_sigmoid", False),
                                          (0.0, "rectangular", True)])
def test_span_from_a_state_matches_stepping(xi, kind, held):
    """A span from a running state, with learnable time constants: in float64 the spikes
    and the final state are identical to stepping op by op, and the gradients of the drive,
    the initial state and the decay factors agree within 1e-12 relative."""
    from snn_control.spiking import Surrogate, SpikingLayer
    from snn_control.spiking.neurons import NeuronState

    torch.manual_seed(2)
    steps, batch, size = 5, 20, 36
    layer = SpikingLayer(8, size, recurrent=False, rank=None, analog_input=True, dt=1e-3, tau_mem=2e-3,
                         tau_syn=1e-3, tau_ada=20e-3, xi=xi, learn_tau=True, surrogate=Surrogate(kind, 4.0)).double()
    drive0 = (torch.randn(batch, size) if held else torch.randn(steps, batch, size)).double() * 2.0 + 0.8
    start0 = [torch.randn(batch, size, dtype=torch.float64) * 0.5, torch.rand(batch, size, dtype=torch.float64),
              torch.rand(batch, size, dtype=torch.float64) * 2]
    up_spikes, up_state = torch.randn(steps, batch, size, dtype=torch.float64), torch.randn(3, batch, size, dtype=torch.float64)

    def run(fused_path):
        layer.zero_grad()
        drive = drive0.clone().requires_grad_(True)
        start = [t.clone().requires_grad_(True) for t in start0]
        state = NeuronState(*start, torch.zeros_like(start[0]))
        if fused_path:
            spikes, end = layer.span(drive, state, layer.decays(), steps)
        else:
            spikes, end = _stepped(layer, drive, state, steps)
        loss = (spikes * up_spikes).sum() + sum((s * u).sum() for s, u in zip(end[:3], up_state))
        loss.backward()
        taus = [p.grad.clone() for n, p in layer.named_parameters() if n.startswith("log_tau") and p.grad is not None]
        return spikes.detach(), [t.detach() for t in end], [drive.grad, *(t.grad for t in start), *taus]

    ref_spikes, ref_end, ref_grads = run(False)
    spikes, end, grads = run(True)
    assert 0.05 < float(ref_spikes.mean()) < 0.95
    assert torch.equal(spikes, ref_spikes)
    for a, b in zip(end, ref_end):
        assert torch.equal(a, b)
    assert len(grads) == len(ref_grads) == 4 + (3 if xi else 2)
    for g, r in zip(grads, ref_grads):
        assert float((g - r).norm() / r.norm().clamp(min=1e-30)) < 1e-12


@pytest.mark.parametrize("net,held", [("predictor", False), ("policy", False), ("predictor", True), ("policy", True)])
def test_compiled_control_step_matches_reference(net, held, caplog):
    """The trainer's default: the whole control step through torch.compile (the fallback
    to the fused path without a compiler would pass too, so it must not have happened);
    ``held``: with the decay factors computed once for the sequence, as in an update."""
    _check("alif", "multi_gaussian", net=net, whole_step=True, held=held)
    assert "torch.compile of the spiking step failed" not in caplog.text


def test_compiled_step_is_bitwise_the_reference_in_float32():
    """As training runs it, in float32, with time constants and biases moved from their
    initial values: the compiled step's outputs, states and spikes are bitwise the
    reference's. (With the decay factors computed inside the compiled graph, whose exp
    rounds differently, a last bit moved, spikes flipped, and a paper-size predictor
    update's gradients moved by about 1 %.)"""
    torch.manual_seed(0)
    predictor, _ = build_networks(ModelConfig(hidden=64, rank=8, substeps=3, neuron="alif"), 9, 6, 3)
    net = predictor.net
    with torch.no_grad():
        net.input_gain.mul_(4.0)
        for name, p in net.named_parameters():
            if "log_tau" in name:
                p.add_(torch.randn_like(p) * 0.05)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    x = torch.randn(20, 32, 15)
    ref, fast = copy.deepcopy(net), copy.deepcopy(net)
    fast.compile_step()
    for held in (False, True):  # decays per control step, or once for the sequence
        s_ref, s_fast = ref.initial_state(32, x), fast.initial_state(32, x)
        spikes = 0.0
        with fast.decays_held() if held else contextlib.nullcontext():
            for k in range(20):
                y_ref, s_ref = ref.step(x[k], s_ref)
                y_fast, s_fast = fast.step(x[k], s_fast)
                assert torch.equal(y_ref, y_fast), f"step {k}, held {held}"
                for a, b in zip(s_ref.layers, s_fast.layers):
                    assert all(torch.equal(u, v) for u, v in zip(a, b)), f"step {k}, held {held}"
                    spikes += float(a.spikes.sum())
        assert fast.compiled is not None and spikes > 100


def test_fused_path_is_skipped_without_gradients():
    torch.manual_seed(0)
    predictor, _ = build_networks(ModelConfig(hidden=16, rank=4, substeps=2), 4, 2, 2)
    predictor.net.fused = True
    obs, act = torch.randn(3, 4), torch.rand(3, 2)
    with torch.no_grad():
        nxt, _ = predictor.step(obs, act, predictor.initial_state(3, obs))
    assert nxt.grad_fn is None and torch.isfinite(nxt).all()


@pytest.mark.parametrize("xi,kind,held", [(0.0, "fast_sigmoid", True), (0.0, "fast_sigmoid", False),
                                          (0.5, "multi_gaussian", False), (0.5, "fast_sigmoid", True),
                                          (0.0, "rectangular", False)])
def test_span_from_rest_matches_stepping_values_and_gradients(xi, kind, held):
    """All substeps of a feed-forward population from rest as one node (numba, on the CPU):
    in float64 the spikes are identical and the drive's gradient agrees with stepping op by
    op within 1e-12 relative; so does stepping with the fused substep (other devices' path)."""
    from snn_control.spiking import Surrogate, SpikingLayer

    torch.manual_seed(1)
    steps, batch, size = 6, 24, 40
    layer = SpikingLayer(8, size, recurrent=False, rank=None, analog_input=True, dt=1e-3, tau_mem=2e-3,
                         tau_syn=1e-3, tau_ada=20e-3, xi=xi, learn_tau=False,
                         surrogate=Surrogate(kind, 4.0)).double()
    drive = (torch.randn(batch, size) if held else torch.randn(steps, batch, size)).double() * 2.0 + 0.8
    upstream = torch.randn(steps, batch, size, dtype=torch.float64)  # d loss / d spikes

    def grad(fn):
        d = drive.clone().requires_grad_(True)
        spikes = fn(d)
        (spikes * upstream).sum().backward()
        return spikes.detach(), d.grad

    ref_spikes, ref_grad = grad(lambda d: _stepped(layer, d, None, steps)[0])
    spikes, g = grad(lambda d: layer.span(d, None, layer.decays(), steps)[0])
    assert 0.05 < float(ref_spikes.mean()) < 0.95  # both spiking and silent neurons are exercised
    assert torch.equal(spikes, ref_spikes)
    assert float((g - ref_grad).norm() / ref_grad.norm()) < 1e-12
    fused_spikes, fused_grad = grad(lambda d: _stepped(layer, d, None, steps, fused=True)[0])
    assert torch.equal(fused_spikes, ref_spikes)
    assert float((fused_grad - ref_grad).norm() / ref_grad.norm()) < 1e-12


def test_compiled_step_falls_back_to_the_fused_path_without_a_compiler(monkeypatch, caplog):
    """A compiler failure at the first compiled call (no C++ compiler, say) is logged once
    and the net goes on layer by layer with the fused functions: same values."""
    torch.manual_seed(0)
    predictor, _ = build_networks(ModelConfig(hidden=16, rank=4, substeps=2), 4, 2, 2)
    obs, act = torch.randn(3, 4), torch.rand(3, 2)
    with torch.no_grad():
        expected, _ = predictor.step(obs, act, predictor.initial_state(3, obs))

    def no_compiler(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    predictor.net.compile_step()
    with caplog.at_level("WARNING"):
        got, _ = predictor.step(obs, act, predictor.initial_state(3, obs))
    assert "torch.compile of the spiking step failed" in caplog.text
    assert predictor.net.compiled is None and predictor.net.fused
    assert torch.equal(got.detach(), expected)
