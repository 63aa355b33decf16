"""Seconds per TD3 update with the spiking actor: layer by layer vs stepping every layer.

    python bench/td3_update.py [--quick] [--updates N] [--threads 1] [--target proxy]

The update of ``config/idp_td3.yaml`` (InvertedDoublePendulum: 9 observations, 1 action;
population 10, LIF 256-256, 5 neural steps; batch 256; twin critics 256-256; the proxy
MLP 512-512 with 3 imitation steps per actor update, or ``--target polyak``), one torch
thread as the experiment runs it. Fast: the actor as trained (:meth:`SpikingActor.forward`,
each layer over its whole window as one compiled autograd node). Reference: the same
agent with the actor stepped every layer once per timestep
(:meth:`SpikingActor.forward_stepped`). Both start from the same weights and take the
same batches, alternating in blocks of 20 updates (an actor update every second one).
Equivalence: the actor loss's parameter gradients of both paths in float64, the largest
relative difference over parameters.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from _common import REPO, emit, parser
from snn_control.config import load
from snn_control.rl.gym_trainer import OBS_RANGE
from snn_control.rl.trainer import build_agent

OBS_DIM, ACT_DIM = 9, 1  # InvertedDoublePendulum-v5
BLOCK = 20


def random_batch(rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
    f = lambda *shape: torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)  # noqa: E731
    return {"obs": f(size, OBS_DIM), "next_obs": f(size, OBS_DIM), "actions": f(size, ACT_DIM).clamp(-1, 1),
            "rewards": f(size), "dones": torch.zeros(size), "guide_actions": torch.full((size, ACT_DIM), np.nan)}


def actor_gradients(agent, obs: torch.Tensor, stepped: bool) -> dict[str, torch.Tensor]:
    actor, critic = copy.deepcopy(agent.actor).double(), copy.deepcopy(agent.critic).double()
    action = actor.forward_stepped(obs.double()) if stepped else actor(obs.double())
    loss = -critic.q1_value(obs.double(), action).mean()
    loss.backward()
    return {n: p.grad for n, p in actor.named_parameters() if p.grad is not None}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=None, help="updates per path (default 400; quick 20)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default="proxy", choices=("proxy", "polyak"))
    args = p.parse_args()
    updates = args.updates or (20 if args.quick else 400)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load(REPO / "config" / "idp_td3.yaml", [f"rl.target={args.target}"])
    _, fast, _ = build_agent(config, OBS_DIM, ACT_DIM, OBS_RANGE)
    reference = copy.deepcopy(fast)
    reference.actor.forward = reference.actor.forward_stepped  # this instance only
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, config.rl.batch) for _ in range(BLOCK)]
    grads = {name: actor_gradients(fast, batches[0]["obs"], name == "reference") for name in ("fast", "reference")}
    rel = max(float((grads["fast"][n] - g).norm() / g.norm().clamp(min=1e-30)) for n, g in grads["reference"].items())
    for agent in (fast, reference):  # warm-up: numba compilation, allocator
        for batch in batches[:4]:
            agent.update(batch)
    seconds = {"fast": [], "reference": []}
    for _ in range(max(1, updates // BLOCK)):
        for name, agent in (("fast", fast), ("reference", reference)):
            start = time.perf_counter()
            for batch in batches:
                agent.update(batch)
            seconds[name].append((time.perf_counter() - start) / BLOCK)
    ms = {name: 1e3 * float(np.median(s)) for name, s in seconds.items()}
    emit("td3_update", {
        "config": "config/idp_td3.yaml", "target": args.target, "threads": args.threads,
        "updates_per_path": len(seconds["fast"]) * BLOCK, "batch": config.rl.batch,
        "fast_ms_per_update": ms["fast"], "reference_ms_per_update": ms["reference"],
        "speedup": ms["reference"] / ms["fast"], "actor_grad_max_rel_diff_float64": rel,
    }, args.quick, args.out)


if __name__ == "__main__":
    main()
