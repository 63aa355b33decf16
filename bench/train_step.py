"""Seconds per predictor update and per policy update: fused vs reference, same gradients.

    python bench/train_step.py [--quick] [--repeats N] [--threads T] [--device cuda]
                               [--compile-mode reduce-overhead]   # CUDA graphs on a GPU
    python bench/train_step.py --write-fixture F      # on a machine with PyBullet, then
    python bench/train_step.py --fixture F --device cuda   # on one without (a GPU machine)

Runs the trainer's own ``predictor_update`` and ``policy_update`` at the size of
Huebotter et al. 2025 (batch 256, 5 warm-up + 40 unrolled steps, 7 substeps, two
512-neuron ALIF layers, the shipped rank-32 bottleneck, multi-Gaussian surrogate) on
replay data from the Panda.
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

``--device cuda`` times the same updates on a GPU (the fused path there is the fused
substep of ``spiking.fused``, a step at a time: the numba span runs on the CPU only). The
nets and one batch of windows for each kind come from a fixture, so every repeat sees
the same batch: ``--write-fixture F`` writes it after collecting (PyBullet), ``--fixture
F`` reads it on a machine without PyBullet; without ``--fixture`` it is made in memory.
Peak memory there is the CUDA allocator's peak during one predictor and one policy update.
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
import types
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from _common import REPO, RESULTS, emit, parser
from snn_control import config as C
from snn_control.models import spiking_nets
from snn_control.predictive.updates import make_optimizer, policy_step, predictor_step

if TYPE_CHECKING:
    from snn_control.predictive.trainer import Trainer

PAPER = ["model.hidden=512", "model.layers=2", "model.rank=32", "model.substeps=7", "model.dt=0.002",
         "model.neuron=alif", "model.surrogate=multi_gaussian", "model.slope=16.0", "model.readout_tau_mem=0.01",
         "model.readout_tau_syn=0.005", "train.batch=256", "train.warmup=5", "train.unroll=40",
         "train.envs=4", "train.random_iterations=1", "train.replay_episodes=16", "train.eval_every=0"]
QUICK = ["model.hidden=64", "model.substeps=2", "train.batch=16", "train.unroll=6"]


def make_trainer(quick: bool, threads: int, run_dir: str):
    from snn_control.predictive.trainer import Trainer  # imports PyBullet: not on a --fixture run

    cfg = C.load(REPO / "config" / "panda_snn_base.yaml",  # the from-scratch stage
                 PAPER + (QUICK if quick else []) + [f"train.threads={threads}", "train.compile=false"])
    # (the paths are switched by use_path; compile=false here so that nothing compiles unasked)
    trainer = Trainer(cfg, run_dir)
    trainer.collect()
    n = trainer.replay.size
    trainer.predictor.calibrate(trainer.replay.obs[:n], trainer.replay.actions[:n], inputs=True)
    trainer.policy.calibrate(trainer.replay.obs[:n], trainer.replay.goals[:n])
    return trainer


def fixture_from(trainer) -> dict:
    """The nets (before any update) and one batch of windows per kind, for :class:`FixtureUpdates`."""
    t = trainer.config.train
    as_torch = lambda arrays: [torch.as_tensor(a, dtype=torch.float32) for a in arrays]  # noqa: E731
    # The config's train and model parts only: its env part's class imports PyBullet.
    return {"predictor": trainer.predictor, "policy": trainer.policy,
            "train": trainer.config.train, "model": trainer.config.model,
            "teacher_forcing": trainer.teacher_forcing(), "effector": trainer.effector,
            "velocity": trainer.velocity,
            "predictor_windows": as_torch(trainer.replay.sample(trainer.rng, t.batch, t.warmup + t.unroll)[:2]),
            "policy_windows": as_torch(trainer.replay.sample(trainer.rng, t.batch, t.warmup))}


class FixtureUpdates:
    """The trainer's predictor and policy updates (the same ``training.updates`` functions)
    on a fixture's nets and windows, on any device: what this benchmark needs of a Trainer."""

    def __init__(self, fixture: dict, device: str) -> None:
        self.config = types.SimpleNamespace(train=fixture["train"], model=fixture["model"])
        t = self.config.train
        self.predictor, self.policy = fixture["predictor"].to(device), fixture["policy"].to(device)
        self.pred_opt = make_optimizer(self.predictor, t.lr, t.tau_lr)
        self.policy_opt = make_optimizer(self.policy, t.lr, t.tau_lr)
        self.rng = np.random.default_rng(0)  # for snapshot(); the windows are fixed
        self.fixture = fixture
        self.pred_windows = [w.to(device) for w in fixture["predictor_windows"]]
        self.policy_windows = [w.to(device) for w in fixture["policy_windows"]]

    def predictor_update(self) -> float:  # float(loss) waits for the device
        return predictor_step(self.predictor, self.pred_opt, *self.pred_windows, self.config.train,
                              self.fixture["teacher_forcing"])

    def policy_update(self) -> dict:
        return policy_step(self.policy, self.predictor, self.policy_opt, *self.policy_windows, self.config.train,
                           self.fixture["effector"], self.config.model.learn_tau, self.fixture["velocity"])


