"""One gradient step of the forward model, and one of the policy through it.

Shared by the from-scratch trainer (:mod:`.trainer`, windows from its replay) and the
fine-tuner (:mod:`.finetune`, windows from recorded sessions). Both take time-major
windows: ``obs (L+1, B, O)``, ``actions (L, B, A)``, ``goals (B, G)`` as float32 tensors.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import TrainConfig
from ..models import spiking_nets
from ..training.collect import actions_at_rest


def use_training_path(predictor: nn.Module, policy: nn.Module, t: TrainConfig, compile_steps: bool) -> None:
    """How the spiking nets step while gradients are recorded: each control step through
    ``torch.compile`` (``compile_steps``), else layer by layer with fused functions
    (``t.fused_neurons``), else op by op. Shared by the trainer and the fine-tune."""
    for net in spiking_nets(predictor) + spiking_nets(policy):
        net.fused = t.fused_neurons
        if compile_steps:
            net.compile_step()


@contextlib.contextmanager
def decays_held(*modules: nn.Module):
    """Every spiking net in ``modules`` computes its decay factors once for the forward pass
    within (:meth:`.SpikingNet.decays_held`); the same values and, up to rounding, gradients."""
    with contextlib.ExitStack() as stack:
        for module in modules:
            for net in spiking_nets(module):
                stack.enter_context(net.decays_held())
        yield


def make_optimizer(module: nn.Module, lr: float, tau_lr: float) -> torch.optim.Optimizer:
    """Adam with time constants (``log_tau*``) in their own group."""
    taus, weights = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (taus if name.split(".")[-1].startswith("log_tau") else weights).append(p)
    groups = [{"params": weights, "lr": lr}]
    if taus:
        groups.append({"params": taus, "lr": tau_lr})
    return torch.optim.Adam(groups)


def predictor_loss(predictor, obs: torch.Tensor, actions: torch.Tensor, t: TrainConfig,
                   teacher_forcing: float = 1.0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared next-state error over the last ``len(actions) - t.warmup`` steps, each
    entry in units of its typical one-step change (``loss_scale``, or ``scale`` when given).
    The first ``t.warmup`` steps only warm up the state; afterwards each step is fed the
    real state with probability ``teacher_forcing``, else the model's own prediction."""
    steps, batch = actions.shape[0], actions.shape[1]
    scale = predictor.loss_scale if scale is None else scale
    state = predictor.initial_state(batch, obs)
    loss = obs.new_zeros(())
    current = obs[0]
    for k in range(steps):
        predicted, state = predictor.step(current, actions[k], state)
        if k >= t.warmup:
            loss = loss + (((predicted - obs[k + 1]) / scale) ** 2).mean()
        if k + 1 < t.warmup or teacher_forcing >= 1.0:
            current = obs[k + 1]
        else:
            use_real = (torch.rand(batch, 1) < teacher_forcing).float()
            current = use_real * obs[k + 1] + (1 - use_real) * predicted
    return loss / max(1, steps - t.warmup)


def predictor_step(predictor, optimizer, obs, actions, t: TrainConfig, teacher_forcing: float = 1.0) -> float:
    nets = spiking_nets(predictor) if t.activity_bounds else []
    for net in nets:
        net.start_activity()
    with decays_held(predictor):
        loss = predictor_loss(predictor, obs, actions, t, teacher_forcing) + t.weight_l2 * weight_l2(predictor)
    for net in nets:
        loss = loss + t.activity_bounds * activity_penalty(net.activity_rates(), t.activity_min_hz, t.activity_max_hz)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(predictor.parameters(), t.grad_clip)
    optimizer.step()
    return float(loss.detach())


def imagined_distance(policy, predictor, obs, actions, goals, t: TrainConfig, effector: slice):
    """Warm both nets up on ``t.warmup`` real steps, then let the policy act for ``t.unroll``
    steps in the predictor's imagination. Returns ``(distance summed over steps, penalty
    summed over steps)``; differentiable with respect to the policy's parameters."""
    batch = goals.shape[0]
    pred_state = predictor.initial_state(batch, obs)
    pol_state = policy.initial_state(batch, obs)
    with torch.no_grad():  # warm-up on real steps: states only
        for k in range(t.warmup):
            _, _, pol_state = policy.step(obs[k], goals, pol_state)
            _, pred_state = predictor.step(obs[k], actions[k], pred_state)
    if t.activity_bounds:  # rates over the imagined steps only
        for net in spiking_nets(policy):
            net.start_activity()
    imagined = obs[t.warmup]
    distance = obs.new_zeros(())
    penalty = obs.new_zeros(())
    previous = None
    for _ in range(t.unroll):
        action, potential, pol_state = policy.step(imagined, goals, pol_state)
        before = imagined[:, effector]
        imagined, pred_state = predictor.step(imagined, action, pred_state)
        squared = ((imagined[:, effector] - goals) ** 2).sum(-1)
        if t.settle:  # the path of a hover at the goal; the mask has no gradient
            near = (squared.detach() < t.settle_radius_m**2).to(squared.dtype)
            moved = (((imagined[:, effector] - before) ** 2).sum(-1) + 1e-12).sqrt()
            penalty = penalty + t.settle * (near * moved).mean()
        if t.distance_loss == "euclidean":  # epsilon keeps the gradient finite at 0
            distance = distance + (squared + 1e-6).sqrt().mean()
        else:
            distance = distance + squared.mean()
        excess = (potential.abs() - t.readout_bound).clamp(min=0)
        penalty = penalty + t.readout_penalty * (excess**2).mean()
        if t.action_l2:
            penalty = penalty + t.action_l2 * (action**2).mean()
        if t.action_smoothness and previous is not None:
            penalty = penalty + t.action_smoothness * ((action - previous) ** 2).mean()
        previous = action
    return distance, penalty


