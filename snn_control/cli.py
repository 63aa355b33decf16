"""``snn-control``: train, evaluate and demonstrate spiking reach controllers.

    snn-control train CONFIG [--set KEY=VALUE ...] [--out RUN_DIR]
    snn-control eval MODEL_DIR [--episodes N] [--seed S] [--out FILE] [--env KEY=VALUE ...]
    snn-control demo [MODEL_DIR] [--goals N]
    snn-control results-table [MODEL_DIR ...]
    snn-control finetune MODEL_DIR BAG [BAG ...] [--out ROOT] [--set KEY=VALUE ...] [--env KEY=VALUE ...]
    snn-control bringup [--goals N] [--checkpoint DIR] [--no-sim] [--record] [--finetune]
                        [--set NODE:NAME:=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_mod
from .paths import data_root, resolve


def _default_run_dir(cfg_path: str) -> Path:
    return Path("runs") / Path(cfg_path).stem


def cmd_train(args: argparse.Namespace) -> int:
    from .predictive.trainer import Trainer

    cfg = config_mod.load(args.config, args.set)
    out = Path(args.out) if args.out else _default_run_dir(args.config)
    if cfg.algorithm == "td3":
        from .rl.gym_trainer import GymTD3Trainer
        from .rl.trainer import RLTrainer

        task = cfg.env.env_id if cfg.task == "gym" else cfg.task
        print(f"training {task} with TD3 ({cfg.rl.actor} actor, {cfg.rl.target} target) -> {out} "
              f"(TensorBoard: tensorboard --logdir {out / 'tensorboard'})")
        trainer = GymTD3Trainer(cfg, out) if cfg.task == "gym" else RLTrainer(cfg, out)
        metrics = trainer.fit(progress=not args.no_progress)
        print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("time/")}, indent=2))
        return 0
    print(f"training {cfg.task}/{cfg.model.kind} -> {out} (resumes if interrupted; "
          f"TensorBoard: tensorboard --logdir {out / 'tensorboard'})")
    metrics = Trainer(cfg, out).fit(progress=not args.no_progress)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("time/")}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .training.evaluate import evaluate, write_eval
    from .training.plots import plot_reach, plot_training

    model_dir = Path(args.model_dir)
    result = evaluate(model_dir, args.episodes, args.seed, config_mod.key_values(args.env, "--env"))
    if args.suite == "robustness":
        from .training.robustness import robustness

        result["robustness"] = robustness(model_dir, result["episodes"], args.seed)
    out = Path(args.out) if args.out else model_dir / "eval.json"
    write_eval(result, out)
    from .models.checkpoint import load_model

    _, _, spec, _ = load_model(model_dir)
    stem = out.with_suffix("")
    plot_reach(result, spec.effector, spec.control_period_s, Path(f"{stem}_reach.png"))
    plot_training(model_dir / "metrics.jsonl", Path(f"{stem}_training.png"))
    unit = result["distance_unit"]
    print(f"{result['task']} {result['model_kind']}: {result['episodes']} held-out goals, "
          f"success {result['success_rate']:.1%}, median final distance "
          f"{result['final_distance_median_m']:.4f} {unit}, p90 {result['final_distance_p90_m']:.4f} {unit}"
          + (f", success at 2 cm {result['success_rate_2cm']:.1%}" if "success_rate_2cm" in result else "")
          + f"; classical {result['classical']['success_rate']:.1%}")
    if "robustness" in result:
        from .training.plots import plot_robustness

        rob = result["robustness"]
        plot_robustness(rob, Path(f"{stem}_robustness.png"))
        for name in rob["plants"]:
            print(f"  {name:24s} {rob[name]['success_rate']:6.1%} within 5 cm, {rob[name]['success_rate_2cm']:6.1%} "
                  f"within 2 cm, median {rob[name]['final_distance_median_m']:.4f} m; classical "
                  f"{rob['classical'][name]['success_rate']:.1%}")
        print(f"  mean {rob['mean']['success_rate']:.1%} / {rob['mean']['success_rate_2cm']:.1%}, "
              f"worst {rob['worst']['plant']} {rob['worst']['success_rate']:.1%}")
    print(f"wrote {out} and {stem}_reach.png")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(resolve(args.model_dir), goals=args.goals, seed=args.seed)


def cmd_results_table(args: argparse.Namespace) -> int:
    from .results import results_table

    dirs = [Path(d) for d in args.model_dirs] or sorted((data_root() / "models").glob("*/"))
    print(results_table(dirs))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .predictive.bags import read_sessions
    from .models.checkpoint import load_model
    from .predictive.finetune import FinetuneError, finetune, settings_from, write_version

    settings = settings_from(config_mod.key_values(args.set, "--set"), config_mod.key_values(args.env, "--env"),
                             "--set")
    _, _, spec, _ = load_model(args.model_dir)
    sessions = read_sessions(args.bags, spec, settings.window)
    for reason in sessions.skipped:
        print(f"skipped {reason}", file=sys.stderr)
    print(f"{len(sessions.obs)} windows of {settings.window} steps from {len(sessions.bags_read)} bag(s)")
    try:
        report, candidate = finetune(args.model_dir, sessions, settings,
                                     progress=None if args.no_progress else _progress_bar())
    except FinetuneError as exc:
        print(f"snn-control finetune: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("accepted", "reason", "heldout", "simulation")}, indent=2))
    if candidate is None:
        print("rejected: the running model stays")
        return 1
    path = write_version(Path(args.out), candidate, report)
    print(f"accepted: wrote {path}")
    return 0


def _progress_bar():
    from tqdm.auto import tqdm

    bar = None

    def update(stage: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="finetune", unit="update")
        bar.set_postfix(stage=stage)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def cmd_bringup(args: argparse.Namespace) -> int:
    from .nodes.bringup import BringupOptions, run_bringup

    return run_bringup(BringupOptions(
        params=args.params, checkpoint=args.checkpoint, sim=not args.no_sim, teleop=not args.no_teleop,
        record=args.record, finetune=args.finetune,
        goals=args.goals, goal_time_s=args.goal_time, radius_m=args.radius, seed=args.seed,
        extra=tuple(args.set)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snn-control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train predictor and policy from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.iterations=10 (repeatable)")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a model directory on the held-out goals")
    p.add_argument("model_dir")
    p.add_argument("--episodes", type=int, help="first N held-out goals (default: the full set)")
    p.add_argument("--seed", type=int, default=0, help="held-out set (0: the standard one)")
    p.add_argument("--out", help="JSON path (default MODEL_DIR/eval.json); PNGs beside it")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="change the simulated plant, e.g. --env hand_payload_kg=1.0 (use with --out)")
    p.add_argument("--suite", choices=["robustness"],
                   help="also run the held-out goals under the named plants of training/robustness.py "
                        "(Panda): the eval JSON's 'robustness' object")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("demo", help="run a shipped controller in the closed loop, per-goal results")
    p.add_argument("model_dir", nargs="?", default="models/panda_snn")
    p.add_argument("--goals", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("finetune", help="fine-tune a model from recorded bags; write it as a new version if it passes")
    p.add_argument("model_dir")
    p.add_argument("bags", nargs="+", help="rosbag2 directories recorded by the recorder node")
    p.add_argument("--out", default="runs/finetuned", help="versions are written as OUT/vNNNN/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a fine-tuning setting, e.g. --set policy_updates=300 (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="simulated plant for validation, e.g. --env hand_payload_kg=1.0 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)
    p = sub.add_parser("bringup", help="start the ROS nodes (sim, controller, goal marker) without ros2 launch")
    p.add_argument("--params", default="config/panda_reach.yaml", help="the nodes' ROS parameter file")
    p.add_argument("--checkpoint", help="model directory for the controller (default: the params file's)")
    p.add_argument("--no-sim", action="store_true", help="a real arm publishes /joint_states")
    p.add_argument("--no-teleop", action="store_true", help="no interactive-marker goal server")
    p.add_argument("--record", action="store_true", help="record rosbag2 (MCAP) splits (recorder node)")
    p.add_argument("--finetune", action="store_true",
                   help="record, fine-tune from the bags and hot-swap accepted versions (trainer node)")
    p.add_argument("--goals", type=int, default=0, help="demo: send N held-out goals, report, exit")
    p.add_argument("--goal-time", type=float, default=4.0, help="seconds per demo goal")
    p.add_argument("--radius", type=float, default=0.05, help="demo success radius (m)")
    p.add_argument("--seed", type=int, default=0, help="held-out goal set of the demo")
    p.add_argument("--set", action="append", default=[], metavar="NODE:NAME:=VALUE",
                   help="override one node parameter, e.g. snn_controller:control_rate_hz:=50.0")
    p.set_defaults(func=cmd_bringup)
    p = sub.add_parser("results-table", help="Markdown table from models/*/eval.json")
    p.add_argument("model_dirs", nargs="*")
    p.set_defaults(func=cmd_results_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .envs import EnvError
    from .models import IOSpecMismatch, ObservationError
    from .models.checkpoint import CheckpointError
    from .predictive.replay import ReplayError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (config_mod.ConfigError, CheckpointError, IOSpecMismatch, ObservationError, EnvError,
            ReplayError) as exc:
        print(f"snn-control {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run resumes from its last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
