"""A standard gymnasium control task (for example MuJoCo ``InvertedDoublePendulum-v5``),
trained model-free only (``task: gym``, ``algorithm: td3``). Xu et al. 2025 (Proxy Target)
report their proxy target on these tasks; running them here lets users check our TD3 against
their numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GymTaskConfig:
    env_id: str = "InvertedDoublePendulum-v5"  # any gymnasium id with Box observations and actions
    max_episode_steps: int | None = None  # None: the task's registered limit (1000 for the pendulum)


def make_gym_task(config: GymTaskConfig):
    """The gymnasium env, its action space checked to be a bounded Box (the actor's tanh
    output in [-1, 1] is rescaled to it)."""
    import gymnasium as gym
    import numpy as np

    from .base import EnvError

    try:
        env = gym.make(config.env_id, max_episode_steps=config.max_episode_steps)
    except gym.error.Error as exc:
        raise EnvError(f"gymnasium task {config.env_id!r} cannot be made: {exc}") from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
        env.close()
        raise EnvError(f"gymnasium task {config.env_id!r}: needs a bounded Box action space, has {space}")
    return env
