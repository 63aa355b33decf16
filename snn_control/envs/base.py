"""What every batched reach environment offers the trainer, evaluator and controllers.

A batched env steps ``num_envs`` independent copies of a task in lock step. Observations
are ``(N, obs_dim)`` float32 arrays, actions ``(N, act_dim)`` in [-1, 1], goals
``(N, goal_dim)`` in the units of the effector slice of the observation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


class EnvError(ValueError):
    """Bad input to an environment (shapes, non-finite values, unknown options)."""


@dataclass(frozen=True)
class ReachSpec:
    """Static facts of a task, shared by env, models and checkpoints (the I/O spec)."""

    task: str
    obs_names: tuple[str, ...]
    obs_dim: int
    act_dim: int
    goal_dim: int
    effector: tuple[int, int]  # obs[..., a:b] is the effector position, same units as the goal
    control_period_s: float
    episode_steps: int
    success_radius: float  # the task's own success criterion (see ``success``)
    distance_unit: str  # "m" or "normalised"
    joint_names: tuple[str, ...]
    action_scale: tuple[float, ...]  # N m (or model units) per unit action


def velocity_indices(obs_names) -> list[int]:
    """Positions of the joint velocities in an observation (named ``dq*`` or ``omega*``)."""
    return [i for i, name in enumerate(obs_names) if name.startswith(("dq", "omega"))]


class BatchedReachEnv(abc.ABC):
    spec: ReachSpec
    num_envs: int

    @abc.abstractmethod
    def sample_tasks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (start configuration, goal) pairs; goals are reachable by construction."""

    @abc.abstractmethod
    def reset_to(self, starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Put every copy at ``starts`` with ``goals``; returns the observation ``(N, obs)``."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> np.ndarray:
        """Apply ``actions`` ``(N, act)`` for one control period; returns the observation."""

    def reset(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        starts, goals = self.sample_tasks(rng, self.num_envs)
        return self.reset_to(starts, goals), goals

    def check_observation(self, obs: np.ndarray) -> np.ndarray:
        """Refuse a non-finite observation (a diverged simulation), naming entry and copy."""
        bad = ~np.isfinite(obs)
        if bad.any():
            env, column = np.argwhere(bad)[0]
            raise EnvError(f"{self.spec.task}: copy {env} produced a non-finite observation "
                           f"{self.spec.obs_names[column]!r} = {obs[env, column]}")
        return obs

    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.spec.act_dim):
            raise EnvError(
                f"{self.spec.task}: actions must have shape {(self.num_envs, self.spec.act_dim)}, "
                f"got {actions.shape}"
            )
        if not np.all(np.isfinite(actions)):
            raise EnvError(f"{self.spec.task}: actions contain NaN or Inf")
        return np.clip(actions, -1.0, 1.0)

    def effector(self, obs: np.ndarray) -> np.ndarray:
        a, b = self.spec.effector
        return obs[..., a:b]

    def distance(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Euclidean effector-to-goal distance in ``spec.distance_unit``."""
        return np.linalg.norm(self.effector(obs) - goals, axis=-1)

    def success(self, obs: np.ndarray, goals: np.ndarray, radius: float | None = None) -> np.ndarray:
        """Within ``radius`` (default: the task's criterion) of the goal."""
        return self.distance(obs, goals) <= (self.spec.success_radius if radius is None else radius)

    @abc.abstractmethod
    def effector_jacobians(self) -> np.ndarray:
        """``(N, goal_dim, act_dim)``: d effector / d actuated joint at the current state."""

    @abc.abstractmethod
    def joint_velocities(self) -> np.ndarray:
        """``(N, act_dim)`` actuated joint velocities (rad/s)."""

    def close(self) -> None:
        """Release simulator resources (no-op for analytic envs)."""
