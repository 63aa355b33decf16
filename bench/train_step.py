"""Seconds per predictor update and per policy update: fused vs reference, same gradients.

    python bench/train_step.py [--quick] [--repeats N] [--threads T]

Runs the trainer's own ``predictor_update`` and ``policy_update`` at seed 000's size
(batch 256, 5 warm-up + 40 unrolled steps, 7 substeps, two 512-neuron ALIF layers, the
shipped rank-32 bottleneck, multi-Gaussian surrogate) on replay data from the Panda.
Three paths, alternating update by update in one process:

- reference: the op-by-op modules (``train.fused_neurons=false``, ``train.compile=false``);
- fused: layer by layer; a layer without recurrence runs all its substeps as one span
  (numba), a recurrent one a fused substep at a time (``spiking.fused``, eager); what
  training uses without a C++ compiler;
- compiled: each net's whole control step through ``torch.compile``
  (``SpikingNet.compile_step``), the trainer's default. ``fast`` in the keys is this path
  (the fused one with ``--no-compile``, or in ``--quick`` mode, which compiles nothing).

``iteration_speedup``: both kinds weighted by the config's updates per training iteration
(``train.predictor_updates``, ``train.policy_updates``).

Gradients: from the same parameters, optimizer state and sampled batch, each path's
gradients (after clipping, as the optimizer sees them) are compared: relative difference
of each parameter's gradient (norm of difference / norm). Peak memory: each path runs one
predictor and one policy update in a fresh process; its peak resident set size.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from _common import REPO, emit, parser
from snn_control import config as C
from snn_control.models import spiking_nets
from snn_control.training.trainer import Trainer

PAPER = ["model.hidden=512", "model.layers=2", "model.rank=32", "model.substeps=7", "model.dt=0.002",
         "model.neuron=alif", "model.surrogate=multi_gaussian", "model.slope=16.0", "model.readout_tau_mem=0.01",
         "model.readout_tau_syn=0.005", "train.batch=256", "train.warmup=5", "train.unroll=40",
         "train.envs=4", "train.random_iterations=1", "train.replay_episodes=16", "train.eval_every=0"]
QUICK = ["model.hidden=64", "model.substeps=2", "train.batch=16", "train.unroll=6"]


def make_trainer(quick: bool, threads: int, run_dir: str) -> Trainer:
    cfg = C.load(REPO / "config" / "panda_snn_base.yaml",  # the from-scratch stage
                 PAPER + (QUICK if quick else []) + [f"train.threads={threads}", "train.compile=false"])
    # (the paths are switched by use_path; compile=false here so that nothing compiles unasked)
    trainer = Trainer(cfg, run_dir)
    trainer.collect()
    n = trainer.replay.size
    trainer.predictor.calibrate(trainer.replay.obs[:n], trainer.replay.actions[:n], inputs=True)
    trainer.policy.calibrate(trainer.replay.obs[:n], trainer.replay.goals[:n])
    return trainer


PATHS = ("reference", "fused", "compiled")


def use_path(trainer: Trainer, path: str) -> None:
    for net in spiking_nets(trainer.predictor) + spiking_nets(trainer.policy):
        if path == "compiled" and not hasattr(net, "compiled_for_bench"):
            net.compile_step()
            net.compiled_for_bench = net.compiled  # kept across switches: one compile per net
        net.fused = path == "fused"
        net.compiled = getattr(net, "compiled_for_bench", None) if path == "compiled" else None


def compiled_ran(trainer: Trainer) -> bool:
    """Whether every net still has its compiled step (a failed compile falls back to fused)."""
    return all(net.compiled is not None for net in spiking_nets(trainer.predictor) + spiking_nets(trainer.policy))


def snapshot(trainer: Trainer):
    return (copy.deepcopy(trainer.predictor.state_dict()), copy.deepcopy(trainer.policy.state_dict()),
            copy.deepcopy(trainer.pred_opt.state_dict()), copy.deepcopy(trainer.policy_opt.state_dict()),
            json.dumps(trainer.rng.bit_generator.state), torch.get_rng_state())


def restore(trainer: Trainer, snap) -> None:
    trainer.predictor.load_state_dict(snap[0])
    trainer.policy.load_state_dict(snap[1])
    trainer.pred_opt.load_state_dict(snap[2])
    trainer.policy_opt.load_state_dict(snap[3])
    trainer.rng.bit_generator.state = json.loads(snap[4])
    torch.set_rng_state(snap[5])


def gradients(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def compare_gradients(trainer: Trainer, paths: list[str]) -> dict:
    out = {}
    for name, update, module in (("predictor", trainer.predictor_update, trainer.predictor),
                                 ("policy", trainer.policy_update, trainer.policy)):
        snap = snapshot(trainer)
        use_path(trainer, "reference")
        update()
        ref = gradients(module)
        restore(trainer, snap)
        for path in paths:
            use_path(trainer, path)
            update()
            fast = gradients(module)
            restore(trainer, snap)
            rel = [float((ref[k] - fast[k]).norm() / ref[k].norm().clamp(min=1e-30)) for k in ref]
            out[f"{name}_{path}_max_rel_grad_diff"] = max(rel)
            out[f"{name}_{path}_median_rel_grad_diff"] = float(np.median(rel))
    return out


def _high_water_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent across fork and exec, so a child of a big process reports its size."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def memory_child(path: str, quick: bool, threads: int) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = make_trainer(quick, threads, run_dir)
        use_path(trainer, path)
        base = _high_water_mb()
        trainer.predictor_update()
        trainer.policy_update()
        peak = _high_water_mb()
    print(json.dumps({"peak_rss_mb": peak, "before_updates_rss_mb": base}))


def peak_memory(path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", path, "--threads", str(args.threads)]
    cmd += ["--quick"] if args.quick else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed updates per kind and path (default 5; quick 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled path")
    p.add_argument("--memory-child", choices=PATHS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.quick, args.threads)
        return
    paths = ["fused"] if args.no_compile or args.quick else ["fused", "compiled"]  # quick: seconds, no compiling
    repeats = args.repeats or (1 if args.quick else 5)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = make_trainer(args.quick, args.threads, run_dir)
        first = {}
        for path in paths:  # the first updates of each path compile what they use (not timed)
            use_path(trainer, path)
            t0 = time.perf_counter()
            trainer.predictor_update(), trainer.policy_update()
            first[path] = time.perf_counter() - t0
        grads = compare_gradients(trainer, paths)
        times = {(kind, path): [] for kind in ("predictor", "policy") for path in ("reference", *paths)}
        for _ in range(repeats):
            for kind in ("predictor", "policy"):
                update = trainer.predictor_update if kind == "predictor" else trainer.policy_update
                for path in ("reference", *paths):
                    use_path(trainer, path)
                    t0 = time.perf_counter()
                    update()
                    times[(kind, path)].append(time.perf_counter() - t0)
        compiled = "compiled" in paths and compiled_ran(trainer)
        use_path(trainer, "reference")
        cfg = trainer.config
    fast = paths[-1]
    result = {"threads": args.threads, "compiled": compiled, "fast_path": fast,
              "repeats": repeats, "batch": cfg.train.batch, "warmup": cfg.train.warmup,
              "unroll": cfg.train.unroll, "substeps": cfg.model.substeps, "hidden": cfg.model.hidden,
              "rank": cfg.model.rank}
    for path in paths:
        result[f"first_{path}_updates_incl_compile_s"] = first[path]
    for (kind, path), values in times.items():
        result[f"{kind}_{path}_s"] = float(np.median(values))
        result[f"{kind}_{path}_all_s"] = values
    for kind in ("predictor", "policy"):
        for path in paths:
            result[f"{kind}_{path}_speedup"] = result[f"{kind}_reference_s"] / result[f"{kind}_{path}_s"]
        result[f"{kind}_fast_s"] = result[f"{kind}_{fast}_s"]
        result[f"{kind}_speedup"] = result[f"{kind}_{fast}_speedup"]
        result[f"{kind}_max_rel_grad_diff"] = grads[f"{kind}_{fast}_max_rel_grad_diff"]
    mix = {"predictor": cfg.train.predictor_updates, "policy": cfg.train.policy_updates}
    result["iteration_updates"] = mix
    result["iteration_speedup"] = (sum(n * result[f"{k}_reference_s"] for k, n in mix.items())
                                   / sum(n * result[f"{k}_fast_s"] for k, n in mix.items()))
    result.update(grads)
    for path in ("reference", *paths):
        result[f"{path}_peak_rss_mb"] = peak_memory(path, args)["peak_rss_mb"]
    result["fast_peak_rss_mb"] = result[f"{fast}_peak_rss_mb"]
    emit("train_step", result, args.quick, args.out)


if __name__ == "__main__":
    main()
