"""Fine-tune a running model from recorded sessions, check it, and write it as a new version.

The trainer node (and ``snn-control finetune``) call :func:`finetune` with the windows
:func:`.bags.read_sessions` cut from the recorded bags:

1. every ``heldout_every``-th window (in time order) is held out, the rest train;
2. the forward model learns the recorded dynamics (teacher-forced, as in training; the
   weights with the lowest held-out error are kept: early stopping), then the policy
   learns through it, both from the running weights at a small learning rate;
3. the candidate is accepted only if, against the running model,
   - its policy does no worse in imagination from the held-out windows' states and goals
     (both policies judged by the candidate's forward model, the better model of the
     recorded world), and
   - its policy does no worse in simulation on held-out goals (median final distance,
     ``sim_tolerance`` slack); ``env_overrides`` set the simulated plant (for example a
     known payload), else it is the plant the model was trained on. The policy is scored
     there every ``policy_check_every`` updates and the best snapshot is the candidate.
     These goals are the validation set of held-out goals (``VALIDATION_SET``), not the
     set ``snn-control eval`` and the benchmarks report on;
4. :func:`write_version` writes an accepted candidate atomically as ``<root>/vNNNN/``: a
   complete model directory with ``VERSION`` and ``finetune.json`` (this report), made
   under a temporary name and renamed, so a reader never sees half a model.

Nothing here deletes or changes a bag or an existing model directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..envs import make_batch
from ..envs.base import velocity_indices
from .bags import SessionEpisodes
from .checkpoint import load_model, save_model
from .collect import rollout
from .evaluate import heldout_tasks
from .replay import EpisodicReplay
from .updates import (imagined_distance, make_optimizer, mean_distance, policy_step, predictor_loss, predictor_step,
                      use_training_path)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class FinetuneError(ValueError):
    """Not enough usable data, or settings that cannot work; the message says which."""


@dataclass
class FinetuneSettings:
    window: int = 50  # control steps per recorded window (predictor: warm-up + unroll)
    predictor_updates: int = 150
    policy_updates: int = 150
    batch: int = 32
    predictor_lr: float = 1e-3  # half of training's: the model must learn what changed
    policy_lr: float = 3e-4  # a seventh of training's: adapt the policy, do not relearn it
    heldout_every: int = 5  # every 5th window is held out for validation
    check_every: int = 25  # predictor updates between held-out checks (early stopping)
    min_train_windows: int = 8
    validation_episodes: int = 32  # simulated reaches on held-out goals (validation set)
    policy_check_every: int = 50  # policy updates between simulated checks (best snapshot kept)
    sim_tolerance: float = 0.10  # candidate's sim median may exceed the running model's by 10 %
    heldout_tolerance: float = 0.0  # held-out imagined distance: candidate must be no worse
    env_overrides: dict[str, Any] = field(default_factory=dict)  # simulated plant for validation
    seed: int = 0
    threads: int = 1
    compile: bool = True  # torch.compile the control steps (the model's train.compile also must be on)


def split_windows(sessions: SessionEpisodes, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out windows: every ``every``-th window is held out."""
    index = np.arange(len(sessions.obs))
    held = index % every == every - 1
    return index[~held], index[held]


def _tensors(sessions: SessionEpisodes, idx: np.ndarray):
    """Time-major tensors of the windows ``idx``."""
    obs = torch.as_tensor(sessions.obs[idx].transpose(1, 0, 2))
    actions = torch.as_tensor(sessions.actions[idx].transpose(1, 0, 2))
    return obs, actions, torch.as_tensor(sessions.goals[idx])


@torch.no_grad()
def heldout_scores(predictor, policy, judge, sessions: SessionEpisodes, idx: np.ndarray, t, effector) -> dict:
    """Forward-model error on held-out windows (teacher-forced, normalised units) and the
    policy's mean imagined distance (m) from their states towards their goals, imagined
    by ``judge`` (a forward model)."""
    obs, actions, goals = _tensors(sessions, idx)
    error = float(predictor_loss(predictor, obs, actions, t))
    distance, _ = imagined_distance(policy, judge, obs, actions, goals, t, effector)
    return {"predictor_error": error, "imagined_distance_m": mean_distance(distance, t)}


VALIDATION_SET = 1  # held-out goal set of the simulated checks; `snn-control eval` uses set 0


