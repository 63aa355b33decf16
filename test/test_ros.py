"""The nodes over real DDS on localhost (rclpy from PyPI, Fast DDS).

Each test run gets its own ROS_DOMAIN_ID (from the process id) and keeps discovery on
localhost, so parallel runs never hear each other. Nodes run as separate processes, as
``snn-control bringup`` starts them; this process plays RViz and the robot's operator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parent.parent
PARAMS = str(REPO / "config" / "panda_reach.yaml")
DOMAIN = str(120 + os.getpid() % 100)
os.environ["ROS_DOMAIN_ID"] = DOMAIN
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

rclpy = pytest.importorskip("rclpy")
import rclpy.executors  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PointStamped, PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import InteractiveMarkerFeedback, InteractiveMarkerUpdate  # noqa: E402
from visualization_msgs.srv import GetInteractiveMarkers  # noqa: E402

from snn_control.envs.panda import PandaKinematics  # noqa: E402

ARM = [f"panda_joint{i}" for i in range(1, 8)]
READY = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def start(node: str, *params: str, autostart: bool = True, env: dict | None = None) -> subprocess.Popen:
    """A node as its own process; the (managed) controller configures and activates itself
    unless ``autostart`` is false (then a test drives its transitions)."""
    cmd = [sys.executable, "-m", f"snn_control.nodes.{node}", "--ros-args", "--params-file", PARAMS]
    if node == "snn_controller" and autostart:
        cmd += ["-p", "autostart:=true"]
    for p in params:
        cmd += ["-p", p]
    return spawn(cmd, env)


def spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """``cmd`` as a process whose output so far is in ``.lines``, read by a thread so a full
    pipe never blocks it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    proc.reader.start()
    return proc


