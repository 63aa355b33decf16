"""Wall time from scratch to 90 % success: the shipped configs, trained as users train them.

    python bench/time_to_skill.py [--quick] [--task reacher|panda|both] [--threshold 0.9]

Trains ``config/reacher_snn.yaml`` and/or ``config/panda_snn_base.yaml`` (the Panda's
from-scratch stage; ``panda_snn_hold.yaml`` and ``panda_snn.yaml`` fine-tune its result) from scratch with the
project's trainer (fused, compiled neuron steps; the config's threads and env workers)
into a temporary directory, validating every ``--every`` iterations on the trainer's
validation goals, and reports the first trainer-clock time (``time/elapsed_s``: training
only, validation excluded) at which validation success reached the threshold, or null with
the best success seen when the config's iterations ran out. Training stops at that first
hit unless ``--full`` (the rest of the run is not the figure). ``--quick``: two iterations of
a tiny reacher (seconds; checks the plumbing only).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _common import REPO, emit, parser
from snn_control import config as C
from snn_control.predictive.trainer import Trainer

CONFIGS = {"reacher": "config/reacher_snn.yaml", "panda": "config/panda_snn_base.yaml"}
QUICK = ["model.hidden=32", "model.rank=8", "train.iterations=2", "train.envs=8", "train.batch=16",
         "train.predictor_updates=2", "train.policy_updates=2", "train.eval_every=1", "train.eval_episodes=8",
         "train.replay_episodes=64", "train.compile=false"]


def run(task: str, threshold: float, every: int, quick: bool, full: bool = False) -> dict:
    overrides = QUICK if quick else [f"train.eval_every={every}"]
    cfg = C.load(REPO / CONFIGS[task], overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        hit_threshold = (lambda m: m.get("validation/success_rate", -1.0) >= threshold) if not full else None
        Trainer(cfg, run_dir).fit(progress=True, stop_when=hit_threshold)
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if "validation/success_rate" in r]
    hit = next((r for r in checks if r["validation/success_rate"] >= threshold), None)
    best = max(checks, key=lambda r: r["validation/success_rate"]) if checks else None
    return {
        "config": CONFIGS[task], "iterations_run": rows[-1]["iteration"],
        "validation_episodes": cfg.train.eval_episodes, "validate_every": cfg.train.eval_every,
        "time_to_threshold_s": hit["time/elapsed_s"] if hit else None,
        "iterations_to_threshold": hit["iteration"] if hit else None,
        "best_validation_success_rate": best["validation/success_rate"] if best else None,
        "best_at_s": best["time/elapsed_s"] if best else None,
        "total_train_s": rows[-1]["time/elapsed_s"],
        "curve": [(r["iteration"], round(r["time/elapsed_s"], 1), r["validation/success_rate"]) for r in checks],
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--task", choices=("reacher", "panda", "both"), default="both")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--every", type=int, default=5, help="validate every N iterations")
    p.add_argument("--full", action="store_true", help="train all the config's iterations, past the threshold")
    args = p.parse_args()
    tasks = ["reacher"] if args.quick else (["reacher", "panda"] if args.task == "both" else [args.task])
    results = {task: run(task, args.threshold, args.every, args.quick, args.full) for task in tasks}
    emit("time_to_skill", {"threshold": args.threshold,
                           **{f"{t}_time_to_threshold_s": r["time_to_threshold_s"] for t, r in results.items()},
                           "runs": results}, args.quick, args.out)


if __name__ == "__main__":
    main()
