"""Fault injection against the real nodes over DDS: does every way out end in zero torque,
reached by a ramp, and does the watchdog stop the arm in time?

    python bench/faults.py            # each fault 20 times
    python bench/faults.py --quick    # each fault 3 times (CI)

This process plays the arm: it publishes ``/joint_states`` (250 Hz, stamped with the
system clock, as a driver does) and a goal, and records every torque command with its
receipt time. Faults, each on a fresh ``snn_controller`` process:

- exits: SIGINT, SIGTERM, an exception in the command loop (``SNN_CONTROLLER_FAIL_AT_COMMAND``);
  the last command received must be zero (``zero_torque_last_rate``);
- a bad reload (``io_spec.json`` holding ``5``): refused, and the controller keeps commanding;
- joint states: a dead publisher, a frozen stamp, a clock jump (+-10 s), a 15 Hz publisher;
  ``watchdog_worst_ms`` is the controller's own measure (``stop_latency_ms`` on
  ``/diagnostics``, monotonic clock) of the time from the last valid joint state to the
  first command of the stop ramp;
- a demo against ``panda_sim`` (the reflex-faithful simulator): ``reflex_trips_in_demo``;
- the recorder's directory removed while it records: ``recorder_failure_reported_s``,
  the time to its first ERROR on ``/diagnostics``.

``max_command_step_nm`` is the largest change between consecutive commands over all runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import REPO, emit, parser

os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 60))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
import rclpy.executors  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

PARAMS = str(REPO / "config" / "panda_reach.yaml")
ARM = [f"panda_joint{i}" for i in range(1, 8)]
READY = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
GOAL = (0.45, 0.25, 0.35)  # far enough from READY that the controller commands torque
TIMEOUT_S = 0.05  # the controller's state_timeout_s (config/panda_reach.yaml)
CONTROL_PERIOD_S = 0.02
CONTROLLER, RECORDER = "snn_controller: control loop", "recorder: bag writer"  # their /diagnostics names


LOG = Path(tempfile.mkdtemp(prefix="faults_logs_"))


def start(module: str, *params: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"snn_control.nodes.{module}", "--ros-args", "--params-file", PARAMS]
    for p in params:
        cmd += ["-p", p]
    log = open(LOG / f"{module}.log", "w")  # the latest run's output, for a failure's message
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


class Arm(Node):
    """Joint states out, torque commands and diagnostics in."""

    def __init__(self) -> None:
        super().__init__("fault_bench_arm")
        self.state_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal_pose", 10)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diag: dict[str, list[tuple[float, object]]] = {}
        self.create_subscription(Float64MultiArray, "/effort_controller/commands",
                                 lambda m: self.commands.append((time.monotonic(), np.array(m.data))), 2000)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diag, 50)

    def on_diag(self, msg) -> None:
        for status in msg.status:
            self.diag.setdefault(status.name, []).append((time.monotonic(), status))

    def publish_state(self, stamp_offset_s: float = 0.0, stamp=None) -> float:
        msg = JointState(name=ARM, position=READY, velocity=[0.0] * 7, effort=[0.0] * 7)
        msg.header.stamp = stamp or rclpy.time.Time(
            nanoseconds=int((time.time() + stamp_offset_s) * 1e9)).to_msg()
        self.state_pub.publish(msg)
        return time.monotonic()

    def send_goal(self) -> None:
        goal = PoseStamped()
        goal.header.frame_id = "panda_link0"
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = GOAL
        self.goal_pub.publish(goal)

    def run_states(self, seconds: float, rate_hz: float = 250.0, **kw) -> float:
        """Publish states for ``seconds`` (an executor thread receives meanwhile); returns
        the time of the last one."""
        end, last = time.monotonic() + seconds, 0.0
        while time.monotonic() < end:
            last = self.publish_state(**kw)
            time.sleep(1.0 / rate_hz)
        return last

    def spin(self, seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
            if until is not None and until():
                return True
        return until is None

    def report(self, node: str, since: float, key: str | None = None) -> dict[str, str]:
        """The values of ``node``'s newest diagnostics after ``since`` (waits up to 3 s)."""
        def latest():
            reports = [s for t, s in self.diag.get(node, []) if t > since]
            return {kv.key: kv.value for kv in reports[-1].values} if reports else None
        self.spin(3.0, until=lambda: (latest() or {}).get(key or "status"))
        return latest() or {}

    def active(self, since: float) -> bool:
        return any(t > since and np.abs(c).max() > 1.5 for t, c in self.commands[-50:])


