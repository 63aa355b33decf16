"""``panda_sim``: the PyBullet Panda behind the same topics as a real arm under ros2_control.

Physics runs in its own thread at ``physics_dt`` (1 kHz), in real time (``real_time_factor``
1) or faster; with ``use_sim_time`` it publishes ``/clock``. Every ``1 / publish_rate_hz``
it publishes ``/joint_states`` (position, velocity, applied effort). It takes torques from
``/effort_controller/commands`` (joint order of ``joint_names``), applies them through the
real arm's torque-rate limit with gravity compensated, and falls back to zero torque when
commands stop for ``command_timeout_s``. Commands of the wrong length or with NaN/Inf are
rejected and logged (at most once a second).
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
from std_msgs.msg import Float64MultiArray, String

from ..envs.panda import ACTUATED, JOINT_NAMES, NEUTRAL, TORQUE_LIMIT, PandaBatch, PandaConfig, urdf_for_rviz
from .common import StartupError, declare, run_node

FINGERS = ("panda_finger_joint1", "panda_finger_joint2")


class PandaSimNode(Node):
    def __init__(self) -> None:
        super().__init__("panda_sim")
        self.fatal_error: str | None = None
        p = declare(
            self, physics_dt=0.001, publish_rate_hz=250.0, real_time_factor=1.0,
            command_timeout_s=0.1, gui=False, joint_names=list(JOINT_NAMES[:ACTUATED]),
            joint_damping=[1.0, 1.0, 1.0, 1.0, 0.3, 0.3], inertia_from_urdf=True,
            limit_joint_velocity=True, torque_rate_limit=1000.0, hand_payload_kg=0.0,
            start_configuration=[float(x) for x in NEUTRAL],
        )
        if list(p["joint_names"]) != list(JOINT_NAMES[:ACTUATED]):
            raise StartupError(f"panda_sim drives {list(JOINT_NAMES[:ACTUATED])}, got joint_names {p['joint_names']}")
        self.params = p
        self.steps_per_publish = max(1, round(1.0 / (p["publish_rate_hz"] * p["physics_dt"])))
        cfg = PandaConfig(control_period=p["physics_dt"], physics_dt=p["physics_dt"], torque_scale=1.0,
                          joint_damping=list(p["joint_damping"]), inertia_from_urdf=p["inertia_from_urdf"],
                          limit_joint_velocity=p["limit_joint_velocity"],
                          torque_rate_limit=p["torque_rate_limit"], hand_payload_kg=p["hand_payload_kg"],
                          gui=p["gui"])
        self.env = PandaBatch(1, cfg)
        start = np.asarray(p["start_configuration"], dtype=np.float64)
        if start.shape != (7,):
            raise StartupError(f"start_configuration needs 7 joint angles, got {start.tolist()}")
        self.env.reset_to(start[None], np.zeros((1, 3)))
        self.limits = np.asarray(TORQUE_LIMIT)
        self.command = np.zeros(ACTUATED)
        self.command_time: float | None = None
        self.sim_time = 0.0
        self.rejected = 0
        self.use_sim_time = self.get_parameter("use_sim_time").value
        self.joint_pub = self.create_publisher(JointState, "/joint_states", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.description_pub = self.create_publisher(String, "/robot_description", latched)
        self.description_pub.publish(String(data=urdf_for_rviz()))
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.use_sim_time else None
        self.create_subscription(Float64MultiArray, "/effort_controller/commands", self.on_command, 10)
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"Panda simulated at {1 / p['physics_dt']:.0f} Hz, joint states at {p['publish_rate_hz']:.0f} Hz, "
            f"{'sim time (/clock)' if self.use_sim_time else 'wall time'}, x{p['real_time_factor']} real time")

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
            self.command = np.clip(data, -self.limits, self.limits)
            self.command_time = self.sim_time

    def _physics_loop(self) -> None:
        """The physics thread. If it fails, the node must not live on without physics (a
        silent simulator looks like a stalled arm): it logs why and shuts its context down,
        and ``run_node`` exits with status 1."""
        try:
            self._step_forever()
        except Exception as exc:  # noqa: BLE001
            if not self.context.ok():  # Ctrl-C shut the context down under us: stop quietly
                return
            self.fatal_error = f"physics stopped: {type(exc).__name__}: {exc}"
            self.get_logger().fatal(self.fatal_error)
            self.context.try_shutdown()

    def _step_forever(self) -> None:
        period = self.steps_per_publish * self.params["physics_dt"]
        factor = self.params["real_time_factor"]
        next_wake = time.monotonic()
        while self._running and self.context.ok():
            with self._lock:
                fresh = self.command_time is not None and self.sim_time - self.command_time <= self.params["command_timeout_s"]
                command = self.command if fresh else np.zeros(ACTUATED)
            self.env.advance(command[None], self.steps_per_publish)
            self.sim_time += period
            self._publish()
            if factor > 0:
                next_wake += period / factor
                delay = next_wake - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.1:  # far behind (a stall): do not try to catch up in a burst
                    next_wake = time.monotonic()

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
        msg.effort = [float(x) for x in env.applied[0]] + [0.0] * 3
        self.joint_pub.publish(msg)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run_node(PandaSimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
