"""Reach environments: planar 2-link reacher and PyBullet Panda. Knows nothing of networks."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import BatchedReachEnv, EnvError, ReachSpec
from .gym_env import ReachEnv
from .reacher import ReacherBatch, ReacherConfig

TASKS = ("reacher", "panda", "gym")  # gym: a gymnasium task, TD3 only (gym_task)


def env_config_class(task: str) -> type:
    if task == "reacher":
        return ReacherConfig
    if task == "panda":
        from .panda import PandaConfig  # imports pybullet only when needed

        return PandaConfig
    if task == "gym":
        from .gym_task import GymTaskConfig

        return GymTaskConfig
    raise EnvError(f"unknown task {task!r}; choose one of {TASKS}")


def make_batch(task: str, num_envs: int, config: Any = None, workers: int = 1,
               first_copy: int = 0) -> BatchedReachEnv:
    """``num_envs`` copies of ``task``; ``workers`` > 1 splits them over that many processes.
    ``first_copy``: the global index of the first copy (a worker's slice of a batch)."""
    if workers > 1:
        from .parallel import ParallelBatch

        return ParallelBatch(task, num_envs, config, min(workers, num_envs))
    if task == "reacher":
        return ReacherBatch(num_envs, config)
    if task == "panda":
        from .panda import PandaBatch

        return PandaBatch(num_envs, config, first_copy)
    if task == "gym":
        raise EnvError("task 'gym' is a single gymnasium env for TD3 (envs.gym_task), not a batched reach task")
    raise EnvError(f"unknown task {task!r}; choose one of {TASKS}")


def kinematic_layout(task: str, config: Any) -> dict:
    """The task's known kinematics for a forward model's prior (Panda only)."""
    if task != "panda":
        raise EnvError(f"model.kinematic_prior: task {task!r} has no kinematic layout (only 'panda')")
    from .panda import kinematic_layout as panda_layout

    return panda_layout(config)


def nominal_plant(config: Any) -> Any:
    """``config`` without per-episode plant randomisation (a training-only setting): the
    fixed plant it names, as evaluation and validation use it."""
    if config is None or not hasattr(config, "randomize"):
        return config
    from .plant import PlantRandomization

    return dataclasses.replace(config, randomize=PlantRandomization())


def make_gym_env(task: str, config: Any = None) -> ReachEnv:
    return ReachEnv(lambda n: make_batch(task, n, config))


__all__ = ["BatchedReachEnv", "EnvError", "ReachEnv", "ReachSpec", "TASKS", "kinematic_layout", "make_batch",
           "make_gym_env", "env_config_class", "nominal_plant"]
