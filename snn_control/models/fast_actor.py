"""Batch-1 inference for a trained TD3 :class:`~.networks.SpikingActor`: one compiled call
per action, as the controller runs it.

The actor computes every action from a fresh network state over a few neural steps with
its population-coded input held. At batch 1 the torch module spends nearly all of its
time dispatching small ops; here one numba function does the receptive fields, the held
input projection (once per action), event-driven synapses between spiking layers (only
the rows of neurons that spiked are summed), the output populations' spike counts and
the decoder, in float64. Against the module run in float64 the spikes are identical and
actions agree to rounding (``test_rl``); ``python bench/actor_step.py`` times both.
"""

from __future__ import annotations

import copy

import numba
import numpy as np
import torch

from ..spiking.fast import neurons_step
from .actors import SpikingActor


@numba.njit(cache=True, nogil=True)
def _act(x, centres, widths, w_in_t, biases, weights_t, beta_syn, beta_mem, beta_ada, xi, timesteps,
         decoder_w, decoder_b, counts):  # pragma: no cover - compiled
    dims, pop = centres.shape
    layers = len(biases)
    # receptive fields, then the held input current of the first layer
    size0 = biases[0].shape[0]
    held = biases[0].copy()
    for d in range(dims):
        for p in range(pop):
            z = (x[d] - centres[d, p]) / widths[d, p]
            a = np.exp(-0.5 * z * z)
            row = w_in_t[d * pop + p]
            for n in range(size0):
                held[n] += row[n] * a
    current = [np.zeros(biases[l].shape[0]) for l in range(layers)]  # a fresh state per action
    voltage = [np.zeros(biases[l].shape[0]) for l in range(layers)]
    adaptation = [np.zeros(biases[l].shape[0]) for l in range(layers)]
    spikes = [np.zeros(biases[l].shape[0]) for l in range(layers)]
    active = [np.zeros(biases[l].shape[0], np.int64) for l in range(layers)]
    fired = np.zeros(layers, np.int64)
    out_counts = np.zeros(biases[layers - 1].shape[0])
    for _ in range(timesteps):
        for l in range(layers):
            if l == 0:
                drive = held.copy()
            else:  # spikes of layer l - 1 in this step: their rows of W^T
                drive = biases[l].copy()
                w_t = weights_t[l - 1]
                for a in range(fired[l - 1]):
                    drive += w_t[active[l - 1][a]]
            fired[l] = neurons_step(drive, current[l], voltage[l], adaptation[l], spikes[l], active[l],
                                    beta_syn[l], beta_mem[l], beta_ada[l], xi)
            counts[l] += fired[l]
        out_counts += spikes[layers - 1]
    act_dim, out_pop = decoder_w.shape
    action = np.empty(act_dim)
    for k in range(act_dim):
        acc = 0.0
        for p in range(out_pop):
            acc += out_counts[k * out_pop + p] / timesteps * decoder_w[k, p]
        action[k] = np.tanh(acc + decoder_b[k])
    return action


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64).numpy())


class FastSpikingActor:
    """``act(x (obs + goal,)) -> action (A,)``: one action of a :class:`SpikingActor`
    (weights copied at build). ``spike_counts`` holds the spikes per layer since
    :meth:`reset`."""

    def __init__(self, actor: SpikingActor) -> None:
        from numba.typed import List

        # Everything derived (widths, decay factors) is computed in float64, as the module
        # run in float64 computes it: derived in float32 first, a 1e-8 difference in a
        # factor (widths, decays) parted the outputs in 1 of 20,000 actions.
        actor = copy.deepcopy(actor).double()
        layers = list(actor.layers)
        with torch.no_grad():
            self.centres = _f64(actor.encoder.centres)
            self.widths = _f64(actor.encoder.log_width.exp())
            self.w_in_t = _f64(layers[0].input.weight.T)
            self.biases = List([_f64(layer.input.bias) for layer in layers])
            self.weights_t = List([_f64(layer.input.weight.T) for layer in layers[1:]])
            decays = [layer.decays() for layer in layers]
            self.beta_syn = List([_f64(d.syn) for d in decays])
            self.beta_mem = List([_f64(d.mem) for d in decays])
            self.beta_ada = List([_f64(d.ada) for d in decays])
            self.decoder_w = _f64(actor.decoder.weight)
            self.decoder_b = _f64(actor.decoder.bias)
        self.xi = float(layers[0].xi)
        self.timesteps = int(actor.timesteps)
        self.sizes = [layer.size for layer in layers]
        self.dt = float(layers[0].dt)
        self.reset()

    def reset(self) -> None:
        self.spike_counts = np.zeros(len(self.sizes))
        self.actions = 0

    def act(self, x: np.ndarray) -> np.ndarray:
        self.actions += 1
        return _act(np.asarray(x, dtype=np.float64), self.centres, self.widths, self.w_in_t, self.biases,
                    self.weights_t, self.beta_syn, self.beta_mem, self.beta_ada, self.xi, self.timesteps,
                    self.decoder_w, self.decoder_b, self.spike_counts)

    def firing_rates_hz(self) -> np.ndarray:
        """Mean firing rate per layer since the last reset."""
        time_s = max(self.actions * self.timesteps, 1) * self.dt
        return self.spike_counts / (np.asarray(self.sizes) * time_s)
