"""``snn-control bringup``: the launch file's nodes and YAML, started without ``ros2 launch``.

Where only the PyPI ROS wheels exist (no ``launch_ros``), this starts each node as its own
process with ``--ros-args --params-file config/panda_reach.yaml`` (the file the launch
file uses), watches ``/joint_states`` and ``/diagnostics``, and prints a live status line.
With ``--goals N`` it is the demo: it sends N held-out goals the ways RViz sends them
(``/goal_pose``, ``/clicked_point``, and an interactive-marker drag ending in mouse-up,
in turn), gives each ``--goal-time`` seconds, prints the final distance per goal and
exits 0 only if every goal was reached within ``--radius``.

``snn_controller`` is a managed node: bring-up drives its transitions (configure, then
activate) through its lifecycle services, as a launch file's lifecycle events do. On
Ctrl-C every node takes its own way out (the controller ramps to zero torque) and bring-up
prints one line per node. Discovery stays on this host
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) unless the environment says otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from visualization_msgs.msg import InteractiveMarkerFeedback
from visualization_msgs.srv import GetInteractiveMarkers

from ..envs.panda import PandaKinematics
from ..paths import resolve

NODES = {
    "panda_sim": "snn_control.nodes.panda_sim",
    "snn_controller": "snn_control.nodes.snn_controller",
    "goal_teleop": "snn_control.nodes.goal_teleop",
    "recorder": "snn_control.nodes.recorder",
    "trainer": "snn_control.nodes.trainer",
}
GOAL_WAYS = ("goal_pose", "clicked_point", "interactive_marker")


@dataclass
class BringupOptions:
    params: str = "config/panda_reach.yaml"
    checkpoint: str | None = None
    sim: bool = True
    teleop: bool = True
    record: bool = False
    finetune: bool = False  # records too, and runs the trainer node
    goals: int = 0
    goal_time_s: float = 4.0
    radius_m: float = 0.05
    seed: int = 0
    extra: tuple[str, ...] = ()  # node:name:=value parameter overrides


def node_command(name: str, params: str, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", NODES[name], "--ros-args", "--params-file", str(resolve(params))]
    for item in overrides:
        cmd += ["-p", item]
    return cmd


def start_nodes(options: BringupOptions) -> dict[str, subprocess.Popen]:
    wanted = {"panda_sim": options.sim, "goal_teleop": options.teleop,
              "recorder": options.record or options.finetune, "trainer": options.finetune}
    names = [n for n in NODES if wanted.get(n, True)]
    overrides: dict[str, list[str]] = {n: [] for n in names}
    if options.checkpoint:
        for node in ("snn_controller", "trainer"):
            if node in overrides:
                overrides[node].append(f"checkpoint:={options.checkpoint}")
    for item in options.extra:
        node, _, assignment = item.partition(":")
        if node not in overrides or ":=" not in assignment:
            raise ValueError(f"override {item!r} must look like NODE:NAME:=VALUE with NODE one of {names}")
        overrides[node].append(assignment)
    env = {**os.environ}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # no participant off this host
    # Same process group: a Ctrl-C in the terminal reaches every node at once, each takes its
    # own way out (the controller's ramp to zero), and bring-up reports how each ended.
    return {n: subprocess.Popen(node_command(n, options.params, overrides[n]), env=env) for n in names}


def stop_nodes(procs: dict[str, subprocess.Popen], grace_s: float = 0.0) -> str:
    """After ``grace_s`` for nodes that are stopping already (a Ctrl-C reached them too),
    SIGINT to every node still running (each takes its own way out), SIGKILL to any that
    has not exited within 10 s. Returns one summary line."""
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10.0
    parts = []
    for name, proc in procs.items():
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            parts.append(f"{name} {'ok' if code == 0 else f'exit {code}'}")
        except subprocess.TimeoutExpired:
            proc.kill()
            parts.append(f"{name} killed")
    return "stopped: " + ", ".join(parts)


class Monitor(Node):
    """Watches the running system and sends goals the ways RViz does."""

    def __init__(self) -> None:
        super().__init__("snn_bringup_monitor")
        self.kinematics = PandaKinematics()
        self.q: np.ndarray | None = None
        self.diag: dict[str, str] = {}
        self.create_subscription(JointState, "/joint_states", self.on_joint_state, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal_pose", 10)
        self.point_pub = self.create_publisher(PointStamped, "/clicked_point", 10)
        self.feedback_pub = self.create_publisher(InteractiveMarkerFeedback, "/reach_goal/feedback", 10)
        self.markers = self.create_client(GetInteractiveMarkers, "/reach_goal/get_interactive_markers")

    def on_joint_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if all(f"panda_joint{i}" in index for i in range(1, 8)):
            self.q = np.array([msg.position[index[f"panda_joint{i}"]] for i in range(1, 8)])

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("snn_controller"):
                self.diag = {kv.key: kv.value for kv in status.values}

    def effector(self) -> np.ndarray | None:
        return None if self.q is None else self.kinematics.effector(self.q)

    def send_goal(self, goal: np.ndarray, way: str) -> None:
        x, y, z = (float(v) for v in goal)
        if way == "goal_pose":
            msg = PoseStamped()
            msg.header.frame_id = "panda_link0"
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
            msg.pose.orientation.w = 1.0
            self.goal_pub.publish(msg)
        elif way == "clicked_point":
            msg = PointStamped()
            msg.header.frame_id = "panda_link0"
            msg.point.x, msg.point.y, msg.point.z = x, y, z
            self.point_pub.publish(msg)
        else:  # RViz: fetch the markers, drag (pose updates), release (mouse-up)
            self.fetch_markers()
            for event in (InteractiveMarkerFeedback.MOUSE_DOWN, InteractiveMarkerFeedback.POSE_UPDATE,
                          InteractiveMarkerFeedback.MOUSE_UP):
                fb = InteractiveMarkerFeedback(client_id="/rviz/InteractiveMarkers", marker_name="reach_goal",
                                               control_name="move_3d", event_type=event)
                fb.header.frame_id = "panda_link0"
                fb.pose.position.x, fb.pose.position.y, fb.pose.position.z = x, y, z
                fb.pose.orientation.w = 1.0
                self.feedback_pub.publish(fb)

    def fetch_markers(self, timeout_s: float = 5.0):
        if not self.service_ready(self.markers, timeout_s):
            raise RuntimeError("goal_teleop's get_interactive_markers service is not available")
        future = self.markers.call_async(GetInteractiveMarkers.Request())
        self.spin_while(lambda: not future.done(), timeout_s)
        if future.result() is None:
            raise RuntimeError("get_interactive_markers did not answer")
        return future.result()

    @staticmethod
    def service_ready(client, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not client.wait_for_service(timeout_sec=0.1):
            raise_if_signalled()
            if time.monotonic() >= end:
                return False
        return True

    def spin_while(self, busy, timeout_s: float, status: bool = False) -> None:
        """Spin while ``busy()`` and ``timeout_s`` lasts; a SIGTERM or SIGHUP noted meanwhile
        is raised here, between spins."""
        end = time.monotonic() + timeout_s
        while busy() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
            raise_if_signalled()
            if status:
                print("\r" + self.status_line(), end="", flush=True)

    def spin_for(self, seconds: float, status: bool = False) -> None:
        self.spin_while(lambda: True, seconds, status)

    def status_line(self, goal: np.ndarray | None = None) -> str:
        d = self.diag
        ee = self.effector()
        where = "no joint states yet" if ee is None else f"hand {np.round(ee, 3).tolist()}"
        if goal is not None and ee is not None:
            where += f", {np.linalg.norm(ee - goal):.3f} m to goal"
        if not d:
            return f"{where}; waiting for the controller's /diagnostics"
        return (f"{where}; controller {d.get('status', '?')}, period p99 {float(d.get('period_p99_ms', 'nan')):.1f} ms, "
                f"misses {100 * float(d.get('deadline_miss_rate', 'nan')):.2f} %, "
                f"prediction error {d.get('prediction_error_m') or '-'} m")

    def activate(self, node: str = "snn_controller", timeout_s: float = 60.0) -> None:
        """Drive a managed node through configure and activate (its lifecycle services)."""
        client = self.create_client(ChangeState, f"/{node}/change_state")
        try:
            if not self.service_ready(client, timeout_s):
                raise RuntimeError(f"{node}'s lifecycle service change_state is not available")
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
                self.spin_while(lambda: not future.done(), timeout_s)
                if future.result() is None or not future.result().success:
                    raise RuntimeError(f"{node} refused transition {transition} (see its log for why)")
        finally:
            self.destroy_client(client)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        self.spin_while(lambda: self.q is None or not self.diag, timeout_s)
        if self.q is None or not self.diag:
            raise RuntimeError(f"no joint states or controller diagnostics within {timeout_s:.0f} s")


def demo_goals(n: int, seed: int) -> np.ndarray:
    """The first ``n`` held-out Panda goals inside the controller's default workspace."""
    from ..envs import make_batch
    from ..runtime import GoalRejected, Workspace
    from ..training.evaluate import heldout_tasks

    env = make_batch("panda", 1)
    try:
        _, goals = heldout_tasks(env, max(4 * n, 128), seed)
    finally:
        env.close()
    workspace, kept = Workspace(), []
    for g in goals:
        try:
            kept.append(workspace.check(g))
        except GoalRejected:
            continue
        if len(kept) == n:
            break
    return np.array(kept)


