"""Time one control step (predictor + policy, batch 1, one thread): fast path vs training modules.

    python bench/controller_step.py [--quick] [--steps N]

Two models: the size of Huebotter et al. 2025 (2 x 512 ALIF, 7 substeps, multi-Gaussian surrogate,
rank-32 bottleneck; untrained, input gains calibrated on the data so it fires like a
trained net) and the shipped ``models/panda_snn``. Inputs are real Panda observations
and goals from rollouts of the shipped policy. The fast path
(:mod:`snn_control.models.inference`) and the reference (the training modules in eval
mode, float32, ``torch.no_grad``) alternate in blocks of 1,000 steps in one run, each
keeping its own state, so both see the same machine load.

Equivalence: an untimed pass steps the fast path beside float64 copies of the training
modules on the same inputs and compares every spike of every layer and substep's end
state (``spikes_identical``) and the outputs (``max_abs_output_diff``). Against the
float32 modules it reports how far outputs drift (``float32_*``).
"""

from __future__ import annotations

import copy
import gc
import time

import numpy as np
import torch

from _common import REPO, emit, parser, percentiles_us
from snn_control.config import ModelConfig
from snn_control.envs import make_batch
from snn_control.models import build_networks, parameter_count
from snn_control.models import FastPolicy, FastPredictor
from snn_control.models.checkpoint import load_model
from snn_control.training.collect import rollout

BLOCK = 1000


