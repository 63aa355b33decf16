"""Leaky integrate-and-fire neurons with synaptic current and threshold adaptation.

Per substep of length ``dt`` (as in Huebotter et al. 2025), with ``beta_x = exp(-dt / tau_x)``:

    I     = beta_syn * I + drive              (drive: W x + b, plus W_rec s_prev if recurrent)
    U     = beta_mem * U + (1 - beta_mem) * I
    theta = 1 + xi * a                        (ALIF; LIF is xi = 0)
    s     = H(U - theta)                      (surrogate derivative backward)
    U     = U - theta * s                     (subtractive reset, detached from the graph)
    a     = beta_ada * a + s

Time constants are per neuron, learnable, stored as log(tau / s) and clamped to
``[TAU_MIN, TAU_MAX]`` when used. Their parameter names start with ``log_tau`` so the
trainer can give them their own optimizer group.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .connections import init_connection, make_connection
from .init import analog_input_std, spiking_input_std
from .surrogate import Surrogate

TAU_MIN = 1e-3  # s
TAU_MAX = 7.0  # s


class NeuronState(NamedTuple):
    """State of a population, each ``(B, N)``: synaptic current I, membrane U (threshold
    units), adaptation trace a (spike count, decaying), last spikes s (0/1)."""

    current: torch.Tensor
    voltage: torch.Tensor
    adaptation: torch.Tensor
    spikes: torch.Tensor

    def detach(self) -> "NeuronState":
        return NeuronState(*(t.detach() for t in self))


class Decays(NamedTuple):
    """Per-neuron decay factors ``exp(-dt/tau)`` for one forward pass, each ``(N,)``."""

    syn: torch.Tensor
    mem: torch.Tensor
    ada: torch.Tensor


def neuron_step(
    drive: torch.Tensor, state: NeuronState, decays: Decays, xi: float, spike_fn: Surrogate,
    fused: bool = False,
) -> NeuronState:
    """One substep of the ALIF equations above; returns the new state (spikes in ``.spikes``).

    The one torch definition of the substep: every torch path calls it, the fused
    functions' forward included; only the numba loops (:mod:`.fused`, :mod:`.fast`) copy it.

    ``fused``: while recording gradients, run the substep as one autograd function
    (:mod:`.fused`: same values and gradients, a fraction of the memory passes).
    """
    if fused and torch.is_grad_enabled():
        from .fused import FusedNeuronStep  # not at the top: .fused calls this function

        return NeuronState(*FusedNeuronStep.apply(
            drive, state.current, state.voltage, state.adaptation, decays.syn, decays.mem,
            decays.ada, xi, spike_fn))
    current = decays.syn * state.current + drive
    voltage = decays.mem * state.voltage + (1.0 - decays.mem) * current
    theta = 1.0 + xi * state.adaptation if xi else None
    spikes = spike_fn(voltage - theta if theta is not None else voltage - 1.0)
    reset = spikes if theta is None else theta * spikes
    voltage = voltage - reset.detach()
    adaptation = decays.ada * state.adaptation + spikes if xi else state.adaptation
    return NeuronState(current, voltage, adaptation, spikes)


def _log_tau(value: float, size: int, learnable: bool) -> nn.Parameter:
    return nn.Parameter(torch.full((size,), math.log(value)), requires_grad=learnable)


def decay_factors(log_tau: torch.Tensor, dt: float) -> torch.Tensor:
    tau = log_tau.clamp(math.log(TAU_MIN), math.log(TAU_MAX)).exp()
    return torch.exp(-dt / tau)


class SpikingLayer(nn.Module):
    """A population of ALIF (or LIF, ``xi = 0``) neurons with its input connection.

    Args:
        in_features: size of the input (analog features or presynaptic neurons).
        size: number of neurons N.
        recurrent: add a recurrent connection from the population's own spikes.
        rank: bottleneck rank for spiking-to-spiking connections (None: dense). The
            analog input connection is always dense.
        analog_input: inputs are analog currents rather than spikes (first layer).
        dt: substep length in seconds.
        tau_mem, tau_syn, tau_ada: initial time constants in seconds.
        xi: threshold adaptation strength (0: LIF).
        learn_tau: time constants are trainable.
        surrogate: the spike function and its surrogate derivative.
        init_rate_hz: presynaptic rate assumed by the fluctuation-driven init.
        init_std: target membrane standard deviation of that init.
        recurrent_share: share of the membrane variance budget given to recurrence.
    """

    def __init__(
        self,
        in_features: int,
        size: int,
        *,
        recurrent: bool,
        rank: int | None,
        analog_input: bool,
        dt: float,
        tau_mem: float,
        tau_syn: float,
        tau_ada: float,
        xi: float,
        learn_tau: bool,
        surrogate: Surrogate,
        init_rate_hz: float = 50.0,
        init_std: float = 1.0,
        recurrent_share: float = 0.1,
    ) -> None:
        super().__init__()
        self.size, self.dt, self.xi = size, dt, float(xi)
        self.surrogate = surrogate
        self.input = make_connection(in_features, size, None if analog_input else rank)
        self.recurrent = make_connection(size, size, rank) if recurrent else None
        self.log_tau_mem = _log_tau(tau_mem, size, learn_tau)
        self.log_tau_syn = _log_tau(tau_syn, size, learn_tau)
        self.log_tau_ada = _log_tau(tau_ada, size, learn_tau and xi > 0)

        beta_syn, beta_mem = math.exp(-dt / tau_syn), math.exp(-dt / tau_mem)
        ff_var = init_std**2 * (1.0 - recurrent_share if recurrent else 1.0)
        if analog_input:
            ff_std = analog_input_std(in_features, beta_syn, beta_mem, ff_var)
        else:
            ff_std = spiking_input_std(in_features, init_rate_hz, dt, beta_syn, beta_mem, ff_var)
        init_connection(self.input, ff_std)
        if self.recurrent is not None:
            rec_var = init_std**2 * recurrent_share
            init_connection(
                self.recurrent,
                spiking_input_std(size, init_rate_hz, dt, beta_syn, beta_mem, rec_var),
            )

    def decays(self) -> Decays:
        return Decays(
            decay_factors(self.log_tau_syn, self.dt),
            decay_factors(self.log_tau_mem, self.dt),
            decay_factors(self.log_tau_ada, self.dt),
        )

    def initial_state(self, batch: int, like: torch.Tensor) -> NeuronState:
        zeros = like.new_zeros(batch, self.size)
        return NeuronState(zeros, zeros, zeros, zeros)

    def step(self, drive: torch.Tensor, state: NeuronState, decays: Decays,
             fused: bool = False) -> NeuronState:
        """One substep. ``drive`` ``(B, N)`` is this layer's input current (``self.input``
        applied by the caller, so a held input is projected once per control step)."""
        if self.recurrent is not None:
            drive = drive + self.recurrent(state.spikes)
        return neuron_step(drive, state, decays, self.xi, self.surrogate, fused)

    def span(self, drive: torch.Tensor, state: NeuronState | None, decays: Decays,
             steps: int) -> tuple[torch.Tensor, NeuronState]:
        """``steps`` substeps from ``state`` (None: from rest): spikes ``(steps, B, N)`` and
        the state after. ``drive`` is given per substep ``(steps, B, N)`` or held ``(B, N)``.
        Without recurrence and on the CPU, one autograd node (:class:`.fused.FusedNeuronSpan`:
        same spikes, state and gradients); otherwise the fused :meth:`step` once per substep."""
        if state is None:
            state = self.initial_state(drive.shape[-2], drive)
        if self.recurrent is None and drive.device.type == "cpu":
            from .fused import FusedNeuronSpan  # not at the top: .fused calls neuron_step

            spikes, current, voltage, adaptation = FusedNeuronSpan.apply(
                drive, state.current, state.voltage, state.adaptation, decays.syn, decays.mem,
                decays.ada, steps, self.xi, self.surrogate)
            return spikes, NeuronState(current, voltage, adaptation, spikes[-1])
        spikes = []
        for t in range(steps):
            state = self.step(drive if drive.dim() == 2 else drive[t], state, decays, fused=True)
            spikes.append(state.spikes)
        return torch.stack(spikes), state


class ReadoutState(NamedTuple):
    """Leaky-integrator readout state, each ``(B, M)``: current and output potential y."""

    current: torch.Tensor
    output: torch.Tensor

    def detach(self) -> "ReadoutState":
        return ReadoutState(self.current.detach(), self.output.detach())


class LeakyReadout(nn.Module):
    """Non-spiking readout: ``I = b_s I + scale W s``, ``y = b_m y + (1 - b_m) I``."""

    def __init__(
        self, in_features: int, out_features: int, *, dt: float, tau_mem: float,
        tau_syn: float, learn_tau: bool, scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.dt, self.scale, self.size = dt, scale, out_features
        self.weight = nn.Linear(in_features, out_features)
        # Output std about 1 for inputs spiking at 50 Hz-ish.
        nn.init.normal_(self.weight.weight, 0.0, 1.0 / math.sqrt(in_features))
        nn.init.zeros_(self.weight.bias)
        self.log_tau_mem = _log_tau(tau_mem, out_features, learn_tau)
        self.log_tau_syn = _log_tau(tau_syn, out_features, learn_tau)

    def decays(self) -> tuple[torch.Tensor, torch.Tensor]:
        return decay_factors(self.log_tau_syn, self.dt), decay_factors(self.log_tau_mem, self.dt)

    def initial_state(self, batch: int, like: torch.Tensor) -> ReadoutState:
        zeros = like.new_zeros(batch, self.size)
        return ReadoutState(zeros, zeros)

    def time_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau_syn, tau_mem)`` per output, in seconds, as the decays use them."""
        lo, hi = math.log(TAU_MIN), math.log(TAU_MAX)
        return self.log_tau_syn.clamp(lo, hi).exp(), self.log_tau_mem.clamp(lo, hi).exp()

    @torch.no_grad()
    def retime(self, tau_syn: float, tau_mem: float) -> None:
        """New time constants, with the weights and bias rescaled so that a constant input
        gives the same steady output: the current's steady gain is ``1 / (1 - beta_syn)``,
        the potential's is one. Spikes are then averaged over a longer or shorter window."""
        old_syn, _ = self.decays()
        self.log_tau_syn.fill_(math.log(tau_syn))
        self.log_tau_mem.fill_(math.log(tau_mem))
        new_syn, _ = self.decays()
        ratio = (1.0 - new_syn) / (1.0 - old_syn)
        self.weight.weight.mul_(ratio[:, None])
        self.weight.bias.mul_(ratio)

    def step(
        self, spikes: torch.Tensor, state: ReadoutState, decays: tuple[torch.Tensor, torch.Tensor]
    ) -> ReadoutState:
        return self.integrate(self.scale * self.weight(spikes), state, decays)

    def integrate(self, weighted: torch.Tensor, state: ReadoutState,
                  decays: tuple[torch.Tensor, torch.Tensor]) -> ReadoutState:
        """One substep for the already weighted input ``scale W s`` ``(B, M)``."""
        beta_syn, beta_mem = decays
        current = beta_syn * state.current + weighted
        output = beta_mem * state.output + (1.0 - beta_mem) * current
        return ReadoutState(current, output)
