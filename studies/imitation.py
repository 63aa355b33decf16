"""How well can an actor represent the classical guide's policy? A supervised check of the
actor alone, without RL:

    python -m studies.imitation [--steps 3000] [--out results/rl/imitation.json]

Guide episodes with Gaussian action noise (so states off the guide's own path are seen)
give ``(observation, goal) -> guide action`` pairs; each actor variant (config overrides
on ``config/reacher_td3.yaml``) is fitted to them by Adam on the mean squared error, then
reports the error on held-out pairs and flies the validation goals on its own. An actor
that cannot clone the guide well will not learn the task well by TD3 either: this is how
``config/reacher_td3.yaml`` got its goal-error input and shallow slope (docs/rl.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from snn_control.classical import OperationalSpacePD
from snn_control.config import load
from snn_control.envs import make_batch
from snn_control.models.networks import policy_input
from snn_control.training.collect import rollout
from snn_control.training.evaluate import heldout_tasks
from snn_control.models.actors import ActorPolicy, build_actor
from snn_control.rl.trainer import VALIDATION_SET

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "reacher_td3.yaml"
VARIANTS = {  # name -> config overrides
    "mlp": ("rl.actor=mlp", "rl.goal_error=false"),
    "snn_k10": ("rl.slope=10.0", "rl.goal_error=false"),
    "snn_k10_goal_error": ("rl.slope=10.0", "rl.goal_error=true"),
    "snn_k2": ("rl.slope=2.0", "rl.goal_error=false"),
    "snn_k5_goal_error": ("rl.slope=5.0", "rl.goal_error=true"),
    "snn_k2_goal_error": ("rl.slope=2.0", "rl.goal_error=true"),
}


def guide_data(task: str, env_config, copies: int, episodes: int, noise: float, seed: int):
    """``(observations, goals, guide actions)`` from noisy guide episodes."""
    env = make_batch(task, copies, env_config)
    guide, rng = OperationalSpacePD(env), np.random.default_rng(seed)
    obs_log, goal_log, act_log = [], [], []
    try:
        for _ in range(episodes):
            starts, goals = env.sample_tasks(rng, copies)
            obs = env.reset_to(starts, goals)
            for _ in range(env.spec.episode_steps):
                action = guide.act(obs, goals)
                obs_log.append(obs), goal_log.append(goals), act_log.append(action)
                obs = env.step(np.clip(action + rng.normal(0.0, noise, action.shape), -1.0, 1.0))
    finally:
        env.close()
    return (np.concatenate(obs_log).astype(np.float32), np.concatenate(goal_log).astype(np.float32),
            np.concatenate(act_log).astype(np.float32))


def imitate(variant: str, data, steps: int, batch: int = 256, lr: float = 1e-3, test: int = 20_000,
            validation_goals: int = 64, seed: int = 0) -> dict:
    """Fit variant ``variant`` to ``data`` for ``steps`` Adam steps; held-out error and
    validation-goal success of the fitted actor."""
    cfg = load(CONFIG, list(VARIANTS[variant]))
    env = make_batch(cfg.task, validation_goals, cfg.env)
    spec = env.spec
    goal_error = tuple(spec.effector) if cfg.rl.goal_error else None
    torch.manual_seed(seed)
    actor = build_actor(cfg.rl, spec.obs_dim + spec.goal_dim, spec.act_dim)
    obs, goals, actions = data
    x = torch.as_tensor(policy_input(obs, goals, goal_error))
    y = torch.as_tensor(actions)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = order[:test], order[test:]
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        i = train_idx[torch.randint(len(train_idx), (batch,))]
        loss = F.mse_loss(actor(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    fit_s = time.perf_counter() - start
    try:
        with torch.no_grad():
            test_mse = float(F.mse_loss(actor(x[test_idx]), y[test_idx]))
            starts, vgoals = heldout_tasks(env, validation_goals, VALIDATION_SET)
            final = rollout(env, ActorPolicy(actor, goal_error), starts, vgoals).obs[:, -1]
            success, distance = env.success(final, vgoals), env.distance(final, vgoals)
    finally:
        env.close()
    return {"variant": variant, "overrides": list(VARIANTS[variant]), "steps": steps, "test_mse": test_mse,
            "validation_success_rate": float(np.mean(success)),
            "validation_final_distance_median": float(np.median(distance)), "fit_s": fit_s}


def imitation_study(variants=tuple(VARIANTS), steps: int = 3000, copies: int = 256, episodes: int = 6,
                    noise: float = 0.3, seed: int = 0, out: Path | None = None) -> list[dict]:
    cfg = load(CONFIG)
    torch.set_num_threads(1)
    data = guide_data(cfg.task, cfg.env, copies, episodes, noise, seed)
    results = []
    for name in variants:
        results.append(imitate(name, data, steps, seed=seed))
        print(json.dumps(results[-1]), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": f"python -m studies.imitation --steps {steps}", "pairs": len(data[0]),
                                   "guide_action_noise": noise, "results": results}, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per variant")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--out", default="results/rl/imitation.json")
    args = parser.parse_args(argv)
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    imitation_study(variants, steps=args.steps, out=Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