def bring_up(arm: Arm, env: dict | None = None) -> tuple[subprocess.Popen, float]:
    """A fresh controller, fed states and a goal until it commands torque."""
    arm.commands.clear()
    proc = start("snn_controller", "autostart:=true", "diagnostics_period_s:=0.2", env=env)
    since = time.monotonic()
    end = since + 60
    while time.monotonic() < end and not arm.active(since):
        arm.run_states(0.2)
        arm.send_goal()
    if not arm.active(since):
        finish(proc, signal.SIGKILL)
        tail = (LOG / "snn_controller.log").read_text()[-2000:]
        raise SystemExit(f"faults: the controller never commanded torque; its log ends:\n{tail}")
    return proc, since


def max_step(commands) -> float:
    c = np.array([x for _, x in commands])
    return float(np.abs(np.diff(c, axis=0)).max()) if len(c) > 1 else 0.0


def exit_fault(arm: Arm, how: str) -> dict:
    env = {"SNN_CONTROLLER_FAIL_AT_COMMAND": "6000"} if how == "tick_exception" else None  # after the goal is in
    proc, _ = bring_up(arm, env)
    arm.run_states(0.3)
    if how == "tick_exception":
        end = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < end:
            arm.run_states(0.05)
        code = finish(proc)
    else:
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        end = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < end:
            arm.run_states(0.02)
        code = finish(proc)
    arm.spin(0.3)
    last = arm.commands[-1][1] if arm.commands else None
    return {"zero_last": bool(last is not None and not np.any(last)), "exit_code": code,
            "max_step": max_step(arm.commands)}


def feed_until(arm: Arm, done, timeout_s: float = 5.0) -> None:
    """Keep the arm's joint states coming (the controller must stay active) until ``done()``."""
    end = time.monotonic() + timeout_s
    while not done() and time.monotonic() < end:
        arm.run_states(0.02)


def bad_reload(arm: Arm, workdir: Path) -> dict:
    bad = workdir / "bad_model"
    if not bad.exists():
        shutil.copytree(REPO / "models" / "panda_snn", bad)
        (bad / "io_spec.json").write_text("5")
    proc, _ = bring_up(arm)
    try:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = arm.create_client(SetParameters, "/snn_controller/set_parameters")
        feed_until(arm, lambda: client.service_is_ready(), 10.0)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(bad))
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name="checkpoint", value=value)]))
        feed_until(arm, future.done)
        reload = arm.create_client(Trigger, "/snn_controller/reload_model")
        feed_until(arm, lambda: reload.service_is_ready(), 10.0)
        future = reload.call_async(Trigger.Request())
        feed_until(arm, future.done)
        refused = future.done() and not future.result().success
        since = time.monotonic()
        arm.run_states(1.0)
        alive = proc.poll() is None and arm.active(since)
        arm.destroy_client(client)
        arm.destroy_client(reload)
    finally:
        finish(proc)
        arm.spin(0.3)
    return {"kept_running": bool(refused and alive), "refused": bool(refused), "alive": bool(alive),
            "max_step": max_step(arm.commands)}


def watchdog_fault(arm: Arm, how: str, k: int) -> dict:
    proc, _ = bring_up(arm)
    try:
        arm.run_states(0.3)
        before = arm.report(CONTROLLER, time.monotonic())
        if how == "dead_publisher":
            arm.spin(0.3)
        elif how == "frozen_stamp":
            stamp = rclpy.time.Time(nanoseconds=int(time.time() * 1e9)).to_msg()
            arm.run_states(0.3, stamp=stamp)
        elif how == "clock_jump":
            arm.run_states(0.3, stamp_offset_s=10.0 if k % 2 == 0 else -10.0)
        elif how == "slow_publisher":
            arm.run_states(2.0, rate_hz=15.0)
        after = arm.report(CONTROLLER, time.monotonic(), "stop_latency_ms")
        latency = after.get("stop_latency_ms") if after.get("status") == "stale" else ""
        return {"stop_ms": float(latency) if latency else float("inf"), "max_step": max_step(arm.commands),
                "stale_events": int(after.get("stale_events", -1)) - int(before.get("stale_events", 0))}
    finally:
        finish(proc)
        arm.spin(0.2)