PATHS = ("reference", "fused", "compiled")
COMPILE_MODE = None  # torch.compile's mode for the compiled path, from --compile-mode


def use_path(trainer: "Trainer | FixtureUpdates", path: str) -> None:
    for net in spiking_nets(trainer.predictor) + spiking_nets(trainer.policy):
        if path == "compiled" and not hasattr(net, "compiled_for_bench"):
            net.compile_step(COMPILE_MODE)
            net.compiled_for_bench = net.compiled  # kept across switches: one compile per net
        net.fused = path == "fused"
        net.compiled = getattr(net, "compiled_for_bench", None) if path == "compiled" else None


def compiled_ran(trainer: "Trainer | FixtureUpdates") -> bool:
    """Whether every net still has its compiled step (a failed compile falls back to fused)."""
    return all(net.compiled is not None for net in spiking_nets(trainer.predictor) + spiking_nets(trainer.policy))


def snapshot(trainer: "Trainer | FixtureUpdates"):
    return (copy.deepcopy(trainer.predictor.state_dict()), copy.deepcopy(trainer.policy.state_dict()),
            copy.deepcopy(trainer.pred_opt.state_dict()), copy.deepcopy(trainer.policy_opt.state_dict()),
            json.dumps(trainer.rng.bit_generator.state), torch.get_rng_state())


def restore(trainer: "Trainer | FixtureUpdates", snap) -> None:
    trainer.predictor.load_state_dict(snap[0])
    trainer.policy.load_state_dict(snap[1])
    trainer.pred_opt.load_state_dict(snap[2])
    trainer.policy_opt.load_state_dict(snap[3])
    trainer.rng.bit_generator.state = json.loads(snap[4])
    torch.set_rng_state(snap[5])