def wait_for_output(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(text in line for line in list(proc.lines)):
            return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.reader.join(timeout=5)
    return "".join(proc.lines)


class Operator(Node):
    """Records what the system publishes; sends what RViz and the arm would send."""

    def __init__(self) -> None:
        super().__init__("test_operator")
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diag_history: list[dict[str, str]] = []
        self.joint_states: list[tuple[float, JointState]] = []
        self.accepted_goals: list[np.ndarray] = []
        self.updates: list[InteractiveMarkerUpdate] = []
        self.diag: dict[str, str] = {}
        self.create_subscription(Float64MultiArray, "/effort_controller/commands",
                                 lambda m: self.commands.append((time.monotonic(), np.array(m.data))), 2000)
        self.create_subscription(JointState, "/joint_states",
                                 lambda m: self.joint_states.append((time.monotonic(), m)), 100)
        self.create_subscription(PointStamped, "/snn_controller/goal",
                                 lambda m: self.accepted_goals.append(np.array([m.point.x, m.point.y, m.point.z])), 10)
        self.create_subscription(InteractiveMarkerUpdate, "/reach_goal/update", self.updates.append, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diag, 10)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal_pose", 10)
        self.point_pub = self.create_publisher(PointStamped, "/clicked_point", 10)
        self.feedback_pub = self.create_publisher(InteractiveMarkerFeedback, "/reach_goal/feedback", 10)
        self.state_pub = self.create_publisher(JointState, "/joint_states", 10)

    def on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("snn_controller"):
                self.diag = {kv.key: kv.value for kv in status.values}
                self.diag_history.append(self.diag)

    def spin(self, seconds: float, until=None) -> bool:
        """Wait (an executor thread receives: at 1 kHz of commands, a test thread that took
        one message per call would fall behind and see gaps that are not there)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
            if until is not None and until():
                return True
        return until is None

    def call(self, client_type, name: str, request, timeout: float = 20.0):
        client = self.create_client(client_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        self.spin(timeout, until=future.done)
        assert future.result() is not None, f"{name} did not answer"
        return future.result()

    def send_pose(self, goal) -> None:
        msg = PoseStamped()
        msg.header.frame_id = "panda_link0"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
        self.goal_pub.publish(msg)

    def send_point(self, goal) -> None:
        msg = PointStamped()
        msg.header.frame_id = "panda_link0"
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in goal)
        self.point_pub.publish(msg)

    def drag_marker(self, goal) -> None:
        for event in (InteractiveMarkerFeedback.MOUSE_DOWN, InteractiveMarkerFeedback.POSE_UPDATE,
                      InteractiveMarkerFeedback.MOUSE_UP):
            fb = InteractiveMarkerFeedback(client_id="/rviz", marker_name="reach_goal",
                                           control_name="move_3d", event_type=event)
            fb.header.frame_id = "panda_link0"
            fb.pose.position.x, fb.pose.position.y, fb.pose.position.z = (float(v) for v in goal)
            fb.pose.orientation.w = 1.0
            self.feedback_pub.publish(fb)

    def effector(self) -> np.ndarray:
        msg = self.joint_states[-1][1]
        index = {n: i for i, n in enumerate(msg.name)}
        return KINEMATICS.effector(np.array([msg.position[index[n]] for n in ARM]))


KINEMATICS = None


@pytest.fixture(scope="module")
def ros():
    global KINEMATICS
    rclpy.init(args=[])
    KINEMATICS = PandaKinematics()
    node = Operator()
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    yield node
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    KINEMATICS.close()
    rclpy.try_shutdown()


@pytest.fixture(scope="class")
def system(ros):
    """Simulator, controller and goal marker server, as the bring-up starts them."""
    procs = {"sim": start("panda_sim"), "controller": start("snn_controller"), "teleop": start("goal_teleop")}
    ready = ros.spin(60, until=lambda: ros.joint_states and ros.diag)
    if not ready:
        logs = {k: stop(p) for k, p in procs.items()}
        pytest.fail(f"system did not come up: {logs}")
    yield procs
    logs = {k: stop(p) for k, p in procs.items()}
    print(logs)


GOALS = [np.array([0.45, 0.20, 0.45]), np.array([0.35, -0.25, 0.55]), np.array([0.50, 0.05, 0.30])]


def _send_each_way(ros) -> list[tuple[str, np.ndarray, float, float]]:
    markers = ros.call(GetInteractiveMarkers, "/reach_goal/get_interactive_markers", GetInteractiveMarkers.Request())
    assert [m.name for m in markers.markers] == ["reach_goal"]
    results = []
    for way, goal in zip(("goal_pose", "clicked_point", "interactive_marker"), GOALS):
        accepted = len(ros.accepted_goals)
        start_distance = float(np.linalg.norm(ros.effector() - goal))
        {"goal_pose": ros.send_pose, "clicked_point": ros.send_point, "interactive_marker": ros.drag_marker}[way](goal)
        assert ros.spin(5, until=lambda: len(ros.accepted_goals) > accepted), f"goal via {way} not accepted"
        np.testing.assert_allclose(ros.accepted_goals[-1], goal, atol=1e-9)
        ros.spin(4.0)
        results.append((way, goal, start_distance, float(np.linalg.norm(ros.effector() - goal))))
    return results


class TestRunningSystem:
    """Simulator, controller and goal server up together (torn down after this class)."""

    def test_goals_sent_the_ways_rviz_sends_them_reach_the_controller(self, ros, system):
        results = _send_each_way(ros)
        # interactive-marker protocol: pose updates carry consecutive sequence numbers
        seqs = [u.seq_num for u in ros.updates if u.type == InteractiveMarkerUpdate.UPDATE]
        assert seqs and all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
        assert any(u.type == InteractiveMarkerUpdate.KEEP_ALIVE for u in ros.updates)
        commands = np.array([c for _, c in ros.commands[-200:]])
        assert np.all(np.isfinite(commands)) and np.any(commands != 0)
        for way, goal, before, after in results:
            print(f"{way}: {before:.3f} m -> {after:.3f} m")
        ros.results = results


    # Strict since the hold-still model shipped: its arm ended 0.3-2.1 cm from these goals in
    # 6 runs with printed distances, and the test passed in 18 of 18 runs (the model before
    # it, which hovered, failed 2 of 10).
    def test_end_effector_ends_within_5cm_of_each_goal(self, ros, system):
        results = getattr(ros, "results", None) or _send_each_way(ros)
        assert all(after <= 0.05 for _, _, _, after in results), results


    def test_hot_swap_while_running_keeps_ticking_without_torque_jumps(self, ros, system):
        ros.send_pose(GOALS[0])
        ros.spin(1.0)
        swaps = int(ros.diag.get("swaps", "0"))
        first = len(ros.commands)
        response = ros.call(Trigger, "/snn_controller/reload_model", Trigger.Request())
        assert response.success, response.message
        assert ros.spin(5, until=lambda: int(ros.diag.get("swaps", "0")) == swaps + 1)
        ros.spin(1.0)
        stamps = np.array([t for t, _ in ros.commands[first:]])
        torques = np.array([c for _, c in ros.commands[first:]])
        from snn_control.nodes.snn_controller import DEFAULTS  # the rates the system fixture runs at

        period, command_period = 1.0 / DEFAULTS["control_rate_hz"], 1.0 / DEFAULTS["command_rate_hz"]
        assert np.all(np.abs(np.diff(torques, axis=0)) <= 1.0 + 1e-9)  # 1000 N m/s at the 1 kHz stream
        # Ticks kept coming through the swap: no stall of the loop while the new model loaded.
        # Counted, not timed at this receiver: a pause of the receiving process (0.7 s in two
        # CI runs, with all 1 kHz commands still arriving) delays the commands, which queue
        # and arrive together, but loses none; a stalled command loop restarts its schedule
        # and never sends the ticks it missed. That the swap itself happens on a tick boundary
        # without skipping a tick is test_runtime's, deterministically.
        missing = (stamps[-1] - stamps[0]) / command_period + 1 - len(stamps)
        assert missing < 25 * period / command_period, f"{missing:.0f} commands missing: the loop stalled"


    def test_stale_joint_states_ramp_to_zero_torque_then_resume(self, ros, system):
        ros.send_pose(GOALS[1])
        sent = time.monotonic()
        assert ros.spin(5, until=lambda: any(t > sent and np.any(c != 0) for t, c in ros.commands[-5:]))
        ros.spin(0.3)  # a stretch of control, so the stop ramps down from a working torque
        before = ros.diag
        sim = system["sim"]
        sim.send_signal(signal.SIGSTOP)  # the simulator freezes: no more joint states
        try:
            # Waited for, not slept. With the simulator frozen, Fast DDS can block the
            # controller's publish for about a second (docs/real_robot.md, "A peer that hangs"),
            # so the stop's timing is asserted where the arm stops talking but keeps reading
            # (test_the_watchdog_stops_the_arm_in_time_and_once, "silent").
            frozen = time.monotonic()
            stopped = ros.spin(10, until=lambda: ros.diag.get("status") == "stale" and ros.diag is not before
                               and ros.commands[-100][0] > frozen and all(np.all(c == 0) for _, c in ros.commands[-100:]))
            commands = [c for _, c in ros.commands]
        finally:
            sim.send_signal(signal.SIGCONT)
        assert stopped, f"no stop to zero torque reported; diagnostics {ros.diag}"
        # what the arm received: a ramp down at the rate limit, then zero that stays zero
        last = max(i for i, c in enumerate(commands) if np.any(c != 0))
        assert np.all(np.abs(np.diff(commands[last - 10:last + 2], axis=0)) <= 1.0 + 1e-9)
        assert all(np.all(c == 0) for c in commands[last + 1:])
        resumed_from = time.monotonic()
        assert ros.spin(5, until=lambda: any(t > resumed_from and np.any(c != 0) for t, c in ros.commands[-20:]))


    def test_recorded_session_reads_back_with_actions_aligned_to_observations(self, ros, system, tmp_path):
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        recorder = start("recorder", f"directory:={tmp_path}", "split_s:=2.5")
        assert wait_for_output(recorder, "recording", 60), "".join(recorder.lines)
        ros.spin(1.0)  # subscriptions matched
        ros.send_pose(GOALS[2])
        ros.spin(5.0)
        log = stop(recorder)
        assert "closed" in log, log
        store = get_typestore(Stores.ROS2_KILTED)
        bags = sorted(p for p in tmp_path.iterdir() if (p / "metadata.yaml").exists())
        assert len(bags) >= 2  # split by time
        states, stamped = {}, []
        for bag in bags:
            with Reader(bag) as reader:
                for conn, _, raw in reader.messages():
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    if conn.topic == "/joint_states" and "panda_joint1" in msg.name:
                        states[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
                    elif conn.topic == "/snn_controller/command_stamped":
                        stamped.append(msg)
        assert len(states) > 500 and len(stamped) > 50
        # Each action names the observation it answered: its stamp is a joint state's stamp.
        # (Under CPU load DDS may drop joint states before the recorder takes them, so not
        # every one is in the bag; most are, and only exact matches become training data.)
        matched = [(m.header.stamp.sec, m.header.stamp.nanosec) in states for m in stamped]
        assert np.mean(matched) > 0.5
        # ... and the session turns back into training windows
        from snn_control.predictive.bags import read_sessions
        from snn_control.models.checkpoint import load_model

        _, _, spec, _ = load_model(REPO / "models" / "panda_snn")
        episodes = read_sessions(bags, spec, length=20)
        assert len(episodes.obs) >= 1 and not episodes.skipped
        # windows belong to the goal sent here or to the one in force when recording began
        near = [min(np.abs(g - known).max() for known in GOALS) < 1e-6 for g in episodes.goals]
        assert all(near) and any(np.abs(g - GOALS[2]).max() < 1e-6 for g in episodes.goals)
        assert np.all(np.abs(episodes.actions) <= 1.0) and np.any(episodes.actions != 0)
        effector = episodes.obs[:, :, slice(*spec.effector)]
        assert np.all(np.linalg.norm(np.diff(effector, axis=1), axis=-1) < 0.05)  # 20 ms apart


    def test_trainer_finetunes_from_recorded_bags_and_controller_hot_swaps(self, ros, system, tmp_path):
        """Record, let the trainer fine-tune (few updates: this tests the path, the gates'
        verdicts are test_finetune's), then the controller swaps to the new version."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        recorded, bags, versions = tmp_path / "recorded", tmp_path / "bags", tmp_path / "versions"
        recorder = start("recorder", f"directory:={recorded}", "split_s:=3.0")
        assert wait_for_output(recorder, "recording", 60), "".join(recorder.lines)
        ros.spin(1.0)
        for goal in GOALS:
            ros.send_pose(goal)
            ros.spin(4.0)
        stop(recorder)
        (recorded / "foreign_bag").mkdir()  # not a bag at all: skipped with a message
        (recorded / "foreign_bag" / "metadata.yaml").write_text("not: a rosbag2 metadata file\n")
        progress = []
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)  # the trainer's latched report too
        ros.create_subscription(String, "/trainer/progress", lambda m: progress.append(json.loads(m.data)), latched)
        swaps = int(ros.diag.get("swaps", "0"))
        bags.mkdir()
        trainer = start("trainer", f"bag_dir:={bags}", f"output_dir:={versions}", "watch_period_s:=1.0",
                        "window:=20", "min_windows:=4", "predictor_updates:=10", "policy_updates:=2",
                        "batch:=8", "check_every:=5", "validation_episodes:=2", "compile:=false",
                        "sim_tolerance:=100.0", "heldout_tolerance:=100.0")
        try:
            # The bags arrive (as a recorder's closed bags do) once the trainer's first report
            # has reached this process: a report published before the two have discovered each
            # other would be lost, as the round's "reading" once was on a busy machine.
            assert ros.spin(60, until=lambda: progress), "".join(trainer.lines)
            for bag in sorted(recorded.iterdir()):
                bag.rename(bags / bag.name)
            first = len(ros.commands)
            ticks_before, clock_before = int(float(ros.diag["ticks"])), time.monotonic()
            reports_before = len(ros.diag_history)
            swapped = ros.spin(180, until=lambda: int(ros.diag.get("swaps", "0")) == swaps + 1)
            log = "".join(trainer.lines)
            assert swapped, log
            ros.spin(1.5)
            ticks_after, clock_after = int(float(ros.diag["ticks"])), time.monotonic()
        finally:
            log = stop(trainer)
        assert ros.diag["model_version"] == "1" and ros.diag["model"] == str((versions / "v0001").resolve())
        assert (versions / "v0001" / "finetune.json").is_file()
        assert "foreign_bag" in log and "skipped" in log
        states = [p["state"] for p in progress]
        assert {"reading", "predictor", "policy", "validate", "accepted", "swapped"} <= set(states), states
        torques = np.array([c for _, c in ros.commands[first:]])
        assert np.all(np.abs(np.diff(torques, axis=0)) <= 1.0 + 1e-9)  # no jump beyond the rate limit
        assert np.all(np.isfinite(torques))
        # The loop kept its 50 Hz while the trainer trained and the model swapped, by the
        # controller's own tick count (/diagnostics, published about once a second, so each
        # end is up to a second old). Receive times in this process would also measure how
        # often this test got the CPU, which on 2 cores beside a trainer is not the point.
        elapsed = clock_after - clock_before
        assert ticks_after - ticks_before >= 0.9 * elapsed / 0.02 - 50, (ticks_after - ticks_before, elapsed)
        # and no tick came more than 25 periods after the one before, by the controller's clock
        longest = [float(d["period_max_ms"]) for d in ros.diag_history[reports_before + 1:]]
        assert longest and max(longest) < 25 * 20.0, longest


def test_controller_refuses_bad_input_with_clear_messages(ros):
    """Controller alone; this process plays the arm (NaN, wrong lengths) and the user."""
    proc = start("snn_controller", "diagnostics_period_s:=0.2", "state_timeout_s:=0.5")
    try:
        def publish_state(position):
            msg = JointState(name=ARM, position=[float(x) for x in position], velocity=[0.0] * 7, effort=[0.0] * 7)
            ros.state_pub.publish(msg)

        assert ros.spin(60, until=lambda: ros.diag.get("status") == "no_state" or ros.diag.get("status") == "no_goal")
        accepted = len(ros.accepted_goals)
        ros.send_pose([3.0, 0.0, 0.5])  # outside the workspace
        ros.spin(0.5)
        assert len(ros.accepted_goals) == accepted
        ros.send_pose(GOALS[0])
        for _ in range(20):
            publish_state(READY)
            ros.spin(0.02)
        assert ros.commands and np.any(ros.commands[-1][1] != 0)
        for _ in range(10):
            publish_state([np.nan] + READY[1:])
            ros.spin(0.02)
        ros.spin(1.2)  # the controller logs one refusal per second
        assert np.all(ros.commands[-1][1] == 0)
        ros.state_pub.publish(JointState(name=ARM, position=[0.0] * 3, velocity=[0.0] * 3))  # wrong length
        ros.spin(0.3)
        assert np.all(ros.commands[-1][1] == 0)
    finally:
        log = stop(proc)
    assert "beyond the 0.8 m workspace" in log
    assert "position of panda_joint1 is nan" in log
    assert "7 names but 3 positions" in log


def test_simulator_rejects_bad_commands(ros):
    started = time.monotonic()
    proc = start("panda_sim")
    try:
        assert ros.spin(30, until=lambda: ros.joint_states and ros.joint_states[-1][0] > started)
        pub = ros.create_publisher(Float64MultiArray, "/effort_controller/commands", 10)

        def refused(bad, text) -> bool:
            """Send ``bad`` until the simulator says it refused it (discovery may still be matching
            the new publisher, and a departed simulator's subscription can linger in it)."""
            end = time.monotonic() + 20
            while time.monotonic() < end:
                pub.publish(Float64MultiArray(data=bad))
                if ros.spin(0.3, until=lambda: any(text in line for line in list(proc.lines))):
                    return True
            return False

        assert refused([1.0, 2.0], "rejected torque command: 2 values, expected 6")
        ros.spin(1.1)  # the simulator logs one refusal per second
        assert refused([float("nan")] * 6, "non-finite")
        states = [m for t, m in ros.joint_states[-50:] if t > started]
        assert states
        assert all(np.all(np.isfinite(m.position)) for m in states)
        assert all(np.all(np.asarray(m.effort[:6]) == 0) for m in states)  # nothing applied
    finally:
        log = stop(proc)
    assert "rejected torque command: 2 values, expected 6" in log
    assert "non-finite" in log


def test_simulator_publishes_every_physics_step_at_1000_hz(ros):
    """With ``publish_rate_hz`` at the physics rate the simulator advances one physics step
    at a time (what the 1000 Hz control loop runs against)."""
    started = time.monotonic()
    proc = start("panda_sim", "publish_rate_hz:=1000.0")
    try:
        assert ros.spin(30, until=lambda: len([t for t, _ in ros.joint_states if t > started]) > 200)
    finally:
        log = stop(proc)
    assert "physics stopped" not in log
    assert proc.returncode == 0


def test_simulator_exits_with_an_error_when_its_physics_fails():
    """A simulator whose physics thread died must not live on as a silent node: it logs
    why, shuts down and exits with status 1 (the node run as its console script runs it,
    with its physics made to fail)."""
    script = (
        "from snn_control.nodes.common import run_node\n"
        "from snn_control.nodes.panda_sim import PandaSimNode\n"
        "def make():\n"
        "    node = PandaSimNode()\n"
        "    def broken(*_):\n"
        "        raise RuntimeError('simulated solver failure')\n"
        "    node.env.advance = broken\n"
        "    return node\n"
        "raise SystemExit(run_node(make, args=[]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "physics stopped: RuntimeError: simulated solver failure" in done.stdout + done.stderr
    assert "exiting with status 1" in done.stderr and "Traceback" not in done.stderr


def test_controller_refuses_a_checkpoint_for_other_joints(ros, tmp_path):
    proc = start("snn_controller", "joint_names:=[fr3_joint1,fr3_joint2,fr3_joint3,fr3_joint4,fr3_joint5,fr3_joint6]")
    try:
        code = proc.wait(timeout=60)
    finally:
        log = stop(proc)
    assert code == 2
    assert "refusing to start" in log and "joint_names" in log and "fr3_joint1" in log


def test_trainer_reports_rejections_and_progress_through_one_logger(ros):
    """rclpy refuses a logging call site whose severity changes between calls; the
    trainer's progress report logs both info and warnings (a rejected round after an
    accepted one), so each severity needs its own call site."""
    from types import SimpleNamespace

    from snn_control.nodes.trainer import TrainerNode

    published = []
    logger = rclpy.logging.get_logger("trainer_report_test")  # one object, as a node's own logger
    fake = SimpleNamespace(rounds=1, checkpoint=REPO / "models" / "panda_snn",
                           progress_pub=SimpleNamespace(publish=published.append), get_logger=lambda: logger)
    for state in ("reading", "rejected", "accepted", "error", "idle"):
        TrainerNode._report(fake, state, message=f"{state} round")
    assert [json.loads(m.data)["state"] for m in published] == ["reading", "rejected", "accepted", "error", "idle"]


def test_ctrl_c_stops_the_running_nodes_cleanly(ros, tmp_path):
    """SIGINT while the simulator steps, the controller ticks towards a goal and the
    recorder writes: each node exits 0 without a traceback (rclpy shuts the context down
    under their threads)."""
    procs = {"sim": start("panda_sim"), "controller": start("snn_controller"),
             "recorder": start("recorder", f"directory:={tmp_path / 'bags'}")}
    try:
        ros.commands.clear()  # 500: half a second of this controller's stream, not a late one of the last
        assert ros.spin(60, until=lambda: len(ros.commands) > 500), "the controller never commanded"
        for _ in range(3):
            ros.send_pose(GOALS[0])
            ros.spin(1.0)
    finally:
        logs = {name: stop(proc) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}: {logs[name][-2000:]}"
        assert "Traceback" not in logs[name] and "RCLError" not in logs[name], f"{name}: {logs[name][-3000:]}"


def _sigterm_to_bringup(after: str) -> str:
    """A bring-up sent SIGTERM once its output shows ``after``: asserts its exit code, returns its output."""
    bringup = spawn([sys.executable, "-m", "snn_control.cli", "bringup", "--no-teleop", "--params", PARAMS])
    try:
        assert wait_for_output(bringup, after, 90), "".join(bringup.lines)[-3000:]
        bringup.send_signal(signal.SIGTERM)
        code = bringup.wait(timeout=30)
        bringup.reader.join(timeout=5)
        assert code == 128 + signal.SIGTERM, "".join(bringup.lines)[-3000:]
    finally:
        if bringup.poll() is None:
            bringup.kill()
        bringup.reader.join(timeout=5)
    out = "".join(bringup.lines)
    assert "SIGTERM: stopping the nodes" in out, out[-3000:]
    assert "stopped: panda_sim ok" in out and " killed" not in out, out[-3000:]
    return out


def test_sigterm_to_the_bringup_stops_its_nodes_on_their_ways_out():
    """`kill` (SIGTERM) reaches the bring-up alone, not its nodes: it stops them itself, the
    controller ramping to zero torque, instead of leaving them running without it."""
    out = _sigterm_to_bringup("running; Ctrl-C stops every node")
    assert "stopped: panda_sim ok, snn_controller ok" in out, out[-3000:]
    assert "ramped to zero torque" in out, out[-3000:]


def test_sigterm_while_the_bringup_starts_its_nodes_stops_them_too():
    """A SIGTERM before the controller is up (the bring-up still waiting for its lifecycle
    service) is taken at the bring-up's next wait, not raised inside rclpy: the same exit code,
    every node stopped by its SIGINT (the controller may still be importing, and exit on it)."""
    out = _sigterm_to_bringup("Panda simulated at")
    assert "running; Ctrl-C" not in out, out[-3000:]


class ArmStates:
    """This process plays the arm: joint states at ``rate_hz``, stamped now (plus
    ``stamp_offset_s``; frozen at one stamp with ``frozen``; none while ``silent``), from a thread."""

    def __init__(self, ros, rate_hz: float = 250.0) -> None:
        self.ros, self.period, self.running = ros, 1.0 / rate_hz, True
        self.stamp_offset_s, self.frozen, self.silent = 0.0, None, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            msg = JointState(name=ARM, position=READY, velocity=[0.0] * 7, effort=[0.0] * 7)
            now = self.ros.get_clock().now().nanoseconds + int(self.stamp_offset_s * 1e9)
            msg.header.stamp = self.frozen or rclpy.time.Time(nanoseconds=now).to_msg()
            if not self.silent:
                self.ros.state_pub.publish(msg)
            time.sleep(self.period)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def _commanding_controller(ros, *params, env=None):
    """A controller driving this process's arm towards a goal, with nonzero torque."""
    proc = start("snn_controller", "diagnostics_period_s:=0.2", *params, env=env)
    arm = ArmStates(ros)
    ros.commands.clear()
    end, ok = time.monotonic() + 60, False
    while not ok and time.monotonic() < end:
        ros.send_pose(GOALS[0])
        ok = ros.spin(1.0, until=lambda: len(ros.commands) > 300 and np.abs(ros.commands[-1][1]).max() > 1.5)
    if not ok:
        arm.stop()
        pytest.fail(f"the controller never commanded torque: {stop(proc)[-2000:]}")
    return proc, arm


@pytest.mark.parametrize("way", ["SIGINT", "SIGTERM", "tick_exception"])
def test_every_way_out_ends_in_zero_torque_reached_by_a_ramp(ros, way):
    env = {"SNN_CONTROLLER_FAIL_AT_COMMAND": "8000"} if way == "tick_exception" else None  # after the goal is in
    proc, arm = _commanding_controller(ros, env=env)
    try:
        if way != "tick_exception":
            proc.send_signal(getattr(signal, way))
        proc.wait(timeout=20)
        ros.spin(0.5)
    finally:
        arm.stop()
        log = stop(proc)
    torques = np.array([c for _, c in ros.commands])
    assert not np.any(torques[-1]), f"last command {torques[-1]} ({way}): {log[-2000:]}"
    assert np.abs(np.diff(torques, axis=0)).max() <= 1.0 + 1e-9
    assert proc.returncode == (1 if way == "tick_exception" else 0), log[-2000:]
    assert "ramped to zero torque" in log


def test_deactivate_ramps_to_zero_and_stays_up_then_activate_resumes(ros):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    proc, arm = _commanding_controller(ros)
    try:
        change = ros.call(ChangeState, "/snn_controller/change_state",
                          ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
        assert change.success
        ros.spin(0.5)
        count = len(ros.commands)
        ros.spin(0.5)
        assert len(ros.commands) == count and not np.any(ros.commands[-1][1])  # silent, at zero
        assert proc.poll() is None
        change = ros.call(ChangeState, "/snn_controller/change_state",
                          ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
        assert change.success and ros.spin(10, until=lambda: np.abs(ros.commands[-1][1]).max() > 1.0)
    finally:
        arm.stop()
        stop(proc)
    torques = np.array([c for _, c in ros.commands])
    assert np.abs(np.diff(torques, axis=0)).max() <= 1.0 + 1e-9


def test_a_bad_reload_is_refused_and_the_controller_keeps_commanding(ros, tmp_path):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(REPO / "models" / "panda_snn", bad)
    (bad / "io_spec.json").write_text("null")
    proc, arm = _commanding_controller(ros)
    try:
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(bad))
        assert ros.call(SetParameters, "/snn_controller/set_parameters",
                        SetParameters.Request(parameters=[Parameter(name="checkpoint", value=value)])).results[0].successful
        response = ros.call(Trigger, "/snn_controller/reload_model", Trigger.Request())
        assert not response.success and "kept the running model" in response.message
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float("nan"))
        refused = ros.call(SetParameters, "/snn_controller/set_parameters",
                           SetParameters.Request(parameters=[Parameter(name="state_timeout_s", value=value)]))
        assert not refused.results[0].successful and "configure" in refused.results[0].reason
        count = len(ros.commands)
        ros.spin(1.0)
        assert proc.poll() is None and len(ros.commands) > count + 500
        assert np.abs(ros.commands[-1][1]).max() > 1.0  # still driving
    finally:
        arm.stop()
        stop(proc)


def test_the_old_50hz_stream_trips_the_simulated_reflex_until_error_recovery(ros):
    """A stream of one command per policy step (50 Hz, up to 20 N m apart) is what the real
    arm stops on; the simulator does too, holds, and resumes only after error recovery."""
    sim = start("panda_sim", "diagnostics_period_s:=0.2")
    controller = start("snn_controller", "command_rate_hz:=50.0")
    faults = []
    sub = ros.create_subscription(DiagnosticArray, "/diagnostics", lambda m: faults.extend(
        s.message for s in m.status if s.name.startswith("panda_sim") and s.level == DiagnosticStatus.ERROR), 10)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not any("torque discontinuity" in f for f in faults):
            ros.send_pose(GOALS[0])  # until the controller is up to take it
            ros.spin(1.0)
        assert any("torque discontinuity" in f for f in faults), faults
    finally:
        stop(controller)
    try:
        response = ros.call(Trigger, "/panda_sim/error_recovery", Trigger.Request())
        assert response.success and "torque discontinuity" in response.message
        faults.clear()
        ros.spin(1.0)
        assert not faults
    finally:
        ros.destroy_subscription(sub)
        log = stop(sim)
    assert "reflex: torque discontinuity" in log


@pytest.mark.parametrize("fault", ["silent", "frozen_stamp", "clock_jump_ahead", "clock_jump_back", "slow_publisher"])
def test_the_watchdog_stops_the_arm_in_time_and_once(ros, fault):
    """Joint states that stop, or keep coming but must not be acted on: the controller stops
    within the timeout plus one control period of the last valid state (its own measure, on the
    monotonic clock), and a slow stream is one stale event, not a chatter."""
    proc, arm = _commanding_controller(ros)
    try:
        before = dict(ros.diag)
        if fault == "silent":  # stops publishing and keeps reading the commands
            arm.silent = True
        elif fault == "frozen_stamp":
            arm.frozen = ros.get_clock().now().to_msg()
        elif fault.startswith("clock_jump"):
            arm.stamp_offset_s = 10.0 if fault.endswith("ahead") else -10.0
        else:
            arm.period = 1.0 / 15.0
        ros.spin(2.0)
        assert ros.spin(3.0, until=lambda: ros.diag.get("status") == "stale" and ros.diag.get("stop_latency_ms"))
        report = dict(ros.diag)
    finally:
        arm.stop()
        stop(proc)
    assert float(report["stop_latency_ms"]) <= 50.0 + 20.0, report["stop_latency_ms"]
    assert int(report["stale_events"]) - int(before.get("stale_events", 0)) == 1
    assert np.all(ros.commands[-1][1] == 0)


def test_realtime_priority_acts_or_says_why_not_and_bad_values_are_refused(ros):
    """realtime_priority puts the command loop under SCHED_FIFO where the process may
    (root, or an rtprio limit), and says so; where it may not, it says that instead."""
    proc, arm = _commanding_controller(ros, "realtime_priority:=10")
    try:
        ros.spin(0.5)
    finally:
        arm.stop()
        log = stop(proc)
    assert "command loop at real-time priority 10" in log or "realtime_priority 10 refused" in log, log[-2000:]
    bad = start("snn_controller", "realtime_priority:=120")
    assert bad.wait(timeout=60) == 2 and "realtime_priority must lie in [0, 99]" in stop(bad)
