"""TD3 (Fujimoto et al. 2018) with a spiking actor and, optionally, a proxy target
(Xu et al. 2025 (Proxy Target)).

- twin critics and their Polyak-averaged targets; the target action is smoothed with
  clipped Gaussian noise; the actor and the targets update every ``policy_delay`` critic
  updates;
- target actor ``"polyak"``: a Polyak copy of the actor itself (for a spiking actor this
  is what Xu et al. 2025 (Proxy Target) found destabilising); ``"proxy"``: a non-spiking
  MLP trained to imitate the spiking actor (MSE on the update's replay states, at most
  ``batch`` of them, ``proxy_steps`` Adam steps per actor update) whose Polyak copy is the target.
  Training-time only: the deployed policy is the spiking actor;
- ``bc_weight`` > 0 adds TD3+BC's behaviour-cloning term towards the guide's actions
  (stored with each transition), with Q normalised by its mean magnitude.

The settings are the config's ``rl`` section (:class:`snn_control.config.RLConfig`).
Transitions live in preallocated arrays (:class:`TransitionReplay`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import RLConfig
from ..models.actors import MLPActor, mlp


class TwinCritic(nn.Module):
    """Two independent Q networks ``Q(s, a)`` (TD3's clipped double Q)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256)) -> None:
        super().__init__()
        self.q1 = mlp([obs_dim + act_dim, *hidden, 1])
        self.q2 = mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def q1_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Q1(s, a)`` alone: what TD3's actor loss needs."""
        return self.q1(torch.cat([obs, action], -1)).squeeze(-1)


class TransitionReplay:
    """Ring buffer of ``(obs, action, reward, next_obs, done, guide_action)`` in float32
    arrays; ``guide_action`` is NaN where no guide action was recorded."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.guide_actions = np.full((capacity, act_dim), np.nan, np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.size = self.cursor = 0

    def add(self, obs, actions, rewards, next_obs, dones, guide_actions=None) -> None:
        """Add N transitions (arrays with a leading N). NaN or Inf is refused."""
        n = len(obs)
        for name, arr in (("observations", obs), ("actions", actions), ("rewards", rewards),
                          ("next observations", next_obs)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"non-finite {name} in {n} transitions; refusing to store them")
        idx = (self.cursor + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.dones[idx] = next_obs, dones
        self.guide_actions[idx] = np.nan if guide_actions is None else guide_actions
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, torch.Tensor]:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay")
        i = rng.integers(0, self.size, size=batch)
        return {k: torch.as_tensor(getattr(self, k)[i]) for k in
                ("obs", "actions", "rewards", "next_obs", "dones", "guide_actions")}


class UpdateRatio:
    """How many updates ``transitions`` new transitions owe at ``per_transition`` updates
    each, the fraction carried over: 0.5 is one update every second transition (rounding
    each call would give one per transition, or none)."""

    def __init__(self, per_transition: float) -> None:
        if not per_transition > 0:
            raise ValueError(f"updates per transition must be positive, got {per_transition}")
        self.per_transition, self.credit = float(per_transition), 0.0

    def due(self, transitions: int) -> int:
        self.credit += self.per_transition * transitions
        count = int(self.credit + 1e-9)  # 0.1 * 10 sums to 0.9999999999999999
        self.credit -= count
        return count


def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1.0 - tau).add_(s, alpha=tau)


class TD3:
    def __init__(self, actor: nn.Module, obs_dim: int, act_dim: int, settings: RLConfig | None = None,
                 critic_hidden=(256, 256)) -> None:
        self.s = s = settings or RLConfig()
        if s.target not in ("proxy", "polyak"):
            raise ValueError(f"unknown target actor {s.target!r}; choose proxy or polyak")
        self.actor = actor
        self.critic = TwinCritic(obs_dim, act_dim, critic_hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.proxy = MLPActor(obs_dim, act_dim, s.proxy_hidden) if s.target == "proxy" else None
        self.actor_target = copy.deepcopy(self.proxy if self.proxy is not None else actor).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=s.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=s.critic_lr)
        self.proxy_opt = torch.optim.Adam(self.proxy.parameters(), lr=s.proxy_lr) if self.proxy is not None else None
        self.updates = 0

    def target_action(self, next_obs: torch.Tensor) -> torch.Tensor:
        """The target actor's action, smoothed with clipped noise and clipped to [-1, 1]."""
        with torch.no_grad():
            action = self.actor_target(next_obs)
            noise = (torch.randn_like(action) * self.s.policy_noise).clamp(-self.s.noise_clip, self.s.noise_clip)
            return (action + noise).clamp(-1.0, 1.0)

    def proxy_step(self, states: torch.Tensor, wanted: torch.Tensor | None = None) -> float:
        """One imitation step of the proxy towards the spiking actor's actions ``wanted`` on
        ``states`` (computed here when not given)."""
        if wanted is None:
            with torch.no_grad():
                wanted = self.actor(states)
        loss = F.mse_loss(self.proxy(states), wanted)
        self.proxy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.proxy_opt.step()
        return float(loss.detach())

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        s = self.s
        obs, actions = batch["obs"], batch["actions"]
        target_q = torch.min(*self.critic_target(batch["next_obs"], self.target_action(batch["next_obs"])))
        target = batch["rewards"] + s.gamma * (1.0 - batch["dones"]) * target_q
        q1, q2 = self.critic(obs, actions)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        out = {"critic_loss": float(critic_loss.detach()), "q_mean": float(q1.detach().mean())}
        if self.updates % s.policy_delay:
            return out
        self.critic.requires_grad_(False)
        try:
            pi = self.actor(obs)
            q = self.critic.q1_value(obs, pi)
            if s.bc_weight > 0:
                guided = ~torch.isnan(batch["guide_actions"]).any(-1)
                lam = 1.0 / q.abs().mean().detach().clamp_min(1e-6)
                bc = F.mse_loss(pi[guided], batch["guide_actions"][guided]) if guided.any() else pi.new_zeros(())
                actor_loss = -lam * q.mean() + s.bc_weight * bc
                out["bc_loss"] = float(bc.detach())
            else:
                actor_loss = -q.mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
        finally:
            self.critic.requires_grad_(True)
        out["actor_loss"] = float(actor_loss.detach())
        if self.proxy is not None:  # the batch's replay states (Xu et al. 2025: 256, 3 steps)
            states = obs[: s.batch]
            with torch.no_grad():  # the updated actor's actions: the same for every step
                wanted = self.actor(states)
            for _ in range(s.proxy_steps):
                out["proxy_loss"] = self.proxy_step(states, wanted)
        polyak(self.critic_target, self.critic, s.tau)
        polyak(self.actor_target, self.proxy if self.proxy is not None else self.actor, s.tau)
        return out
