"""The README's results table, generated from model directories' ``eval.json``."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(value, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _robustness(e: dict) -> str:
    """The robustness suite's mean and worst plant (``eval --suite robustness``), or n/a."""
    rob = e.get("robustness")
    if not rob:
        return "n/a | n/a"
    mean, worst = rob["mean"], rob["worst"]
    return (f"{mean['success_rate']:.1%} / {mean['success_rate_2cm']:.1%} "
            f"| {worst['plant'].replace('_', ' ')} {worst['success_rate']:.1%}")


def results_table(model_dirs: list[Path]) -> str:
    header = ("| model | task | episodes | success | success 2 cm | median final | p90 final "
              "| held last 1 s | path last 1 s | classical success / median | robustness mean 5 cm / 2 cm "
              "| worst plant (5 cm) | parameters | train wall time |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [header]
    for d in model_dirs:
        path = Path(d) / "eval.json"
        if not path.exists():
            continue
        e = json.loads(path.read_text())
        unit = "m" if e["distance_unit"] == "m" else ""
        c = e["classical"]
        training = e.get("training", {})
        wall = training.get("wall_time_total_s", training.get("wall_time_s"))  # a fine-tune counts its start
        rows.append(
            f"| `{Path(d).name}` | {e['task']} | {e['episodes']} | {e['success_rate']:.1%} "
            f"| {_fmt(e.get('success_rate_2cm'), '{:.1%}')} "
            f"| {e['final_distance_median_m']:.4f} {unit} | {e['final_distance_p90_m']:.4f} {unit} "
            f"| {_fmt(e.get('held_last_1s_rate'), '{:.1%}')} "
            f"| {_fmt(e.get('last_1s_path_median_m'), '{:.4f} ' + unit)} "
            f"| {c['success_rate']:.1%} / {c['final_distance_median_m']:.4f} {unit} "
            f"| {_robustness(e)} "
            f"| {e['parameters']:,} | {_fmt(wall and wall / 60, '{:.1f} min')} |"
        )
    return "\n".join(rows)
