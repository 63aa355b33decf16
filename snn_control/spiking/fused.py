"""The whole ALIF substep as one autograd function, optionally compiled into fused kernels.

Autograd on :func:`.neurons.neuron_step` records about fifteen elementwise ops per substep
and replays them backward, each a full pass over ``(B, N)`` memory. Here the forward is
one function and the backward is written out by hand (below), so each is a single pass
that ``torch.compile`` can fuse into one loop. It computes what ``neuron_step`` computes:
the forward is the same ops in the same order (bitwise equal in eager mode), and the
gradients are the same chain rule, including the detached reset and the surrogate
derivative (``test_fused_neurons`` compares both in float64).

Backward, for upstream gradients gI', gU', gA', gs of the outputs (v = U_pre - theta is
recomputed from the saved state rather than stored):

    gv  = (gs + gA' [ALIF]) * surrogate'(v)
    gUp = gU' + gv                                   (the reset is detached)
    gI  = (gI' + (1 - b_mem) gUp) * b_syn ,  g drive = gI' + (1 - b_mem) gUp
    gU  = b_mem gUp ,  gA = b_ada gA' - xi gv [ALIF]
    g b_syn = sum_B (g drive) I ,  g b_mem = sum_B gUp (U - I') ,  g b_ada = sum_B gA' A
"""

from __future__ import annotations

import logging

import torch

from .surrogate import surrogate_derivative

log = logging.getLogger(__name__)


def _forward(drive, current, voltage, adaptation, beta_syn, beta_mem, beta_ada, xi: float):
    new_current = beta_syn * current + drive
    pre_reset = beta_mem * voltage + (1.0 - beta_mem) * new_current
    if xi:
        theta = 1.0 + xi * adaptation
        v = pre_reset - theta
        spikes = (v > 0).to(v.dtype)
        new_voltage = pre_reset - theta * spikes
        new_adaptation = beta_ada * adaptation + spikes
    else:
        v = pre_reset - 1.0
        spikes = (v > 0).to(v.dtype)
        new_voltage = pre_reset - spikes
        new_adaptation = adaptation
    return new_current, new_voltage, new_adaptation, spikes


def _backward(g_current, g_voltage, g_adaptation, g_spikes, current, voltage, adaptation,
              new_current, beta_syn, beta_mem, beta_ada, xi: float, kind: str, slope: float,
              decay_grads: bool):
    # v recomputed (same ops as the forward) rather than saved: one (B, N) tensor less per substep.
    pre_reset = beta_mem * voltage + (1.0 - beta_mem) * new_current
    v = pre_reset - (1.0 + xi * adaptation) if xi else pre_reset - 1.0
    g_v = (g_spikes + g_adaptation if xi else g_spikes) * surrogate_derivative(kind, v, slope)
    g_pre = g_voltage + g_v
    g_drive = g_current + (1.0 - beta_mem) * g_pre
    g_adapt_in = beta_ada * g_adaptation - xi * g_v if xi else g_adaptation
    if not decay_grads:  # frozen time constants (e.g. the predictor during policy updates)
        return g_drive, beta_syn * g_drive, beta_mem * g_pre, g_adapt_in, None, None, None
    g_beta_syn = (g_drive * current).sum(0)
    g_beta_mem = (g_pre * (voltage - new_current)).sum(0)
    g_beta_ada = (g_adaptation * adaptation).sum(0) if xi else torch.zeros_like(beta_ada)
    return g_drive, beta_syn * g_drive, beta_mem * g_pre, g_adapt_in, g_beta_syn, g_beta_mem, g_beta_ada


_kernels = {"forward": _forward, "backward": _backward}


def use_compiled_kernels(enabled: bool = True) -> None:
    """Run the fused forward and backward through ``torch.compile`` (needs a C++ compiler;
    if compiling fails at first use, the eager kernels take over with a warning)."""
    if enabled:
        _kernels["forward"] = _guarded(torch.compile(_forward, dynamic=False), "forward")
        _kernels["backward"] = _guarded(torch.compile(_backward, dynamic=False), "backward")
    else:
        _kernels["forward"], _kernels["backward"] = _forward, _backward


def compiled_kernels_enabled() -> bool:
    return _kernels["forward"] is not _forward


def _guarded(compiled, name: str):
    eager = {"forward": _forward, "backward": _backward}[name]

    def run(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so once
            log.warning("torch.compile of the fused neuron %s failed (%s); using eager kernels",
                        name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            _kernels[name] = eager
            return eager(*args, **kwargs)

    return run


class FusedNeuronStep(torch.autograd.Function):
    """``apply(drive, I, U, A, b_syn, b_mem, b_ada, xi, surrogate) -> (I', U', A', s)``."""

    @staticmethod
    def forward(ctx, drive, current, voltage, adaptation, beta_syn, beta_mem, beta_ada, xi, surrogate):  # type: ignore[override]
        new_current, new_voltage, new_adaptation, spikes = _kernels["forward"](
            drive, current, voltage, adaptation, beta_syn, beta_mem, beta_ada, float(xi))
        # Old state and the new current only: the old state of step k + 1 is the new state
        # of step k, so across a sequence each tensor is stored once.
        ctx.save_for_backward(current, voltage, adaptation, new_current, beta_syn, beta_mem, beta_ada)
        # The slope in force at this step, as the reference's spike function records it.
        ctx.xi, ctx.kind, ctx.slope = float(xi), surrogate.kind, float(surrogate.slope)
        return new_current, new_voltage, new_adaptation, spikes

    @staticmethod
    def backward(ctx, g_current, g_voltage, g_adaptation, g_spikes):  # type: ignore[override]
        current, voltage, adaptation, new_current, beta_syn, beta_mem, beta_ada = ctx.saved_tensors
        decay_grads = any(ctx.needs_input_grad[4:7])
        grads = _kernels["backward"](g_current, g_voltage, g_adaptation, g_spikes, current, voltage,
                                     adaptation, new_current, beta_syn, beta_mem, beta_ada,
                                     ctx.xi, ctx.kind, ctx.slope, decay_grads)
        return (*grads, None, None)
