"""PNG figures for evaluation: reach trajectories and training curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_reach(result: dict[str, Any], effector: tuple[int, int], control_period: float, path: Path) -> None:
    """Distance to goal over time for every held-out episode, plus effector paths (top view)."""
    obs, goals = result["_trajectories"]["policy"], result["_trajectories"]["goals"]
    eff = obs[..., effector[0]:effector[1]]
    distance = np.linalg.norm(eff - goals[:, None, :], axis=-1)
    t = np.arange(distance.shape[1]) * control_period
    unit = result["distance_unit"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    ax1.plot(t, distance.T, color="tab:blue", alpha=0.15, lw=0.8)
    ax1.plot(t, np.median(distance, axis=0), color="black", lw=2, label="median")
    radius = 0.05
    ax1.axhline(radius, color="tab:red", ls="--", label=f"success radius {radius} {unit}")
    ax1.set_yscale("log")
    ax1.set_xlabel("time [s]")
    ax1.set_ylabel(f"effector-goal distance [{unit}]")
    ax1.set_title(f"{result['task']} {result['model_kind']}: success {result['success_rate']:.0%} "
                  f"(classical {result['classical']['success_rate']:.0%})")
    ax1.legend()
    for i in range(min(12, eff.shape[0])):
        line = ax2.plot(eff[i, :, 0], eff[i, :, 1], lw=1)[0]
        ax2.plot(goals[i, 0], goals[i, 1], "*", color=line.get_color(), ms=10)
        ax2.plot(eff[i, 0, 0], eff[i, 0, 1], "o", color=line.get_color(), ms=4)
    ax2.set_aspect("equal")
    ax2.set_xlabel(f"x [{unit}]")
    ax2.set_ylabel(f"y [{unit}]")
    ax2.set_title("effector paths (o start, * goal), top view")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(metrics_path: Path, path: Path) -> bool:
    """Losses and success over training from ``metrics.jsonl`` (predictive control by
    iteration, TD3 by environment transitions); False if absent."""
    if not metrics_path.exists():
        return False
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return False
    x_key = "iteration" if "iteration" in rows[0] else "env_steps"
    x = [r[x_key] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if x_key == "iteration":
        axes[0].plot(x, [r["losses/predictor"] for r in rows])
        axes[0].set_title("predictor loss (normalised MSE)")
        axes[1].plot(x, [r["charts/imagined_distance"] for r in rows], label="imagined (policy loss)")
        axes[1].plot(x, [r["collect/final_distance_median"] for r in rows], label="collected, final median")
        axes[1].set_title("distance to goal")
        axes[1].set_yscale("log")
        axes[1].legend()
    else:
        critic = [(r[x_key], r["losses/critic_loss"]) for r in rows if "losses/critic_loss" in r]
        if critic:
            axes[0].plot(*zip(*critic))
        axes[0].set_title("critic loss")
        axes[1].plot(x, [r["charts/episode_return"] for r in rows])
        axes[1].set_title("episode return (with exploration)")
    axes[0].set_yscale("log")
    axes[2].plot(x, [r["collect/success_rate"] for r in rows], label="collection (with noise)")
    val = [(r[x_key], r["validation/success_rate"]) for r in rows if "validation/success_rate" in r]
    if val:
        axes[2].plot(*zip(*val), "o-", label="validation")
    axes[2].set_title("success rate")
    axes[2].set_ylim(0, 1)
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("iteration" if x_key == "iteration" else "environment transitions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_robustness(robustness: dict[str, Any], path: Path) -> None:
    """Success within 5 cm and 2 cm per plant of the robustness suite, beside the classical reference."""
    plants = list(robustness["plants"])
    x = np.arange(len(plants))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for offset, (label, source, key, color) in enumerate((
            ("policy, 5 cm", robustness, "success_rate", "tab:blue"),
            ("policy, 2 cm", robustness, "success_rate_2cm", "tab:cyan"),
            ("classical, 5 cm", robustness["classical"], "success_rate", "tab:gray"))):
        ax.bar(x + (offset - 1) * 0.27, [100 * source[p][key] for p in plants], 0.27, label=label, color=color)
    ax.axhline(90, color="tab:red", ls="--", lw=1, label="90 %")
    ax.set_xticks(x, [p.replace("_", " ") for p in plants], rotation=15)
    ax.set_ylabel("held-out goals reached [%]")
    ax.set_ylim(0, 105)
    ax.set_title(f"robustness suite: mean {100 * robustness['mean']['success_rate']:.1f} % within 5 cm, "
                 f"worst {robustness['worst']['plant']} {100 * robustness['worst']['success_rate']:.1f} %")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
