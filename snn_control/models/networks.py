"""Prediction (forward) and policy (inverse) networks, spiking and non-spiking.

All share one interface, one control step per call, batch first:

- ``Predictor.step(obs (B, O), action (B, A), state) -> (next_obs (B, O), state)``;
  the network outputs the state change, scaled per entry by ``delta_scale`` (a buffer
  fitted to the data), and ``next_obs = obs + change``.
- ``Policy.step(obs (B, O), goal (B, G), state) -> (action (B, A), potential (B, A), state)``;
  ``action = tanh(potential)`` lies in [-1, 1].

``initial_state(batch, like)`` makes a zero state on ``like``'s device and dtype and
``detach_state`` cuts the graph between truncated BPTT windows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..spiking import SpikingNet, Surrogate


def detach_state(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return state.detach()


class SpikingPredictor(nn.Module):
    """(obs, action) -> spiking layers (first recurrent) -> readout of the state change."""

    def __init__(self, obs_dim: int, act_dim: int, net_kwargs: dict[str, Any], layers: int) -> None:
        super().__init__()
        self.net = SpikingNet(
            obs_dim + act_dim, obs_dim, recurrent=[True] + [False] * (layers - 1), **net_kwargs
        )
        self.register_buffer("delta_scale", torch.ones(obs_dim))

    def initial_state(self, batch: int, like: torch.Tensor):
        return self.net.initial_state(batch, like)

    def step(self, obs, action, state):
        y, state = self.net.step(torch.cat([obs, action], dim=-1), state)
        return obs + y * self.delta_scale, state


class SpikingPolicy(nn.Module):
    """(obs, goal) -> feed-forward spiking layers -> tanh of the readout potential."""

    def __init__(self, obs_dim: int, goal_dim: int, act_dim: int, net_kwargs: dict[str, Any], layers: int) -> None:
        super().__init__()
        self.net = SpikingNet(obs_dim + goal_dim, act_dim, recurrent=[False] * layers, **net_kwargs)

    def initial_state(self, batch: int, like: torch.Tensor):
        return self.net.initial_state(batch, like)

    def step(self, obs, goal, state):
        potential, state = self.net.step(torch.cat([obs, goal], dim=-1), state)
        return torch.tanh(potential), potential, state


class GRUPredictor(nn.Module):
    """Baseline: GRU whose hidden state ``(B, H)`` is carried across control steps."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(obs_dim + act_dim, hidden)
        self.out = nn.Linear(hidden, obs_dim)
        self.hidden = hidden
        self.register_buffer("delta_scale", torch.ones(obs_dim))

    def initial_state(self, batch: int, like: torch.Tensor):
        return like.new_zeros(batch, self.hidden)

    def step(self, obs, action, state):
        state = self.cell(torch.cat([obs, action], dim=-1), state)
        return obs + self.out(state) * self.delta_scale, state


class MLPPolicy(nn.Module):
    """Baseline: deterministic MLP (two hidden layers, ReLU), tanh output; stateless."""

    def __init__(self, obs_dim: int, goal_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(obs_dim + goal_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, act_dim),
        )

    def initial_state(self, batch: int, like: torch.Tensor):
        return None

    def step(self, obs, goal, state):
        potential = self.body(torch.cat([obs, goal], dim=-1))
        return torch.tanh(potential), potential, None


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters (fixed time constants and buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def spiking_nets(module: nn.Module) -> list[SpikingNet]:
    return [m for m in module.modules() if isinstance(m, SpikingNet)]


def build_networks(model_cfg, obs_dim: int, act_dim: int, goal_dim: int) -> tuple[nn.Module, nn.Module]:
    """Predictor and policy from one :class:`~snn_control.config.ModelConfig`."""
    if model_cfg.kind == "gru":
        return (
            GRUPredictor(obs_dim, act_dim, model_cfg.gru_hidden),
            MLPPolicy(obs_dim, goal_dim, act_dim, model_cfg.mlp_hidden),
        )

    def kwargs() -> dict[str, Any]:  # each net gets its own surrogate (slopes may differ)
        return dict(
            hidden=[model_cfg.hidden] * model_cfg.layers, rank=model_cfg.rank,
            substeps=model_cfg.substeps,
            surrogate=Surrogate(model_cfg.surrogate, model_cfg.slope), dt=model_cfg.dt,
            tau_mem=model_cfg.tau_mem, tau_syn=model_cfg.tau_syn, tau_ada=model_cfg.tau_ada,
            xi=model_cfg.xi if model_cfg.neuron == "alif" else 0.0,
            learn_tau=model_cfg.learn_tau, readout_tau_mem=model_cfg.readout_tau_mem,
            readout_tau_syn=model_cfg.readout_tau_syn, init_rate_hz=model_cfg.init_rate_hz,
        )

    return (
        SpikingPredictor(obs_dim, act_dim, kwargs(), model_cfg.layers),
        SpikingPolicy(obs_dim, goal_dim, act_dim, kwargs(), model_cfg.layers),
    )
