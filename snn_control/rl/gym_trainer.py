"""TD3 on a standard gymnasium task (``task: gym``), for example MuJoCo
``InvertedDoublePendulum-v5``: the benchmark of Xu et al. 2025 (Proxy Target), with the
same actors, TD3, proxy target and slope schedules as the reach tasks (:mod:`.trainer`).

One env, one transition per step, ``updates_per_step`` TD3 updates per transition after
``start_steps`` uniform random actions. Observations are standardised by the mean and
spread of those random-action transitions (frozen afterwards) and clipped to +-5, so the
population code's fixed range covers every dimension; the replay keeps raw observations.
Without the clip, the pendulum's constraint-force entry (zero in 99.9 % of random steps,
up to 10 in the rest) standardises to about 70, the critic loss grows to 1e4-7e4 and the
ANN stalls far from balancing. Episodes that end by termination cut the bootstrap
(``done``), truncation at the time limit does not. Every ``eval_every`` transitions the
deterministic actor runs ``eval_episodes`` episodes from fixed seeds; the average return
of each evaluation is logged and the best is the run's "max average return" (as Xu et al.
2025 report it). The run directory gets ``actor.pt`` (weights and the observation standardisation),
``config.yaml``, ``metrics.jsonl`` and TensorBoard files.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ExperimentConfig
from ..envs.gym_task import make_gym_task
from ..models.actors import SpikingActor
from ..training.fitloop import FitLoop
from .td3 import TransitionReplay, UpdateRatio
from .trainer import GuideError, build_agent

EVAL_SEED = 1_000_000  # evaluation episodes start from seeds EVAL_SEED + i, never used in training
OBS_RANGE = 3.0  # the population code's centres span +-3 standard deviations (one spacing beyond)
OBS_CLIP = 5.0  # standardised observations are clipped here (see the module docstring)


class ObservationScaler:
    """Per-dimension ``(x - mean) / std``, clipped to +-``OBS_CLIP``, statistics fitted once."""

    def __init__(self, dims: int) -> None:
        self.mean = np.zeros(dims, np.float32)
        self.std = np.ones(dims, np.float32)

    def fit(self, samples: np.ndarray) -> None:
        self.mean = samples.mean(0).astype(np.float32)
        self.std = np.maximum(samples.std(0), 1e-3).astype(np.float32)

    def __call__(self, x):
        if isinstance(x, torch.Tensor):
            return ((x - torch.as_tensor(self.mean)) / torch.as_tensor(self.std)).clamp(-OBS_CLIP, OBS_CLIP)
        return np.clip((x - self.mean) / self.std, -OBS_CLIP, OBS_CLIP).astype(np.float32)


class GymTD3Trainer:
    def __init__(self, config: ExperimentConfig, run_dir: str | Path) -> None:
        self.config, r = config, config.rl
        if r.guide_share > 0 or r.bc_weight > 0:
            raise GuideError(f"task 'gym' ({config.env.env_id}) has no classical guide; "
                             "set rl.guide_share and rl.bc_weight to 0")
        self.run_dir = Path(run_dir)
        torch.set_num_threads(r.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, 3])
        self.env = make_gym_task(config.env)
        space = self.env.action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self.actor, self.agent, self.slopes = build_agent(config, self.obs_dim, self.act_dim, OBS_RANGE)
        self.scaler = ObservationScaler(self.obs_dim)
        self.replay = TransitionReplay(min(r.replay_size, r.total_steps), self.obs_dim, self.act_dim)
        self.env_steps = 0

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Actor units [-1, 1] -> the env's action box."""
        return self.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(self.scaler(obs)[None])
        return self.actor(x)[0].numpy().astype(np.float64)

    def evaluate(self) -> float:
        """Average return of the deterministic actor over ``eval_episodes`` fixed-seed episodes."""
        env = make_gym_task(self.config.env)
        try:
            returns = []
            for i in range(self.config.rl.eval_episodes):
                obs, _ = env.reset(seed=EVAL_SEED + i)
                total, done = 0.0, False
                while not done:
                    obs, reward, terminated, truncated, _ = env.step(self.to_env(self.act(obs)))
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
            return float(np.mean(returns))
        finally:
            env.close()

    def _update(self) -> dict[str, float]:
        batch = self.replay.sample(self.rng, self.config.rl.batch)
        batch["obs"], batch["next_obs"] = self.scaler(batch["obs"]), self.scaler(batch["next_obs"])
        return self.agent.update(batch)

    def fit(self, progress: bool = True) -> dict[str, Any]:
        r = self.config.rl
        loop = FitLoop(self.run_dir, "env_steps", r.total_steps, f"td3 {self.config.env.env_id}/{r.actor}/{r.target}",
                       "step", progress)
        loop.start_afresh(self.config)
        next_eval, best = r.eval_every, -np.inf
        episode_return, returns, losses = 0.0, [], []
        ratio = UpdateRatio(r.updates_per_step)
        with loop, closing(self.env):
            obs, _ = self.env.reset(seed=int(self.rng.integers(2**31)))
            while self.env_steps < r.total_steps:
                slope = self.slopes.value(self.env_steps)
                if isinstance(self.actor, SpikingActor):
                    self.actor.set_slope(slope)
                if self.env_steps < r.start_steps:
                    action = self.rng.uniform(-1.0, 1.0, self.act_dim)
                else:
                    action = np.clip(self.act(obs) + self.rng.normal(0.0, r.exploration_noise, self.act_dim), -1, 1)
                next_obs, reward, terminated, truncated, _ = self.env.step(self.to_env(action))
                if not (np.all(np.isfinite(next_obs)) and np.isfinite(reward)):
                    raise ValueError(f"{self.config.env.env_id}: non-finite observation or reward at "
                                     f"env step {self.env_steps}: {next_obs}, {reward}")
                self.replay.add(obs[None], action[None], np.array([reward]), next_obs[None],
                                np.array([float(terminated)]))
                self.env_steps += 1
                episode_return += float(reward)
                obs = next_obs
                if terminated or truncated:
                    returns.append(episode_return)
                    self.slopes.observe_return(episode_return)
                    obs, _ = self.env.reset(seed=int(self.rng.integers(2**31)))
                    episode_return = 0.0
                if self.env_steps == r.start_steps:
                    self.scaler.fit(self.replay.obs[: self.replay.size])
                if self.env_steps >= r.start_steps:
                    for _ in range(ratio.due(1)):
                        losses.append(self._update())
                loop.advance(self.env_steps)
                if self.env_steps >= next_eval or self.env_steps >= r.total_steps:
                    next_eval += r.eval_every
                    out = self._evaluation(returns, losses, slope)
                    best = max(best, out["eval/return_mean"])
                    out["eval/max_average_return"] = best
                    loop.record(self.env_steps, out, self.save,
                                postfix={"eval": f"{out['eval/return_mean']:.0f}", "best": f"{best:.0f}"})
                    returns, losses = [], []
        return loop.last

    def _evaluation(self, returns, losses, slope) -> dict[str, float]:
        out = {"eval/return_mean": self.evaluate(), "charts/slope": float(slope)}
        if returns:
            out["charts/episode_return"] = float(np.mean(returns))
        for key in ("critic_loss", "actor_loss", "proxy_loss", "q_mean"):
            values = [l[key] for l in losses if key in l]
            if values:
                out[f"losses/{key}"] = float(np.mean(values))
        return out

    def save(self) -> None:
        torch.save({"actor": self.actor.state_dict(), "obs_mean": torch.as_tensor(self.scaler.mean),
                    "obs_std": torch.as_tensor(self.scaler.std)}, self.run_dir / "actor.pt")
