"""Roll a policy (or smooth random torques) in a batched env and return whole episodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..envs import BatchedReachEnv


@dataclass
class Episodes:
    """``obs (N, T+1, O)``, ``actions (N, T, A)``, ``goals (N, G)``, all float32."""

    obs: np.ndarray
    actions: np.ndarray
    goals: np.ndarray


def smooth_random_actions(rng: np.random.Generator, n: int, steps: int, act_dim: int,
                          correlation: float = 0.9, scale: float = 0.6) -> np.ndarray:
    """AR(1) noise ``a_t = rho a_{t-1} + sqrt(1 - rho^2) scale eps``, clipped to [-1, 1]:
    smooth enough to move the arm, varied enough to teach the predictor."""
    out = np.empty((steps, n, act_dim))
    a = rng.normal(0.0, scale, size=(n, act_dim))
    for t in range(steps):
        a = correlation * a + np.sqrt(1 - correlation**2) * rng.normal(0.0, scale, size=(n, act_dim))
        out[t] = a
    return np.clip(out, -1.0, 1.0)


@torch.no_grad()
def rollout(
    env: BatchedReachEnv,
    policy: nn.Module | None,
    starts: np.ndarray,
    goals: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    noise: float = 0.0,
    random_actions: bool = False,
    velocity_feedback: float = 0.0,
    steps: int | None = None,
) -> Episodes:
    """One episode in each copy of ``env`` from ``starts`` towards ``goals``.

    ``policy`` acts unless ``random_actions``: then smooth random actions minus
    ``velocity_feedback`` x joint velocity (rad/s). ``noise`` adds Gaussian exploration.
    """
    steps = steps or env.spec.episode_steps
    n = env.num_envs
    obs = env.check_observation(env.reset_to(starts, goals))
    obs_log = np.empty((n, steps + 1, env.spec.obs_dim), dtype=np.float32)
    act_log = np.empty((n, steps, env.spec.act_dim), dtype=np.float32)
    obs_log[:, 0] = obs
    goal_t = torch.as_tensor(goals, dtype=torch.float32)
    if random_actions:
        assert rng is not None
        planned = smooth_random_actions(rng, n, steps, env.spec.act_dim)
    else:
        state = policy.initial_state(n, goal_t)
    for t in range(steps):
        if random_actions:
            action = np.clip(planned[t] - velocity_feedback * env.joint_velocities(), -1.0, 1.0)
        else:
            a, _, state = policy.step(torch.as_tensor(obs), goal_t, state)
            action = a.numpy().astype(np.float64)
            if noise > 0:
                action = np.clip(action + rng.normal(0.0, noise, size=action.shape), -1.0, 1.0)
        obs = env.check_observation(env.step(action))
        act_log[:, t] = action
        obs_log[:, t + 1] = obs
    return Episodes(obs_log, act_log, np.asarray(goals, dtype=np.float32))


def actions_at_rest(policy, states: torch.Tensor, effector: slice, velocity: list[int],
                    warmup: int, steps: int) -> torch.Tensor:
    """``(steps, B, A)``: the policy's actions with the arm at rest at its goal, ``states (B, O)``
    with zero joint velocity and the goal where the effector is, the input frozen, after
    ``warmup`` steps without gradient. Gravity is compensated (Panda) or absent (reacher), so
    zero torque is the right answer there."""
    x = states.clone()
    x[:, velocity] = 0.0
    goal = x[:, effector]
    state = policy.initial_state(x.shape[0], x)
    with torch.no_grad():
        for _ in range(warmup):
            _, _, state = policy.step(x, goal, state)
    actions = []
    for _ in range(steps):
        action, _, state = policy.step(x, goal, state)
        actions.append(action)
    return torch.stack(actions)
