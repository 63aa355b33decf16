"""Time one action of a TD3 spiking actor (batch 1, one thread): compiled path vs the module.

    python bench/actor_step.py [--quick] [--steps N] [--model RUN_DIR]

The actor of ``--model`` (a TD3 model directory; default the shipped ``models/reacher_td3``:
population 10, LIF 256-256, 5 neural steps). Inputs: uniform in
[-1, 1] per observation and goal dimension. The compiled path
(:mod:`snn_control.models.fast_actor`, what the controller runs) and the reference (the
module in eval mode, float32, ``torch.no_grad``) alternate in blocks of 1,000 actions in
one run. Equivalence: every input also goes through a float64 copy of the module; the
largest action difference and whether every layer's spike count agrees are reported.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from _common import REPO, emit, parser, percentiles_us
from snn_control.models.fast_actor import FastSpikingActor
from snn_control.models.actors import SpikingActor
from snn_control.models.checkpoint import load_model

BLOCK = 1000


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="actions (default 20000; quick 300)")
    p.add_argument("--model", default=str(REPO / "models" / "reacher_td3"), help="a TD3 model directory")
    args = p.parse_args()
    steps = args.steps or (300 if args.quick else 20000)
    torch.set_num_threads(1)
    actor = load_model(args.model)[1].actor
    if not isinstance(actor, SpikingActor):
        raise SystemExit(f"{args.model}: its actor is not spiking; nothing to compare")
    source = str(args.model).replace(str(REPO) + "/", "")
    x = np.random.default_rng(0).uniform(-1.0, 1.0, size=(steps, actor.encoder.dims))
    fast = FastSpikingActor(actor)
    ref64 = copy.deepcopy(actor).double()
    ref64.count_spikes = True
    with torch.no_grad():
        wanted = ref64(torch.as_tensor(x)).numpy()
    got = np.stack([fast.act(row) for row in x])
    spikes_identical = fast.spike_counts.tolist() == ref64.spike_counts
    rates = fast.firing_rates_hz()
    fast_ns, ref_ns = np.empty(steps, np.int64), np.empty(steps, np.int64)
    clock = time.perf_counter_ns
    x32 = torch.as_tensor(x, dtype=torch.float32)
    for start in range(0, steps, BLOCK):
        stop = min(start + BLOCK, steps)
        for t in range(start, stop):
            t0 = clock()
            fast.act(x[t])
            fast_ns[t] = clock() - t0
        with torch.no_grad():
            for t in range(start, stop):
                t0 = clock()
                actor(x32[t:t + 1]).numpy()
                ref_ns[t] = clock() - t0
    f, r = percentiles_us(fast_ns), percentiles_us(ref_ns)
    emit("actor_step", {
        "actor": source, "threads": 1, "batch": 1, "steps": steps, "timesteps": actor.timesteps,
        "layer_sizes": [layer.size for layer in actor.layers], "firing_rates_hz": rates.round(2).tolist(),
        **f, **{f"reference_{k}": v for k, v in r.items()},
        "speedup_p50": r["p50_us"] / f["p50_us"], "speedup_p99": r["p99_us"] / f["p99_us"],
        "max_abs_action_diff": float(np.abs(got - wanted).max()), "spike_counts_identical": spikes_identical,
    }, args.quick, args.out)


if __name__ == "__main__":
    main()