class Stopped(Exception):
    """A SIGTERM (``kill``, a service manager) or SIGHUP (its terminal closed) reached the
    bring-up. Unlike a Ctrl-C it reached this process alone: the nodes are stopped here, or
    they would run on without it, the controller still commanding the arm."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_signalled: list[int] = []


def _note_signal(signum: int, _frame) -> None:
    # Only noted here: raised from the handler, the exception could land inside rclpy's
    # executor or a node's destruction, anywhere the main thread happens to be, and leave
    # as some other error. The wait loops raise it at a point of their choosing.
    _signalled.append(signum)


def raise_if_signalled() -> None:
    if _signalled:
        raise Stopped(_signalled[0])


def run_bringup(options: BringupOptions) -> int:
    _signalled.clear()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _note_signal)
    procs = start_nodes(options)
    grace_s = 0.0  # how long the nodes may take to stop by themselves
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        # Without rclpy's handlers, Ctrl-C is a KeyboardInterrupt here (not a context shut
        # down under the monitor), and the nodes, which got it too, take their own ways out.
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        monitor = Monitor()
    except BaseException:
        print("\n" + stop_nodes(procs))
        raise
    try:
        raise_if_signalled()  # one that came while the nodes started
        monitor.activate()
        monitor.wait_ready()
        if not options.goals:
            print("running; Ctrl-C stops every node")
            while all(p.poll() is None for p in procs.values()):
                monitor.spin_for(0.5, status=True)
            print("\na node exited (Ctrl-C, or a failure: see its log); stopping the others")
            grace_s = 5.0  # a Ctrl-C that reached the nodes first: let them finish their ways out
            return 1
        goals = demo_goals(options.goals, options.seed)
        print(f"demo: {len(goals)} held-out goals, {options.goal_time_s:.0f} s each, success within "
              f"{options.radius_m} m; goals sent by turns via {', '.join(GOAL_WAYS)}")
        reached = 0
        for i, goal in enumerate(goals):
            way = GOAL_WAYS[i % len(GOAL_WAYS)]
            start = monitor.effector()
            monitor.send_goal(goal, way)
            monitor.spin_for(options.goal_time_s)
            final = float(np.linalg.norm(monitor.effector() - goal))
            ok = final <= options.radius_m
            reached += ok
            print(f"goal {i + 1}/{len(goals)} {np.round(goal, 3).tolist()} via {way}: start "
                  f"{np.linalg.norm(start - goal):.3f} m -> final {final:.3f} m {'OK' if ok else 'MISS'}")
        print(monitor.status_line())
        print(f"{reached}/{len(goals)} goals reached")
        return 0 if reached == len(goals) else 1
    except KeyboardInterrupt:
        print("\ninterrupted")
        grace_s = 5.0  # the nodes got the Ctrl-C too and are on their ways out
        return 130
    except Stopped as stopped:
        print(f"\n{stopped}: stopping the nodes")
        return 128 + stopped.signum
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):  # a second one must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        monitor.kinematics.close()
        monitor.destroy_node()
        rclpy.try_shutdown()
        print("\n" + stop_nodes(procs, grace_s))
