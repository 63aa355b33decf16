"""Control steps per second collecting Panda episodes with the SNN policy in the loop.

    python bench/collect.py [--quick] [--envs 64] [--workers 2]

The trainer's own ``rollout`` with the shipped ``models/panda_snn`` policy (batch of all
copies, one torch thread) on ``--envs`` PyBullet Panda copies: in one process (the
reference) and split over ``--workers`` processes (``envs.parallel``), alternating, the
same tasks for both. A control step is one copy advancing 20 ms (20 physics steps at 1 kHz
with gravity compensation and the torque-rate limit). Also checks that both produce the
same episodes.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import REPO, emit, parser
from snn_control.envs import make_batch
from snn_control.models.checkpoint import load_model
from snn_control.training.collect import rollout


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, default=None, help="copies (default 64; quick 4)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="episodes per path (default 5; quick 1)")
    args = p.parse_args()
    envs = args.envs or (4 if args.quick else 64)
    steps = 20 if args.quick else None
    repeats = args.repeats or (1 if args.quick else 5)  # the median of 5: the host is noisy
    torch.set_num_threads(1)
    _, policy, _, config = load_model(REPO / "models" / "panda_snn")
    batches = {"reference": make_batch("panda", envs, config.env),
               "parallel": make_batch("panda", envs, config.env, workers=args.workers)}
    starts, goals = batches["reference"].sample_tasks(np.random.default_rng(0), envs)
    seconds = {name: [] for name in batches}
    finals = {}
    try:
        for _ in range(repeats):
            for name, env in batches.items():
                t0 = time.perf_counter()
                ep = rollout(env, policy, starts, goals, steps=steps)
                seconds[name].append(time.perf_counter() - t0)
                finals[name] = ep.obs
    finally:
        for env in batches.values():
            env.close()
    episode_steps = steps or config.env.episode_steps
    rate = {name: envs * episode_steps / float(np.median(s)) for name, s in seconds.items()}
    emit("collect", {
        "envs": envs, "workers": args.workers, "episode_steps": episode_steps, "repeats": repeats,
        "steps_per_s": rate["parallel"], "reference_steps_per_s": rate["reference"],
        "speedup": rate["parallel"] / rate["reference"],
        "episodes_identical": bool(np.array_equal(finals["reference"], finals["parallel"])),
        "policy": "models/panda_snn (torch, batch of all copies, 1 thread)",
    }, args.quick, args.out)


if __name__ == "__main__":
    main()
