"""Predictive-control training (Huebotter et al. 2025): learn a forward model, then a policy
through it.

Each iteration:
  1. collect one episode in each of ``train.envs`` parallel envs with the current policy
     (the first ``random_iterations`` use smooth random torques) into the replay;
  2. ``predictor_updates`` updates: warm up ``warmup`` real steps, unroll ``unroll`` steps
     feeding the real state with probability ``teacher_forcing``; loss: MSE of the next
     state, each entry in units of its typical one-step change (``delta_scale``);
  3. ``policy_updates`` updates: warm up both nets on real steps, then imagine ``unroll``
     steps (policy -> action -> predictor -> next state) from the last real state; loss:
     mean squared effector-to-goal distance of the imagined states. Only the policy's
     parameters step; gradients flow through the predictor's surrogate gradients.

The run directory is a model directory (see ``checkpoint``) plus ``train_state.pt``,
``replay.npz``, ``metrics.jsonl`` and TensorBoard event files; ``fit`` resumes from them.
``best/`` is the model directory of the best validation so far (``best.json`` says which).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import ExperimentConfig
from ..envs import make_batch
from ..envs.base import velocity_indices
from ..models import io_spec_for
from ..paths import resolve
from ..models.checkpoint import atomic_write_bytes, networks_for, save_model
from ..models.networks import match_readout_timing
from ..training.collect import rollout
from ..training.fitloop import FitLoop, load_state, save_state
from .replay import EpisodicReplay
from .updates import (activity_penalty, make_optimizer, policy_step, predictor_step,  # noqa: F401 (re-exported)
                      real_rest_windows, use_training_path)

log = logging.getLogger(__name__)

TRAIN_STREAM, VALIDATION_STREAM = 1, 2  # RNG streams; held-out evaluation uses its own seed


def _obs_to_torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a, dtype=torch.float32) for a in arrays]


class Trainer:
    def __init__(self, config: ExperimentConfig, run_dir: str | Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, TRAIN_STREAM])
        t = config.train
        self.env = make_batch(config.task, t.envs, config.env, t.env_workers)
        spec = self.env.spec
        self.io_spec = io_spec_for(config, spec)
        self.predictor, self.policy = networks_for(config, spec)
        use_training_path(self.predictor, self.policy, t, t.compile)
        if t.init_from:
            self._init_from(t.init_from)
        self.pred_opt = make_optimizer(self.predictor, t.lr, t.tau_lr)
        self.policy_opt = make_optimizer(self.policy, t.lr, t.tau_lr)
        self.replay = EpisodicReplay(t.replay_episodes, spec.episode_steps, spec.obs_dim, spec.act_dim, spec.goal_dim)
        self.iteration = 0
        self.elapsed_s = 0.0  # wall time spent training, summed over resumed runs
        self.effector = slice(*spec.effector)
        self.velocity = velocity_indices(spec.obs_names)

    # -- updates --------------------------------------------------------------------------
    def teacher_forcing(self) -> float:
        t = self.config.train
        if t.teacher_forcing_final is None:
            return t.teacher_forcing
        frac = self.iteration / max(1, t.iterations - 1)
        return t.teacher_forcing + frac * (t.teacher_forcing_final - t.teacher_forcing)

    def lr_scale(self) -> float:
        """Learning-rate factor of the current iteration (1 until ``lr_decay_start``)."""
        t = self.config.train
        if t.lr_decay_start is None or self.iteration < t.lr_decay_start:
            return 1.0
        frac = (self.iteration - t.lr_decay_start) / max(1, t.iterations - 1 - t.lr_decay_start)
        return 1.0 + min(1.0, frac) * (t.lr_final_scale - 1.0)

    def _apply_lr(self) -> None:
        t = self.config.train
        scale = self.lr_scale()
        for opt in (self.pred_opt, self.policy_opt):
            for group, base in zip(opt.param_groups, (t.lr, t.tau_lr)):
                group["lr"] = base * scale

    def predictor_update(self) -> float:
        t = self.config.train
        obs, actions, _ = _obs_to_torch(*self.replay.sample(self.rng, t.batch, t.warmup + t.unroll))
        return predictor_step(self.predictor, self.pred_opt, obs, actions, t, self.teacher_forcing())

    def policy_update(self) -> dict[str, float]:
        t = self.config.train
        obs, actions, goals = _obs_to_torch(*self.replay.sample(self.rng, t.batch, t.warmup))
        return policy_step(self.policy, self.predictor, self.policy_opt, obs, actions, goals, t,
                           self.effector, self.config.model.learn_tau, self.velocity,
                           real_rest_windows(self.replay, self.rng, t.batch, t))

    # -- loop -----------------------------------------------------------------------------
    def collect(self) -> dict[str, float]:
        t = self.config.train
        starts, goals = self.env.sample_tasks(self.rng, t.envs)
        random = self.iteration < t.random_iterations
        self.policy.eval()
        episodes = rollout(self.env, self.policy, starts, goals, rng=self.rng,
                           noise=t.exploration_noise, random_actions=random,
                           velocity_feedback=t.random_velocity_feedback)
        self.policy.train()
        self.replay.add(episodes.obs, episodes.actions, episodes.goals)
        final = episodes.obs[:, -1]
        return {
            "collect/final_distance_median": float(np.median(self.env.distance(final, goals))),
            "collect/success_rate": float(np.mean(self.env.success(final, goals))),
        }

    def validate(self) -> dict[str, float]:
        t = self.config.train
        rng = np.random.default_rng([self.config.seed, VALIDATION_STREAM])
        env = self.env if t.eval_episodes == t.envs else make_batch(self.config.task, t.eval_episodes, self.config.env, t.env_workers)
        starts, goals = env.sample_tasks(rng, env.num_envs)
        self.policy.eval()
        final = rollout(env, self.policy, starts, goals).obs[:, -1]
        self.policy.train()
        if env is not self.env:
            env.close()
        return {
            "validation/success_rate": float(np.mean(env.success(final, goals))),
            "validation/final_distance_median": float(np.median(env.distance(final, goals))),
        }

    def train_iteration(self) -> dict[str, float]:
        """One iteration: collect, calibrate on the first, update both nets, validate when due."""
        t = self.config.train
        start = time.perf_counter()
        self._apply_lr()  # also after a resume: the config's rates, not the saved ones
        metrics = self.collect()
        if self.iteration == 0 and not t.init_from:  # a loaded model keeps its calibration
            n = self.replay.size
            inputs = self.config.model.calibrate_inputs
            self.predictor.calibrate(self.replay.obs[:n], self.replay.actions[:n], inputs=inputs)
            if inputs:
                self.policy.calibrate(self.replay.obs[:n], self.replay.goals[:n])
        t0 = time.perf_counter()
        pred_losses = [self.predictor_update() for _ in range(t.predictor_updates)]
        t1 = time.perf_counter()
        pol = [self.policy_update() for _ in range(t.policy_updates)]
        t2 = time.perf_counter()
        metrics.update({
            "losses/predictor": float(np.mean(pred_losses)) if pred_losses else float("nan"),
            "losses/policy": float(np.mean([p["loss"] for p in pol])) if pol else float("nan"),
            "charts/imagined_distance": float(np.mean([p["imagined_distance"] for p in pol])) if pol else float("nan"),
            "charts/teacher_forcing": self.teacher_forcing(),
            "charts/lr_scale": self.lr_scale(),
            "time/collect_s": t0 - start, "time/predictor_s": t1 - t0, "time/policy_s": t2 - t1,
        })
        self.iteration += 1
        if t.eval_every and (self.iteration % t.eval_every == 0 or self.iteration == t.iterations):
            metrics.update(self.validate())
        return metrics

    def fit(self, progress: bool = True, stop_when: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Train to the config's iterations (resuming a run directory's checkpoint), or until
        ``stop_when`` returns true for an iteration's metrics (after they are saved)."""
        t = self.config.train
        self._resume()
        with FitLoop(self.run_dir, "iteration", t.iterations, f"train {self.config.task}/{self.config.model.kind}",
                     "it", progress, self.iteration, self.elapsed_s) as loop:
            while self.iteration < t.iterations:
                start = time.perf_counter()
                metrics = self.train_iteration()
                loop.record(self.iteration, metrics, lambda: self._checkpoint(loop.elapsed_s), self._save_model,
                            postfix={"pred": f"{metrics['losses/predictor']:.3g}",
                                     "dist": f"{metrics['collect/final_distance_median']:.3f}"}, started=start)
                if stop_when is not None and stop_when(metrics):
                    break
        return loop.last

    def _save_model(self, directory: Path) -> None:
        """``best/`` too: a policy trained through a learned model can get worse late in a run
        (docs/training.md)."""
        save_model(directory, self.predictor, self.policy, self.io_spec, self.config)

    def _checkpoint(self, elapsed_s: float) -> None:
        self.elapsed_s = elapsed_s
        self._save_model(self.run_dir)
        save_state(self.run_dir, {
            "iteration": self.iteration, "elapsed_s": self.elapsed_s,
            "pred_opt": self.pred_opt.state_dict(), "policy_opt": self.policy_opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        })
        atomic_write_bytes(self.run_dir / "replay.npz", self.replay.save)

    def _init_from(self, directory: str) -> None:
        """Start from a trained model's weights (its I/O spec must be this run's)."""
        from ..models.checkpoint import CheckpointError, load_model

        predictor, policy, _, config = load_model(resolve(directory), self.io_spec.interface())
        if predictor is None:
            raise CheckpointError(f"train.init_from {directory}: a TD3 model (actor only); "
                                  "predictive training needs a forward model to go on from")
        mine, theirs = self.config.model, config.model
        if (mine.substeps, mine.dt) != (theirs.substeps, theirs.dt):  # the forward model's timing
            raise CheckpointError(f"train.init_from {directory}: its networks ran {theirs.substeps} substeps "
                                  f"of {theirs.dt} s, this config's model.substeps and model.dt say "
                                  f"{mine.substeps} of {mine.dt} s (model.policy_substeps changes the policy's alone)")
        try:
            self.predictor.load_state_dict(predictor.state_dict())
            if (mine.policy_recurrent and not theirs.policy_recurrent) or (
                    mine.policy_fine_error_m and not theirs.policy_fine_error_m):
                self.policy.load_grown(policy.state_dict())
            else:
                self.policy.load_state_dict(policy.state_dict())
            if match_readout_timing(self.policy, mine):
                log.info("train.init_from %s: the policy's readout retimed to this config's time constants", directory)
        except RuntimeError as exc:  # other sizes or kinds than this config's networks
            raise CheckpointError(f"train.init_from {directory}: its networks ({config.model.kind}, "
                                  f"hidden {config.model.hidden}) do not fit this config's ({exc})") from None

    def _resume(self) -> None:
        state = load_state(self.run_dir)
        if state is None:
            return
        from ..models.checkpoint import load_model

        predictor, policy, _, _ = load_model(self.run_dir, self.io_spec.to_dict())
        self.predictor.load_state_dict(predictor.state_dict())
        self.policy.load_state_dict(policy.state_dict())
        self.iteration, self.elapsed_s = int(state["iteration"]), float(state["elapsed_s"])
        self.pred_opt.load_state_dict(state["pred_opt"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.replay.load(self.run_dir / "replay.npz")
