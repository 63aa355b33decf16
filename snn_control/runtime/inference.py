"""Batch-1 inference of a trained predictor and policy, as the control loop runs them.

:func:`fast_policy` and :func:`fast_predictor` wrap a trained module for stepping one
control step at a time on numpy vectors. Spiking networks run on the compiled path of
:mod:`snn_control.spiking.fast` (a TD3 model's spiking actor on
:mod:`snn_control.rl.fast_actor`); the non-spiking baselines (GRU, MLP) run their torch
modules without autograd. Both keep their own state; ``reset()`` starts a new episode
(or follows a model swap).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.networks import ForwardModel, SpikingPolicy, SpikingPredictor, policy_input
from ..spiking.fast import FastSpikingNet


class FastPolicy:
    """``act(obs (O,), goal (G,)) -> action (A,)`` in [-1, 1], one control step. A TD3
    model's spiking actor runs on its own compiled path (:mod:`snn_control.rl.fast_actor`)."""

    def __init__(self, policy: nn.Module) -> None:
        from ..rl.fast_actor import FastSpikingActor
        from ..rl.networks import ActorPolicy, SpikingActor

        self.spiking = isinstance(policy, SpikingPolicy)
        self._goal_error = getattr(policy, "goal_error", None)
        self._integral_rule = getattr(policy, "goal_integral", None)  # integral action, as in training
        self._integral = None
        self._net = FastSpikingNet(policy.net) if self.spiking else None
        self._actor = (FastSpikingActor(policy.actor) if isinstance(policy, ActorPolicy)
                       and isinstance(policy.actor, SpikingActor) else None)
        self._module = None if self.spiking or self._actor is not None else policy.eval()
        self._state = None
        self.reset()

    def reset(self) -> None:
        self._integral = None
        if self._net is not None:
            self._net.reset()
        elif self._actor is not None:
            self._actor.reset()
        else:
            self._state = self._module.initial_state(1, torch.zeros(1))

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        if self._integral_rule is not None:
            goal, self._integral = self._integral_rule.shifted(np.asarray(obs, np.float64), np.asarray(goal, np.float64),
                                                               self._integral)
        if self._net is not None:
            return np.tanh(self._net.step(policy_input(obs, goal, self._goal_error)))
        if self._actor is not None:
            return self._actor.act(policy_input(np.asarray(obs, np.float64), np.asarray(goal, np.float64),
                                                self._goal_error))
        with torch.no_grad():
            action, _, self._state = self._module.step(_row(obs), _row(goal), self._state)
        return action[0].double().numpy()

    def firing_rates_hz(self) -> np.ndarray:
        """Mean rate per spiking layer since reset (empty for a non-spiking policy)."""
        if self._actor is not None:
            return self._actor.firing_rates_hz()
        return self._net.firing_rates_hz() if self._net is not None else np.zeros(0)


class FastPredictor:
    """``predict(obs (O,), action (A,)) -> next obs (O,)``, one control step."""

    def __init__(self, predictor: ForwardModel) -> None:
        self.spiking = isinstance(predictor, SpikingPredictor)
        self._net = FastSpikingNet(predictor.net) if self.spiking else None
        self._module = predictor.eval()
        with torch.no_grad():
            self._scale = predictor.delta_scale.double().numpy().copy()
            self._alpha = (None if predictor.momentum_logit is None
                           else torch.sigmoid(predictor.momentum_logit).double().numpy().copy())
            term = predictor.action_term
            self._action_matrix = None if term is None else term.weight.double().numpy().copy()
        self._previous: np.ndarray | None = None
        self._state = None
        self.reset()

    def reset(self) -> None:
        self._previous = None
        if self._net is not None:
            self._net.reset()
        else:
            self._state = self._module.initial_state(1, torch.zeros(1))

    def predict(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if self._net is None:
            with torch.no_grad():
                nxt, self._state = self._module.step(_row(obs), _row(action), self._state)
            return nxt[0].double().numpy()
        y = self._net.step(np.concatenate([obs, action]))
        if self._action_matrix is not None:
            y = y + self._action_matrix @ action
        if self._module.kinematics is not None:
            return self._module.kinematics.next_obs(obs, y * self._scale)
        nxt = obs + y * self._scale
        if self._alpha is not None and self._previous is not None:
            nxt = nxt + self._alpha * (obs - self._previous)
        self._previous = obs
        return nxt

    def firing_rates_hz(self) -> np.ndarray:
        return self._net.firing_rates_hz() if self._net is not None else np.zeros(0)


def _row(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))[None]
