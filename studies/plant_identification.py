"""Does a forward model tell plants apart? Its steady one-step error on the joint velocities.

``python -m studies.plant_identification MODEL_DIR [MODEL_DIR ...] [--episodes 16]`` lets each
model's policy reach the first held-out goals on three plants of the robustness suite
(nominal, a 1 kg payload, link masses +20 %), runs its forward model along each episode fed
the real states, and prints per joint the mean error (measured minus predicted velocity, in
units of its typical one-step change) over the second half of the episodes. A model that
learned which plant it is on from the recent history in its recurrent state shows no steady
error under a load; one that learned the average arm shows the load as a bias. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from snn_control.models.checkpoint import load_model
from snn_control.training.robustness import plant_rollout


@torch.no_grad()
def velocity_bias(model_dir: str, plant: str, episodes: int) -> dict[str, object]:
    predictor, policy, spec, config = load_model(model_dir)
    if predictor is None:
        raise SystemExit(f"{model_dir}: no forward model (a TD3 model)")
    velocity = [i for i, name in enumerate(spec.obs_names) if name.startswith("dq")]
    rolled, _, _ = plant_rollout(policy, config, plant, episodes)
    obs = torch.as_tensor(rolled.obs).transpose(0, 1)
    actions = torch.as_tensor(rolled.actions).transpose(0, 1)
    state, errors = predictor.initial_state(episodes, obs[0]), []
    for k in range(actions.shape[0]):
        predicted, state = predictor.step(obs[k], actions[k], state)
        errors.append(((obs[k + 1] - predicted) / predictor.loss_scale)[:, velocity])
    late = torch.stack(errors)[len(errors) // 2:]
    bias = late.mean((0, 1)).double().numpy()
    return {"model": model_dir, "plant": plant, "bias_per_joint": np.round(bias, 3).tolist(),
            "bias_rms": round(float(np.sqrt((bias**2).mean())), 3),
            "error_rms": round(float(late.pow(2).mean().sqrt()), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--episodes", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [velocity_bias(m, plant, args.episodes) for m in args.models
            for plant in ("nominal", "payload_1kg", "link_masses_plus_20pct")]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
