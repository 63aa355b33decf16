"""The networks of TD3 (Xu et al. 2025 (Proxy Target)): a population-coded spiking actor,
its non-spiking counterparts (MLP actor for the ANN baseline and the proxy target), and the
critics."""

from __future__ import annotations

import torch
from torch import nn

from .networks import policy_input
from ..spiking import SpikingLayer, Surrogate
from .population import PopulationDecoder, PopulationEncoder

NEURONS = {"lif": 0.0, "alif": 0.5}  # threshold adaptation strength xi
ACTOR_DT_S = 1e-3  # neural time per actor step (sets the time constants' decay; rates in Hz)


class SpikingActor(nn.Module):
    """Observation -> population code -> spiking layers -> output populations -> action.

    Every action is computed from a fresh network state over ``timesteps`` neural steps
    (the input held); the output populations' firing rates are decoded per action
    dimension and squashed by tanh into [-1, 1].
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), pop: int = 10, timesteps: int = 5,
                 neuron: str = "lif", surrogate: Surrogate | None = None, dt: float = ACTOR_DT_S,
                 tau_mem: float = 2e-3, tau_syn: float = 1e-3, tau_ada: float = 20e-3,
                 obs_range: float = 1.0) -> None:
        super().__init__()
        if neuron not in NEURONS:
            raise ValueError(f"unknown neuron {neuron!r}; choose one of {sorted(NEURONS)}")
        self.timesteps, self.act_dim, self.pop = timesteps, act_dim, pop
        self.surrogate = surrogate or Surrogate("fast_sigmoid", 10.0)
        self.encoder = PopulationEncoder(obs_dim, pop, -obs_range, obs_range)
        sizes = [obs_dim * pop, *hidden, act_dim * pop]
        self.layers = nn.ModuleList(
            SpikingLayer(sizes[i], sizes[i + 1], recurrent=False, rank=None, analog_input=(i == 0), dt=dt,
                         tau_mem=tau_mem, tau_syn=tau_syn, tau_ada=tau_ada, xi=NEURONS[neuron], learn_tau=False,
                         surrogate=self.surrogate, init_rate_hz=100.0)
            for i in range(len(sizes) - 1))
        self.decoder = PopulationDecoder(act_dim, pop)
        self.last_rates: list[torch.Tensor] = []  # per layer, mean firing probability per step
        self.count_spikes = False  # evaluation: accumulate spike totals across calls
        self.reset_counts()

    def reset_counts(self) -> None:
        self.spike_counts = [0.0] * len(self.layers)  # per layer, summed over neurons and rows
        self.counted_steps = 0  # neural steps x rows counted

    def activity(self) -> tuple[dict[str, float], dict[str, float]]:
        """Since :meth:`reset_counts`: firing rate per layer (Hz per neuron) and, per action
        (batch 1), spike-driven synaptic events and the dense multiply-adds of the analog
        input projection (once per action: the input is held)."""
        steps = max(1, self.counted_steps)
        rates = {f"layer{i + 1}": c / (steps * ACTOR_DT_S * layer.size)
                 for i, (c, layer) in enumerate(zip(self.spike_counts, self.layers))}
        actions = steps / self.timesteps
        events = sum(self.spike_counts[i] / actions * self.layers[i + 1].size for i in range(len(self.layers) - 1))
        events += self.spike_counts[-1] / actions  # output spikes into the decoder's weighted sum
        first = self.layers[0].input
        return rates, {"spike_events": events, "dense_macs": float(first.in_features * first.out_features)}

    def set_slope(self, slope: float) -> None:
        self.surrogate.slope = float(slope)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Layer by layer over the whole window (there is no recurrence): one matmul per
        # connection for all timesteps and one autograd node per layer's dynamics.
        decays = [layer.decays() for layer in self.layers]
        drive = self.layers[0].input(self.encoder(obs))  # the analog input is held: projected once
        rates = []
        for i, layer in enumerate(self.layers):
            if i:
                drive = layer.input(spikes)
            spikes, _ = layer.span(drive, None, decays[i], self.timesteps)  # (timesteps, B, N)
            rates.append(spikes.detach().mean())
            if self.count_spikes:
                self.spike_counts[i] += float(spikes.sum())
        self.last_rates = rates
        if self.count_spikes:
            self.counted_steps += self.timesteps * obs.shape[0]
        return torch.tanh(self.decoder(spikes.mean(0)))

    def forward_stepped(self, obs: torch.Tensor) -> torch.Tensor:
        """The reference for :meth:`forward`: every layer advanced once per timestep, op
        by op (no rate bookkeeping). Same actions and gradients (``test_rl``); slower."""
        decays = [layer.decays() for layer in self.layers]
        states = [layer.initial_state(obs.shape[0], obs) for layer in self.layers]
        drive0, out = self.layers[0].input(self.encoder(obs)), 0.0
        for _ in range(self.timesteps):
            for i, layer in enumerate(self.layers):
                drive = drive0 if i == 0 else layer.input(states[i - 1].spikes)
                states[i] = layer.step(drive, states[i], decays[i])
            out = out + states[-1].spikes
        return torch.tanh(self.decoder(out / self.timesteps))


def mlp(sizes, activation=nn.ReLU, out_activation=None) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    if out_activation is not None:
        layers.append(out_activation())
    return nn.Sequential(*layers)


class MLPActor(nn.Module):
    """Non-spiking actor: the ANN baseline (256-256) and the proxy target (512-512)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256)) -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim], out_activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class ActorPolicy(nn.Module):
    """An actor seen through the predictive-control policy interface (``step``), so
    :func:`snn_control.training.collect.rollout` and evaluation run it unchanged.
    ``goal_error``: the effector's slice of the observation when the actor sees the goal
    minus the effector instead of the goal (``rl.goal_error``)."""

    goal_integral = None
    action_damping = None

    def __init__(self, actor, goal_error: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.actor = actor
        self.goal_error = goal_error

    def fast(self):
        """Batch-1 path (:mod:`.inference`): a spiking actor's compiled one, else torch."""
        from .fast_actor import FastSpikingActor
        from .inference import CompiledPolicyStep, TorchPolicyStep

        if not isinstance(self.actor, SpikingActor):
            return TorchPolicyStep(self)
        actor = FastSpikingActor(self.actor)
        return CompiledPolicyStep(actor, actor.act, self.goal_error, float64=True)

    def initial_state(self, batch: int, like: torch.Tensor):
        return None

    def step(self, obs: torch.Tensor, goals: torch.Tensor, state):
        action = self.actor(policy_input(obs, goals, self.goal_error))
        return action, action, state


def build_actor(r, obs_dim: int, act_dim: int, obs_range: float = 1.0) -> nn.Module:
    """The actor an :class:`~snn_control.config.RLConfig` ``r`` describes; a spiking actor's
    population code spans +-``obs_range``."""
    if r.actor == "mlp":
        return MLPActor(obs_dim, act_dim, tuple(r.hidden))
    return SpikingActor(obs_dim, act_dim, tuple(r.hidden), r.pop, r.timesteps, r.neuron,
                        Surrogate("fast_sigmoid", r.slope if r.slope_schedule == "fixed" else r.slope_start),
                        obs_range=obs_range)
