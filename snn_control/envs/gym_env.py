"""Gymnasium view of a batched reach env with one copy.

Observation: the task observation followed by the goal. Reward: minus the effector
distance to the goal. Episodes never terminate early; they are truncated after
``episode_steps``. ``info`` carries the distance and whether the task criterion holds.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from .base import BatchedReachEnv


class ReachEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, make_batch: Callable[[int], BatchedReachEnv]) -> None:
        self.batch = make_batch(1)
        spec = self.batch.spec
        size = spec.obs_dim + spec.goal_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(spec.act_dim,), dtype=np.float32)
        self._goal = np.zeros((1, spec.goal_dim))
        self._obs = np.zeros((1, spec.obs_dim), dtype=np.float32)
        self._steps = 0

    def _observation(self) -> np.ndarray:
        return np.concatenate([self._obs[0], self._goal[0]]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {
            "distance": float(self.batch.distance(self._obs, self._goal)[0]),
            "is_success": bool(self.batch.success(self._obs, self._goal)[0]),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        starts, goals = self.batch.sample_tasks(self.np_random, 1)
        self._goal = goals
        self._obs = self.batch.reset_to(starts, goals)
        self._steps = 0
        return self._observation(), self._info()

    def step(self, action):
        self._obs = self.batch.step(np.asarray(action, dtype=np.float64).reshape(1, -1))
        self._steps += 1
        info = self._info()
        truncated = self._steps >= self.batch.spec.episode_steps
        return self._observation(), -info["distance"], False, truncated, info

    def close(self) -> None:
        self.batch.close()
