"""Planar 2-link reacher (the 2-D task of Huebotter et al. 2025), batched, in numpy.

Dynamics per control step (Euler, dt 0.02 s): ``omega += dt (20 u - 5 omega)``, clipped
to |omega| <= pi/2, then ``q += dt omega``. Links 0.5 m and 0.4 m. The hand position is
normalised by the reach 0.9 m. Success: |dx| and |dy| <= 0.05 (normalised), the
authors' criterion; ``distance`` reports the Euclidean normalised distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import BatchedReachEnv, ReachSpec

LINK_1, LINK_2 = 0.5, 0.4  # m
REACH = LINK_1 + LINK_2  # m, normalisation of hand positions
MAX_OMEGA = np.pi / 2  # rad/s
GAIN, DAMPING = 20.0, 5.0  # omega_dot = GAIN u - DAMPING omega
SUCCESS_PER_AXIS = 0.05  # normalised


@dataclass
class ReacherConfig:
    """Planar reacher options (defaults: Huebotter et al. 2025)."""

    episode_steps: int = 200
    dt: float = 0.02  # s, control period
    observe_velocity: bool = True  # append omega / (pi/2); Huebotter et al. 2025: 6-D, without


def hand_position(q: np.ndarray) -> np.ndarray:
    """``(..., 2)`` joint angles -> ``(..., 2)`` normalised hand position."""
    x = LINK_1 * np.cos(q[..., 0]) + LINK_2 * np.cos(q[..., 0] + q[..., 1])
    y = LINK_1 * np.sin(q[..., 0]) + LINK_2 * np.sin(q[..., 0] + q[..., 1])
    return np.stack([x, y], axis=-1) / REACH


class ReacherBatch(BatchedReachEnv):
    def __init__(self, num_envs: int, config: ReacherConfig | None = None) -> None:
        self.config = config or ReacherConfig()
        self.num_envs = num_envs
        names = ["hand_x", "hand_y", "sin_q1", "cos_q1", "sin_q2", "cos_q2"]
        if self.config.observe_velocity:
            names += ["omega1", "omega2"]
        self.spec = ReachSpec(
            task="reacher", obs_names=tuple(names), obs_dim=len(names), act_dim=2, goal_dim=2,
            effector=(0, 2), control_period_s=self.config.dt,
            episode_steps=self.config.episode_steps, success_radius=SUCCESS_PER_AXIS,
            distance_unit="normalised", joint_names=("joint1", "joint2"),
            action_scale=(1.0, 1.0),
        )
        self.q = np.zeros((num_envs, 2))
        self.omega = np.zeros((num_envs, 2))

    def sample_tasks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.uniform(-np.pi, np.pi, size=(n, 2))
        goal_q = rng.uniform(-np.pi, np.pi, size=(n, 2))
        return starts, hand_position(goal_q)

    def reset_to(self, starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
        self.q = np.array(starts, dtype=np.float64).reshape(self.num_envs, 2)
        self.omega = np.zeros((self.num_envs, 2))
        return self.observe()

    def observe(self) -> np.ndarray:
        parts = [hand_position(self.q), np.sin(self.q[:, :1]), np.cos(self.q[:, :1]),
                 np.sin(self.q[:, 1:]), np.cos(self.q[:, 1:])]
        if self.config.observe_velocity:
            parts.append(self.omega / MAX_OMEGA)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> np.ndarray:
        u = self.check_actions(actions)
        dt = self.config.dt
        self.omega = np.clip(self.omega + dt * (GAIN * u - DAMPING * self.omega), -MAX_OMEGA, MAX_OMEGA)
        self.q = self.q + dt * self.omega
        return self.observe()

    def success(self, obs: np.ndarray, goals: np.ndarray, radius: float | None = None) -> np.ndarray:
        r = SUCCESS_PER_AXIS if radius is None else radius
        return np.all(np.abs(self.effector(obs) - goals) <= r, axis=-1)

    def effector_jacobians(self) -> np.ndarray:
        q1, q12 = self.q[:, 0], self.q[:, 0] + self.q[:, 1]
        jac = np.empty((self.num_envs, 2, 2))
        jac[:, 0, 0] = -LINK_1 * np.sin(q1) - LINK_2 * np.sin(q12)
        jac[:, 0, 1] = -LINK_2 * np.sin(q12)
        jac[:, 1, 0] = LINK_1 * np.cos(q1) + LINK_2 * np.cos(q12)
        jac[:, 1, 1] = LINK_2 * np.cos(q12)
        return jac / REACH

    def joint_velocities(self) -> np.ndarray:
        return self.omega.copy()
