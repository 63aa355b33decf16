"""``panda_sim``: the PyBullet Panda behind the same topics as a real arm under ros2_control.

Physics runs in its own thread at ``physics_dt`` (1 kHz), in real time (``real_time_factor``
1) or faster; with ``use_sim_time`` it publishes ``/clock``. Every ``1 / publish_rate_hz``
it publishes ``/joint_states`` (position, velocity, commanded effort). It takes torques
from ``/effort_controller/commands`` (joint order of ``joint_names``) the way
``forward_command_controller`` and the real arm do: each command is held from the next
physics step on (zero-order hold, no ramp of its own), gravity compensated, with the
arm's unmodelled friction acting (``joint_friction``, ``joint_damping``).

It also reacts as the real arm's reflexes do: a command that steps more than
``max_torque_step`` (1 N m) from the one before, a torque beyond the joint limits, or a
nonzero torque left without a new command for ``command_timeout_s`` stops the arm: it
holds its position, latches the fault (logged, and an ERROR on ``/diagnostics``), and
ignores commands until ``~/error_recovery`` (std_srvs/Trigger, as franka's error
recovery) clears it. Commands of the wrong length or with NaN/Inf are refused and logged.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from ..envs.panda import ACTUATED, JOINT_NAMES, NEUTRAL, TORQUE_LIMIT, PandaBatch, PandaConfig, urdf_for_rviz
from .common import StartupError, declare, run_node

RCLError = rclpy.impl.implementation_singleton.rclpy_implementation.RCLError
MAX_PUBLISH_FAILURES = 25  # in a row: 0.1 s of joint states at 250 Hz

FINGERS = ("panda_finger_joint1", "panda_finger_joint2")


class PandaSimNode(Node):
    def __init__(self) -> None:
        super().__init__("panda_sim")
        self.fatal_error: str | None = None
        self.publish_failures = 0  # joint states DDS refused in a row (_publish_or_skip)
        p = declare(
            self, physics_dt=0.001, publish_rate_hz=250.0, real_time_factor=1.0,
            command_timeout_s=0.1, gui=False, joint_names=list(JOINT_NAMES[:ACTUATED]),
            joint_damping=[0.1, 0.1, 0.1, 0.1, 0.05, 0.05], joint_friction="gaz2019", inertia_from_urdf=True,
            limit_joint_velocity=True, max_torque_step=1.0, reflexes=True, hand_payload_kg=0.0,
            start_configuration=[float(x) for x in NEUTRAL], diagnostics_period_s=1.0,
        )
        if list(p["joint_names"]) != list(JOINT_NAMES[:ACTUATED]):
            raise StartupError(f"panda_sim drives {list(JOINT_NAMES[:ACTUATED])}, got joint_names {p['joint_names']}")
        self.params = p
        for name in ("physics_dt", "publish_rate_hz", "command_timeout_s", "max_torque_step"):
            if not (np.isfinite(p[name]) and p[name] > 0):
                raise StartupError(f"parameter {name} must be finite and > 0, got {p[name]}")
        if not (np.isfinite(p["real_time_factor"]) and p["real_time_factor"] >= 0):
            raise StartupError(f"parameter real_time_factor must be finite and >= 0, got {p['real_time_factor']}")
        self.steps_per_publish = max(1, round(1.0 / (p["publish_rate_hz"] * p["physics_dt"])))
        # torque_rate_limit 0: the plant applies each command as it comes (a forward controller).
        cfg = PandaConfig(control_period=p["physics_dt"], physics_dt=p["physics_dt"], torque_scale=1.0,
                          joint_damping=list(p["joint_damping"]), joint_friction=p["joint_friction"],
                          inertia_from_urdf=p["inertia_from_urdf"], limit_joint_velocity=p["limit_joint_velocity"],
                          torque_rate_limit=0.0, hand_payload_kg=p["hand_payload_kg"], gui=p["gui"])
        try:
            self.env = PandaBatch(1, cfg)
        except ValueError as exc:
            raise StartupError(f"parameter {exc}") from None
        start = np.asarray(p["start_configuration"], dtype=np.float64)
        if start.shape != (7,):
            raise StartupError(f"start_configuration needs 7 joint angles, got {start.tolist()}")
        self.env.reset_to(start[None], np.zeros((1, 3)))
        self.limits = np.asarray(TORQUE_LIMIT)
        self.command = np.zeros(ACTUATED)  # the torque held from the next physics step
        self.command_time: float | None = None
        self.sim_time = 0.0
        self.rejected = 0
        self.fault: str | None = None  # latched reflex: the arm holds position until recovery
        self.faults = 0
        self._hold: np.ndarray | None = None
        self.use_sim_time = self.get_parameter("use_sim_time").value
        self.joint_pub = self.create_publisher(JointState, "/joint_states", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.description_pub = self.create_publisher(String, "/robot_description", latched)
        self.description_pub.publish(String(data=urdf_for_rviz()))
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.use_sim_time else None
        # Commands are taken by the physics thread itself before each physics step, every one
        # in order (reflex checks see each step), not delivered by the executor: a GIL-starved
        # executor thread fell behind a 1 kHz stream and the publisher's history overflowed.
        self._command_node = Node("panda_sim_commands", context=self.context, start_parameter_services=False)
        self._command_sub = self._command_node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", lambda _: None, 1000)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/error_recovery", self.on_error_recovery)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"Panda simulated at {1 / p['physics_dt']:.0f} Hz, joint states at {p['publish_rate_hz']:.0f} Hz, "
            f"{'sim time (/clock)' if self.use_sim_time else 'wall time'}, x{p['real_time_factor']} real time")

    def take_commands(self) -> None:
        with self._command_sub.handle:
            while (taken := self._command_sub.handle.take_message(Float64MultiArray, False)) is not None:
                self.on_command(taken[0])

    def on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (ACTUATED,) or not np.all(np.isfinite(data)):
            self.rejected += 1
            reason = (f"{data.size} values, expected {ACTUATED}" if data.shape != (ACTUATED,)
                      else f"non-finite values {data.tolist()}")
            self.get_logger().warning(f"rejected torque command: {reason}; keeping the previous one",
                                      throttle_duration_sec=1.0)
            return
        with self._lock:
            if self.fault is not None:
                return  # stopped until error recovery
            step = np.abs(data - self.command)
            if np.any(np.abs(data) > self.limits):
                j = int(np.argmax(np.abs(data) - self.limits))
                self._trip(f"torque limit: joint {j + 1} commanded {data[j]:.3f} N m (limit {self.limits[j]} N m)")
            elif self.params["reflexes"] and np.any(step > self.params["max_torque_step"] + 1e-9):
                j = int(np.argmax(step))
                self._trip(f"torque discontinuity: joint {j + 1} stepped {step[j]:.3f} N m in one command "
                           f"(limit {self.params['max_torque_step']} N m per 1 ms cycle)")
            else:
                self.command = data
                self.command_time = self.sim_time

    def _trip(self, reason: str) -> None:
        """Latch a reflex (called with the lock held): zero torque, hold the position."""
        self.fault = reason
        self.faults += 1
        self.command = np.zeros(ACTUATED)
        self._hold = self.env.q[0].copy()
        self.get_logger().error(f"reflex: {reason}; the arm holds its position until ~/error_recovery")
        self.publish_diagnostics()

    def on_error_recovery(self, request, response):
        with self._lock:
            cleared, self.fault, self._hold = self.fault, None, None
            self.command = np.zeros(ACTUATED)
            self.command_time = None
        response.success = True
        response.message = f"cleared: {cleared}" if cleared else "no fault"
        self.get_logger().info(f"error recovery: {response.message}")
        return response

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="panda_sim: robot", hardware_id="panda")
        status.level = DiagnosticStatus.ERROR if self.fault else DiagnosticStatus.OK
        status.message = f"reflex: {self.fault}" if self.fault else "ok"
        status.values = [KeyValue(key="fault", value=self.fault or ""), KeyValue(key="faults", value=str(self.faults)),
                         KeyValue(key="rejected_commands", value=str(self.rejected))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def _physics_loop(self) -> None:
        """The physics thread. If it fails, the node must not live on without physics (a
        silent simulator looks like a stalled arm): it logs why and shuts its context down,
        and ``run_node`` exits with status 1."""
        try:
            self._step_forever()
        except Exception as exc:  # noqa: BLE001
            if not self.context.ok():  # the context went down under us: stop quietly
                return
            self.fatal_error = f"physics stopped: {type(exc).__name__}: {exc}"
            self.get_logger().fatal(self.fatal_error)
            stop = getattr(self, "stop_request", None)
            if stop is not None:
                stop.set(self.fatal_error, 1)

    def _step_forever(self) -> None:
        dt = self.params["physics_dt"]
        period = self.steps_per_publish * dt
        factor = self.params["real_time_factor"]
        timeout = self.params["command_timeout_s"]
        next_wake = time.monotonic()
        while self._running and self.context.ok():
            for _ in range(self.steps_per_publish):  # commands take effect from the next physics step
                self.take_commands()
                with self._lock:
                    idle = self.command_time is not None and self.sim_time - self.command_time > timeout
                    if idle and self.fault is None and np.any(self.command):
                        self._trip(f"no command for {1e3 * (self.sim_time - self.command_time):.0f} ms "
                                   f"with {np.abs(self.command).max():.3f} N m applied (timeout {1e3 * timeout:.0f} ms)")
                    command, hold = self.command.copy(), self._hold
                if hold is not None:
                    self.env.hold(hold)
                else:
                    self.env.advance(command[None], 1)
                self.sim_time += dt
            self._publish_or_skip()
            if factor > 0:
                next_wake += period / factor
                delay = next_wake - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.1:  # far behind (a stall): do not try to catch up in a burst
                    next_wake = time.monotonic()

    def _publish_or_skip(self) -> None:
        """A joint state DDS refuses to send now and then (\"cannot publish data\", seen as the
        graph starts up) is skipped, as a lost packet would be: the controller's watchdog
        stops on stale states after its timeout. Physics stops only when publishing keeps
        failing for ``MAX_PUBLISH_FAILURES`` messages in a row."""
        try:
            self._publish()
        except RCLError as exc:
            self.publish_failures += 1
            if self.publish_failures >= MAX_PUBLISH_FAILURES:
                raise
            self.get_logger().warning(f"joint state not published ({exc}); skipped",
                                      throttle_duration_sec=1.0)
        else:
            self.publish_failures = 0

    def _publish(self) -> None:
        if self.clock_pub is not None:
            clock = Clock()
            clock.clock = rclpy.time.Time(seconds=self.sim_time).to_msg()
            self.clock_pub.publish(clock)
        msg = JointState()
        msg.header.stamp = (rclpy.time.Time(seconds=self.sim_time) if self.use_sim_time
                            else self.get_clock().now()).to_msg()
        msg.name = list(JOINT_NAMES) + list(FINGERS)
        env = self.env
        msg.position = [float(x) for x in env.q[0]] + [0.04, 0.04]
        msg.velocity = [float(x) for x in env.dq[0]] + [0.0, 0.0]
        msg.effort = [float(x) for x in env.applied[0]] + [0.0] * 3  # the commanded torque, as applied
        self.joint_pub.publish(msg)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self._command_node.destroy_node()
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run_node(PandaSimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