def demo_trips(arm: Arm, goals: int) -> dict:
    """The simulator and the controller at 1 kHz through ``goals`` goals: reflex trips."""
    from snn_control.nodes.bringup import demo_goals

    sim = start("panda_sim", "diagnostics_period_s:=0.5")
    ctl = start("snn_controller", "autostart:=true")
    arm.commands.clear()
    try:
        arm.spin(60, until=lambda: len(arm.commands) > 500)
        for goal in demo_goals(goals, seed=0):
            msg = PoseStamped()
            msg.header.frame_id = "panda_link0"
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
            arm.goal_pub.publish(msg)
            arm.spin(4.0)
    finally:
        finish(ctl)
        arm.spin(1.0)
        reports = arm.diag.get("panda_sim: robot", [])
        values = {kv.key: kv.value for kv in reports[-1][1].values} if reports else {}
        finish(sim)
    return {"trips": int(values.get("faults", -1)), "max_step": max_step(arm.commands)}


def recorder_failure(arm: Arm, workdir: Path, k: int) -> float:
    """Seconds from removing the recorder's session directory to its first ERROR diagnostics."""
    directory = workdir / f"bags_{k}"
    proc = start("recorder", f"directory:={directory}", "split_s:=2.0")
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(directory.glob("*/*.mcap")):
            arm.run_states(0.2)
        arm.diag.pop(RECORDER, None)
        removed = time.monotonic()
        shutil.rmtree(directory, ignore_errors=True)
        end = removed + 10
        while time.monotonic() < end:
            arm.run_states(0.05)
            errors = [t for t, s in arm.diag.get(RECORDER, []) if s.level == DiagnosticStatus.ERROR and t > removed]
            if errors:
                return errors[0] - removed
        return float("inf")
    finally:
        finish(proc)


def progress(fault: str, n: int) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {fault} x {n}", file=sys.stderr, flush=True)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    n = 3 if args.quick else 20
    rclpy.init()
    arm = Arm()
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(arm)
    threading.Thread(target=executor.spin, daemon=True).start()  # receives while this thread publishes
    workdir = Path(tempfile.mkdtemp(prefix="faults_"))
    steps, result = [], {"repeats": n}
    try:
        for how in ("sigint", "sigterm", "tick_exception"):
            progress(how, n)
            runs = [exit_fault(arm, how) for _ in range(n)]
            steps += [r["max_step"] for r in runs]
            result[f"zero_torque_last_rate_{how}"] = float(np.mean([r["zero_last"] for r in runs]))
            result[f"exit_codes_{how}"] = sorted({r["exit_code"] for r in runs})
        result["zero_torque_last_rate"] = {h: result[f"zero_torque_last_rate_{h}"]
                                           for h in ("sigint", "sigterm", "tick_exception")}
        progress("bad_reload", n)
        runs = [bad_reload(arm, workdir) for _ in range(n)]
        steps += [r["max_step"] for r in runs]
        result["bad_reload_kept_running_rate"] = float(np.mean([r["kept_running"] for r in runs]))
        result["bad_reload_refused_rate"] = float(np.mean([r["refused"] for r in runs]))
        watchdog = {}
        for how in ("dead_publisher", "frozen_stamp", "clock_jump", "slow_publisher"):
            progress(how, n)
            runs = [watchdog_fault(arm, how, k) for k in range(n)]
            steps += [r["max_step"] for r in runs]
            watchdog[how] = {"stop_ms_max": max(r["stop_ms"] for r in runs),
                             "stop_ms_median": float(np.median([r["stop_ms"] for r in runs]))}
            if how == "slow_publisher":
                watchdog[how]["stale_events_max"] = max(r["stale_events"] for r in runs)  # 1: one fault
        result["watchdog"] = watchdog
        result["watchdog_worst_ms"] = max(w["stop_ms_max"] for w in watchdog.values())
        result["watchdog_bound_ms"] = 1e3 * (TIMEOUT_S + CONTROL_PERIOD_S)
        progress("demo", 1)
        demo = demo_trips(arm, 3 if args.quick else 8)
        steps.append(demo["max_step"])
        result["reflex_trips_in_demo"] = demo["trips"]
        progress("recorder_failure", n)
        reports = [recorder_failure(arm, workdir, k) for k in range(n)]
        result["recorder_failure_reported_s"] = max(reports)
        result["max_command_step_nm"] = max(steps)
    finally:
        executor.shutdown(timeout_sec=1.0)
        arm.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(LOG, ignore_errors=True)
    emit("faults", result, args.quick, args.out)


if __name__ == "__main__":
    main()
