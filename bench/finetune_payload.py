"""On-robot fine-tuning that helps: a 1 kg payload the controller does not know about.

    python bench/finetune_payload.py [--payload 1.0] [--goals 24] [--goal-time 4] [--min-windows N] [--out FILE]

The whole ROS system runs as ``snn-control bringup --finetune`` starts it (simulator,
controller with the shipped ``models/panda_snn``, recorder, trainer, over DDS on localhost),
except that the simulated arm carries ``--payload`` kg at the hand, which gravity
compensation ignores (a wrong payload setting on a real Panda). Held-out goals are sent
one after another, ``--goal-time`` seconds each, and the final distance of every goal is
logged with the model version the controller ran:

- **before**: the first ``--goals`` goals, shipped model, while the session is recorded;
- **during**: goals while the trainer fine-tunes (still the shipped model);
- **after**: once the controller runs the fine-tuned version, the same ``--goals`` goals
  again, in the same order.

The trainer validates candidates in a simulation with the same payload
(``validation_env: [hand_payload_kg=...]``: the operator knows a payload was added, not how
to compensate it). Writes JSON (``bench/results/finetune_payload.json``) and a PNG plot of
the final distance per goal beside it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from _common import REPO, emit, parser

os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from snn_control.nodes.bringup import BringupOptions, Monitor, demo_goals, start_nodes, stop_nodes  # noqa: E402


def summary(rows: list[dict]) -> dict:
    d = np.array([r["final_m"] for r in rows])
    if not len(d):
        return {"goals": 0}
    return {"goals": int(len(d)), "final_distance_median_m": float(np.median(d)),
            "final_distance_mean_m": float(d.mean()), "success_rate_5cm": float((d <= 0.05).mean()),
            "success_rate_paper_radius_0123m": float((d <= 0.123).mean())}


def plot(rows: list[dict], path: Path, payload: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    colors = {"before": "tab:red", "during": "tab:orange", "after": "tab:green"}
    for phase, color in colors.items():
        pts = [(r["time_s"] / 60, r["final_m"] * 100) for r in rows if r["phase"] == phase]
        if pts:
            ax.scatter(*zip(*pts), color=color, label=f"{phase} ({len(pts)} goals)", s=18)
    ax.axhline(5, color="grey", ls="--", lw=0.8, label="5 cm")
    ax.set_xlabel("session time (min)")
    ax.set_ylabel("final distance to goal (cm)")
    ax.set_title(f"Fine-tuning on the robot: {payload:g} kg uncompensated payload")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--payload", type=float, default=1.0, help="kg at the hand, not compensated")
    p.add_argument("--goals", type=int, default=24, help="goals before, and again after")
    p.add_argument("--goal-time", type=float, default=4.0)
    p.add_argument("--max-minutes", type=float, default=25.0, help="give up waiting for a swap")
    p.add_argument("--min-windows", type=int, default=None,
                   help="recorded 1 s windows before the trainer starts (default: config/panda_reach.yaml's)")
    args = p.parse_args()
    n = 4 if args.quick else args.goals
    workdir = REPO / "runs" / f"finetune_payload_{time.strftime('%Y%m%d_%H%M%S')}"
    trainer = [f"trainer:validation_env:=[hand_payload_kg={args.payload}]",
               f"trainer:bag_dir:={workdir / 'bags'}", f"trainer:output_dir:={workdir / 'versions'}"]
    if args.min_windows is not None:
        trainer.append(f"trainer:min_windows:={args.min_windows}")
    if args.quick:  # the whole path in a few minutes: tiny fine-tuning
        trainer += ["trainer:min_windows:=4", "trainer:window:=20", "trainer:predictor_updates:=10",
                    "trainer:policy_updates:=2", "trainer:validation_episodes:=2", "trainer:compile:=false"]
    options = BringupOptions(finetune=True, teleop=False, extra=tuple([
        f"panda_sim:hand_payload_kg:={args.payload}", f"recorder:directory:={workdir / 'bags'}",
        f"recorder:split_s:={8.0 if args.quick else 30.0}", *trainer]))
    procs = start_nodes(options)
    rclpy.init(args=[])
    monitor = Monitor()
    monitor.activate()
    progress: list[dict] = []
    monitor.create_subscription(String, "/trainer/progress", lambda m: progress.append(json.loads(m.data)), 100)
    goals = demo_goals(n, seed=0)
    rows: list[dict] = []
    started = time.monotonic()
    try:
        monitor.wait_ready()

        def reach(i: int, goal: np.ndarray, phase: str) -> None:
            monitor.send_goal(goal, "goal_pose")
            monitor.spin_for(args.goal_time)
            final = float(np.linalg.norm(monitor.effector() - goal))
            version = monitor.diag.get("model_version", "?")
            rows.append({"phase": phase, "goal": i, "final_m": final, "model_version": version,
                         "time_s": time.monotonic() - started})
            print(f"{phase:6s} goal {i + 1:2d} v{version}: {final:.3f} m", flush=True)

        for i, goal in enumerate(goals):
            reach(i, goal, "before")
        k = 0
        deadline = started + 60 * args.max_minutes
        while monitor.diag.get("model_version", "0") == "0" and time.monotonic() < deadline:
            reach(k % n, goals[k % n], "during")
            k += 1
        swapped = monitor.diag.get("model_version", "0") != "0"
        if swapped:
            for i, goal in enumerate(goals):
                reach(i, goal, "after")
    finally:
        monitor.kinematics.close()
        monitor.destroy_node()
        rclpy.try_shutdown()
        stop_nodes(procs)
    trainer_reports = [p["report"] for p in progress if "report" in p]
    result = {
        "payload_kg": args.payload, "goal_time_s": args.goal_time, "swapped": swapped,
        **{phase: summary([r for r in rows if r["phase"] == phase]) for phase in ("before", "during", "after")},
        "trainer": [{k: rep[k] for k in ("accepted", "reason", "windows", "heldout", "simulation", "elapsed_s")}
                    for rep in trainer_reports],
        "goals": rows, "session_dir": str(workdir),
    }
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"finetune_payload{'.quick' if args.quick else ''}.json"
    emit("finetune_payload", result, args.quick, out)
    plot(rows, out.with_suffix(".png"), args.payload)


if __name__ == "__main__":
    main()
