"""Evaluation on fixed, seeded held-out goals that training never sees.

``evaluate(model_dir)`` rolls the policy (deterministic, no exploration noise) and the
classical reference on the same (start, goal) pairs and returns the eval JSON (the
contract other tools read; see README). Held-out pairs come from their own RNG
(``HELDOUT_ENTROPY``), disjoint from training's ``[seed, stream]`` streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classical import run_classical
from ..config import load as load_config
from ..envs import BatchedReachEnv, EnvError, make_batch, nominal_plant
from ..envs.base import velocity_indices
from ..models import parameter_count, spiking_nets
from ..paths import resolve
from ..spiking import LowRankLinear
from ..models import load_model
from .collect import actions_at_rest, rollout

HELDOUT_ENTROPY = 20250916  # Huebotter et al. 2025's arXiv date; held-out goals: [this, eval seed]
HELDOUT_EPISODES = {"reacher": 256, "panda": 128}  # the full held-out set per task
OPEN_LOOP_STEPS = 50
WARMUP_STEPS = 5
RESPONSE_STEPS = 10  # control steps of the +1 / -1 action probe (action_response)
HOLD_S = 1.0  # the last second of an episode: does the arm stay at the goal, or hover?
AT_REST_STEPS = (50, 150)  # policy_at_rest: steps run with the input frozen, and the first scored


def heldout_tasks(env: BatchedReachEnv, episodes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``episodes`` held-out (start, goal) pairs of set ``seed``.

    The whole set is drawn and then cut, so a smaller request is a prefix of a larger one.
    """
    size = max(episodes, HELDOUT_EPISODES[env.spec.task])
    starts, goals = env.sample_tasks(np.random.default_rng([HELDOUT_ENTROPY, seed]), size)
    return starts[:episodes], goals[:episodes]


def reach_metrics(env: BatchedReachEnv, obs: np.ndarray, goals: np.ndarray) -> dict[str, Any]:
    """Metrics of trajectories ``obs (N, T+1, O)`` towards ``goals (N, G)``."""
    spec = env.spec
    distance = env.distance(obs, goals[:, None, :])  # (N, T+1)
    reached = env.success(obs, goals[:, None, :])  # (N, T+1)
    final = distance[:, -1]
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), -1)
    times = first[first >= 0] * spec.control_period_s
    out = {
        "success_rate": float(reached[:, -1].mean()),
        "final_distance_median_m": float(np.median(final)),
        "final_distance_p90_m": float(np.percentile(final, 90)),
        "final_distance_mean_m": float(final.mean()),
        "time_to_reach_median_s": float(np.median(times)) if times.size else None,
        "reached_at_least_once_rate": float((first >= 0).mean()),
        "cumulative_distance_mean": float(distance.sum(axis=1).mean() * spec.control_period_s),
        **hold_metrics(env, obs, distance, reached),
    }
    if spec.task == "panda":
        out["success_rate_2cm"] = float((final <= 0.02).mean())
        # Huebotter et al. 2025 count a Franka reach as a success within 0.123 m
        out["success_rate_paper_radius_0123m"] = float((final <= 0.123).mean())
    return out


def effector_path(effector: np.ndarray) -> np.ndarray:
    """Per episode, the length of the path through effector positions ``(E, T, 3)``."""
    return np.linalg.norm(np.diff(effector, axis=1), axis=-1).sum(axis=1)


def hold_metrics(env: BatchedReachEnv, obs: np.ndarray, distance: np.ndarray, reached: np.ndarray) -> dict[str, float]:
    """How still the arm holds the goal over the episode's last ``HOLD_S``: the share of
    episodes within the success radius at every step of it (what a user sampling the
    distance at any moment would see), and the medians of the distance's range and of the
    effector's path over it (a settled arm: both near zero; a hovering one: centimetres)."""
    steps = min(distance.shape[1], max(1, round(HOLD_S / env.spec.control_period_s)) + 1)
    last = distance[:, -steps:]
    path = effector_path(obs[:, -steps:, slice(*env.spec.effector)])
    return {
        "held_last_1s_rate": float(reached[:, -steps:].all(axis=1).mean()),
        "last_1s_distance_range_median_m": float(np.median(last.max(axis=1) - last.min(axis=1))),
        "last_1s_path_median_m": float(np.median(path)),
    }


