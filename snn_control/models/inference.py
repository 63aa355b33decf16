"""Batch-1 inference: a trained policy acts and a trained forward model predicts one control
step at a time on numpy vectors, as the control loop runs them.

Each network family brings its own fast path through ``fast()`` (the protocol below), so no
caller asks which family or algorithm a model is: spiking networks run on the compiled path
of :mod:`snn_control.spiking.fast` (a TD3 spiking actor on :mod:`.fast_actor`); the
non-spiking baselines (GRU, MLP) run their torch modules without autograd. Each keeps its
own state; ``reset()`` starts a new episode (or follows a model swap).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..spiking.fast import FastSpikingNet


class PolicyStep(Protocol):
    """A family's batch-1 policy: ``act(obs (O,), goal (G,)) -> action (A,)`` in [-1, 1]."""

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def firing_rates_hz(self) -> np.ndarray: ...


class PredictStep(Protocol):
    """A family's batch-1 forward model: ``predict(obs (O,), action (A,)) -> next obs (O,)``."""

    def predict(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def firing_rates_hz(self) -> np.ndarray: ...


class FastPolicy:
    """Any trained policy, one control step at a time. Integral action and damping (a
    policy's ``goal_integral`` and ``action_damping``) run here, in float64, as the policy
    ran them in training."""

    def __init__(self, policy: nn.Module) -> None:
        self._step: PolicyStep = policy.fast()
        self._integral_rule = policy.goal_integral
        self._damping = policy.action_damping
        self._integral = None

    def reset(self) -> None:
        self._integral = None
        self._step.reset()

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        obs64 = np.asarray(obs, np.float64)
        if self._integral_rule is not None:
            goal, self._integral = self._integral_rule.shifted(obs64, np.asarray(goal, np.float64), self._integral)
        action = self._step.act(obs, goal)
        return action if self._damping is None else self._damping.applied(action, obs64)

    def firing_rates_hz(self) -> np.ndarray:
        """Mean rate per spiking layer since reset (empty for a non-spiking policy)."""
        return self._step.firing_rates_hz()

    @property
    def compiled(self):
        """The compiled spiking network (its ``spikes`` and ``spike_counts`` for benchmarks
        and energy estimates), or None for a non-spiking policy."""
        return self._step.compiled


class FastPredictor:
    """Any trained forward model, one control step at a time."""

    def __init__(self, predictor: nn.Module) -> None:
        self._step: PredictStep = predictor.fast()

    def reset(self) -> None:
        self._step.reset()

    def predict(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        return self._step.predict(obs, action)

    def firing_rates_hz(self) -> np.ndarray:
        return self._step.firing_rates_hz()

    @property
    def compiled(self):
        """The compiled spiking network, or None for a non-spiking forward model."""
        return self._step.compiled


class CompiledPolicyStep:
    """A spiking policy on its compiled path: ``compiled`` (a FastSpikingNet, or a TD3
    actor's FastSpikingActor) keeps the state, ``run`` maps the policy input to the action.
    ``float64``: the input is formed in float64 (the TD3 actor's path was checked that way).
    ``goal_error`` and ``fine_error``: as :func:`~.networks.policy_input` takes them."""

    def __init__(self, compiled, run, goal_error: tuple[int, int] | None, float64: bool = False,
                 fine_error: tuple[tuple[int, int], float] | None = None) -> None:
        from .networks import policy_input

        self.compiled, self._run, self._input = compiled, run, policy_input
        self._goal_error, self._fine_error, self._float64 = goal_error, fine_error, float64

    def reset(self) -> None:
        self.compiled.reset()

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        if self._float64:
            obs, goal = np.asarray(obs, np.float64), np.asarray(goal, np.float64)
        return self._run(self._input(obs, goal, self._goal_error, self._fine_error))

    def firing_rates_hz(self) -> np.ndarray:
        return self.compiled.firing_rates_hz()


class _TorchStep:
    """A non-spiking network run by its own torch ``step`` without autograd."""

    compiled = None

    def __init__(self, module: nn.Module) -> None:
        self._module = module.eval()
        self.reset()

    def reset(self) -> None:
        self._state = self._module.initial_state(1, torch.zeros(1))

    def firing_rates_hz(self) -> np.ndarray:
        return np.zeros(0)


class TorchPolicyStep(_TorchStep):
    """A non-spiking policy (MLP, an MLP actor)."""

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action, _, self._state = self._module.step(_row(obs), _row(goal), self._state)
        return action[0].double().numpy()


class SpikingPredictStep:
    """A :class:`~.networks.SpikingPredictor` on the compiled spiking path, with its
    predictor head (delta scale, momentum prior, action term, kinematic prior) in float64."""

    def __init__(self, predictor) -> None:
        self._net = self.compiled = FastSpikingNet(predictor.net)
        self._kinematics = predictor.kinematics
        with torch.no_grad():
            self._scale = predictor.delta_scale.double().numpy().copy()
            self._alpha = (None if predictor.momentum_logit is None
                           else torch.sigmoid(predictor.momentum_logit).double().numpy().copy())
            term = predictor.action_term
            self._action_matrix = None if term is None else term.weight.double().numpy().copy()
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None
        self._net.reset()

    def predict(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        y = self._net.step(np.concatenate([obs, action]))
        if self._action_matrix is not None:
            y = y + self._action_matrix @ action
        if self._kinematics is not None:
            return self._kinematics.next_obs(obs, y * self._scale)
        nxt = obs + y * self._scale
        if self._alpha is not None and self._previous is not None:
            nxt = nxt + self._alpha * (obs - self._previous)
        self._previous = obs
        return nxt

    def firing_rates_hz(self) -> np.ndarray:
        return self._net.firing_rates_hz()


class TorchPredictStep(_TorchStep):
    """A non-spiking forward model (GRU)."""

    def predict(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            nxt, self._state = self._module.step(_row(np.asarray(obs, np.float64)), _row(action), self._state)
        return nxt[0].double().numpy()


def _row(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))[None]
