"""Classical reference controller: operational-space PD through the Jacobian transpose.

    command = J^T (Kp (goal - x) - Kd J dq) - D dq

in the env's action units (clipped to [-1, 1]). Gravity is compensated by the plant
itself (the Panda sim, like the real robot, adds g(q)); the reacher has none. It uses
the robot model (Jacobian, joint velocities) that the spiking controller never sees, so
it shows what a user would otherwise deploy on the same goals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .envs import BatchedReachEnv


@dataclass(frozen=True)
class PDGains:
    kp: float  # action units per unit effector error
    kd: float  # action units per unit effector velocity
    joint_damping: float  # action units per rad/s


# Tuned on training-distribution goals (never the held-out ones).
GAINS = {
    "reacher": PDGains(kp=16.0, kd=0.0, joint_damping=0.3),
    "panda": PDGains(kp=300.0, kd=40.0, joint_damping=2.0),
}


class OperationalSpacePD:
    def __init__(self, env: BatchedReachEnv, gains: PDGains | None = None) -> None:
        self.env = env
        self.gains = gains or GAINS[env.spec.task]
        self.action_scale = np.asarray(env.spec.action_scale, dtype=np.float64)

    def act(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        g = self.gains
        jac = self.env.effector_jacobians()  # (N, G, A)
        dq = self.env.joint_velocities()  # (N, A)
        error = goals - self.env.effector(obs)
        velocity = np.einsum("nga,na->ng", jac, dq)
        force = g.kp * error - g.kd * velocity
        command = np.einsum("nga,ng->na", jac, force) - g.joint_damping * dq
        return np.clip(command / self.action_scale, -1.0, 1.0)


def run_classical(env: BatchedReachEnv, starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Roll the reference controller; returns observations ``(N, T+1, O)``."""
    controller = OperationalSpacePD(env)
    obs = env.reset_to(starts, goals)
    log = [obs]
    for _ in range(env.spec.episode_steps):
        obs = env.step(controller.act(obs, goals))
        log.append(obs)
    return np.stack(log, axis=1)
