"""``snn_controller``: a trained spiking controller driving the arm at a fixed rate.

Thin shell around :class:`~snn_control.runtime.ControllerCore`: joint states from
``/joint_states`` (by name), goals from ``/goal_pose`` and ``/clicked_point``, a timer at
``control_rate_hz`` that publishes safe torques on ``/effort_controller/commands``, the
forward model's prediction (``~/prediction``) and its effector error (``~/prediction_error``,
a health signal), and ``/diagnostics`` once a second, and each accepted goal on ``~/goal`` (loop period p50/p99, compute time,
deadline misses, firing rates). Services: ``~/reload_model`` (load ``checkpoint`` again,
or the path in the ``checkpoint`` parameter if it was changed, and swap at a tick
boundary) and ``~/set_enabled``. A checkpoint whose I/O spec does not match
``joint_names`` and ``1 / control_rate_hz`` is refused at start-up with the difference.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from ..envs.panda import JOINT_NAMES
from ..models import IOSpecMismatch
from ..paths import resolve
from ..runtime import ControllerCore, ControllerSettings, GoalRejected, JointStateError, Workspace
from ..training.checkpoint import CheckpointError
from .common import StartupError, declare, run_node


class SnnControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("snn_controller")
        p = declare(
            self, checkpoint="", joint_names=list(JOINT_NAMES[:6]), control_rate_hz=50.0,
            state_timeout_s=0.05, torque_rate_limit=1000.0, workspace_center=[0.0, 0.0, 0.333],
            workspace_min_radius=0.25, workspace_max_radius=0.80, workspace_min_z=0.10,
            workspace_max_z=1.10, diagnostics_period_s=1.0, stats_window=5000,
        )
        if not p["checkpoint"]:
            raise StartupError("parameter 'checkpoint' (a model directory) is not set")
        settings = ControllerSettings(
            joint_names=tuple(p["joint_names"]), control_period_s=1.0 / p["control_rate_hz"],
            state_timeout_s=p["state_timeout_s"], torque_rate_limit=p["torque_rate_limit"],
            workspace=Workspace(tuple(p["workspace_center"]), p["workspace_min_radius"],
                                p["workspace_max_radius"], p["workspace_min_z"], p["workspace_max_z"]),
            stats_window=p["stats_window"])
        try:
            self.core = ControllerCore(resolve(p["checkpoint"]), settings)
        except (IOSpecMismatch, CheckpointError) as exc:
            raise StartupError(str(exc)) from exc
        self.params = p
        control = MutuallyExclusiveCallbackGroup()  # the tick never runs beside itself
        service = MutuallyExclusiveCallbackGroup()  # loading a model does not block ticks
        self.torque_pub = self.create_publisher(Float64MultiArray, "/effort_controller/commands", 10)
        self.prediction_pub = self.create_publisher(Float64MultiArray, "~/prediction", 10)
        self.error_pub = self.create_publisher(Float64, "~/prediction_error", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The goal in force, latched: a late subscriber (the recorder) still learns it.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.goal_pub = self.create_publisher(PointStamped, "~/goal", latched)
        # The torques again, with the joint state they were computed from (recording).
        self.stamped_pub = self.create_publisher(JointState, "~/command_stamped", 10)
        # Joint states are taken by the control tick itself, newest only (depth 1: a queue would
        # hand it stale ones), not delivered by the executor: at 1 kHz a Python callback per
        # message kept the executor thread busy and the waking tick waited for the GIL. The
        # subscription lives on a node of its own that no executor spins, so only the tick takes.
        self._state_node = Node("snn_controller_joint_states", context=self.context,
                                start_parameter_services=False)
        self._state_sub = self._state_node.create_subscription(JointState, "/joint_states", lambda _: None, 1)
        self.create_subscription(PoseStamped, "/goal_pose", self.on_goal_pose, 10)
        self.create_subscription(PointStamped, "/clicked_point", self.on_clicked_point, 10)
        self.create_service(Trigger, "~/reload_model", self.on_reload, callback_group=service)
        self.create_service(SetBool, "~/set_enabled", self.on_set_enabled)
        # The control loop: with sim time, a ROS timer on /clock; with wall time, a thread of
        # its own that sleeps to absolute deadlines, so executor latency (rclpy spends
        # hundreds of microseconds per callback in Python) never delays a tick.
        self._running = True
        if self.get_parameter("use_sim_time").value:
            self.timer = self.create_timer(settings.control_period_s, self.on_tick, callback_group=control)
            self._loop = None
        else:
            self._loop = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self.last_status = ""
        self.last_error: float | None = None
        self._reload_lock = threading.Lock()
        if self._loop is not None:
            self._loop.start()
        self.get_logger().info(f"controlling {list(settings.joint_names)} at {p['control_rate_hz']:.0f} Hz "
                               f"with {p['checkpoint']}")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ---------------------------------------------------------------------
    def take_joint_state(self, now_s: float) -> None:
        """Hand the newest joint state waiting (if any) to the controller; the tick's first step."""
        msg = None
        with self._state_sub.handle:
            while (taken := self._state_sub.handle.take_message(JointState, False)) is not None:
                msg = taken[0]
        if msg is None:
            return
        try:
            self.core.update_joint_state(msg.name, msg.position, msg.velocity, now_s, msg.header.stamp)
        except JointStateError as exc:
            self.get_logger().error(f"joint state refused: {exc}; commanding zero torque",
                                    throttle_duration_sec=1.0)

    def _goal(self, point, source: str) -> None:
        try:
            goal = self.core.set_goal(point)
        except GoalRejected as exc:
            self.get_logger().warning(f"goal from {source} rejected: {exc}")
            return
        self.get_logger().info(f"new goal from {source}: {np.round(goal, 3).tolist()}")
        accepted = PointStamped()
        accepted.header.frame_id = "panda_link0"
        accepted.header.stamp = self.get_clock().now().to_msg()
        accepted.point.x, accepted.point.y, accepted.point.z = (float(v) for v in goal)
        self.goal_pub.publish(accepted)

    def on_goal_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self._goal([p.x, p.y, p.z], "/goal_pose")

    def on_clicked_point(self, msg: PointStamped) -> None:
        p = msg.point
        self._goal([p.x, p.y, p.z], "/clicked_point")

    # -- the control tick -------------------------------------------------------------
    def _control_loop(self) -> None:
        period = self.core.settings.control_period_s
        deadline = time.monotonic()
        while self._running:
            deadline += period
            try:
                self.on_tick()
            except Exception as exc:  # noqa: BLE001 - never leave the last torque applied
                if not self.context.ok():  # Ctrl-C shut the context down: nothing can be sent any more
                    return
                self.get_logger().error(f"control tick failed ({type(exc).__name__}: {exc}); stopping the arm",
                                        throttle_duration_sec=1.0)
                self.torque_pub.publish(Float64MultiArray(data=[float(x) for x in self.core.safety.stop()]))
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # fell a whole period behind: restart the schedule, no burst
                deadline = time.monotonic()

    def on_tick(self) -> None:
        now = self.now_s()
        self.take_joint_state(now)
        result = self.core.tick(now)
        self.torque_pub.publish(Float64MultiArray(data=[float(x) for x in result.torque]))
        if result.status != self.last_status:
            text = f"controller {result.status}" + (f": {result.detail}" if result.detail else "")
            if result.status in ("active", "no_goal"):
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
            self.last_status = result.status
        if result.status == "active" and result.state_stamp is not None:
            # The torques with the joint state they answer (stamp, positions, velocities), so
            # a recording pairs each action with its observation even if it lost that state.
            stamped = JointState(name=list(self.core.settings.joint_names),
                                 position=[float(x) for x in result.joint_positions],
                                 velocity=[float(x) for x in result.joint_velocities],
                                 effort=[float(x) for x in result.torque])
            stamped.header.stamp = result.state_stamp
            self.stamped_pub.publish(stamped)
        if result.prediction is not None:
            self.prediction_pub.publish(Float64MultiArray(data=[float(x) for x in result.prediction]))
        if result.prediction_error_m is not None:
            self.last_error = result.prediction_error_m
            self.error_pub.publish(Float64(data=result.prediction_error_m))

    # -- services ---------------------------------------------------------------------
    def on_reload(self, request, response):
        """Check the checkpoint here (spec, files: milliseconds); build its networks in a
        thread of its own, so neither the executor nor a control tick waits for it."""
        path = resolve(self.get_parameter("checkpoint").value)
        try:
            self.core.check_model(path)
        except (IOSpecMismatch, CheckpointError, OSError) as exc:
            response.success, response.message = False, f"kept the running model: {exc}"
            self.get_logger().error(response.message)
            return response
        threading.Thread(target=self._load_and_swap, args=(path,), daemon=True).start()
        response.success, response.message = True, f"loading {path}; it takes over at a tick boundary"
        self.get_logger().info(response.message)
        return response

    def _load_and_swap(self, path) -> None:
        with self._reload_lock:
            try:
                model = self.core.prepare_model(path)
            except (IOSpecMismatch, CheckpointError, OSError) as exc:
                self.get_logger().error(f"kept the running model: {exc}")
                return
            self.core.request_swap(model)
        self.get_logger().info(f"swapping to {path} (version {model.version}) at the next tick")

    def on_set_enabled(self, request, response):
        self.core.set_enabled(request.data)
        response.success, response.message = True, "enabled" if request.data else "disabled: zero torque"
        return response

    def publish_diagnostics(self) -> None:
        stats = self.core.stats.summary()
        status = DiagnosticStatus(name="snn_controller: control loop", hardware_id="panda")
        misses = stats["deadline_miss_rate"]
        status.level = DiagnosticStatus.OK if misses < 0.01 else DiagnosticStatus.WARN
        status.message = f"{self.last_status}; deadline misses {100 * misses:.2f} %"
        values = {**{k: f"{v:.6g}" for k, v in stats.items()},
                  "status": self.last_status, "model": str(self.core.model.path),
                  "model_version": self.core.model.version, "swaps": str(self.core.swaps),
                  "stale_events": str(self.core.stale_events),
                  "period_max_ms": f"{1e3 * self.core.stats.take_longest_period():.6g}",  # since the last report
                  "prediction_error_m": "" if self.last_error is None else f"{self.last_error:.6g}",
                  "firing_rate_hz": str({k: [round(x, 1) for x in v] for k, v in self.core.firing_rates_hz().items()})}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def close(self) -> None:
        self._running = False
        if self._loop is not None:
            self._loop.join(timeout=1.0)
        self._state_node.destroy_node()


def main(args: list[str] | None = None) -> int:
    sys.setswitchinterval(1e-3)  # a waking control thread waits at most ~1 ms for the GIL
    return run_node(SnnControllerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
