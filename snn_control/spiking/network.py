"""A stack of spiking layers with analog input and a leaky-integrator readout.

One call of :meth:`SpikingNet.step` is one control step: the analog input is scaled by
a learnable per-feature gain, projected once, and held for ``substeps`` neural
substeps; spikes pass to the next layer within the same substep (no per-layer delay);
the readout potential after the last substep is the output.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn

from .neurons import Decays, LeakyReadout, NeuronState, ReadoutState, SpikingLayer
from .surrogate import Surrogate

log = logging.getLogger(__name__)


class SpikingNetState(NamedTuple):
    layers: tuple[NeuronState, ...]
    readout: ReadoutState

    def detach(self) -> "SpikingNetState":
        return SpikingNetState(tuple(s.detach() for s in self.layers), self.readout.detach())


class SpikingNet(nn.Module):
    """Analog input ``(B, in_features)`` -> spiking layers -> readout ``(B, out_features)``.

    Args:
        hidden: neurons per layer.
        recurrent: per layer, whether it has a recurrent connection.
        rank: bottleneck rank of spiking-to-spiking connections (None: dense).
        substeps: neural substeps per control step (input held).
        surrogate: spike function shared by all layers (one object, so a slope schedule
            changes them together).
        dt, tau_mem, tau_syn, tau_ada, xi, learn_tau: passed to every :class:`SpikingLayer`.
        readout_tau_mem, readout_tau_syn: readout time constants in seconds.
        readout_learn_tau: whether the readout's time constants train (default: learn_tau).
        init_rate_hz: presynaptic rate assumed by the fluctuation-driven initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int],
        recurrent: Sequence[bool],
        rank: int | None,
        substeps: int,
        surrogate: Surrogate,
        dt: float,
        tau_mem: float,
        tau_syn: float,
        tau_ada: float,
        xi: float,
        learn_tau: bool,
        readout_tau_mem: float,
        readout_tau_syn: float,
        init_rate_hz: float = 20.0,
        readout_learn_tau: bool | None = None,
    ) -> None:
        super().__init__()
        if len(hidden) != len(recurrent) or not hidden:
            raise ValueError("hidden and recurrent must be non-empty and of equal length")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.substeps, self.dt, self.surrogate = substeps, dt, surrogate
        self.input_gain = nn.Parameter(torch.ones(in_features))
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(
            SpikingLayer(
                sizes[i], sizes[i + 1], recurrent=recurrent[i], rank=rank,
                analog_input=(i == 0), dt=dt, tau_mem=tau_mem, tau_syn=tau_syn,
                tau_ada=tau_ada, xi=xi, learn_tau=learn_tau, surrogate=surrogate,
                init_rate_hz=init_rate_hz,
            )
            for i in range(len(hidden))
        )
        self.readout = LeakyReadout(
            hidden[-1], out_features, dt=dt, tau_mem=readout_tau_mem,
            tau_syn=readout_tau_syn, learn_tau=learn_tau if readout_learn_tau is None else readout_learn_tau,
        )
        # Spike totals per layer and (substep x batch) count since reset_counts(), when
        # count_spikes is on (evaluation); training leaves it off.
        self.count_spikes = False
        self.spike_counts = [0.0] * len(hidden)
        self.counted_substeps = 0
        # Per-layer spike sums per neuron (N,), differentiable, while track_activity is on
        # (the activity-bounds regulariser); see activity_rates().
        self.track_activity = False
        self.activity: list = []
        self.activity_substeps = 0
        # Training speed-ups, set by the trainer from its config; same values and gradients.
        # fused: layer by layer, with fused autograd functions (spiking.fused), no compiler.
        # compiled: the whole control step through torch.compile (see compile_step).
        self.fused = False
        self.compiled = None
        self._held_decays = None  # see decays_held()

    def set_slope(self, slope: float) -> None:
        """Change the surrogate slope of every layer (shared object), e.g. on a schedule."""
        self.surrogate.slope = float(slope)

    @torch.no_grad()
    def calibrate_input_gain(self, features) -> None:
        """Set each input's gain to 1 / its RMS over ``features (..., in_features)``, so
        the fluctuation-driven initialisation sees the unit-power inputs it assumes."""
        flat = torch.as_tensor(features, dtype=torch.float32).reshape(-1, self.input_gain.numel())
        rms = flat.pow(2).mean(0).sqrt()
        self.input_gain.copy_(1.0 / rms.clamp(min=0.05))  # at most 20x: near-constant inputs stay quiet

    def initial_state(self, batch: int, like: torch.Tensor) -> SpikingNetState:
        return SpikingNetState(
            tuple(layer.initial_state(batch, like) for layer in self.layers),
            self.readout.initial_state(batch, like),
        )

    def start_activity(self) -> None:
        """Begin summing differentiable per-neuron spike counts (see activity_rates)."""
        self.track_activity = True
        self.activity = [0.0] * len(self.layers)
        self.activity_substeps = 0

    def activity_rates(self) -> list:
        """Per-layer firing rates in Hz, ``(N,)`` each, since start_activity(); stops tracking."""
        self.track_activity = False
        time_s = max(self.activity_substeps, 1) * self.dt
        return [a / time_s for a in self.activity]

    def reset_counts(self) -> None:
        self.spike_counts = [0.0] * len(self.layers)
        self.counted_substeps = 0

    def compile_step(self, mode: str | None = None) -> None:
        """Run the control step through ``torch.compile`` while gradients are recorded: the
        op-by-op step below, traced once, its forward and backward each fused into a few
        loops (AOTAutograd + inductor). Per control step that is one call instead of about
        a hundred small ops each way, which is what a small batch spends its time on. Every
        net and every pattern of which inputs need gradients is its own compiled graph
        (about eight in a policy update), hence the higher recompile limit. Without a C++
        compiler the first call fails; the net then falls back to ``fused`` with a warning.
        ``mode``: torch.compile's (e.g. ``reduce-overhead``: CUDA graphs on a GPU)."""
        limits = torch._dynamo.config
        limits.recompile_limit = max(limits.recompile_limit, 64)
        self.compiled = torch.compile(self._step_by_substep, dynamic=False, mode=mode)

    @contextlib.contextmanager
    def decays_held(self) -> Iterator[None]:
        """Within, the training step (compiled or fused) uses decay factors computed once, on
        entry, instead of once per control step: one small autograd node per update rather than some twenty
        ops per control step (15-20 % of an update at the shipped config). For one forward
        pass of the parameters as they are (an update's unroll), not across an optimizer step."""
        self._held_decays = self._decays()
        try:
            yield
        finally:
            self._held_decays = None

    def step(self, x: torch.Tensor, state: SpikingNetState) -> tuple[torch.Tensor, SpikingNetState]:
        """One control step: ``x`` ``(B, in)`` -> readout potential ``(B, out)``, new state."""
        if not torch.is_grad_enabled() or (self.compiled is None and not self.fused):
            return self._step_by_substep(x, state)
        # The training paths take the decays from here (held for an update, or computed now),
        # and the compiled step from outside its graph: inductor's exp rounds differently
        # from ATen's in the last bit, and with that it would not be bitwise the reference's.
        decays = self._held_decays if self._held_decays is not None else self._decays()
        if self.compiled is not None:
            try:
                return self.compiled(x, state, decays)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
                log.warning("torch.compile of the spiking step failed (%s); using the fused step instead",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.compiled, self.fused = None, True
        return self._step_layer_by_layer(x, state, decays)

    def _decays(self) -> tuple[list[Decays], tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's decay factors and the readout's, for one control step."""
        return [layer.decays() for layer in self.layers], self.readout.decays()

    def _step_by_substep(self, x: torch.Tensor, state: SpikingNetState,
                         decays: tuple[list[Decays], tuple[torch.Tensor, torch.Tensor]] | None = None,
                         ) -> tuple[torch.Tensor, SpikingNetState]:
        """:meth:`step` as the equations read: every layer, substep by substep (the reference).
        ``decays`` (from :meth:`_decays`) are computed here when not given; the compiled step
        gets them from outside its graph, so that they, and with them every spike, are
        bitwise the reference's."""
        decays, readout_decays = self._decays() if decays is None else decays
        held_drive = self.layers[0].input(x * self.input_gain)
        layer_states = list(state.layers)
        readout = state.readout
        for _ in range(self.substeps):
            spikes = None
            for i, layer in enumerate(self.layers):
                drive = held_drive if i == 0 else layer.input(spikes)
                layer_states[i] = layer.step(drive, layer_states[i], decays[i])
                spikes = layer_states[i].spikes
                if self.count_spikes:
                    self.spike_counts[i] += float(spikes.detach().sum())
                if self.track_activity:
                    self.activity[i] = self.activity[i] + spikes.mean(0)
            readout = self.readout.step(spikes, readout, readout_decays)
        if self.count_spikes:
            self.counted_substeps += self.substeps * x.shape[0]
        if self.track_activity:
            self.activity_substeps += self.substeps
        return readout.output, SpikingNetState(tuple(layer_states), readout)

    def _step_layer_by_layer(self, x: torch.Tensor, state: SpikingNetState,
                             decays: tuple[list[Decays], tuple[torch.Tensor, torch.Tensor]],
                             ) -> tuple[torch.Tensor, SpikingNetState]:
        """:meth:`step` for training (``fused``): each layer runs all its substeps before the
        next layer starts. Spikes only pass forward within a control step, so this is the
        same computation in another order; a layer without recurrence runs as one fused
        span (:meth:`.SpikingLayer.span`), and the next layer's input and the readout's are
        one matrix product over all substeps instead of one per substep."""
        layer_decays, readout_decays = decays
        drive = self.layers[0].input(x * self.input_gain)  # held for all substeps
        layer_states = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                drive = layer.input(spikes)  # (substeps, B, N) at once
            spikes, new_state = layer.span(drive, state.layers[i], layer_decays[i], self.substeps)
            layer_states.append(new_state)
            if self.count_spikes:
                self.spike_counts[i] += float(spikes.detach().sum())
            if self.track_activity:
                self.activity[i] = self.activity[i] + spikes.mean(1).sum(0)
        weighted = self.readout.scale * self.readout.weight(spikes)
        readout = state.readout
        for t in range(self.substeps):
            readout = self.readout.integrate(weighted[t], readout, readout_decays)
        if self.count_spikes:
            self.counted_substeps += self.substeps * x.shape[0]
        if self.track_activity:
            self.activity_substeps += self.substeps
        return readout.output, SpikingNetState(tuple(layer_states), readout)