@torch.no_grad()
def predictor_metrics(predictor, obs: np.ndarray, actions: np.ndarray, effector: tuple[int, int]) -> dict[str, Any]:
    """One-step and 50-step open-loop prediction error against two naive predictors.

    Errors: mean squared error over all observation entries in units of each entry's
    typical one-step change (``loss_scale``), and the effector position error in the
    task's distance unit. "No change" predicts the last state; "linear" extrapolates the
    last change.
    """
    o = torch.as_tensor(obs.transpose(1, 0, 2))  # (T+1, N, O)
    a = torch.as_tensor(actions.transpose(1, 0, 2))
    scale = predictor.loss_scale
    eff = slice(*effector)
    n = o.shape[1]

    def errors(pred: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
        mse = float((((pred - real) / scale) ** 2).mean())
        return mse, float((pred[..., eff] - real[..., eff]).norm(dim=-1).mean())

    state = predictor.initial_state(n, o)
    one_step = []
    for t in range(o.shape[0] - 1):
        pred, state = predictor.step(o[t], a[t], state)
        one_step.append(pred)
    one = torch.stack(one_step)[1:]  # skip t = 0 (no previous change for "linear")
    real = o[2:]
    linear = o[1:-1] + (o[1:-1] - o[:-2])
    result: dict[str, Any] = {"one_step": {}, f"open_loop_{OPEN_LOOP_STEPS}": {}}
    for name, guess in (("model", one), ("no_change", o[1:-1]), ("linear", linear)):
        mse, eff_err = errors(guess, real)
        result["one_step"][name] = {"mse_normalised": mse, "effector_error": eff_err}

    t0 = WARMUP_STEPS
    horizon = min(OPEN_LOOP_STEPS, o.shape[0] - 1 - t0)
    state = predictor.initial_state(n, o)
    for t in range(t0):
        _, state = predictor.step(o[t], a[t], state)
    current = o[t0]
    for t in range(t0, t0 + horizon):
        current, state = predictor.step(current, a[t], state)
    real_end = o[t0 + horizon]
    guesses = {
        "model": current,
        "no_change": o[t0],
        "linear": o[t0] + horizon * (o[t0] - o[t0 - 1]),
    }
    for name, guess in guesses.items():
        mse, eff_err = errors(guess, real_end)
        result[f"open_loop_{OPEN_LOOP_STEPS}"][name] = {"mse_normalised": mse, "effector_error": eff_err}
    return result


@torch.no_grad()
def action_response(env: BatchedReachEnv, predictor, starts: np.ndarray, goals: np.ndarray,
                    effector: tuple[int, int]) -> dict[str, Any] | None:
    """How strongly the model thinks each joint's action moves the effector, against the plant.

    From pairs of identical held-out starts, one copy holds action +1 and the other -1 on
    one joint (all others 0) for ``RESPONSE_STEPS`` steps; the separation of the two
    effectors, real and predicted open loop, per joint. A ratio (predicted / real) below 1
    means the model underestimates what a torque does, and a policy trained through it
    pushes harder than it should. None when there are fewer than two envs.
    """
    n = env.num_envs
    pairs = n // 2
    if pairs == 0:
        return None
    index = np.concatenate([np.repeat(np.arange(pairs), 2), np.zeros(n - 2 * pairs, dtype=int)])
    sign = np.zeros(n)
    sign[: 2 * pairs] = np.tile([1.0, -1.0], pairs)
    eff = slice(*effector)
    real_sep, pred_sep, ratio = [], [], []
    for joint in range(env.spec.act_dim):
        actions = np.zeros((n, env.spec.act_dim))
        actions[:, joint] = sign
        real = env.reset_to(starts[index], goals[index])
        predicted = torch.as_tensor(real, dtype=torch.float32)
        state = predictor.initial_state(n, predicted)
        act = torch.as_tensor(actions, dtype=torch.float32)
        for _ in range(RESPONSE_STEPS):
            real = env.step(actions)
            predicted, state = predictor.step(predicted, act, state)
        predicted = predicted.numpy()
        r = np.linalg.norm(real[0:2 * pairs:2, eff] - real[1:2 * pairs:2, eff], axis=1)
        p = np.linalg.norm(predicted[0:2 * pairs:2, eff] - predicted[1:2 * pairs:2, eff], axis=1)
        real_sep.append(float(np.median(r)))
        pred_sep.append(float(np.median(p)))
        ratio.append(float(np.median(p / np.maximum(r, 1e-9))))
    return {"steps": RESPONSE_STEPS, "pairs": pairs, "real_separation_median": real_sep,
            "predicted_separation_median": pred_sep, "ratio_median": ratio}


@torch.no_grad()
def policy_at_rest(policy, final_obs: np.ndarray, spec) -> dict[str, float] | None:
    """The policy's action with the arm at rest at its goal: each episode's final state with
    zero joint velocities and the goal where the effector is, held for ``AT_REST_STEPS[1]``
    control steps. Gravity is compensated (Panda) or absent (reacher), so zero torque is the
    right answer; a non-zero mean is a bias, a fluctuation over time is noise the arm has to
    absorb. Returns the RMS action, the mean over episodes and joints of each action's |time
    mean| and of its std over time, and the mean |change| per step, over the last steps."""
    velocity = velocity_indices(spec.obs_names)
    if not velocity:
        return None  # without velocities in the input, "at rest" is not an input we can set
    skip, steps = AT_REST_STEPS
    states = torch.as_tensor(final_obs, dtype=torch.float32)
    a = actions_at_rest(policy, states, slice(*spec.effector), velocity, skip, steps - skip).double().numpy()
    return {"steps": steps - skip, "action_rms": float(np.sqrt((a**2).mean())),
            "action_mean_abs": float(np.abs(a.mean(axis=0)).mean()),
            "action_std": float(a.std(axis=0).mean()),
            "action_change_per_step": float(np.abs(np.diff(a, axis=0)).mean())}


def synaptic_operations(net, spike_counts: list[float], steps: int) -> dict[str, float]:
    """Per control step (batch 1): spike-driven synaptic events and dense multiply-adds.

    A spike into a dense connection costs one event per target; into a rank-d bottleneck,
    d events (W1 column) and then the d x n up-projection runs densely every substep.
    The analog input projection runs once per control step (input held).
    """
    events, macs = 0.0, 0.0
    layers = list(net.layers)
    first = layers[0].input
    macs += first.in_features * first.out_features
    for i, layer in enumerate(layers):
        outgoing = [layer.recurrent] if layer.recurrent is not None else []
        outgoing.append(layers[i + 1].input if i + 1 < len(layers) else net.readout.weight)
        spikes_per_step = spike_counts[i] / steps
        for conn in outgoing:
            if isinstance(conn, LowRankLinear):
                events += spikes_per_step * conn.rank
                macs += conn.rank * conn.out_features * net.substeps
            else:
                events += spikes_per_step * conn.out_features
    return {"spike_events": events, "dense_macs": macs}


def evaluate(model_dir: str | Path, episodes: int | None = None, seed: int = 0,
             env_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``env_overrides``: changes to the plant the model was trained on (e.g. a payload)."""
    import dataclasses

    model = load_model(model_dir)
    predictor, policy, spec, config = model
    torch.set_num_threads(model.threads)
    episodes = episodes or HELDOUT_EPISODES[spec.task]
    env_cfg = nominal_plant(config.env)  # a model trained on randomised plants is judged on its nominal one
    if env_overrides:
        known = {f.name for f in dataclasses.fields(env_cfg)}
        unknown = sorted(set(env_overrides) - known)
        if unknown:
            raise EnvError(f"--env: unknown {spec.task} env keys {unknown}; known: {sorted(known)}")
        env_cfg = dataclasses.replace(env_cfg, **env_overrides)
    env = make_batch(spec.task, episodes, env_cfg)
    try:
        starts, goals = heldout_tasks(env, episodes, seed)
        nets = {"predictor": spiking_nets(predictor) if predictor is not None else [],
                "policy": spiking_nets(policy)}
        spiking_actor = model.spiking_actor
        counting = [net for group in nets.values() for net in group] + ([spiking_actor] if spiking_actor else [])
        for net in counting:
            net.count_spikes = True
            net.reset_counts()
        rolled = rollout(env, policy, starts, goals)
        # Predictor firing is measured while it predicts along the same episodes.
        pred_err = (predictor_metrics(predictor, rolled.obs, rolled.actions, spec.effector)
                    if predictor is not None else None)
        firing, synops = {}, {}
        for name, group in nets.items():
            for net in group:
                for i, count in enumerate(net.spike_counts):
                    neural_time = net.counted_substeps * net.dt
                    firing[f"{name}.layer{i + 1}"] = count / (neural_time * net.layers[i].size)
                control_steps = net.counted_substeps / net.substeps
                synops[name] = synaptic_operations(net, net.spike_counts, control_steps)
        if spiking_actor is not None:
            rates, synops["policy"] = spiking_actor.activity()
            firing.update({f"policy.{layer}": rate for layer, rate in rates.items()})
        for net in counting:
            net.count_spikes = False
        at_rest = policy_at_rest(policy, rolled.obs[:, -1], spec)  # after counting, as the probe below
        if pred_err is not None:  # after counting: the probe's spikes are not the policy's
            pred_err["action_response"] = action_response(env, predictor, starts, goals, spec.effector)
        result: dict[str, Any] = {
            "task": spec.task,
            "model_kind": model.kind,
            "episodes": episodes,
            "seed": seed,
            "env_overrides": dict(env_overrides or {}),
            **reach_metrics(env, rolled.obs, goals),
            "policy_at_rest": at_rest,
            "distance_unit": spec.distance_unit,
            "success_criterion": ("|dx|, |dy| <= 0.05 normalised" if spec.task == "reacher"
                                  else "final distance <= 0.05 m"),
            "algorithm": config.algorithm,
            "parameters": (parameter_count(predictor) if predictor is not None else 0) + parameter_count(policy),
            "parameters_predictor": parameter_count(predictor) if predictor is not None else 0,
            "parameters_policy": parameter_count(policy),
            "firing_rate_hz": firing,
            "synaptic_ops_per_step": synops,
            "predictor": pred_err,
            "classical": reach_metrics(env, run_classical(env, starts, goals), goals),
            "training": _training_summary(Path(model_dir)),
        }
        result["_trajectories"] = {"policy": rolled.obs, "goals": goals}
        return result
    finally:
        env.close()


def _training_summary(model_dir: Path, seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """The run's own iterations and wall time; for a model fine-tuned from another
    (``train.init_from``), also that model's directory and the wall time of the chain."""
    path = model_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    last = rows[-1]
    out = {"wall_time_s": last.get("time/elapsed_s")}
    out.update({"iterations": last["iteration"]} if "iteration" in last else {"env_steps": last.get("env_steps")})
    init_from = _init_from(model_dir)
    start = resolve(init_from).resolve() if init_from is not None else None
    seen = seen | {model_dir.resolve()}
    if start is not None and start not in seen:  # not a run that went on in place
        earlier = _training_summary(start, seen)
        before = earlier.get("wall_time_total_s", earlier.get("wall_time_s"))
        out["init_from"] = init_from
        out["wall_time_total_s"] = None if before is None or out["wall_time_s"] is None else before + out["wall_time_s"]
    return out


def _init_from(model_dir: Path) -> str | None:
    path = model_dir / "config.yaml"
    return load_config(path).train.init_from if path.exists() else None


def write_eval(result: dict[str, Any], out: Path) -> None:
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(public, indent=2) + "\n")
