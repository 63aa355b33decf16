"""Training without a C++ compiler: the neuron update as hand-differentiated autograd functions.

With a compiler, training runs each net's whole control step through ``torch.compile``
(:meth:`.network.SpikingNet.compile_step`). Without one, the op-by-op step would record
about fifteen elementwise ops per substep and replay them backward, each a full pass over
``(B, N)`` memory. Here the forward of a substep is one function and its backward is
written out by hand (below). The forward is ``neuron_step`` itself (bitwise equal), and
the gradients are the same chain rule, including the detached reset and the surrogate
derivative (``test_fused_neurons`` compares them in float64).

Backward, for upstream gradients gI', gU', gA', gs of the outputs (v = U_pre - theta is
recomputed from the saved state rather than stored):

    gv  = (gs + gA' [ALIF]) * surrogate'(v)
    gUp = gU' + gv                                   (the reset is detached)
    gI  = (gI' + (1 - b_mem) gUp) * b_syn ,  g drive = gI' + (1 - b_mem) gUp
    gU  = b_mem gUp ,  gA = b_ada gA' - xi gv [ALIF]
    g b_syn = sum_B (g drive) I ,  g b_mem = sum_B gUp (U - I') ,  g b_ada = sum_B gA' A

:class:`FusedNeuronSpan` runs all substeps of a control step of a population without
recurrence (its input for every substep is known up front once the layer below has run
them all, :meth:`.network.SpikingNet.step` in training) as one autograd function: the
same equations, one node in the graph instead of one per substep, numba loops that keep
a batch row's state in the cache for all substeps, and one surrogate evaluation over the
whole span in the backward. Its backward recomputes the states it needs rather than
storing them.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .neurons import Decays, NeuronState, neuron_step
from .surrogate import surrogate_derivative


def _heaviside(v: torch.Tensor) -> torch.Tensor:
    """The spike function's forward (:class:`.surrogate.Surrogate`) without its autograd
    node: inside a Function's forward nothing is recorded."""
    return (v > 0).to(v.dtype)


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


class FusedNeuronStep(torch.autograd.Function):
    """``apply(drive, I, U, A, b_syn, b_mem, b_ada, xi, surrogate) -> (I', U', A', s)``."""

    @staticmethod
    def forward(ctx, drive, current, voltage, adaptation, beta_syn, beta_mem, beta_ada, xi, surrogate):  # type: ignore[override]
        new_current, new_voltage, new_adaptation, spikes = neuron_step(
            drive, NeuronState(current, voltage, adaptation, None),
            Decays(beta_syn, beta_mem, beta_ada), float(xi), _heaviside)
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
        grads = _backward(g_current, g_voltage, g_adaptation, g_spikes, current, voltage,
                                     adaptation, new_current, beta_syn, beta_mem, beta_ada,
                                     ctx.xi, ctx.kind, ctx.slope, decay_grads)
        return (*grads, None, None)


