"""The networks of TD3 (seed 003): a population-coded spiking actor, its non-spiking
counterparts (MLP actor for the ANN baseline and the proxy target), and the critics."""

from __future__ import annotations

import torch
from torch import nn

from ..spiking import SpikingLayer, Surrogate
from .population import PopulationDecoder, PopulationEncoder

NEURONS = {"lif": 0.0, "alif": 0.5}  # threshold adaptation strength xi


class SpikingActor(nn.Module):
    """Observation -> population code -> spiking layers -> output populations -> action.

    Every action is computed from a fresh network state over ``timesteps`` neural steps
    (the input held); the output populations' firing rates are decoded per action
    dimension and squashed by tanh into [-1, 1].
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), pop: int = 10, timesteps: int = 5,
                 neuron: str = "lif", surrogate: Surrogate | None = None, dt: float = 1e-3,
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

    def set_slope(self, slope: float) -> None:
        self.surrogate.slope = float(slope)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        states = [layer.initial_state(obs.shape[0], obs) for layer in self.layers]
        decays = [layer.decays() for layer in self.layers]
        drive0 = self.layers[0].input(x)  # the analog input is held: projected once
        counts = [obs.new_zeros(()) for _ in self.layers]
        out_spikes = 0.0
        for _ in range(self.timesteps):
            drive = drive0
            for i, layer in enumerate(self.layers):
                if i:
                    drive = layer.input(states[i - 1].spikes)
                states[i] = layer.step(drive, states[i], decays[i], fused=True)
                counts[i] = counts[i] + states[i].spikes.detach().mean()
            out_spikes = out_spikes + states[-1].spikes
        self.last_rates = [c / self.timesteps for c in counts]
        return torch.tanh(self.decoder(out_spikes / self.timesteps))


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


class TwinCritic(nn.Module):
    """Two independent Q networks ``Q(s, a)`` (TD3's clipped double Q)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256)) -> None:
        super().__init__()
        self.q1 = mlp([obs_dim + act_dim, *hidden, 1])
        self.q2 = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