def panda_inputs(steps: int, seed: int = 0):
    """(obs (T, O), goals (T, G)) from rollouts of the shipped Panda policy."""
    _, policy, _, config = load_model(REPO / "models" / "panda_snn")
    episodes = max(1, -(-steps // config.env.episode_steps))
    env = make_batch("panda", episodes, config.env)
    try:
        starts, goals = env.sample_tasks(np.random.default_rng(seed), episodes)
        ep = rollout(env, policy, starts, goals)
    finally:
        env.close()
    obs = ep.obs[:, :-1].reshape(-1, ep.obs.shape[-1])[:steps].astype(np.float64)
    g = np.repeat(ep.goals, ep.obs.shape[1] - 1, axis=0)[:steps].astype(np.float64)
    actions = ep.actions.reshape(-1, ep.actions.shape[-1])[:steps]
    return obs, g, actions


def paper_size_networks(obs: np.ndarray, goals: np.ndarray, actions: np.ndarray):
    cfg = ModelConfig(hidden=512, layers=2, rank=32, substeps=7, neuron="alif", surrogate="multi_gaussian")
    torch.manual_seed(0)
    predictor, policy = build_networks(cfg, obs.shape[1], actions.shape[1], goals.shape[1])
    episodes_obs = obs[None].astype(np.float32)
    predictor.calibrate(np.concatenate([episodes_obs, episodes_obs[:, -1:]], axis=1), actions[None], inputs=True)
    policy.net.calibrate_input_gain(np.concatenate([obs, goals], axis=-1))
    return predictor, policy


def check_equivalence(predictor, policy, obs, goals):
    """Fast path vs float64 and float32 training modules on the same inputs (untimed)."""
    fast_pol, fast_pred = FastPolicy(policy), FastPredictor(predictor)
    pol64, pred64 = copy.deepcopy(policy).double(), copy.deepcopy(predictor).double()
    s_pol64, s_pred64 = pol64.initial_state(1, torch.zeros(1, dtype=torch.float64)), pred64.initial_state(1, torch.zeros(1, dtype=torch.float64))
    s_pol32, s_pred32 = policy.initial_state(1, torch.zeros(1)), predictor.initial_state(1, torch.zeros(1))
    identical, diff64, diff32, spikes_equal32, spike_entries = True, 0.0, 0.0, 0, 0
    first_divergence = None
    with torch.no_grad():
        for t in range(len(obs)):
            o, g = obs[t], goals[t]
            a = fast_pol.act(o, g)
            p = fast_pred.predict(o, a)
            ot, gt = torch.as_tensor(o)[None], torch.as_tensor(g)[None]
            a64, _, s_pol64 = pol64.step(ot, gt, s_pol64)
            p64, s_pred64 = pred64.step(ot, a64, s_pred64)
            a32, _, s_pol32 = policy.step(ot.float(), gt.float(), s_pol32)
            p32, s_pred32 = predictor.step(ot.float(), a32, s_pred32)
            net64, net32 = (s_pol64[0], s_pol32[0]) if getattr(policy, "goal_integral", None) is not None else (s_pol64, s_pol32)
            for fast, ref64, ref32 in ((fast_pol.compiled, net64, net32), (fast_pred.compiled, s_pred64.core, s_pred32.core)):
                spikes64 = np.stack([s.spikes[0].numpy() for s in ref64.layers])
                spikes32 = np.stack([s.spikes[0].numpy() for s in ref32.layers])
                if not np.array_equal(fast.spikes, spikes64):
                    identical = False
                same32 = int((fast.spikes == spikes32).sum())
                spikes_equal32 += same32
                spike_entries += fast.spikes.size
                if first_divergence is None and same32 != fast.spikes.size:
                    first_divergence = t
            diff64 = max(diff64, float(np.abs(a - a64[0].numpy()).max()), float(np.abs(p - p64[0].numpy()).max()))
            diff32 = max(diff32, float(np.abs(a - a32[0].numpy()).max()), float(np.abs(p - p32[0].numpy()).max()))
    return {
        "spikes_identical": identical,
        "max_abs_output_diff": diff64,
        "float32_max_abs_output_diff": diff32,
        "float32_spike_agreement": spikes_equal32 / max(spike_entries, 1),
        "float32_first_spike_divergence_step": first_divergence,
        "policy_rates_hz": fast_pol.firing_rates_hz().round(2).tolist(),
        "predictor_rates_hz": fast_pred.firing_rates_hz().round(2).tolist(),
    }


def time_paths(predictor, policy, obs, goals):
    fast_pol, fast_pred = FastPolicy(policy), FastPredictor(predictor)
    policy.eval(), predictor.eval()
    s_pol, s_pred = policy.initial_state(1, torch.zeros(1)), predictor.initial_state(1, torch.zeros(1))
    fast_ns, ref_ns = np.empty(len(obs), dtype=np.int64), np.empty(len(obs), dtype=np.int64)
    clock = time.perf_counter_ns
    for start in range(0, len(obs), BLOCK):
        stop = min(start + BLOCK, len(obs))
        for t in range(start, stop):
            t0 = clock()
            a = fast_pol.act(obs[t], goals[t])
            fast_pred.predict(obs[t], a)
            fast_ns[t] = clock() - t0
        with torch.no_grad():
            for t in range(start, stop):
                t0 = clock()
                ot = torch.as_tensor(obs[t], dtype=torch.float32)[None]
                gt = torch.as_tensor(goals[t], dtype=torch.float32)[None]
                a, _, s_pol = policy.step(ot, gt, s_pol)
                _, s_pred = predictor.step(ot, a, s_pred)
                a.numpy()
                ref_ns[t] = clock() - t0
    return fast_ns, ref_ns


def measure(name, predictor, policy, obs, goals):
    result = {"model": name, "parameters": parameter_count(predictor) + parameter_count(policy),
              "substeps": policy.net.substeps, "predictor_substeps": predictor.net.substeps,
              "hidden": policy.net.layers[0].size,
              "steps": len(obs)}
    result.update(check_equivalence(predictor, policy, obs, goals))
    gc.collect()
    fast_ns, ref_ns = time_paths(predictor, policy, obs, goals)
    fast, ref = percentiles_us(fast_ns), percentiles_us(ref_ns)
    result.update(fast)
    result.update({f"reference_{k}": v for k, v in ref.items()})
    result["speedup_p50"] = ref["p50_us"] / fast["p50_us"]
    result["speedup_p99"] = ref["p99_us"] / fast["p99_us"]
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="control steps per model (default 20000; quick 300)")
    args = p.parse_args()
    steps = args.steps or (300 if args.quick else 20000)
    torch.set_num_threads(1)
    obs, goals, actions = panda_inputs(steps)
    models = {"paper_size": paper_size_networks(obs, goals, actions)}
    pred, pol, _, _ = load_model(REPO / "models" / "panda_snn")
    models["panda_snn"] = (pred, pol)
    runs = {name: measure(name, *nets, obs, goals) for name, nets in models.items()}
    headline = runs["paper_size"]
    keys = ("p50_us", "p99_us", "p999_us", "reference_p50_us", "reference_p99_us", "reference_p999_us",
            "speedup_p99", "max_abs_output_diff", "spikes_identical")
    emit("controller_step", {"threads": 1, "batch": 1, **{k: headline[k] for k in keys},
                             "models": runs}, args.quick, args.out)


if __name__ == "__main__":
    main()
