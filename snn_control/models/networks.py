"""Prediction (forward) and policy (inverse) networks, spiking and non-spiking.

All share one interface, one control step per call, batch first:

- ``Predictor.step(obs (B, O), action (B, A), state) -> (next_obs (B, O), state)``;
  the network outputs the state change beyond an optional momentum prior, scaled per
  entry by ``delta_scale`` (see :class:`ForwardModel`), or with the kinematic prior
  (:mod:`.kinematics`) only the velocities' change and a position residual.
- ``Policy.step(obs (B, O), goal (B, G), state) -> (action (B, A), potential (B, A), state)``;
  ``action = tanh(potential)`` lies in [-1, 1].

``initial_state(batch, like)`` makes a zero state on ``like``'s device and dtype and
``detach_state`` cuts the graph between truncated BPTT windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..spiking import SpikingNet, Surrogate
from ..spiking.fast import FastSpikingNet
from .kinematics import KinematicPrior


def detach_state(state: Any) -> Any:
    if state is None:
        return None
    return state.detach()


class PredictorState(NamedTuple):
    """A forward model's state: its network's state and the previous observation
    ``(B, O)`` (None before the first step) for the momentum prior."""

    core: Any
    previous: torch.Tensor | None

    def detach(self) -> "PredictorState":
        return PredictorState(detach_state(self.core),
                              None if self.previous is None else self.previous.detach())


class ForwardModel(nn.Module):
    """Shared output head of every predictor:

        next = obs + alpha * (obs - previous) + delta_scale * (network_output + B action)

    With a kinematic prior (:mod:`.kinematics`) the network's scaled output feeds
    :meth:`KinematicPrior.next_obs` instead, and its errors are measured in
    ``typical_change`` units. ``alpha = sigmoid(momentum_logit)`` per entry is the momentum prior (off: 0): a
    position moves on by its last change, a velocity mostly does not. ``B`` (off: 0) is
    an optional learned linear action term, a direct path for the action's effect. The
    network only learns what these miss. ``calibrate`` fits alpha and ``delta_scale`` (the
    typical size of what is left) to data; both are saved with the weights.
    """

    def __init__(self, obs_dim: int, momentum_prior: bool, act_dim: int = 0, action_term: bool = False,
                 kinematics: dict[str, Any] | None = None) -> None:
        super().__init__()
        if kinematics is not None and momentum_prior:
            raise ValueError("model.kinematic_prior and model.momentum_prior exclude each other")
        self.register_buffer("delta_scale", torch.ones(obs_dim))
        self.kinematics = KinematicPrior(kinematics, obs_dim) if kinematics is not None else None
        if self.kinematics is not None:  # the loss's units, apart from the output's (kinematics)
            self.register_buffer("typical_change", torch.ones(obs_dim))
        self.momentum_logit = nn.Parameter(torch.zeros(obs_dim)) if momentum_prior else None
        self.action_term = nn.Linear(act_dim, obs_dim, bias=False) if action_term else None
        if self.action_term is not None:
            nn.init.zeros_(self.action_term.weight)

    @property
    def loss_scale(self) -> torch.Tensor:
        """Per entry, the typical size of a one-step change: the units of prediction errors."""
        return self.typical_change if self.kinematics is not None else self.delta_scale

    def core_initial_state(self, batch: int, like: torch.Tensor) -> Any:
        raise NotImplementedError

    def calibrate_inputs(self, features: np.ndarray) -> None:
        """Non-spiking predictors need no input calibration."""

    def core_step(self, x: torch.Tensor, core: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def fast(self):
        """Batch-1 path (:mod:`.inference`): the torch module without autograd."""
        from .inference import TorchPredictStep

        return TorchPredictStep(self)

    def initial_state(self, batch: int, like: torch.Tensor) -> PredictorState:
        return PredictorState(self.core_initial_state(batch, like), None)

    def step(self, obs, action, state: PredictorState):
        y, core = self.core_step(torch.cat([obs, action], dim=-1), state.core)
        if self.action_term is not None:
            y = y + self.action_term(action)
        if self.kinematics is not None:
            return self.kinematics.next_obs(obs, y * self.delta_scale), PredictorState(core, obs)
        nxt = obs + y * self.delta_scale
        if self.momentum_logit is not None and state.previous is not None:
            nxt = nxt + torch.sigmoid(self.momentum_logit) * (obs - state.previous)
        return nxt, PredictorState(core, obs)

    @torch.no_grad()
    def calibrate(self, episodes_obs: np.ndarray, episodes_actions: np.ndarray, inputs: bool = False) -> None:
        """Fit the prior and ``delta_scale`` to episodes ``obs (N, T+1, O)``,
        ``actions (N, T, A)``; with ``inputs``, also the spiking input gains."""
        if inputs:
            self.calibrate_inputs(np.concatenate([episodes_obs[:, :-1], episodes_actions], axis=-1))
        if self.kinematics is not None:
            scale, typical = self.kinematics.calibrate(episodes_obs)
            self.delta_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.typical_change.copy_(torch.as_tensor(typical, dtype=torch.float32))
            return
        delta = np.diff(episodes_obs.astype(np.float64), axis=1)
        now, before = delta[:, 1:].reshape(-1, delta.shape[-1]), delta[:, :-1].reshape(-1, delta.shape[-1])
        residual = now
        if self.momentum_logit is not None:
            alpha = (now * before).sum(0) / np.maximum((before * before).sum(0), 1e-12)
            alpha = np.clip(alpha, 0.02, 0.98)  # least squares, kept inside the sigmoid's range
            self.momentum_logit.copy_(torch.as_tensor(np.log(alpha / (1 - alpha)), dtype=torch.float32))
            residual = now - alpha * before
        self.delta_scale.copy_(torch.as_tensor(np.maximum(residual.std(0), 1e-4), dtype=torch.float32))


class SpikingPredictor(ForwardModel):
    """(obs, action) -> spiking layers (first recurrent) -> readout of the state change."""

    def __init__(self, obs_dim: int, act_dim: int, net_kwargs: dict[str, Any], layers: int,
                 momentum_prior: bool = False, action_term: bool = False,
                 kinematics: dict[str, Any] | None = None) -> None:
        super().__init__(obs_dim, momentum_prior, act_dim, action_term, kinematics)
        self.net = SpikingNet(
            obs_dim + act_dim, obs_dim, recurrent=[True] + [False] * (layers - 1), **net_kwargs
        )

    def core_initial_state(self, batch: int, like: torch.Tensor):
        return self.net.initial_state(batch, like)

    def core_step(self, x, core):
        return self.net.step(x, core)

    def fast(self):
        from .inference import SpikingPredictStep

        return SpikingPredictStep(self)

    def calibrate_inputs(self, features: np.ndarray) -> None:
        self.net.calibrate_input_gain(features)


def policy_input(obs, goal, goal_error: tuple[int, int] | None,
                 fine_error: tuple[tuple[int, int], float] | None = None):
    """A policy's input ``[obs, goal]``, or ``[obs, goal - obs[effector]]`` when
    ``goal_error`` is the effector's slice ``(start, stop)`` in the observation. With
    ``fine_error`` ``((start, stop), scale_m)`` it also holds ``tanh((goal - effector) /
    scale_m)`` per axis: the last centimetres at full scale, where the goal and the effector
    (each ~0.5 m) differ by a few per cent. Works on torch tensors and numpy arrays alike (the
    controller's fast path uses it too)."""
    torch_in = isinstance(obs, torch.Tensor)
    parts = [obs, goal - obs[..., goal_error[0]:goal_error[1]] if goal_error is not None else goal]
    if fine_error is not None:
        (start, stop), scale = fine_error
        parts.append((torch.tanh if torch_in else np.tanh)((goal - obs[..., start:stop]) / scale))
    return (torch.cat if torch_in else np.concatenate)(parts, -1)


@dataclass(frozen=True)
class GoalIntegral:
    """Integral action for a reach policy: it is shown the goal moved by ``gain`` x the leaky
    integral (time constant ``tau_s``, each axis within +-``limit_m``) of the effector's
    error, so a steady error that a steady load causes keeps moving the goal it aims at until
    the effector is where it should be. ``effector``: the effector's slice in the observation.
    With ``radius_m`` > 0 the error adds to the integral only within that distance of the goal
    (conditional integration): the large errors of a long reach do not wind it up. With
    ``closing_m_s`` > 0 it adds only while the distance to the goal is not shrinking faster
    than that: an arm still closing in (or swinging back after an overshoot) needs no
    correction yet, and what it would wind up then is what makes it ring; a load that holds
    the arm off stops its closing, and the integral acts. The state then carries the last
    distance beside the integral, as one more column."""

    gain: float  # 1/s: goal shift per metre-second of error
    tau_s: float
    limit_m: float
    period_s: float  # the control period the integral advances by each step
    effector: tuple[int, int]
    radius_m: float = 0.0
    closing_m_s: float = 0.0

    def shifted(self, obs, goal, state):
        """``(goal the policy sees, new state)``; ``state`` None at an episode's start. Works on
        torch tensors and numpy arrays alike (the controller's fast path uses it too)."""
        torch_in = isinstance(obs, torch.Tensor)
        error = goal - obs[..., self.effector[0]:self.effector[1]]
        if self.radius_m or self.closing_m_s:  # in masks only: no gradient through it
            distance = ((error**2).sum(-1, keepdims=True)) ** 0.5
            distance = distance.detach() if torch_in else distance
        integral, previous = state, None
        if self.closing_m_s and state is not None:
            integral, previous = state[..., :-1], state[..., -1:]
        if self.radius_m:  # a boolean mask multiplies as 0/1 in torch and numpy alike
            error = error * (distance < self.radius_m)
        if previous is not None:
            error = error * (previous - distance < self.closing_m_s * self.period_s)
        decay = math.exp(-self.period_s / self.tau_s)
        integral = error * self.period_s if integral is None else decay * integral + error * self.period_s
        integral = integral.clamp(-self.limit_m, self.limit_m) if torch_in else np.clip(integral, -self.limit_m, self.limit_m)
        if self.closing_m_s:
            state = torch.cat([integral, distance], -1) if torch_in else np.concatenate([integral, distance], -1)
        else:
            state = integral
        return goal + self.gain * integral, state


@dataclass(frozen=True)
class ActionDamping:
    """Viscous joint damping behind a policy: its action less ``gain`` x the joint velocities
    (``velocity``: their slice of the observation, one per action), kept within [-1, 1]. A
    spiking policy's own velocity feedback is quantised by its spikes; this part of the
    torque is not. It has no weights, so it can be added to a trained policy."""

    gain: float  # action units per unit of observed velocity
    velocity: tuple[int, int]

    def applied(self, action, obs):
        """Works on torch tensors and numpy arrays alike (the controller's fast path uses it too)."""
        damped = action - self.gain * obs[..., self.velocity[0]:self.velocity[1]]
        return damped.clamp(-1.0, 1.0) if isinstance(damped, torch.Tensor) else np.clip(damped, -1.0, 1.0)


class SpikingPolicy(nn.Module):
    """(obs, goal) -> spiking layers -> tanh of the readout potential. Feed-forward, or with
    ``recurrent`` the first layer feeds its spikes back; ``fine_error``: see
    :func:`policy_input`. With a :class:`GoalIntegral` the state carries the integral beside
    the network's; an :class:`ActionDamping` acts on the action."""

    def __init__(self, obs_dim: int, goal_dim: int, act_dim: int, net_kwargs: dict[str, Any], layers: int,
                 goal_error: tuple[int, int] | None = None, goal_integral: GoalIntegral | None = None,
                 recurrent: bool = False, fine_error: tuple[tuple[int, int], float] | None = None,
                 action_damping: ActionDamping | None = None) -> None:
        super().__init__()
        self.goal_error = goal_error
        self.goal_integral = goal_integral
        self.action_damping = action_damping
        self.fine_error = fine_error
        inputs = obs_dim + goal_dim * (2 if fine_error is not None else 1)
        self.net = SpikingNet(inputs, act_dim, recurrent=[recurrent] + [False] * (layers - 1), **net_kwargs)

    @torch.no_grad()
    def load_grown(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Weights of a smaller policy of this kind to go on from, one without this one's
        recurrent connection or fine-error inputs: what it lacks starts silent (the recurrent
        connection's output weights and the new inputs' weights at zero, their gains at one),
        so this policy first acts exactly as that one did."""
        own = self.state_dict()
        unexpected = sorted(set(state_dict) - set(own))
        if unexpected:
            raise RuntimeError(f"unexpected keys {unexpected}")
        for name, mine in own.items():
            theirs = state_dict.get(name)
            if theirs is None:
                if not name.startswith("net.layers.0.recurrent."):
                    raise RuntimeError(f"missing key {name}")
                if not name.endswith(".down.weight"):  # a low-rank W1 keeps its init: with W2 at 0 it still learns
                    mine.zero_()
            elif theirs.shape == mine.shape:
                mine.copy_(theirs)
            elif theirs.shape[:-1] == mine.shape[:-1] and theirs.shape[-1] < mine.shape[-1]:  # more inputs
                mine.fill_(1.0 if name == "net.input_gain" else 0.0)
                mine[..., :theirs.shape[-1]] = theirs
            else:
                raise RuntimeError(f"{name}: shape {tuple(theirs.shape)} does not fit {tuple(mine.shape)}")

    def initial_state(self, batch: int, like: torch.Tensor):
        state = self.net.initial_state(batch, like)
        return (state, None) if self.goal_integral is not None else state

    def step(self, obs, goal, state):
        if self.goal_integral is not None:
            state, integral = state
            goal, integral = self.goal_integral.shifted(obs, goal, integral)
        potential, state = self.net.step(policy_input(obs, goal, self.goal_error, self.fine_error), state)
        if self.goal_integral is not None:
            state = (state, integral)
        action = torch.tanh(potential)
        if self.action_damping is not None:
            action = self.action_damping.applied(action, obs)
        return action, potential, state

    def fast(self):
        """Batch-1 path (:mod:`.inference`): the compiled spiking network."""
        from .inference import CompiledPolicyStep

        net = FastSpikingNet(self.net)
        return CompiledPolicyStep(net, lambda x: np.tanh(net.step(x)), self.goal_error, fine_error=self.fine_error)

    def calibrate(self, episodes_obs: np.ndarray, goals: np.ndarray) -> None:
        """Input gains from observations ``(N, T+1, O)`` and goals ``(N, G)``."""
        goals = np.broadcast_to(goals[:, None, :], (*episodes_obs.shape[:2], goals.shape[-1]))
        self.net.calibrate_input_gain(policy_input(episodes_obs, goals, self.goal_error, self.fine_error))


class GRUPredictor(ForwardModel):
    """Baseline: GRU whose hidden state ``(B, H)`` is carried across control steps."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, momentum_prior: bool = False,
                 action_term: bool = False, kinematics: dict[str, Any] | None = None) -> None:
        super().__init__(obs_dim, momentum_prior, act_dim, action_term, kinematics)
        self.cell = nn.GRUCell(obs_dim + act_dim, hidden)
        self.out = nn.Linear(hidden, obs_dim)
        self.hidden = hidden

    def core_initial_state(self, batch: int, like: torch.Tensor):
        return like.new_zeros(batch, self.hidden)

    def core_step(self, x, core):
        core = self.cell(x, core)
        return self.out(core), core


class MLPPolicy(nn.Module):
    """Baseline: deterministic MLP (two hidden layers, ReLU), tanh output; stateless."""

    goal_integral = None  # integral action and damping are the spiking policy's
    action_damping = None

    def __init__(self, obs_dim: int, goal_dim: int, act_dim: int, hidden: int,
                 goal_error: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.goal_error = goal_error
        self.body = nn.Sequential(
            nn.Linear(obs_dim + goal_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, act_dim),
        )

    def initial_state(self, batch: int, like: torch.Tensor):
        return None

    def calibrate(self, episodes_obs: np.ndarray, goals: np.ndarray) -> None:
        """Non-spiking policies need no input calibration."""

    def step(self, obs, goal, state):
        potential = self.body(policy_input(obs, goal, self.goal_error))
        return torch.tanh(potential), potential, None

    def fast(self):
        from .inference import TorchPolicyStep

        return TorchPolicyStep(self)


def policy_timing(model_cfg) -> dict[str, Any]:
    """The spiking policy's substeps and readout time constants: its own where the config sets
    them (``policy_substeps``, ``policy_readout_tau_*``), else the ones both nets share."""
    return {"substeps": model_cfg.policy_substeps or model_cfg.substeps,
            "readout_tau_syn": model_cfg.policy_readout_tau_syn or model_cfg.readout_tau_syn,
            "readout_tau_mem": model_cfg.policy_readout_tau_mem or model_cfg.readout_tau_mem}


def match_readout_timing(policy: nn.Module, model_cfg) -> bool:
    """After weights were loaded into ``policy``: where its readout's fixed time constants
    (not trained) are not the config's, retime the readout to the config's, its steady gain
    kept (:meth:`.LeakyReadout.retime`), so that a policy trained with one readout goes on
    with another. True if it did. Trained time constants are the weights' own."""
    if not isinstance(policy, SpikingPolicy):
        return False
    readout = policy.net.readout
    if readout.log_tau_syn.requires_grad:
        return False
    timing = policy_timing(model_cfg)
    want = torch.tensor([timing["readout_tau_syn"], timing["readout_tau_mem"]])
    have = torch.stack([t.detach().float() for t in readout.time_constants()])
    if torch.allclose(have, want[:, None].expand_as(have), rtol=1e-5, atol=0.0):
        return False
    readout.retime(timing["readout_tau_syn"], timing["readout_tau_mem"])
    return True


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters (fixed time constants and buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def spiking_nets(module: nn.Module) -> list[SpikingNet]:
    return [m for m in module.modules() if isinstance(m, SpikingNet)]


def build_networks(model_cfg, obs_dim: int, act_dim: int, goal_dim: int,
                   kinematics: dict[str, Any] | None = None,
                   effector: tuple[int, int] | None = None,
                   control_period_s: float | None = None,
                   velocity: tuple[int, int] | None = None) -> tuple[nn.Module, nn.Module]:
    """Predictor and policy from one :class:`~snn_control.config.ModelConfig`; ``kinematics``
    (the task's layout, :mod:`.kinematics`) when ``model_cfg.kinematic_prior``, the
    effector's slice of the observation when the policy's options use it (``goal_error``,
    ``goal_integral_gain``, ``policy_fine_error_m``), and the joint velocities' slice for
    ``action_damping``."""
    if model_cfg.kinematic_prior and kinematics is None:
        raise ValueError("model.kinematic_prior needs the task's kinematic layout")
    if (model_cfg.goal_error or model_cfg.goal_integral_gain or model_cfg.policy_fine_error_m) and (
            effector is None or effector[1] - effector[0] != goal_dim):
        raise ValueError(f"model.goal_error needs the effector's slice of the observation (as do "
                         f"model.goal_integral_gain and model.policy_fine_error_m), "
                         f"{goal_dim} entries like the goal; got {effector}")
    kinematics = kinematics if model_cfg.kinematic_prior else None
    goal_error = tuple(effector) if model_cfg.goal_error else None
    integral = None
    if model_cfg.goal_integral_gain:
        if model_cfg.kind != "snn" or control_period_s is None:
            raise ValueError("model.goal_integral_gain: for a spiking policy, with the control period given")
        integral = GoalIntegral(model_cfg.goal_integral_gain, model_cfg.goal_integral_tau_s,
                                model_cfg.goal_integral_limit_m, control_period_s, tuple(effector),
                                model_cfg.goal_integral_radius_m, model_cfg.goal_integral_closing_m_s)
    damping = None
    if model_cfg.action_damping:
        if model_cfg.kind != "snn" or velocity is None or velocity[1] - velocity[0] != act_dim:
            raise ValueError(f"model.action_damping: for a spiking policy, with the joint velocities' slice "
                             f"of the observation ({act_dim} entries, one per action); got {velocity}")
        damping = ActionDamping(model_cfg.action_damping, tuple(velocity))
    if model_cfg.kind == "gru":
        return (
            GRUPredictor(obs_dim, act_dim, model_cfg.gru_hidden, model_cfg.momentum_prior,
                         model_cfg.action_term, kinematics),
            MLPPolicy(obs_dim, goal_dim, act_dim, model_cfg.mlp_hidden, goal_error),
        )

    def kwargs(**extra) -> dict[str, Any]:  # each net gets its own surrogate (slopes may differ)
        return dict(
            hidden=[model_cfg.hidden] * model_cfg.layers, rank=model_cfg.rank,
            substeps=model_cfg.substeps,
            surrogate=Surrogate(model_cfg.surrogate, model_cfg.slope), dt=model_cfg.dt,
            tau_mem=model_cfg.tau_mem, tau_syn=model_cfg.tau_syn, tau_ada=model_cfg.tau_ada,
            xi=model_cfg.xi if model_cfg.neuron == "alif" else 0.0,
            learn_tau=model_cfg.learn_tau, readout_tau_mem=model_cfg.readout_tau_mem,
            readout_tau_syn=model_cfg.readout_tau_syn, init_rate_hz=model_cfg.init_rate_hz, **extra,
        )

    return (
        SpikingPredictor(obs_dim, act_dim, kwargs(), model_cfg.layers, model_cfg.momentum_prior,
                         model_cfg.action_term, kinematics),
        SpikingPolicy(obs_dim, goal_dim, act_dim,
                      {**kwargs(readout_learn_tau=model_cfg.learn_tau and model_cfg.policy_readout_learn_tau),
                       **policy_timing(model_cfg)},
                      model_cfg.layers, goal_error, integral, model_cfg.policy_recurrent,
                      (tuple(effector), model_cfg.policy_fine_error_m) if model_cfg.policy_fine_error_m else None,
                      damping),
    )
