"""Why a model misses on a plant of the robustness suite: the traces of its misses.

``python -m studies.suite_misses MODEL_DIR PLANT [--episodes 64] [--radius 0.05]`` lets the
model's policy reach the first held-out goals on one named plant of the suite
(``training.robustness.PLANTS``) and prints, for every goal it ends farther than
``--radius`` from, the effector's distance at the start, its closest, after each second
and at the end, and per joint the share of the last second with the action saturated
(|a| > 0.95: the policy asks for all the torque ``torque_scale`` lets it give). A miss
saturated the whole last second needs more torque than it may give; one still closing in
ran out of time; one neither is a steady error. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from snn_control.models.checkpoint import load_model
from snn_control.training.robustness import PLANTS, plant_rollout


def misses(model_dir: str, plant: str, episodes: int, radius: float = 0.05) -> dict[str, object]:
    _, policy, spec, config = load_model(model_dir)
    rolled, goals, _ = plant_rollout(policy, config, plant, episodes)
    eff = slice(*spec.effector)
    distance = np.linalg.norm(rolled.obs[:, :, eff] - goals[:, None], axis=-1)
    per_second = round(1.0 / config.env.control_period)
    last_second = np.abs(rolled.actions[:, -per_second:]) > 0.95
    rows = []
    for i in np.argsort(-distance[:, -1]):
        if distance[i, -1] <= radius:
            break
        rows.append({"goal": int(i), "start_m": round(float(distance[i, 0]), 3),
                     "closest_m": round(float(distance[i].min()), 3),
                     "each_second_m": np.round(distance[i, per_second::per_second], 3).tolist(),
                     "saturated_last_1s": np.round(last_second[i].mean(0), 2).tolist()})
    saturated = sum(max(r["saturated_last_1s"]) > 0.9 for r in rows)
    return {"model": model_dir, "plant": plant, "episodes": episodes, "radius_m": radius,
            "misses": len(rows), "saturated_misses": saturated, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("plant", choices=list(PLANTS))
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--radius", type=float, default=0.05)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(misses(args.model, args.plant, args.episodes, args.radius), indent=1))


if __name__ == "__main__":
    main()