class SimulatedReach:
    """Policies reaching the same held-out goals (validation set) in one simulated plant."""

    def __init__(self, config, episodes: int, env_overrides: dict[str, Any]) -> None:
        env_cfg = dataclasses.replace(config.env, **env_overrides) if env_overrides else config.env
        self.env = make_batch(config.task, episodes, env_cfg)
        self.starts, self.goals = heldout_tasks(self.env, episodes, VALIDATION_SET)

    @torch.no_grad()
    def score(self, policy) -> dict[str, float]:
        """Median final distance and success rate."""
        final = rollout(self.env, policy, self.starts, self.goals).obs[:, -1]
        return {"final_distance_median_m": float(np.median(self.env.distance(final, self.goals))),
                "success_rate": float(np.mean(self.env.success(final, self.goals)))}

    def close(self) -> None:
        self.env.close()


def finetune(model_dir: str | Path, sessions: SessionEpisodes, settings: FinetuneSettings | None = None,
             progress: Progress | None = None) -> tuple[dict[str, Any], tuple | None]:
    """Fine-tune ``model_dir`` on ``sessions``. Returns ``(report, candidate)``, where
    ``candidate`` is ``(predictor, policy, io_spec, config)`` when accepted, else ``None``."""
    s = settings or FinetuneSettings()
    progress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    predictor, policy, spec, config = load_model(model_dir)
    if predictor is None:
        raise FinetuneError(f"{model_dir}: a {config.algorithm} model has no forward model to fine-tune through")
    running_predictor, running_policy, _, _ = load_model(model_dir)
    unknown = set(s.env_overrides) - {f.name for f in dataclasses.fields(config.env)}
    if unknown:
        raise FinetuneError(f"env_overrides: unknown {config.task} env keys {sorted(unknown)}")
    t = dataclasses.replace(config.train, batch=s.batch)
    if s.policy_updates < 1 or s.policy_check_every < 1:
        raise FinetuneError("policy_updates and policy_check_every must be at least 1")
    if s.window <= t.warmup:
        raise FinetuneError(f"window {s.window} must be longer than the warm-up ({t.warmup} steps)")
    if sessions.obs.shape[1:] != (s.window + 1, spec.obs_dim):
        raise FinetuneError(f"session windows have shape {sessions.obs.shape[1:]}, expected "
                            f"({s.window + 1}, {spec.obs_dim}); read them with length={s.window}")
    train_idx, held_idx = split_windows(sessions, s.heldout_every)
    if len(train_idx) < s.min_train_windows or len(held_idx) == 0:
        raise FinetuneError(f"{len(sessions.obs)} usable windows of {s.window} steps "
                            f"({s.window * spec.control_period_s:.1f} s) in the sessions; need at least "
                            f"{s.min_train_windows + 1 + s.min_train_windows // s.heldout_every}")
    replay = EpisodicReplay(len(train_idx), s.window, spec.obs_dim, spec.act_dim, spec.goal_dim)
    replay.add(sessions.obs[train_idx], sessions.actions[train_idx], sessions.goals[train_idx])
    compile_steps = t.compile and s.compile
    if compile_steps:  # the trainer node fine-tunes fresh copies each time: drop the last ones' graphs
        torch._dynamo.reset()
    use_training_path(predictor, policy, t, compile_steps)
    effector = slice(*spec.effector)
    velocity = velocity_indices(spec.obs_names)  # train.hold_still, kept from the model's training
    predictor.train()
    policy.train()

    # The forward model overfits a few minutes of data quickly (measured: training loss
    # 2.7 -> 1.3 while the held-out error rose 1.87 -> 2.37), so it stops early: the
    # weights with the lowest held-out error, checked every ``check_every`` updates, win.
    held = _tensors(sessions, held_idx)
    pred_opt = make_optimizer(predictor, s.predictor_lr, t.tau_lr)
    total = s.predictor_updates + s.policy_updates
    losses, curve = [], []
    best: list = [None, float("inf"), 0]  # state dict, held-out error, update

    def check(step: int):
        with torch.no_grad():
            predictor.eval()
            error = float(predictor_loss(predictor, held[0], held[1], t))
            predictor.train()
        curve.append((step, error))
        if error < best[1]:
            best[:] = [copy.deepcopy(predictor.state_dict()), error, step]

    check(0)
    for i in range(s.predictor_updates):
        obs, actions, _ = (torch.as_tensor(a) for a in replay.sample(rng, s.batch, s.window))
        losses.append(predictor_step(predictor, pred_opt, obs, actions, t))
        if (i + 1) % s.check_every == 0 or i + 1 == s.predictor_updates:
            check(i + 1)
        progress("predictor", i + 1, total)
    predictor.load_state_dict(best[0])
    # The policy is scored in simulation every ``policy_check_every`` updates and the best
    # snapshot is the candidate: one fine-tuning run's end point varied widely (measured
    # on the payload session: 7.1 cm and 12.6 cm median after two similar runs).
    sim = SimulatedReach(config, s.validation_episodes, s.env_overrides)
    try:
        sim_before = sim.score(running_policy)
        policy_opt = make_optimizer(policy, s.policy_lr, t.tau_lr)
        distances, snapshots = [], []
        chosen: list = [None, float("inf"), 0]  # state dict, simulated median, update
        for i in range(s.policy_updates):
            obs, actions, goals = (torch.as_tensor(a) for a in replay.sample(rng, s.batch, t.warmup))
            distances.append(policy_step(policy, predictor, policy_opt, obs, actions, goals, t, effector,
                                         config.model.learn_tau, velocity)["imagined_distance"])
            progress("policy", s.predictor_updates + i + 1, total)
            if (i + 1) % s.policy_check_every == 0 or i + 1 == s.policy_updates:
                policy.eval()
                score = sim.score(policy)
                policy.train()
                snapshots.append((i + 1, score["final_distance_median_m"]))
                if score["final_distance_median_m"] < chosen[1]:
                    chosen[:] = [copy.deepcopy(policy.state_dict()), score["final_distance_median_m"], i + 1]
                    sim_after = score
        if chosen[0] is not None:
            policy.load_state_dict(chosen[0])
    finally:
        sim.close()
    predictor.eval()
    policy.eval()

    progress("validate", total, total)
    before = heldout_scores(running_predictor, running_policy, predictor, sessions, held_idx, t, effector)
    after = heldout_scores(predictor, policy, predictor, sessions, held_idx, t, effector)
    failures = []
    # (The forward model's held-out error cannot be worse: early stopping kept the best.)
    if after["imagined_distance_m"] > before["imagined_distance_m"] * (1 + s.heldout_tolerance):
        failures.append(f"held-out imagined distance {after['imagined_distance_m']:.4g} m > running "
                        f"model's {before['imagined_distance_m']:.4g} m")
    median_before, median_after = sim_before["final_distance_median_m"], sim_after["final_distance_median_m"]
    if median_after > median_before * (1 + s.sim_tolerance):
        failures.append(f"simulated median final distance {median_after:.4f} m > running model's "
                        f"{median_before:.4f} m (+{s.sim_tolerance:.0%} allowed)")
    report = {
        "accepted": not failures,
        "reason": "; ".join(failures) or "no worse on every check",
        "parent": str(model_dir),
        "bags": [str(b) for b in sessions.bags_read],
        "skipped_bags": list(sessions.skipped),
        "windows": {"train": int(len(train_idx)), "heldout": int(len(held_idx)), "steps": s.window},
        "heldout": {"running": before, "candidate": after},
        "simulation": {"episodes": s.validation_episodes, "env_overrides": dict(s.env_overrides),
                       "running": sim_before, "candidate": sim_after},
        "predictor_early_stop": {"kept_update": best[2], "heldout_curve": curve},
        "policy_selection": {"kept_update": chosen[2], "simulated_median_m": snapshots},
        "losses": {"predictor_first": losses[0] if losses else None,
                   "predictor_last": losses[-1] if losses else None,
                   "imagined_distance_first": distances[0] if distances else None,
                   "imagined_distance_last": distances[-1] if distances else None},
        "settings": dataclasses.asdict(s),
        "elapsed_s": time.perf_counter() - started,
    }
    return report, ((predictor, policy, spec, config) if not failures else None)


_VERSION_DIR = re.compile(r"^v(\d{4,})$")


def next_version(root: Path) -> int:
    taken = [int(m.group(1)) for p in root.glob("v*") if (m := _VERSION_DIR.match(p.name))]
    return max(taken, default=0) + 1


def write_version(root: str | Path, candidate: tuple, report: dict[str, Any]) -> Path:
    """Write an accepted candidate as ``root/vNNNN/`` (atomically: built aside, renamed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    final = root / f"v{version:04d}"
    partial = root / f".v{version:04d}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a crash: never a model
    predictor, policy, spec, config = candidate
    save_model(partial, predictor, policy, spec, config)
    (partial / "VERSION").write_text(f"{version}\n")
    (partial / "finetune.json").write_text(json.dumps({**report, "version": version}, indent=2) + "\n")
    os.rename(partial, final)  # atomic on one file system; fails rather than overwrite
    return final
