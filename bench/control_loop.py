"""The controller node holding its rate with the simulator in another process.

    python bench/control_loop.py [--quick] [--rates 50 100 500 1000] [--seconds 30]
                                 [--listeners N] [--executor-threads T]

For each rate: ``panda_sim`` (joint states at max(500, rate) Hz) and ``snn_controller``
(control_rate_hz = rate) start as separate processes over DDS on localhost (a private
ROS_DOMAIN_ID), a goal is sent, and after ``--seconds`` the controller's own
``/diagnostics`` give the tick period p50/p99, the compute time and the deadline-miss
rate (a tick more than half a period late, or compute longer than a period) over every
tick of the run. The network is the shipped ``models/panda_snn`` on the compiled batch-1
path. It was trained at 50 Hz; for the other rates a copy whose I/O spec says
``control_period_s = 1 / rate`` is used, so the controller's spec check passes: these runs
measure timing only, not reaching. ``--listeners N`` adds N processes that subscribe to
the joint states and torques in Python, as RViz, a recorder or a test would;
``stale_events`` counts how often the controller found its joint states stale.
``--executor-threads T`` runs the nodes' rclpy executors with T threads (default 1, the
nodes' own setting), to compare with rclpy's multi-threaded executor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit, parser

os.environ.setdefault("ROS_DOMAIN_ID", str(140 + os.getpid() % 90))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402

PARAMS = str(REPO / "config" / "panda_reach.yaml")


def retimed_model(rate: float, workdir: Path) -> Path:
    source = REPO / "models" / "panda_snn"
    if abs(rate - 50.0) < 1e-9:
        return source
    target = workdir / f"panda_snn_{rate:g}hz"
    shutil.copytree(source, target)
    spec = json.loads((target / "io_spec.json").read_text())
    spec["control_period_s"] = 1.0 / rate
    (target / "io_spec.json").write_text(json.dumps(spec, indent=2))
    return target


def node(name: str, *params: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"snn_control.nodes.{name}", "--ros-args", "--params-file", PARAMS]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


LISTENER = """
import rclpy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
rclpy.init()
node = rclpy.create_node("listener")
node.create_subscription(JointState, "/joint_states", lambda m: None, 100)
node.create_subscription(Float64MultiArray, "/effort_controller/commands", lambda m: None, 100)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def measure(rate: float, seconds: float, workdir: Path, monitor, listeners: int = 0, priority: int = 0) -> dict:
    model = retimed_model(rate, workdir)
    procs = [node("panda_sim", f"publish_rate_hz:={max(500.0, rate)}"),
             node("snn_controller", "autostart:=true", f"checkpoint:={model}", f"control_rate_hz:={rate}",
                  f"command_rate_hz:={max(1000.0, rate)}", f"realtime_priority:={priority}",
                  "state_timeout_s:=0.1", f"stats_window:={int(rate * seconds * 2)}")]
    procs += [subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) for _ in range(listeners)]
    diag: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("snn_controller"):
                diag.update({kv.key: kv.value for kv in status.values})

    sub = monitor.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    pub = monitor.create_publisher(PoseStamped, "/goal_pose", 10)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and diag.get("status") not in ("no_goal", "active"):
            rclpy.spin_once(monitor, timeout_sec=0.1)
        goal = PoseStamped()
        goal.header.frame_id = "panda_link0"
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = 0.45, 0.1, 0.45
        pub.publish(goal)
        start_ticks = None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(monitor, timeout_sec=0.1)
            if start_ticks is None and diag.get("status") == "active":
                start_ticks = diag.get("ticks")
        if start_ticks is None:  # no joint states (a dead simulator) or no goal: no loop to time
            raise SystemExit(f"control_loop: the controller at {rate:g} Hz never became active "
                             f"(last status {diag.get('status')!r}); nothing measured")
        diag.clear()
        while not diag:  # the diagnostics published after the run
            rclpy.spin_once(monitor, timeout_sec=0.1)
    finally:
        monitor.destroy_subscription(sub)
        monitor.destroy_publisher(pub)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"rate_hz": rate, "seconds": seconds, "status": diag.get("status"), "ticks": int(float(diag["ticks"])),
            "period_p50_ms": float(diag["period_p50_ms"]), "period_p99_ms": float(diag["period_p99_ms"]),
            "compute_p50_us": float(diag["compute_p50_us"]), "compute_p99_us": float(diag["compute_p99_us"]),
            "deadline_miss_rate": float(diag["deadline_miss_rate"]),
            "stale_events": int(diag["stale_events"]), "listeners": listeners,
            # the torque command stream (1 kHz): share of commands more than 1 ms after their slot
            "command_rate_hz": max(1000.0, rate), "commands": int(float(diag["command_ticks"])),
            "command_late_rate": float(diag["command_late_rate"]),
            "command_period_p50_ms": float(diag["command_period_p50_ms"]),
            "command_period_p99_ms": float(diag["command_period_p99_ms"]),
            "timing_only_model": model != REPO / "models" / "panda_snn"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0, 500.0, 1000.0])
    p.add_argument("--seconds", type=float, default=None, help="per rate (default 30; quick 3)")
    p.add_argument("--listeners", type=int, default=0, help="extra Python subscriber processes")
    p.add_argument("--executor-threads", type=int, default=1, help="rclpy executor threads of the nodes")
    p.add_argument("--realtime-priority", type=int, default=0,
                   help="the controller's realtime_priority (SCHED_FIFO for its command loop; 0: off)")
    args = p.parse_args()
    os.environ["SNN_CONTROL_EXECUTOR_THREADS"] = str(args.executor_threads)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    rates = [50.0, 500.0] if args.quick else args.rates
    rclpy.init(args=[])
    monitor = rclpy.create_node("control_loop_bench")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            runs = [measure(rate, seconds, Path(workdir), monitor, args.listeners, args.realtime_priority)
                    for rate in rates]
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
    emit("control_loop", {
        **{f"miss_rate_{r['rate_hz']:g}hz": r["deadline_miss_rate"] for r in runs},
        **{f"period_p99_ms_{r['rate_hz']:g}hz": r["period_p99_ms"] for r in runs},
        **{f"stale_events_{r['rate_hz']:g}hz": r["stale_events"] for r in runs},
        "listeners": args.listeners, "executor_threads": args.executor_threads,
        "realtime_priority": args.realtime_priority,
        "runs": runs}, args.quick, args.out)


if __name__ == "__main__":
    main()