def mean_distance(distance: torch.Tensor, t: TrainConfig) -> float:
    """Per-step mean distance (m) from :func:`imagined_distance`'s sum."""
    mean = float(distance.detach()) / t.unroll
    return mean if t.distance_loss == "euclidean" else mean**0.5


def still_action_penalties(policy, obs: torch.Tensor, effector: slice, velocity: list[int],
                           warmup: int = 10, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """At rest at the goal (:func:`actions_at_rest`) from the windows' last states: the mean
    squared action (``train.hold_still``) and its variance over time (``train.hold_fluctuation``,
    which leaves a steady torque alone)."""
    rest = actions_at_rest(policy, obs[-1], effector, velocity, warmup, steps)
    return (rest**2).mean(), rest.var(dim=0, unbiased=False).mean()


REAL_REST_WARMUP = 25  # steps of a recorded window that only set the policy's state
REAL_REST_STEPS = 25  # steps after them whose actions at rest are penalised


def real_rest_windows(replay, rng, batch: int, t: TrainConfig):
    """Recorded ``(obs, goals)`` windows for ``train.real_rest`` (None while it is off),
    as long as the replay's episodes allow."""
    if not t.real_rest:
        return None
    obs, _, goals = replay.sample(rng, batch, min(REAL_REST_WARMUP + REAL_REST_STEPS, replay.steps))
    return torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(goals, dtype=torch.float32)


def real_rest_fluctuation(policy, obs: torch.Tensor, goals: torch.Tensor, effector: slice,
                          radius: float, warmup: int | None = None) -> torch.Tensor:
    """The variance over time of the policy's actions along recorded windows ``obs (T, B, O)``
    (its input the recorded observations, not its own consequences), over the steps after
    ``warmup`` (default :data:`REAL_REST_WARMUP`, at most half the window) at which the
    effector was within ``radius`` of its goal; windows with fewer than two such steps
    count nothing."""
    if warmup is None:
        warmup = min(REAL_REST_WARMUP, obs.shape[0] // 2)
    state = policy.initial_state(goals.shape[0], obs)
    with torch.no_grad():
        for k in range(warmup):
            _, _, state = policy.step(obs[k], goals, state)
    actions = []
    for k in range(warmup, obs.shape[0]):
        action, _, state = policy.step(obs[k], goals, state)
        actions.append(action)
    actions = torch.stack(actions)  # (S, B, A)
    near = ((obs[warmup:, :, effector] - goals).norm(dim=-1) < radius).to(actions.dtype)[..., None]
    count = near.sum(0)  # (B, 1)
    per_step = near / count.clamp(min=1)  # weights of a mean over the near steps
    mean = (actions * per_step).sum(0)
    variance = (((actions - mean) ** 2) * per_step).sum(0)  # (B, A)
    keep = count[:, 0] >= 2
    return variance[keep].mean() if bool(keep.any()) else actions.new_zeros(())


def policy_step(policy, predictor, optimizer, obs, actions, goals, t: TrainConfig, effector: slice,
                learn_tau: bool, velocity: list[int] | None = None, rest=None) -> dict[str, float]:
    """One policy update by back-propagation through the frozen predictor; ``rest``: recorded
    ``(obs, goals)`` windows for ``train.real_rest``."""
    predictor.requires_grad_(False)
    try:
        with decays_held(policy, predictor):
            distance, penalty = imagined_distance(policy, predictor, obs, actions, goals, t, effector)
            loss = (distance + penalty) / t.unroll + t.weight_l2 * weight_l2(policy)
            if t.hold_still or t.hold_fluctuation:
                if not velocity:  # without them "at rest" would be the last state, moving: a penalty on reaching
                    raise ValueError("train.hold_still and train.hold_fluctuation need the joint velocities' "
                                     "positions in the observation")
                power, fluctuation = still_action_penalties(policy, obs, effector, velocity)
                loss = loss + t.hold_still * power + t.hold_fluctuation * fluctuation
            if t.real_rest:
                loss = loss + t.real_rest * real_rest_fluctuation(policy, *rest, effector, t.real_rest_radius_m)
        for net in spiking_nets(policy) if t.activity_bounds else []:
            loss = loss + t.activity_bounds * activity_penalty(net.activity_rates(), t.activity_min_hz, t.activity_max_hz)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), t.grad_clip)
        optimizer.step()
    finally:
        predictor.requires_grad_(True)
        for name, p in predictor.named_parameters():  # keep fixed taus fixed
            if name.split(".")[-1].startswith("log_tau") and not learn_tau:
                p.requires_grad_(False)
    return {"loss": float(loss.detach()), "imagined_distance": mean_distance(distance, t)}


def activity_penalty(rates: list[torch.Tensor], low_hz: float, high_hz: float) -> torch.Tensor:
    """Mean squared excursion of per-neuron rates outside [low, high], in units of 100 Hz."""
    total = rates[0].new_zeros(())
    for r in rates:
        total = total + (((low_hz - r).clamp(min=0) + (r - high_hz).clamp(min=0)) / 100.0).pow(2).mean()
    return total / len(rates)


def weight_l2(module: nn.Module) -> torch.Tensor:
    return sum((p**2).sum() for n, p in module.named_parameters() if p.requires_grad and "weight" in n)
