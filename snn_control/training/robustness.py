"""The robustness suite: held-out goals under a fixed list of named plants.

A real Panda is not the simulated one: its joints have friction that nothing compensates,
it may carry a payload its gravity model does not know, its links are not the URDF's,
commands arrive late and encoders are noisy. Every plant here starts from the same base,
the arm with its identified joint friction (Gaz et al. 2019, ``envs.plant``), and
changes one thing; the model's own settings (torque scale, episode length) are kept.
The classical reference runs through the same plants on the same goals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..classical import run_classical
from ..envs import EnvError, make_batch, nominal_plant
from ..models.checkpoint import load_model
from .collect import rollout

SUITE_BASE = {"joint_friction": "gaz2019", "joint_damping": [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]}
PLANTS: dict[str, dict[str, Any]] = {
    "nominal": {},
    "payload_1kg": {"hand_payload_kg": 1.0},
    "friction_x2": {"friction_scale": 2.0},
    "action_delay_2_steps": {"action_delay_steps": 2},
    "joint_noise": {"joint_noise": [0.0005, 0.005]},  # rad, rad/s: five times the training env's
    "link_masses_plus_20pct": {"link_mass_scale": 1.2},
    "wider_workspace": {"joint_range_fraction": 0.7},
}
KEYS = ("success_rate", "success_rate_2cm", "final_distance_median_m", "final_distance_p90_m", "held_last_1s_rate")


def _summary(per_plant: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(per_plant)
    out["mean"] = {k: float(np.mean([m[k] for m in per_plant.values()])) for k in KEYS}
    worst = min(per_plant, key=lambda name: (per_plant[name]["success_rate"], per_plant[name]["success_rate_2cm"]))
    out["worst"] = {"plant": worst, **per_plant[worst]}
    return out


def plant_env(env_config, plant: str, episodes: int):
    """``episodes`` copies of the suite's plant named ``plant``, from a model's env config."""
    return make_batch("panda", episodes, dataclasses.replace(nominal_plant(env_config), **SUITE_BASE, **PLANTS[plant]))


def plant_rollout(policy, config, plant: str, episodes: int, seed: int = 0):
    """``(episodes, goals, reach metrics)``: ``policy`` (of a model trained by ``config``)
    reaching the first ``episodes`` held-out goals on the suite's plant named ``plant`` (for
    studies of one plant)."""
    from .evaluate import heldout_tasks, reach_metrics

    env = plant_env(config.env, plant, episodes)
    try:
        starts, goals = heldout_tasks(env, episodes, seed)
        rolled = rollout(env, policy, starts, goals)
        return rolled, goals, reach_metrics(env, rolled.obs, goals)
    finally:
        env.close()


def robustness(model_dir: str | Path, episodes: int, seed: int = 0) -> dict[str, Any]:
    """The eval JSON's ``robustness`` object for a Panda model directory: per plant the
    five figures of :data:`KEYS`, their ``mean`` and the ``worst`` plant (lowest success
    within 5 cm), and the same for the classical reference under ``classical``."""
    from .evaluate import heldout_tasks, reach_metrics

    _, policy, spec, config = load_model(model_dir)
    if spec.task != "panda":
        raise EnvError(f"--suite robustness: plants of the Panda only, {model_dir} is a {spec.task!r} model")
    ours, classical = {}, {}
    for name in PLANTS:
        env = plant_env(config.env, name, episodes)
        try:
            starts, goals = heldout_tasks(env, episodes, seed)
            policy_metrics = reach_metrics(env, rollout(env, policy, starts, goals).obs, goals)
            classical_metrics = reach_metrics(env, run_classical(env, starts, goals), goals)
        finally:
            env.close()
        ours[name] = {k: policy_metrics[k] for k in KEYS}
        classical[name] = {k: classical_metrics[k] for k in KEYS}
    return {"plants": {name: {**SUITE_BASE, **change} for name, change in PLANTS.items()},
            **_summary(ours), "classical": _summary(classical)}
