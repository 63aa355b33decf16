"""Firing rates and synaptic operations per control step against non-spiking networks.

    python bench/energy.py [--quick] [--episodes N]

For each shipped spiking model, the controller's workload: one copy of the task, the
policy acting and the predictor predicting alongside it on the compiled batch-1 path, on
the held-out goals. Counts every spike; converts them to synaptic events with the same
accounting as ``snn-control eval`` (a spike into a dense connection is one accumulate per
target; into a rank-d bottleneck, d accumulates, and the bottleneck's d x n expansion runs
densely every substep). Compares with the multiply-accumulates of

- the same network evaluated as a non-spiking one, once per control step (same layers
  and connections, rates instead of spikes): ``equal_size_ann_macs``;
- the shipped non-spiking baseline (GRU predictor + MLP policy, ``models/panda_gru``).

Energy per operation assumed (Horowitz, ISSCC 2014, 45 nm CMOS, 32-bit float): an
accumulate 0.9 pJ, a multiply-accumulate 4.6 pJ (3.7 pJ multiply + 0.9 pJ add). Memory
access, which dominates on real hardware, is not counted for either network.
"""

from __future__ import annotations

import torch
from torch import nn

from _common import REPO, emit, parser
from snn_control.envs import make_batch
from snn_control.models import parameter_count
from snn_control.models import FastPolicy, FastPredictor
from snn_control.spiking import LowRankLinear
from snn_control.models.checkpoint import load_model
from snn_control.training.evaluate import heldout_tasks, synaptic_operations

PJ_PER_AC, PJ_PER_MAC = 0.9, 4.6


def connection_macs(conn: nn.Module) -> int:
    if isinstance(conn, LowRankLinear):
        return conn.rank * (conn.in_features + conn.out_features)
    return conn.in_features * conn.out_features


def equal_size_ann_macs(net) -> int:
    """MACs of the same connections evaluated once per control step."""
    conns = [layer.input for layer in net.layers] + [l.recurrent for l in net.layers if l.recurrent is not None]
    return sum(connection_macs(c) for c in conns) + connection_macs(net.readout.weight)


def baseline_macs(predictor, policy) -> dict[str, int]:
    gru = predictor.cell
    gru_macs = 3 * gru.hidden_size * (gru.input_size + gru.hidden_size) + connection_macs(predictor.out)
    mlp_macs = sum(connection_macs(m) for m in policy.body if isinstance(m, nn.Linear))
    return {"predictor": gru_macs, "policy": mlp_macs}


def measure(model: str, episodes: int) -> dict:
    predictor, policy, spec, config = load_model(REPO / "models" / model)
    fast_pol, fast_pred = FastPolicy(policy), FastPredictor(predictor)
    env = make_batch(spec.task, 1, config.env)
    try:
        starts, goals = heldout_tasks(env, episodes)
        for start, goal in zip(starts, goals):
            obs = env.reset_to(start[None], goal[None])[0]
            for _ in range(env.spec.episode_steps):
                action = fast_pol.act(obs, goal)
                fast_pred.predict(obs, action)
                obs = env.step(action[None])[0]
    finally:
        env.close()
    out = {"task": spec.task, "episodes": episodes, "parameters": parameter_count(predictor) + parameter_count(policy)}
    total_snn_pj = total_ann_pj = 0.0
    for name, module, fast in (("predictor", predictor, fast_pred), ("policy", policy, fast_pol)):
        net = fast.compiled
        ops = synaptic_operations(module.net, list(net.spike_counts), net.steps)
        ann = equal_size_ann_macs(module.net)
        snn_pj = ops["spike_events"] * PJ_PER_AC + ops["dense_macs"] * PJ_PER_MAC
        out[name] = {"firing_rate_hz": net.firing_rates_hz().round(2).tolist(),
                     "spike_events_per_step": ops["spike_events"], "dense_macs_per_step": ops["dense_macs"],
                     "equal_size_ann_macs_per_step": ann, "snn_energy_nj_per_step": snn_pj / 1e3,
                     "ann_energy_nj_per_step": ann * PJ_PER_MAC / 1e3}
        total_snn_pj += snn_pj
        total_ann_pj += ann * PJ_PER_MAC
    out["snn_energy_nj_per_step"] = total_snn_pj / 1e3
    out["equal_size_ann_energy_nj_per_step"] = total_ann_pj / 1e3
    out["energy_ratio_snn_to_equal_size_ann"] = total_snn_pj / total_ann_pj
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=None, help="held-out episodes per model (default 16; quick 1)")
    args = p.parse_args()
    episodes = args.episodes or (1 if args.quick else 16)
    torch.set_num_threads(1)
    models = {name: measure(name, episodes) for name in ("reacher_snn", "panda_snn")}
    gru_pred, mlp_pol, _, _ = load_model(REPO / "models" / "panda_gru")
    gru = baseline_macs(gru_pred, mlp_pol)
    gru_nj = sum(gru.values()) * PJ_PER_MAC / 1e3
    panda = models["panda_snn"]
    emit("energy", {
        "pj_per_accumulate": PJ_PER_AC, "pj_per_mac": PJ_PER_MAC,
        "energy_source": "Horowitz ISSCC 2014, 45 nm, fp32; memory access not counted",
        "panda_snn_energy_nj_per_step": panda["snn_energy_nj_per_step"],
        "panda_equal_size_ann_energy_nj_per_step": panda["equal_size_ann_energy_nj_per_step"],
        "panda_gru_baseline_macs_per_step": gru, "panda_gru_baseline_energy_nj_per_step": gru_nj,
        "models": models,
    }, args.quick, args.out)


if __name__ == "__main__":
    main()
