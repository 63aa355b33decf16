"""Closed-loop demo: a shipped controller reaches a sequence of held-out goals in PyBullet.

The arm starts once, then goes from goal to goal without a reset, the way a user drags
goals in RViz; the networks keep their state across goals, as the controller node will.
Prints one line per goal and returns 0 only when every goal was reached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .envs import make_batch
from .models import load_model
from .training.evaluate import heldout_tasks


@torch.no_grad()
def run_demo(model_dir: Path, goals: int = 8, seed: int = 0) -> int:
    model = load_model(model_dir)
    policy, io_spec, config = model.policy, model.spec, model.config
    torch.set_num_threads(1)  # batch 1: threads only add overhead
    env = make_batch(io_spec.task, 1, config.env)
    spec = env.spec
    try:
        starts, goal_set = heldout_tasks(env, goals, seed)
        obs = env.reset_to(starts[:1], goal_set[:1])
        state = policy.initial_state(1, torch.zeros(1))
        unit = spec.distance_unit
        criterion = "|dx|, |dy| <=" if spec.task == "reacher" else "within"
        kind = model.label
        print(f"{spec.task} demo: {model_dir} ({kind}), {goals} goals, "
              f"success {criterion} {spec.success_radius} {unit}, {spec.episode_steps} control steps "
              f"of {spec.control_period_s * 1000:.0f} ms each")
        reached = 0
        for i, goal in enumerate(goal_set):
            goal_b = goal[None, :]
            goal_t = torch.as_tensor(goal_b, dtype=torch.float32)
            start_distance = float(env.distance(obs, goal_b)[0])
            first_hit = None
            for t in range(spec.episode_steps):
                action, _, state = policy.step(torch.as_tensor(obs), goal_t, state)
                obs = env.step(action.numpy().astype(np.float64))
                if first_hit is None and env.success(obs, goal_b)[0]:
                    first_hit = (t + 1) * spec.control_period_s
            final = float(env.distance(obs, goal_b)[0])
            ok = bool(env.success(obs, goal_b)[0])
            reached += ok
            when = f"reached after {first_hit:.2f} s" if first_hit is not None else "never within radius"
            print(f"goal {i + 1}/{goals} at {np.round(goal, 3).tolist()}: start {start_distance:.3f} {unit} "
                  f"-> final {final:.4f} {unit} {'OK ' if ok else 'MISS'} ({when})")
        print(f"{reached}/{goals} goals reached")
        return 0 if reached == goals else 1
    finally:
        env.close()
