"""Episodic replay in preallocated arrays (no per-transition Python objects).

Whole episodes are stored in a ring of ``capacity`` slots; training samples windows of
consecutive steps from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ReplayError(ValueError):
    """Bad shapes or an unreadable replay file."""


class EpisodicReplay:
    """Arrays: ``obs (C, T+1, O)``, ``actions (C, T, A)``, ``goals (C, G)`` (float32)."""

    def __init__(self, capacity: int, steps: int, obs_dim: int, act_dim: int, goal_dim: int) -> None:
        self.capacity, self.steps = capacity, steps
        self.obs = np.zeros((capacity, steps + 1, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, steps, act_dim), dtype=np.float32)
        self.goals = np.zeros((capacity, goal_dim), dtype=np.float32)
        self.size = 0  # filled slots
        self.cursor = 0  # next slot to write

    def add(self, obs: np.ndarray, actions: np.ndarray, goals: np.ndarray) -> None:
        """Add N episodes: ``obs (N, T+1, O)``, ``actions (N, T, A)``, ``goals (N, G)``."""
        n = obs.shape[0]
        if obs.shape[1:] != self.obs.shape[1:] or actions.shape[1:] != self.actions.shape[1:] \
                or goals.shape[1:] != self.goals.shape[1:] or actions.shape[0] != n or goals.shape[0] != n:
            raise ReplayError(
                f"episode shapes {obs.shape}, {actions.shape}, {goals.shape} do not fit replay "
                f"{self.obs.shape[1:]}, {self.actions.shape[1:]}, {self.goals.shape[1:]}"
            )
        if not (np.isfinite(obs).all() and np.isfinite(actions).all() and np.isfinite(goals).all()):
            raise ReplayError("episodes contain NaN or Inf; refusing to store them")
        slots = (self.cursor + np.arange(n)) % self.capacity
        self.obs[slots], self.actions[slots], self.goals[slots] = obs, actions, goals
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int, length: int):
        """``batch`` windows of ``length`` actions, time-major:
        ``obs (length+1, B, O)``, ``actions (length, B, A)``, ``goals (B, G)``."""
        if self.size == 0:
            raise ReplayError("cannot sample from an empty replay")
        if not 0 < length <= self.steps:
            raise ReplayError(f"window length {length} must lie in [1, {self.steps}]")
        episodes = rng.integers(0, self.size, size=batch)
        starts = rng.integers(0, self.steps - length + 1, size=batch)
        t_obs = starts[None, :] + np.arange(length + 1)[:, None]  # (L+1, B)
        obs = self.obs[episodes[None, :], t_obs]
        actions = self.actions[episodes[None, :], t_obs[:-1]]
        return obs, actions, self.goals[episodes]

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, obs=self.obs[: self.size], actions=self.actions[: self.size],
                     goals=self.goals[: self.size], cursor=self.cursor)

    def load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                obs, actions, goals, cursor = data["obs"], data["actions"], data["goals"], int(data["cursor"])
        except (OSError, KeyError, ValueError) as exc:
            raise ReplayError(f"{path}: unreadable replay file ({exc})") from None
        self.size = 0
        self.cursor = 0
        self.add(obs, actions, goals)
        self.cursor = cursor % self.capacity
