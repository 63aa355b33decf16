"""TD3 training of a spiking (or MLP) actor on a batched reach env: ``algorithm: td3``.

Each env step: the classical guide acts for the first ``guided_steps`` of an episode
(jump-start, shrinking share), uniform random actions before ``start_steps``, else the
actor plus Gaussian noise; the transitions (observation and goal concatenated, reward =
minus the effector-goal distance in the task's unit) go to the replay together with the
guide's action (for the behaviour-cloning term); then ``updates_per_step`` TD3 updates
per transition. The surrogate slope follows its schedule. Validation: deterministic
actor on the held-out validation goal set. The run directory is a model directory
(:mod:`snn_control.models.checkpoint`: ``model.pt`` with the actor as the policy, the I/O
spec, ``config.yaml``) that ``snn-control eval`` and the controller node load like a
predictive-control one, plus ``metrics.jsonl`` and TensorBoard files; ``best/`` is the
model directory of the best validation so far (TD3's actor can get worse late in a run).
``rl.goal_error``: actor and critics see the goal minus the effector instead of the goal.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classical import OperationalSpacePD
from ..config import ExperimentConfig
from ..envs import make_batch
from ..models.networks import policy_input
from ..models.checkpoint import save_model
from ..models import io_spec_for
from .guide import GuideSchedule
from ..models.actors import ActorPolicy, SpikingActor, build_actor
from ..training.fitloop import FitLoop
from .slopes import make_slope_schedule
from .td3 import TD3, TransitionReplay, UpdateRatio

VALIDATION_SET = 1  # held-out goal set for validation during training; eval reports set 0


class GuideError(ValueError):
    """A guide whose actions do not fit the environment."""


def build_agent(config: ExperimentConfig, obs_dim: int, act_dim: int, obs_range: float = 1.0):
    """``(actor, TD3 agent, slope schedule)`` as ``config.rl`` describes them."""
    r = config.rl
    actor = build_actor(r, obs_dim, act_dim, obs_range)
    agent = TD3(actor, obs_dim, act_dim, r)
    slopes = make_slope_schedule(r.slope_schedule, r.slope, r.slope_start, r.slope_end,
                                 r.slope_steps or r.total_steps, r.adaptive_return_low, r.adaptive_return_high)
    return actor, agent, slopes


class RLTrainer:
    def __init__(self, config: ExperimentConfig, run_dir: str | Path) -> None:
        self.config, r = config, config.rl
        self.run_dir = Path(run_dir)
        torch.set_num_threads(r.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, 3])
        self.env = make_batch(config.task, r.envs, config.env)
        spec = self.env.spec
        self.obs_dim, self.act_dim = spec.obs_dim + spec.goal_dim, spec.act_dim
        self.actor, self.agent, self.slopes = build_agent(config, self.obs_dim, self.act_dim)
        self.replay = TransitionReplay(min(r.replay_size, r.total_steps), self.obs_dim, self.act_dim)
        self.update_ratio = UpdateRatio(r.updates_per_step)
        self.guide_schedule = GuideSchedule(r.guide_share, r.guide_decay_steps)
        self.guide = OperationalSpacePD(self.env) if (r.guide_share > 0 or r.bc_weight > 0) else None
        self.goal_error = tuple(spec.effector) if r.goal_error else None
        self.env_steps = 0

    def guide_actions(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        action = np.asarray(self.guide.act(obs, goals), dtype=np.float64)
        if action.shape != (self.env.num_envs, self.act_dim) or not np.all(np.isfinite(action)):
            raise GuideError(f"guide gave actions of shape {action.shape} (finite: {np.all(np.isfinite(action))}); "
                             f"the env takes ({self.env.num_envs}, {self.act_dim})")
        return np.clip(action, -1.0, 1.0)

    def episode(self) -> dict[str, float]:
        r, env = self.config.rl, self.env
        starts, goals = env.sample_tasks(self.rng, env.num_envs)
        obs = env.check_observation(env.reset_to(starts, goals))
        guided = self.guide_schedule.guided_steps(self.env_steps, env.spec.episode_steps) if self.guide else 0
        returns = np.zeros(env.num_envs)
        losses: list[dict[str, float]] = []
        for t in range(env.spec.episode_steps):
            slope = self.slopes.value(self.env_steps)
            if isinstance(self.actor, SpikingActor):
                self.actor.set_slope(slope)
            x = policy_input(obs, goals, self.goal_error).astype(np.float32)
            guide = self.guide_actions(obs, goals) if self.guide is not None else None
            if t < guided:
                action = guide
            elif self.env_steps < r.start_steps:
                action = self.rng.uniform(-1.0, 1.0, size=(env.num_envs, self.act_dim))
            else:
                with torch.no_grad():
                    action = self.actor(torch.as_tensor(x)).numpy().astype(np.float64)
                action = np.clip(action + self.rng.normal(0.0, r.exploration_noise, action.shape), -1.0, 1.0)
            obs = env.check_observation(env.step(action))
            reward = -env.distance(obs, goals)
            if not np.all(np.isfinite(reward)):
                raise ValueError(f"non-finite reward at env step {self.env_steps}: {reward}")
            returns += reward
            x_next = policy_input(obs, goals, self.goal_error).astype(np.float32)
            self.replay.add(x, action, reward, x_next, np.zeros(env.num_envs), guide)
            self.env_steps += env.num_envs
            if self.env_steps >= r.start_steps:
                for _ in range(self.update_ratio.due(env.num_envs)):
                    losses.append(self.agent.update(self.replay.sample(self.rng, r.batch)))
        for ret in returns:
            self.slopes.observe_return(float(ret))
        out = {"charts/episode_return": float(returns.mean()), "charts/slope": float(slope),
               "charts/guide_share": self.guide_schedule.share(self.env_steps) if self.guide else 0.0,
               "collect/final_distance_median": float(np.median(env.distance(obs, goals))),
               "collect/success_rate": float(np.mean(env.success(obs, goals)))}
        for key in ("critic_loss", "actor_loss", "proxy_loss", "bc_loss", "q_mean"):
            values = [l[key] for l in losses if key in l]
            if values:
                out[f"losses/{key}"] = float(np.mean(values))
        if isinstance(self.actor, SpikingActor) and self.actor.last_rates:
            for i, rate in enumerate(self.actor.last_rates):
                out[f"firing/layer{i + 1}_spikes_per_step"] = float(rate)
        return out

    def policy(self) -> ActorPolicy:
        """The actor as the model directory's policy."""
        return ActorPolicy(self.actor, self.goal_error)

    def save(self, directory: Path) -> None:
        save_model(directory, None, self.policy(), io_spec_for(self.config, self.env.spec), self.config)

    def validate(self) -> dict[str, float]:
        from ..training.collect import rollout
        from ..training.evaluate import heldout_tasks

        env = make_batch(self.config.task, self.config.rl.eval_episodes, self.config.env)
        try:
            starts, goals = heldout_tasks(env, env.num_envs, VALIDATION_SET)
            final = rollout(env, self.policy(), starts, goals).obs[:, -1]
            return {"validation/success_rate": float(np.mean(env.success(final, goals))),
                    "validation/final_distance_median": float(np.median(env.distance(final, goals)))}
        finally:
            env.close()

    def fit(self, progress: bool = True) -> dict[str, Any]:
        r = self.config.rl
        loop = FitLoop(self.run_dir, "env_steps", r.total_steps, f"td3 {self.config.task}/{r.actor}/{r.target}",
                       "step", progress)
        loop.start_afresh(self.config)  # TD3 runs do not resume
        next_eval = r.eval_every
        with loop, closing(self.env):
            while self.env_steps < r.total_steps:
                metrics = self.episode()
                if self.env_steps >= next_eval or self.env_steps >= r.total_steps:
                    metrics.update(self.validate())
                    next_eval += r.eval_every
                loop.record(self.env_steps, metrics, lambda: self.save(self.run_dir), self.save,
                            postfix={"ret": f"{metrics['charts/episode_return']:.3g}"})
        return loop.last
