"""Where the time of one training update goes: matrix products, fused loops, the rest.

    python bench/train_step_profile.py [--quick] [--threads T] [--fixture F]
                                       [--surrogate fast_sigmoid] [--paths reference compiled]

The same updates as ``bench/train_step.py`` (the trainer's ``predictor_update`` and
``policy_update`` at Huebotter et al. 2025's size, on Panda or fixture replay data), each
path warmed up (compiled) first, then one update of each kind under ``torch.profiler``.
Per kind and path, in milliseconds of CPU time on the calling thread (the profiler's self
times, so nothing is counted twice):

- ``matrix_products_ms``: BLAS calls (``aten::mm``, ``addmm``, ``bmm``, ...) wherever
  they come from, with their count;
- ``compiled_forward_loops_ms`` / ``compiled_backward_loops_ms``: the C++ loops inductor
  made of the compiled step (its ``CompiledFxGraph`` calls, less the products they make);
- ``copies_ms``: ``aten::copy_`` (an ``addmm`` that adds into a tensor first copies it);
- ``rest_ms``: everything else (autograd, the kinematic layer, small ops, the optimizer).

``update_s`` is the profiled update's wall time (the profiler adds a few percent). The
products' FLOPs are the same on every path (one product per connection per substep each
way), so ``matrix_products_ms`` is a floor no fusion moves; ``--surrogate`` swaps the
spike function's derivative (default: the paper's multi-Gaussian, three exponentials per
neuron and substep in the backward) to show what it costs; its result is written beside
the default one (``train_step_profile_SURROGATE.json``).
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from _common import RESULTS, emit, parser
from snn_control.models import spiking_nets
from snn_control.spiking.surrogate import DEFAULT_SLOPES, SURROGATES
from train_step import compiled_ran, make_runner, use_path

PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv", "aten::addmv", "aten::dot"}
COMPILED_GRAPH = "## Call CompiledFxGraph"


def in_backward(event) -> bool:
    while event is not None:
        if event.name == "CompiledFunctionBackward":
            return True
        event = event.cpu_parent
    return False


def breakdown(events) -> dict:
    """Self CPU time (ms) of the update's events by category (see the module docstring)."""
    ms = {"matrix_products_ms": 0.0, "compiled_forward_loops_ms": 0.0, "compiled_backward_loops_ms": 0.0,
          "copies_ms": 0.0, "rest_ms": 0.0}
    products = 0
    for event in events:
        self_ms = event.self_cpu_time_total / 1e3
        if event.name in PRODUCTS:
            ms["matrix_products_ms"] += self_ms
            products += 1
        elif event.name.startswith(COMPILED_GRAPH):
            ms["compiled_backward_loops_ms" if in_backward(event) else "compiled_forward_loops_ms"] += self_ms
        elif event.name == "aten::copy_":
            ms["copies_ms"] += self_ms
        else:
            ms["rest_ms"] += self_ms
    return {**ms, "matrix_products": products, "profiled_total_ms": sum(ms.values())}


def profiled(update) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        update()
        wall = time.perf_counter() - t0
    return {"update_s": wall, **breakdown(prof.events())}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fixture", default=None, help="nets and windows from train_step.py --write-fixture")
    p.add_argument("--surrogate", choices=SURROGATES, default=None,
                   help="spike derivative for every net (default: the benchmark's multi_gaussian)")
    p.add_argument("--paths", nargs="+", choices=("reference", "fused", "compiled"), default=["reference", "compiled"])
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per kind and path first (compiling)")
    args = p.parse_args()
    args.device = "cpu"  # what make_runner reads; the breakdown's categories are the CPU's
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:  # the trainer's run folder, for as long as it updates
        runner = make_runner(args, run_dir)
        nets = spiking_nets(runner.predictor) + spiking_nets(runner.policy)
        if args.surrogate:  # one Surrogate object per net, changed before anything compiles
            for net in nets:
                net.surrogate.kind, net.surrogate.slope = args.surrogate, DEFAULT_SLOPES[args.surrogate]
        cfg = runner.config
        result = {"threads": args.threads, "surrogate": nets[0].surrogate.kind, "batch": cfg.train.batch,
                  "warmup": cfg.train.warmup, "unroll": cfg.train.unroll, "substeps": cfg.model.substeps,
                  "hidden": cfg.model.hidden, "rank": cfg.model.rank}
        for path in args.paths:
            use_path(runner, path)
            for kind, update in (("predictor", runner.predictor_update), ("policy", runner.policy_update)):
                for _ in range(args.warmup):
                    update()
                result[f"{kind}_{path}"] = profiled(update)
            if path == "compiled":
                result["compiled"] = compiled_ran(runner)
        use_path(runner, "reference")
    out = args.out
    if out is None and args.surrogate:  # beside the default surrogate's result, not over it
        out = RESULTS / f"train_step_profile_{args.surrogate}{'.quick' if args.quick else ''}.json"
    emit("train_step_profile", result, args.quick, out)


if __name__ == "__main__":
    main()