@numba.njit(cache=True, nogil=True, parallel=True)
def _span_forward_cpu(drive, current0, voltage0, adaptation0, beta_syn, beta_mem, one_minus_mem, beta_ada, xi,
                      one, keep, chunks, spikes, v, current, voltage, adaptation):  # pragma: no cover
    """The span's forward, in place into ``spikes`` and ``v`` (steps, B, N) and the final
    state ``current``, ``voltage``, ``adaptation`` (B, N): every operation in the arrays'
    dtype and in :func:`.neurons.neuron_step`'s order (``one``, ``xi`` and ``keep`` come in
    that dtype). A copy of that substep: numba loops cannot call torch code, and this is
    what keeps a row's state in the cache; the state recompute in :func:`_span_backward_cpu`
    repeats it.
    The batch is split into ``chunks`` run in parallel; within one, a row at a time, so its
    state stays in the L1 cache for all substeps, and branch-free over contiguous neurons
    so that it vectorises: ``keep`` 1 keeps the trace as it is (LIF), 0 updates it (ALIF);
    either way the other term is an exact zero."""
    held = drive.shape[0] == 1
    steps, batch, size = spikes.shape
    zero = one - one
    adapt = one - keep
    for c in numba.prange(chunks):
        i_row, u_row, a_row = np.empty(size, v.dtype), np.empty(size, v.dtype), np.empty(size, v.dtype)
        for b in range(c * batch // chunks, (c + 1) * batch // chunks):
            i_row[:], u_row[:], a_row[:] = current0[b], voltage0[b], adaptation0[b]
            for t in range(steps):
                d = drive[0, b] if held else drive[t, b]
                v_t, s_t = v[t, b], spikes[t, b]
                for n in range(size):
                    i = beta_syn[n] * i_row[n] + d[n]
                    pre_reset = beta_mem[n] * u_row[n] + one_minus_mem[n] * i
                    theta = one + xi * a_row[n]
                    vt = pre_reset - theta
                    s = one if vt > zero else zero
                    i_row[n] = i
                    u_row[n] = pre_reset - theta * s
                    a_row[n] = adapt * (beta_ada[n] * a_row[n] + s) + keep * a_row[n]
                    v_t[n] = vt
                    s_t[n] = s
            current[b], voltage[b], adaptation[b] = i_row, u_row, a_row


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")  # no zero-division check: it vectorises
def _span_backward_cpu(g_spikes, g_current, g_voltage, g_adaptation, slope_grad, v, fast_sigmoid_slope,
                       drive, current0, voltage0, adaptation0, beta_syn, beta_mem, one_minus_mem, beta_ada,
                       xi, keep, decay_grads, g_drive, g_current0, g_voltage0, g_adaptation0,
                       g_beta_syn, g_beta_mem, g_beta_ada):  # pragma: no cover
    """The chain rule of the module docstring back through the span, over the batch in
    ``len(g_beta_syn)`` parallel chunks, a row at a time. ``g_current``.. are the
    gradients of the final state; the initial state's go to ``g_current0``.. and the
    drive's to ``g_drive`` (shape (1, B, N) for a held drive, summed over the substeps).
    With ``decay_grads``, the row's states are recomputed (the forward's ops) and the decay
    factors' gradients summed per chunk into ``g_beta_*`` (chunks, N; float64). The surrogate
    derivative is ``slope_grad``, or for the fast sigmoid (``fast_sigmoid_slope`` > 0)
    computed here from ``v``, which saves three passes over memory. Each inner loop is
    branch-free so that it vectorises."""
    held = g_drive.shape[0] == 1
    steps, batch, size = g_spikes.shape
    chunks = g_beta_syn.shape[0]
    zero = xi - xi
    one = zero + 1
    adapt = one - keep
    for c in numba.prange(chunks):
        dtype = g_drive.dtype
        ds, g_in, g_pre = np.empty(size, dtype), np.empty(size, dtype), np.empty(size, dtype)
        g_i, g_u, g_a = np.empty(size, dtype), np.empty(size, dtype), np.empty(size, dtype)
        cur = np.empty((steps + 1, size), dtype)  # the row's state before substep t, and after the last
        vol = np.empty((steps + 1, size), dtype)
        ada = np.empty((steps + 1, size), dtype)
        gb_syn, gb_mem, gb_ada = g_beta_syn[c], g_beta_mem[c], g_beta_ada[c]
        for b in range(c * batch // chunks, (c + 1) * batch // chunks):
            if decay_grads:
                cur[0], vol[0], ada[0] = current0[b], voltage0[b], adaptation0[b]
                for t in range(steps):
                    d = drive[0, b] if drive.shape[0] == 1 else drive[t, b]
                    for n in range(size):
                        i = beta_syn[n] * cur[t, n] + d[n]
                        pre_reset = beta_mem[n] * vol[t, n] + one_minus_mem[n] * i
                        theta = one + xi * ada[t, n]
                        s = one if pre_reset - theta > zero else zero
                        cur[t + 1, n] = i
                        vol[t + 1, n] = pre_reset - theta * s
                        ada[t + 1, n] = adapt * (beta_ada[n] * ada[t, n] + s) + keep * ada[t, n]
            g_i[:], g_u[:], g_a[:] = g_current[b], g_voltage[b], g_adaptation[b]
            if held:
                g_drive[0, b] = zero
            for t in range(steps - 1, -1, -1):
                if fast_sigmoid_slope > zero:
                    for n in range(size):
                        den = one + fast_sigmoid_slope * abs(v[t, b, n])
                        ds[n] = one / (den * den)
                else:
                    ds[:] = slope_grad[t, b]
                g_s = g_spikes[t, b]
                if decay_grads:  # with the gradient of the trace after substep t
                    for n in range(size):
                        gb_ada[n] += adapt * g_a[n] * ada[t, n]
                for n in range(size):
                    g_v = (g_s[n] + adapt * g_a[n]) * ds[n]
                    g_pre[n] = g_u[n] + g_v
                    g_in[n] = g_i[n] + one_minus_mem[n] * g_pre[n]
                    g_i[n] = beta_syn[n] * g_in[n]
                    g_u[n] = beta_mem[n] * g_pre[n]
                    g_a[n] = adapt * (beta_ada[n] * g_a[n] - xi * g_v) + keep * g_a[n]
                if held:
                    g_drive[0, b] += g_in
                else:
                    g_drive[t, b] = g_in
                if decay_grads:
                    for n in range(size):
                        gb_syn[n] += g_in[n] * cur[t, n]
                        gb_mem[n] += g_pre[n] * (vol[t, n] - cur[t + 1, n])
            g_current0[b], g_voltage0[b], g_adaptation0[b] = g_i, g_u, g_a


def _chunks(batch: int) -> int:
    """Parallel pieces of a span's batch: one per thread torch may use (and numba has)."""
    return max(1, min(batch, torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedNeuronSpan(torch.autograd.Function):
    """``apply(drive, I, U, A, b_syn, b_mem, b_ada, steps, xi, surrogate) -> (spikes, I', U', A')``.

    ``steps`` substeps of a population without recurrence, from the state ``(I, U, A)``
    (each ``(B, N)``), for ``drive`` given per substep ``(steps, B, N)`` or held ``(B, N)``:
    spikes ``(steps, B, N)`` and the state after the last substep. The forward is
    :func:`.neurons.neuron_step`'s ops in the same order and dtype (same spikes and state);
    the backward runs the chain rule above back through the span, both as numba loops (CPU
    tensors only; :meth:`.neurons.SpikingLayer.span` steps instead elsewhere). One node in
    the autograd graph instead of one per substep and connection, and the state never
    leaves the cache.
    """

    @staticmethod
    def forward(ctx, drive, current, voltage, adaptation, beta_syn, beta_mem, beta_ada, steps, xi, surrogate):  # type: ignore[override]
        held = drive.dim() == 2
        drive3 = drive.unsqueeze(0) if held else drive
        spikes, v = drive.new_empty((steps, *drive3.shape[1:])), drive.new_empty((steps, *drive3.shape[1:]))
        state = [current.new_empty(current.shape) for _ in range(3)]
        dtype = _np(beta_syn).dtype
        keep = dtype.type(0.0 if xi else 1.0)  # LIF keeps its (unused) trace, as neuron_step does
        _span_forward_cpu(_np(drive3), _np(current), _np(voltage), _np(adaptation), _np(beta_syn), _np(beta_mem),
                          _np(1.0 - beta_mem), _np(beta_ada), dtype.type(xi), dtype.type(1.0), keep, _chunks(drive3.shape[1]),
                          spikes.numpy(), v.numpy(), *(s.numpy() for s in state))
        ctx.save_for_backward(v, drive3, current, voltage, adaptation, beta_syn, beta_mem, beta_ada)
        ctx.held, ctx.xi, ctx.kind, ctx.slope = held, float(xi), surrogate.kind, float(surrogate.slope)
        return spikes, *state

    @staticmethod
    def backward(ctx, g_spikes, g_current, g_voltage, g_adaptation):  # type: ignore[override]
        v, drive3, current, voltage, adaptation, beta_syn, beta_mem, beta_ada = ctx.saved_tensors
        decay_grads = any(ctx.needs_input_grad[4:7])
        g_drive = v.new_empty((1 if ctx.held else v.shape[0], *v.shape[1:]))
        g_state = [current.new_empty(current.shape) for _ in range(3)]
        # Summed in float64: each is a sum of B x steps terms of both signs.
        g_decays = [torch.zeros((_chunks(v.shape[1]), *beta_syn.shape), dtype=torch.float64) for _ in range(3)]
        dtype = _np(v).dtype
        inline = ctx.kind == "fast_sigmoid"
        slope_grad = v[:0] if inline else surrogate_derivative(ctx.kind, v, ctx.slope)
        _span_backward_cpu(_np(g_spikes), _np(g_current), _np(g_voltage), _np(g_adaptation), _np(slope_grad),
                           _np(v), dtype.type(ctx.slope if inline else 0.0), _np(drive3), _np(current),
                           _np(voltage), _np(adaptation), _np(beta_syn), _np(beta_mem), _np(1.0 - beta_mem),
                           _np(beta_ada), dtype.type(ctx.xi), dtype.type(0.0 if ctx.xi else 1.0), decay_grads,
                           g_drive.numpy(),
                           *(g.numpy() for g in g_state), *(g.numpy() for g in g_decays))
        g_decays = [g.sum(0).to(beta_syn.dtype) for g in g_decays] if decay_grads else [None] * 3
        if not ctx.xi:
            g_decays[2] = None
        return ((g_drive[0] if ctx.held else g_drive), *g_state, *g_decays, None, None, None)
