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

:class:`FusedNeuronWindow` runs all substeps of a population without recurrence (its
input for every substep is known up front, as in a layer-by-layer pass of a feed-forward
network) as one autograd function: the same equations, one node in the graph instead of
one per substep, and one surrogate evaluation over the whole window in the backward.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
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


@numba.njit(cache=True, nogil=True)
def _window_forward_cpu(drive, steps, beta_syn, beta_mem, one_minus_mem, beta_ada, xi, one, spikes, v):  # pragma: no cover
    """The window's forward, in place into ``spikes`` and ``v`` (steps, B, N): every
    operation in the arrays' dtype and in :func:`_forward`'s order (``one`` and ``xi`` come
    in that dtype), branch-free over contiguous neurons so that it vectorises."""
    held = drive.shape[0] == 1
    batch, size = spikes.shape[1], spikes.shape[2]
    zero = one - one
    current = np.zeros((batch, size), spikes.dtype)
    voltage = np.zeros((batch, size), spikes.dtype)
    adaptation = np.zeros((batch, size), spikes.dtype)
    for t in range(steps):
        d = drive[0] if held else drive[t]
        for b in range(batch):
            for n in range(size):
                i = beta_syn[n] * current[b, n] + d[b, n]
                pre_reset = beta_mem[n] * voltage[b, n] + one_minus_mem[n] * i
                theta = one + xi * adaptation[b, n]
                vt = pre_reset - theta
                s = one if vt > zero else zero
                current[b, n] = i
                voltage[b, n] = pre_reset - theta * s
                adaptation[b, n] = beta_ada[n] * adaptation[b, n] + s
                v[t, b, n] = vt
                spikes[t, b, n] = s


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no zero-division check: it vectorises
def _window_backward_cpu(g_spikes, v, slope_grad, fast_sigmoid_slope, beta_syn, beta_mem, one_minus_mem,
                         beta_ada, xi, g_drive):  # pragma: no cover
    """The chain rule of the module docstring back through the window; ``g_drive`` of
    shape (1, B, N) (held drive) accumulates over the substeps. The surrogate derivative
    is ``slope_grad``, or computed here from ``v`` for the fast sigmoid
    (``fast_sigmoid_slope`` > 0, the actor's), saving three passes over memory."""
    held = g_drive.shape[0] == 1
    batch, size = g_spikes.shape[1], g_spikes.shape[2]
    zero = xi - xi
    one = zero + 1
    g_current = np.zeros((batch, size), g_drive.dtype)
    g_voltage = np.zeros((batch, size), g_drive.dtype)
    g_adaptation = np.zeros((batch, size), g_drive.dtype)
    ds = np.empty((batch, size), g_drive.dtype)
    for t in range(g_spikes.shape[0] - 1, -1, -1):
        out = g_drive[0] if held else g_drive[t]
        if fast_sigmoid_slope > zero:  # its own loop: a branch inside the next one stops vectorisation
            for b in range(batch):
                for n in range(size):
                    d = one + fast_sigmoid_slope * abs(v[t, b, n])
                    ds[b, n] = one / (d * d)
        else:
            ds[:, :] = slope_grad[t]
        for b in range(batch):
            for n in range(size):
                g_v = (g_spikes[t, b, n] + g_adaptation[b, n]) * ds[b, n]
                g_pre = g_voltage[b, n] + g_v
                g_in = g_current[b, n] + one_minus_mem[n] * g_pre
                out[b, n] = out[b, n] + g_in if held else g_in
                g_current[b, n] = beta_syn[n] * g_in
                g_voltage[b, n] = beta_mem[n] * g_pre
                g_adaptation[b, n] = beta_ada[n] * g_adaptation[b, n] - xi * g_v


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedNeuronWindow(torch.autograd.Function):
    """``apply(drive, steps, b_syn, b_mem, b_ada, xi, surrogate) -> spikes (steps, B, N)``.

    All ``steps`` substeps of a population without recurrence from a zero state, for
    ``drive`` given per substep ``(steps, B, N)`` or held ``(B, N)``. The forward is
    :func:`_forward`'s ops in the same order and dtype (same spikes); the backward runs
    the chain rule above back through the window, both as numba loops (CPU tensors only;
    :meth:`.neurons.SpikingLayer.window` steps instead elsewhere). Frozen time constants
    only: no decay gradients.
    """

    @staticmethod
    def forward(ctx, drive, steps, beta_syn, beta_mem, beta_ada, xi, surrogate):  # type: ignore[override]
        held = drive.dim() == 2
        drive3 = drive.unsqueeze(0) if held else drive
        shape = (steps, *drive3.shape[1:])
        spikes, v = drive.new_empty(shape), drive.new_empty(shape)
        dtype = _np(beta_syn).dtype
        _window_forward_cpu(_np(drive3), steps, _np(beta_syn), _np(beta_mem), _np(1.0 - beta_mem),
                            _np(beta_ada), dtype.type(xi), dtype.type(1.0), spikes.numpy(), v.numpy())
        ctx.save_for_backward(v, beta_syn, beta_mem, beta_ada)
        ctx.held, ctx.xi, ctx.kind, ctx.slope = held, float(xi), surrogate.kind, float(surrogate.slope)
        return spikes

    @staticmethod
    def backward(ctx, g_spikes):  # type: ignore[override]
        v, beta_syn, beta_mem, beta_ada = ctx.saved_tensors
        g_drive = v.new_zeros((1, *v.shape[1:])) if ctx.held else v.new_empty(v.shape)
        dtype = _np(v).dtype
        inline = ctx.kind == "fast_sigmoid"
        slope_grad = v[:0] if inline else surrogate_derivative(ctx.kind, v, ctx.slope)
        _window_backward_cpu(_np(g_spikes), _np(v), _np(slope_grad), dtype.type(ctx.slope if inline else 0.0),
                             _np(beta_syn), _np(beta_mem), _np(1.0 - beta_mem), _np(beta_ada),
                             dtype.type(ctx.xi), g_drive.numpy())
        return (g_drive[0] if ctx.held else g_drive), None, None, None, None, None, None
