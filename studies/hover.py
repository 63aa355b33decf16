"""Where the hover at the goal comes from: the last second of each held-out reach.

``python -m studies.hover MODEL_DIR [--plant nominal] [--episodes 64] [--alpha 0.0 0.5 0.8]
[--damping 0.0 0.5] [--substeps 2 4] [--readout-ms 5 10]`` lets the model's policy reach the
first held-out goals on one plant of the robustness suite, once per ``--alpha``,
``--damping``, ``--substeps`` and ``--readout-ms``: its actions low-passed across control
steps, ``a_t = alpha * a_(t-1) + (1 - alpha) * policy_t`` (0: as the model acts), with
``damping`` in place of the model's ``action_damping``, its network run with that many
neural substeps per control step and its readout retimed to that time constant (synapse and
membrane alike, its steady gain kept; omitted: the model's own). For each it prints the reach figures, per joint the RMS joint velocity and the
action's standard deviation over the last second, the mean change of the action per step
there, the share of the effector's motion in that second below 2 Hz, and how much of its
path is approach: the median of the net displacement over the second and of its share of the
path (1: a straight run in, still closing on the goal; near 0: a wander about a fixed point).
If filtering calms the action but not the effector, the hover is the closed loop's slow
wander, not torque noise. ``action_std_frozen_input`` is the action's standard deviation
per joint over 50 steps with the input held at what the policy saw after 3 s (its own
history until then): a network whose torque wanders even so wanders on its own.
Prints JSON.
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch

from snn_control.models.checkpoint import load_model, velocity_slice
from snn_control.models.networks import ActionDamping
from snn_control.training.evaluate import effector_path
from snn_control.training.robustness import PLANTS, plant_rollout

FIGURES = ("success_rate", "success_rate_2cm", "final_distance_median_m", "held_last_1s_rate",
           "last_1s_path_median_m", "last_1s_distance_range_median_m")


class LowPassed(torch.nn.Module):
    """``policy`` with its actions low-passed across control steps (first step as is)."""

    def __init__(self, policy, alpha: float) -> None:
        super().__init__()
        self.policy, self.alpha = policy, alpha

    def initial_state(self, n, goal):
        return self.policy.initial_state(n, goal), None

    def step(self, obs, goal, state):
        inner, previous = state
        action, extra, inner = self.policy.step(obs, goal, inner)
        if previous is not None:
            action = self.alpha * previous + (1.0 - self.alpha) * action
        return action, extra, (inner, action)


def last_second(model_dir: str, plant: str, episodes: int, alpha: float, damping: float | None = None,
                substeps: int | None = None, readout_ms: float | None = None) -> dict[str, object]:
    _, policy, spec, config = load_model(model_dir)
    velocity = slice(*velocity_slice(spec.obs_names))
    if damping is not None:
        policy.action_damping = ActionDamping(damping, (velocity.start, velocity.stop)) if damping else None
    if substeps is not None:
        policy.net.substeps = substeps
    if readout_ms is not None:
        policy.net.readout.retime(readout_ms / 1000.0, readout_ms / 1000.0)
    with torch.no_grad():
        rolled, goals, metrics = plant_rollout(LowPassed(policy, alpha), config, plant, episodes)
    steps = round(1.0 / config.env.control_period)
    actions = rolled.actions[:, -steps:]
    effector = rolled.obs[:, -steps:, slice(*spec.effector)]
    net, path = approach(rolled.obs[:, -steps - 1:, slice(*spec.effector)])
    motion = np.abs(np.fft.rfft(effector - effector.mean(axis=1, keepdims=True), axis=1)).sum(axis=(0, 2))
    slow = np.fft.rfftfreq(steps, d=config.env.control_period) < 2.0
    gain = policy.action_damping.gain if policy.action_damping is not None else 0.0
    readout = float(policy.net.readout.time_constants()[1].mean()) * 1000.0
    return {"alpha": alpha, "damping": gain, "substeps": policy.net.substeps, "readout_ms": round(readout, 3),
            **{k: round(metrics[k], 4) for k in FIGURES},
            "joint_velocity_rms_last_1s": np.sqrt((rolled.obs[:, -steps:, velocity].astype(np.float64) ** 2).mean(axis=(0, 1))).round(4).tolist(),
            "action_std_last_1s": actions.astype(np.float64).std(axis=1).mean(axis=0).round(4).tolist(),
            "action_change_per_step_last_1s": round(float(np.abs(np.diff(actions, axis=1)).mean()), 4),
            "effector_motion_below_2hz": round(float(motion[slow].sum() / motion.sum()), 3),
            "last_1s_net_displacement_median_m": round(float(np.median(net)), 4),
            "last_1s_approach_share_median": round(float(np.median(net / np.maximum(path, 1e-9))), 3),
            "action_std_frozen_input": frozen_input_actions(policy, rolled.obs, goals, 3 * steps).std(axis=1)
            .mean(axis=0).round(4).tolist()}


@torch.no_grad()
def frozen_input_actions(policy, obs: np.ndarray, goals: np.ndarray, at: int, steps: int = 50) -> np.ndarray:
    """``(E, steps, A)``: the policy's actions along its recorded inputs ``obs (E, T+1, O)`` up to
    step ``at``, then ``steps`` more with the network's input held at step ``at``'s: the
    goal integral, if any, held too (it would otherwise go on moving the goal it shows)."""
    if not 0 <= at < obs.shape[1]:
        raise ValueError(f"cannot hold the input at step {at} of {obs.shape[1]}-step episodes")
    goal = torch.as_tensor(goals, dtype=torch.float32)
    state = policy.initial_state(len(obs), goal)
    for t in range(at):
        _, _, state = policy.step(torch.as_tensor(obs[:, t]), goal, state)
    held = torch.as_tensor(obs[:, at])
    if policy.goal_integral is not None:  # from here on, the goal it shows at step ``at``
        state, integral = state
        goal, _ = policy.goal_integral.shifted(held, goal, integral)
        policy = copy.copy(policy)
        policy.goal_integral = None
    actions = []
    for _ in range(steps):
        action, _, state = policy.step(held, goal, state)
        actions.append(action.numpy())
    return np.stack(actions, axis=1).astype(np.float64)


def approach(effector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per episode, from effector positions ``(E, T, 3)``: the net displacement from the first
    sample to the last and the path between them (as the eval's ``last_1s_path``)."""
    return np.linalg.norm(effector[:, -1] - effector[:, 0], axis=-1), effector_path(effector)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--plant", choices=list(PLANTS), default="nominal")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.0])
    parser.add_argument("--damping", type=float, nargs="+", default=[None])
    parser.add_argument("--substeps", type=int, nargs="+", default=[None])
    parser.add_argument("--readout-ms", type=float, nargs="+", default=[None])
    args = parser.parse_args(argv)
    if not all(0.0 <= a < 1.0 for a in args.alpha):
        parser.error(f"--alpha must lie in [0, 1), got {args.alpha}")
    if not all(d is None or d >= 0.0 for d in args.damping):
        parser.error(f"--damping must be >= 0, got {args.damping}")
    torch.set_num_threads(1)
    if not all(n is None or n >= 1 for n in args.substeps) or not all(r is None or r > 0 for r in args.readout_ms):
        parser.error(f"--substeps must be >= 1 and --readout-ms > 0, got {args.substeps} and {args.readout_ms}")
    rows = [last_second(args.model, args.plant, args.episodes, a, d, n, r)
            for d in args.damping for n in args.substeps for r in args.readout_ms for a in args.alpha]
    print(json.dumps({"model": args.model, "plant": args.plant, "episodes": args.episodes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