def gradients(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def compare_gradients(trainer: "Trainer | FixtureUpdates", paths: list[str]) -> dict:
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


def make_runner(args, run_dir: str):
    """A Trainer (collecting with PyBullet), or :class:`FixtureUpdates` on ``args.device``
    from ``args.fixture`` (or from a Trainer's, made here, when there is none)."""
    if args.fixture is None and args.device == "cpu":
        return make_trainer(args.quick, args.threads, run_dir)
    if args.fixture is not None:
        fixture = torch.load(args.fixture, weights_only=False)  # our own file: nets and config pickled
    else:
        fixture = fixture_from(make_trainer(args.quick, args.threads, run_dir))
    return FixtureUpdates(fixture, args.device)


def memory_child(path: str, args) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        runner = make_runner(args, run_dir)
        use_path(runner, path)
        base = _high_water_mb()
        runner.predictor_update()
        runner.policy_update()
        peak = _high_water_mb()
    print(json.dumps({"peak_rss_mb": peak, "before_updates_rss_mb": base}))


def cuda_peak_memory(runner: FixtureUpdates, path: str) -> float:
    """Peak CUDA allocation (MB) during one predictor and one policy update on ``path``."""
    snap = snapshot(runner)
    use_path(runner, path)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    runner.predictor_update()
    runner.policy_update()
    peak = torch.cuda.max_memory_allocated() / 2**20
    restore(runner, snap)
    return peak


def peak_memory(path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", path, "--threads", str(args.threads)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--fixture", str(args.fixture)] if args.fixture else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(runner, paths: list[str], repeats: int) -> dict:
    """Compile (untimed), compare gradients, then time each kind and path, alternating."""
    first = {}
    for path in paths:  # the first updates of each path compile what they use (not timed)
        use_path(runner, path)
        t0 = time.perf_counter()
        runner.predictor_update(), runner.policy_update()
        first[path] = time.perf_counter() - t0
    grads = compare_gradients(runner, paths)
    times = {(kind, path): [] for kind in ("predictor", "policy") for path in ("reference", *paths)}
    for _ in range(repeats):
        for kind in ("predictor", "policy"):
            update = runner.predictor_update if kind == "predictor" else runner.policy_update
            for path in ("reference", *paths):
                use_path(runner, path)
                t0 = time.perf_counter()
                update()  # ends by reading the loss: a GPU's queue has run
                times[(kind, path)].append(time.perf_counter() - t0)
    compiled = "compiled" in paths and compiled_ran(runner)
    use_path(runner, "reference")
    return {"first": first, "grads": grads, "times": times, "compiled": compiled}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed updates per kind and path (default 5; quick 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled path")
    p.add_argument("--device", default="cpu", help="torch device of the updates, e.g. cuda (default cpu)")
    p.add_argument("--fixture", type=Path, default=None, help="nets and windows from --write-fixture (no PyBullet needed)")
    p.add_argument("--write-fixture", type=Path, default=None, help="collect, write the fixture there, and stop")
    p.add_argument("--memory-child", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of the compiled path (e.g. reduce-overhead)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch sees no CUDA device")
    global COMPILE_MODE
    COMPILE_MODE = args.compile_mode
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    paths = ["fused"] if args.no_compile or args.quick else ["fused", "compiled"]  # quick: seconds, no compiling
    repeats = args.repeats or (1 if args.quick else 5)
    with tempfile.TemporaryDirectory() as run_dir:
        if args.write_fixture:
            torch.save(fixture_from(make_trainer(args.quick, args.threads, run_dir)), args.write_fixture)
            print(json.dumps({"fixture": str(args.write_fixture)}))
            return
        runner = make_runner(args, run_dir)
        measured = measure(runner, paths, repeats)
    cfg, times, grads = runner.config, measured["times"], measured["grads"]
    fast = paths[-1]
    result = {"device": args.device, "compile_mode": args.compile_mode, "fixture": args.fixture is not None or args.device != "cpu",
              "threads": args.threads, "compiled": measured["compiled"], "fast_path": fast,
              "repeats": repeats, "batch": cfg.train.batch, "warmup": cfg.train.warmup,
              "unroll": cfg.train.unroll, "substeps": cfg.model.substeps, "hidden": cfg.model.hidden,
              "rank": cfg.model.rank}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    for path in paths:
        result[f"first_{path}_updates_incl_compile_s"] = measured["first"][path]
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
        if args.device.startswith("cuda"):
            result[f"{path}_peak_cuda_mb"] = cuda_peak_memory(runner, path)
        else:
            result[f"{path}_peak_rss_mb"] = peak_memory(path, args)["peak_rss_mb"]
    if args.device.startswith("cuda"):  # CUDA graphs keep their memory in pools made while recording,
        # before the per-path peaks above were reset: this counts them (all paths, whole run)
        result["max_reserved_cuda_mb"] = torch.cuda.max_memory_reserved() / 2**20
    memory = "peak_cuda_mb" if args.device.startswith("cuda") else "peak_rss_mb"
    result[f"fast_{memory}"] = result[f"{fast}_{memory}"]
    out = args.out
    if out is None and args.device != "cpu":  # kept beside the CPU figures, not over them
        mode = f"_{args.compile_mode.replace('-', '_')}" if args.compile_mode else ""
        out = RESULTS / f"train_step_{args.device.split(':')[0]}{mode}{'.quick' if args.quick else ''}.json"
    emit("train_step", result, args.quick, out)


if __name__ == "__main__":
    main()
