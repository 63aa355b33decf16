"""Batch-1 inference for a trained :class:`SpikingNet`: one compiled call per control step.

The training modules pay for autograd, batching and one Python-dispatched tensor op per
equation per substep; at batch 1 that overhead is nearly all of the time. Here one
numba-compiled function runs every substep of every layer and the readout:

- the analog input is projected once per control step (it is held for all substeps);
- spiking-to-spiking connections are event driven: only the columns of spiking neurons
  are summed (for a rank-d bottleneck ``W2 W1``, the d-dim latent is accumulated from
  the spiking columns of ``W1`` and then expanded by ``W2``);
- state lives in preallocated float64 arrays, updated in place.

It computes the same equations as :mod:`.neurons` in float64. Against the training
modules run in float64 the spikes are identical and outputs agree to rounding
(``test_fast_inference``); against float32 modules they agree until a membrane lands
within float32 rounding of its threshold, after which the two trajectories may part.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .connections import LowRankLinear
from .network import SpikingNet
from .neurons import decay_factors


@numba.njit(cache=True, nogil=True)
def _net_step(x, substeps, w_in, bias, ff_pre, ff_post_t, ff_dense_t, rec_pre, rec_post_t, rec_dense_t,
              has_rec, lowrank, beta_syn, beta_mem, beta_ada, xi, readout_pre, readout_bias,
              readout_scale, readout_syn, readout_mem, current, voltage, adaptation, spikes,
              active, n_active, latent, drive, held, readout_drive, readout_current, output,
              counts):  # pragma: no cover - compiled
    layers, size = current.shape
    for n in range(size):  # the input is projected once per control step and held
        acc = 0.0
        for j in range(x.shape[0]):
            acc += w_in[n, j] * x[j]
        held[n] = acc
    for _ in range(substeps):
        for l in range(layers):
            for n in range(size):
                drive[n] = bias[l, n]
            if l == 0:
                for n in range(size):
                    drive[n] += held[n]
            else:  # spikes of layer l - 1 in this substep
                _accumulate(active[l - 1], n_active[l - 1], ff_pre[l - 1], ff_post_t[l - 1],
                            ff_dense_t[l - 1], lowrank, latent, drive)
            if has_rec[l]:  # own spikes of the previous substep
                _accumulate(active[l], n_active[l], rec_pre[l], rec_post_t[l], rec_dense_t[l],
                            lowrank, latent, drive)
            fired = neurons_step(drive, current[l], voltage[l], adaptation[l], spikes[l], active[l],
                                 beta_syn[l], beta_mem[l], beta_ada[l], xi)
            n_active[l] = fired
            counts[l] += fired
        # Leaky readout of the last layer's spikes.
        last = layers - 1
        for m in range(output.shape[0]):
            readout_drive[m] = readout_bias[m]
        for a in range(n_active[last]):
            j = active[last, a]
            for m in range(output.shape[0]):
                readout_drive[m] += readout_pre[j, m]
        for m in range(output.shape[0]):
            readout_current[m] = readout_syn[m] * readout_current[m] + readout_scale * readout_drive[m]
            output[m] = readout_mem[m] * output[m] + (1.0 - readout_mem[m]) * readout_current[m]


@numba.njit(cache=True, nogil=True, inline="always")
def neurons_step(drive, current, voltage, adaptation, spikes, active, beta_syn, beta_mem, beta_ada,
                 xi):  # pragma: no cover - compiled
    """One substep of one population (1-D arrays, updated in place): a copy of
    :func:`.neurons.neuron_step` (LIF when ``xi`` is 0), in the same order. A copy because
    this path runs in float64 inside numba and lists the neurons that fired (for the
    event-driven synapses) in ``active``; returns how many."""
    fired = 0
    for n in range(drive.shape[0]):
        i = beta_syn[n] * current[n] + drive[n]
        current[n] = i
        u = beta_mem[n] * voltage[n] + (1.0 - beta_mem[n]) * i
        theta = 1.0 + xi * adaptation[n]
        if u - theta > 0.0:
            voltage[n] = u - theta
            spikes[n] = 1.0
            active[fired] = n
            fired += 1
        else:
            voltage[n] = u
            spikes[n] = 0.0
        if xi != 0.0:
            adaptation[n] = beta_ada[n] * adaptation[n] + spikes[n]
    return fired


@numba.njit(cache=True, nogil=True, inline="always")
def _accumulate(active, n_active, pre, post_t, dense_t, lowrank, latent, drive):  # pragma: no cover
    """drive += W s for the spikes listed in ``active[:n_active]``.

    ``dense_t`` is W transposed (N_pre, N_post); a low-rank W = post @ pre.T may also go
    through its factors (latent of width K), which is cheaper once K or more neurons spike.
    """
    width = pre.shape[1]
    if lowrank and n_active >= width:
        for k in range(width):
            latent[k] = 0.0
        for a in range(n_active):
            j = active[a]
            for k in range(width):
                latent[k] += pre[j, k]
        for k in range(width):
            lk = latent[k]
            for n in range(drive.shape[0]):
                drive[n] += post_t[k, n] * lk
    else:
        for a in range(n_active):
            j = active[a]
            for n in range(drive.shape[0]):
                drive[n] += dense_t[j, n]


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64).numpy())


class FastSpikingNet:
    """Compiled batch-1 stepping of a trained :class:`SpikingNet` (weights copied at build).

    ``step(x (in,)) -> output (out,)`` is one control step, like ``SpikingNet.step`` on a
    batch of one. ``spikes`` ``(layers, N)`` holds the last substep's spikes and
    ``spike_counts`` the spikes per layer since the last :meth:`reset`.
    """

    def __init__(self, net: SpikingNet) -> None:
        layers = list(net.layers)
        size = layers[0].size
        if any(layer.size != size for layer in layers):
            raise ValueError(f"the fast path needs equal layer sizes; got {[layer.size for layer in layers]}")
        self.xi = layers[0].xi
        if any(layer.xi != self.xi for layer in layers):
            raise ValueError("the fast path needs one threshold-adaptation strength for all layers")
        feedforward = [layer.input for layer in layers[1:]]
        recurrent = [layer.recurrent for layer in layers]
        kinds = {isinstance(c, LowRankLinear) for c in feedforward + recurrent if c is not None}
        if len(kinds) > 1:
            raise ValueError("the fast path needs all spiking connections dense or all low-rank")
        self.lowrank = kinds == {True}
        self.substeps, self.dt = net.substeps, net.dt
        with torch.no_grad():
            self.w_in = _f64(layers[0].input.weight.double() * net.input_gain.double())
            bias = []
            for i, layer in enumerate(layers):
                b = layer.input.bias.double() if i == 0 else _conn_bias(layer.input)
                if layer.recurrent is not None:
                    b = b + _conn_bias(layer.recurrent)
                bias.append(b)
            self.bias = _f64(torch.stack(bias))
            self.ff = _stack(feedforward, size)
            self.rec = _stack(recurrent, size)
            self.has_rec = np.array([c is not None for c in recurrent])
            # Decays in float64 from the log time constants, as a float64 module computes them.
            self.beta_syn, self.beta_mem, self.beta_ada = (
                _f64(torch.stack([decay_factors(getattr(l, name).double(), l.dt) for l in layers]))
                for name in ("log_tau_syn", "log_tau_mem", "log_tau_ada"))
            readout = net.readout
            self.readout_pre = _f64(readout.weight.weight.T)
            self.readout_bias = _f64(readout.weight.bias)
            self.readout_scale = float(readout.scale)
            self.readout_syn, self.readout_mem = (
                _f64(decay_factors(getattr(readout, name).double(), readout.dt))
                for name in ("log_tau_syn", "log_tau_mem"))
        shape = (len(layers), size)
        self.current, self.voltage, self.adaptation, self.spikes = (np.zeros(shape) for _ in range(4))
        self.active = np.zeros(shape, dtype=np.int64)
        self.n_active = np.zeros(len(layers), dtype=np.int64)
        self.latent = np.zeros(max(self.ff[0].shape[2], self.rec[0].shape[2]))
        self.drive, self.held = np.zeros(size), np.zeros(size)
        outputs = self.readout_bias.shape[0]
        self.readout_drive, self.readout_current, self.output = np.zeros(outputs), np.zeros(outputs), np.zeros(outputs)
        self.spike_counts = np.zeros(len(layers), dtype=np.int64)
        self.steps = 0

    @property
    def in_features(self) -> int:
        return self.w_in.shape[1]

    def reset(self) -> None:
        """Zero state and spike counts (a new episode, or a freshly swapped model)."""
        for a in (self.current, self.voltage, self.adaptation, self.spikes, self.n_active,
                  self.readout_current, self.output, self.spike_counts):
            a[...] = 0
        self.steps = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        """One control step; returns the readout potential (a view, valid until the next step)."""
        _net_step(np.asarray(x, dtype=np.float64), self.substeps, self.w_in, self.bias, *self.ff,
                  *self.rec, self.has_rec, self.lowrank, self.beta_syn, self.beta_mem,
                  self.beta_ada, self.xi, self.readout_pre, self.readout_bias, self.readout_scale,
                  self.readout_syn, self.readout_mem, self.current, self.voltage, self.adaptation,
                  self.spikes, self.active, self.n_active, self.latent, self.drive, self.held,
                  self.readout_drive, self.readout_current, self.output, self.spike_counts)
        self.steps += 1
        return self.output

    def firing_rates_hz(self) -> np.ndarray:
        """Mean firing rate per layer since the last reset."""
        time_s = max(self.steps * self.substeps, 1) * self.dt
        return self.spike_counts / (self.current.shape[1] * time_s)


def _conn_bias(conn) -> torch.Tensor:
    return (conn.up.bias if isinstance(conn, LowRankLinear) else conn.bias).double()


def _stack(connections: list, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-connection slots, stacked: factors ``pre (N, K)``, ``post_t (K, N)`` of a low-rank
    ``W = post @ pre.T`` and ``dense_t = W.T (N, N)``; zeros where a layer has none."""
    count = max(len(connections), 1)
    width = next((c.rank for c in connections if isinstance(c, LowRankLinear)), 1)
    pre, post_t = np.zeros((count, size, width)), np.zeros((count, width, size))
    dense_t = np.zeros((count, size, size))
    for i, conn in enumerate(connections):
        if isinstance(conn, LowRankLinear):
            pre[i] = _f64(conn.down.weight.T)
            post_t[i] = _f64(conn.up.weight.T)
            dense_t[i] = _f64((conn.up.weight.double() @ conn.down.weight.double()).T)
        elif conn is not None:
            dense_t[i] = _f64(conn.weight.T)
    return pre, post_t, dense_t
