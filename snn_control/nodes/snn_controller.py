"""``snn_controller``: a trained spiking controller driving the arm, as a managed (lifecycle) node.

Thin shell around :class:`~snn_control.runtime.ControllerCore`. Its life, as ROS 2 drivers'
(``ros2 lifecycle set /snn_controller configure|activate|deactivate|cleanup|shutdown``):

- *configure* checks every parameter and loads the model (``checkpoint``; its I/O spec must
  match ``joint_names`` and ``1 / control_rate_hz``); a failure leaves it unconfigured, with
  the reason;
- *activate* starts the command stream: ``command_rate_hz`` (1 kHz, the real arm's cycle)
  torques on ``/effort_controller/commands``, each at most ``torque_rate_limit /
  command_rate_hz`` from the last, ramping from the effort the joint states report towards
  the policy's latest torque (policy ticks at ``control_rate_hz``);
- *deactivate*, *shutdown*, SIGINT, SIGTERM, an exception in the loop or a callback: the
  stream ramps to zero torque and publishes zero as its last command, then stops.

Inputs: ``/joint_states`` (by name; taken by the command loop itself, newest only),
``/goal_pose`` and ``/clicked_point`` (in ``base_frame``). Outputs beside the torques: the
forward model's prediction (``~/prediction``) and effector error (``~/prediction_error``,
a health signal), each accepted goal (``~/goal``, latched), the torques with the state
they answer (``~/command_stamped``, for recording), ``/diagnostics`` once a second.
Services (``enable_services: false`` removes them): ``~/reload_model`` (load the path in
``checkpoint`` and swap at a tick boundary; a directory that does not fit is refused and
the running model keeps running), ``~/rollback`` (back to the model before the last swap)
and ``~/set_enabled``. Parameters are checked at start and on every change; a change that
only a new configure can apply is refused while configured.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from ..envs.panda import JOINT_NAMES
from ..paths import resolve
from ..runtime import ControllerCore, GoalRejected, JointStateError, SettingsError, settings_from_parameters
from .common import StartupError, declare, run_node

DEFAULTS = dict(
    checkpoint="", joint_names=list(JOINT_NAMES[:6]), control_rate_hz=50.0, command_rate_hz=1000.0,
    state_timeout_s=0.05, state_recovery_s=0.5, check_stamp=True, torque_rate_limit=1000.0,
    base_frame="panda_link0", position_margin_rad=0.1, velocity_factor=1.5, start_from_effort=True,
    workspace_center=[0.0, 0.0, 0.333], workspace_min_radius=0.25, workspace_max_radius=0.80,
    workspace_min_z=0.10, workspace_max_z=1.10, diagnostics_period_s=1.0, stats_window=5000,
    enable_services=True, autostart=False, realtime_priority=0,
)
LIVE = {"checkpoint"}  # parameters a configured controller takes while running (reload_model reads it)
TICK_FAULT_ENV = "SNN_CONTROLLER_FAIL_AT_COMMAND"  # fault injection (bench/faults.py): raise at command N


class SnnControllerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("snn_controller")
        self.params = declare(self, **DEFAULTS)
        self.check_parameters(self.params)  # bad values refuse the start, not the first configure
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.core: ControllerCore | None = None
        self.fatal_error: str | None = None
        self.configure_error = ""
        self.last_status = ""
        self.last_error: float | None = None
        self._loop: threading.Thread | None = None
        self._streaming = threading.Event()  # the command loop runs while set
        self._reload_lock = threading.Lock()
        self._fail_at = int(os.environ.get(TICK_FAULT_ENV, "0") or 0)
        self._commands = 0
        self.control = MutuallyExclusiveCallbackGroup()
        self.service_group = MutuallyExclusiveCallbackGroup()  # loading a model does not block the loop
        # 1 kHz, reliable: a history of 1 s lets a busy subscriber catch up on every command
        # instead of missing some (a missed command is a step at the robot).
        self.torque_pub = self.create_publisher(Float64MultiArray, "/effort_controller/commands", 1000)
        self.prediction_pub = self.create_publisher(Float64MultiArray, "~/prediction", 10)
        self.error_pub = self.create_publisher(Float64, "~/prediction_error", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.goal_pub = self.create_publisher(PointStamped, "~/goal", latched)
        self.stamped_pub = self.create_publisher(JointState, "~/command_stamped", 10)
        # Joint states are taken by the command loop itself, newest only (depth 1: a queue would
        # hand it stale ones), not delivered by the executor: at 1 kHz a Python callback per
        # message kept the executor thread busy and the waking loop waited for the GIL. The
        # subscription lives on a node of its own that no executor spins, so only the loop takes.
        self._state_node = Node("snn_controller_joint_states", context=self.context,
                                start_parameter_services=False)
        self._state_sub = self._state_node.create_subscription(JointState, "/joint_states", lambda _: None, 1)
        self.create_subscription(PoseStamped, "/goal_pose", self.on_goal_pose, 10)
        self.create_subscription(PointStamped, "/clicked_point", self.on_clicked_point, 10)
        if self.params["enable_services"]:
            self.create_service(Trigger, "~/reload_model", self.on_reload, callback_group=self.service_group)
            self.create_service(Trigger, "~/rollback", self.on_rollback)
            self.create_service(SetBool, "~/set_enabled", self.on_set_enabled)
        self.create_timer(self.params["diagnostics_period_s"], self.publish_diagnostics)
        if self.params["autostart"]:  # configure and activate now (single-node runs, tests)
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(f"configure failed: {self.configure_error}")
            self.trigger_activate()

    # -- parameters -------------------------------------------------------------------
    @staticmethod
    def check_parameters(p: dict) -> None:
        try:
            settings_from_parameters(p)
            if not 0 <= p["realtime_priority"] <= 99:
                raise SettingsError(f"realtime_priority must lie in [0, 99], got {p['realtime_priority']}")
            if not (0.01 <= p["diagnostics_period_s"] <= 60.0):
                raise SettingsError(f"diagnostics_period_s must lie in [0.01, 60], got {p['diagnostics_period_s']}")
        except SettingsError as exc:
            raise StartupError(f"parameter {exc}") from None

    def on_set_parameters(self, parameters) -> SetParametersResult:
        changed = {p.name: p.value for p in parameters}
        unknown = sorted(set(changed) - set(DEFAULTS) - {"use_sim_time"})
        if unknown:
            return SetParametersResult(successful=False, reason=f"unknown parameter(s) {unknown}")
        if self.core is not None and set(changed) - LIVE - {"use_sim_time"}:
            return SetParametersResult(successful=False, reason=(
                f"{sorted(set(changed) - LIVE)} take effect at configure: deactivate and clean up first"))
        merged = {**self.params, **{k: v for k, v in changed.items() if k in DEFAULTS}}
        try:
            self.check_parameters(merged)
        except StartupError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.params = merged
        return SetParametersResult(successful=True)

    # -- lifecycle --------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            if not p["checkpoint"]:
                raise ValueError("parameter 'checkpoint' (a model directory) is not set")
            self.core = ControllerCore(resolve(p["checkpoint"]), settings_from_parameters(p))
        except Exception as exc:  # noqa: BLE001 - any failure to load leaves it unconfigured, with the reason
            self.configure_error = str(exc)
            self.get_logger().error(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {list(self.core.settings.joint_names)}, policy at "
                               f"{p['control_rate_hz']:.0f} Hz, commands at {p['command_rate_hz']:.0f} Hz, "
                               f"model {p['checkpoint']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # What exists now (torch, the model) lives to the end: out of the collector's scans,
        # whose pauses grow with the heap and would delay commands.
        gc.collect()
        gc.freeze()
        self.take_joint_state(time.monotonic())
        self.core.start_from_reported_effort()
        self._streaming.set()
        self._loop = threading.Thread(target=self._command_loop, name="commands", daemon=True)
        self._loop.start()
        self.get_logger().info("active: commanding torques")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_arm("deactivated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_arm("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_arm("lifecycle error")
        return TransitionCallbackReturn.SUCCESS

    # -- inputs ---------------------------------------------------------------------
    def take_joint_state(self, now_s: float) -> None:
        """Hand the newest joint state waiting (if any) to the controller."""
        msg = None
        with self._state_sub.handle:
            while (taken := self._state_sub.handle.take_message(JointState, False)) is not None:
                msg = taken[0]
        if msg is None or self.core is None:
            return
        stamp_s = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        stamp_s = stamp_s or None  # an unstamped message: judged by its receipt time alone
        try:
            self.core.update_joint_state(msg.name, msg.position, msg.velocity, now_s, msg.header.stamp,
                                         stamp_s=stamp_s, clock_s=self.get_clock().now().nanoseconds * 1e-9,
                                         efforts=msg.effort)
        except JointStateError as exc:
            self.get_logger().error(f"joint state refused: {exc}; stopping the arm", throttle_duration_sec=1.0)

    def _goal(self, point, frame_id: str, source: str) -> None:
        if self.core is None:
            self.get_logger().warning(f"goal from {source} ignored: not configured")
            return
        try:
            goal = self.core.set_goal(point, frame_id)
        except GoalRejected as exc:
            self.get_logger().warning(f"goal from {source} rejected: {exc}")
            return
        self.get_logger().info(f"new goal from {source}: {np.round(goal, 3).tolist()}")
        accepted = PointStamped()
        accepted.header.frame_id = self.core.settings.base_frame
        accepted.header.stamp = self.get_clock().now().to_msg()
        accepted.point.x, accepted.point.y, accepted.point.z = (float(v) for v in goal)
        self.goal_pub.publish(accepted)

    def on_goal_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self._goal([p.x, p.y, p.z], msg.header.frame_id, "/goal_pose")

    def on_clicked_point(self, msg: PointStamped) -> None:
        p = msg.point
        self._goal([p.x, p.y, p.z], msg.header.frame_id, "/clicked_point")

    # -- the command stream ---------------------------------------------------------
    def _publish(self, torque) -> None:
        self.torque_pub.publish(Float64MultiArray(data=[float(x) for x in torque]))

    def _realtime(self) -> None:
        """Run this thread under SCHED_FIFO at ``realtime_priority`` (1-99; 0: as any
        thread), as a real-time robot PC would; refused without the privilege (rtprio limit)."""
        priority = self.params["realtime_priority"]
        if not priority:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority))
            self.get_logger().info(f"command loop at real-time priority {priority} (SCHED_FIFO)")
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(f"realtime_priority {priority} refused ({exc}); the command loop runs "
                                      f"at normal priority (raise the rtprio limit to allow it)")

    def _command_loop(self) -> None:
        """Commands at absolute deadlines of the command period on the monotonic clock (a
        thread of its own: executor latency never delays a command). Any exception stops the
        arm (ramp to zero) and the node, with status 1."""
        self._realtime()
        period = self.core.settings.command_period_s
        slot = time.monotonic()
        try:
            while self._streaming.is_set():
                now = time.monotonic()
                self._command_once(now, slot)
                slot += period
                delay = slot - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.1:  # a stall: restart the schedule rather than burst
                    slot = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - never leave the last torque applied
            self.fatal_error = f"command loop failed ({type(exc).__name__}: {exc}); stopped the arm"
            self.get_logger().error(self.fatal_error)
            self._ramp_to_zero()
            stop = getattr(self, "stop_request", None)
            if stop is not None:
                stop.set(self.fatal_error, 1)

    def _command_once(self, now: float, slot: float) -> None:
        start = time.perf_counter()
        self._commands += 1
        if self._fail_at and self._commands == self._fail_at:
            raise RuntimeError(f"fault injected at command {self._commands} ({TICK_FAULT_ENV})")
        self.take_joint_state(now)
        torque, result = self.core.command(now)
        self._publish(torque)
        self.core.command_stats.record(now, time.perf_counter() - start, slot)
        if result is not None:
            self._report(result)

    def _report(self, result) -> None:
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

    def _ramp_to_zero(self) -> int:
        """Publish the ramp to zero torque at the command period, ending with a zero command;
        bounded: max |torque| / step commands, plus that last one. Returns the count."""
        core = self.core
        if core is None:
            self._send_last_zero([0.0] * len(self.params["joint_names"]))
            return 1
        period, sent = core.settings.command_period_s, 0
        next_slot = time.monotonic()
        while True:
            torque = core.stop_command()
            self._publish(torque)
            sent += 1
            if not np.any(torque):
                self._send_last_zero(torque)
                return sent
            next_slot += period
            time.sleep(max(0.0, next_slot - time.monotonic()))

    def _send_last_zero(self, zero) -> None:
        """Zero again, twice (no step: it is zero already), then wait until every reader has
        it: the process may end next, and a last command lost in transit leaves a torque."""
        for _ in range(2):
            time.sleep(self.core.settings.command_period_s if self.core else 0.001)
            self._publish(zero)
        if not self.torque_pub.wait_for_all_acked(Duration(seconds=1.0)):
            self.get_logger().warning("the last zero-torque command was not acknowledged by every reader within 1 s")

    def stop_arm(self, why: str) -> None:
        """Stop the command loop (if it runs) and ramp to zero torque; zero is the last command."""
        self._streaming.clear()
        loop, self._loop = self._loop, None
        if loop is not None and loop is not threading.current_thread():
            loop.join(timeout=1.0)
        if self.core is None and loop is None:
            return
        sent = self._ramp_to_zero()
        self.last_status = "stopped"
        self.get_logger().info(f"{why}: ramped to zero torque in {sent} commands")

    # -- services ---------------------------------------------------------------------
    def on_reload(self, request, response):
        """Check the checkpoint here (spec, files: milliseconds); build its networks in a
        thread of its own, so neither the executor nor the command loop waits for it."""
        if self.core is None:
            response.success, response.message = False, "not configured"
            return response
        path = resolve(self.params["checkpoint"])
        try:
            self.core.check_model(path)
        except Exception as exc:  # noqa: BLE001 - whatever the directory holds, keep running
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
            except Exception as exc:  # noqa: BLE001 - a model that fails to build is refused, not fatal
                self.get_logger().error(f"kept the running model: {type(exc).__name__}: {exc}")
                return
            self.core.request_swap(model)
        self.get_logger().info(f"swapping to {path} (version {model.version}) at the next tick")

    def on_rollback(self, request, response):
        ok = self.core is not None and self.core.rollback()
        response.success = ok
        response.message = ("rolling back to the model before the last swap at the next tick" if ok
                            else "no earlier model to roll back to")
        return response

    def on_set_enabled(self, request, response):
        if self.core is None:
            response.success, response.message = False, "not configured"
            return response
        self.core.set_enabled(request.data)
        response.success, response.message = True, "enabled" if request.data else "disabled: zero torque"
        return response

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="snn_controller: control loop", hardware_id="panda")
        core = self.core
        if core is None:
            status.level, status.message = DiagnosticStatus.OK, "unconfigured"
            status.values = [KeyValue(key="status", value="unconfigured")]
        else:
            stats = core.stats.summary()
            commands = core.command_stats.summary()
            problems = core.refused_states or core.stale_events or commands["late_rate"] >= 0.01
            status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
            status.message = (f"{self.last_status}; late commands {100 * commands['late_rate']:.2f} %; "
                              f"refused states {core.refused_states}, stale events {core.stale_events}")
            values = {**{k: f"{v:.6g}" for k, v in stats.items()},
                      **{f"command_{k}": f"{v:.6g}" for k, v in commands.items()},
                      "status": self.last_status, "model": str(core.model.path),
                      "model_version": core.model.version, "swaps": str(core.swaps),
                      "stale_events": str(core.stale_events), "refused_states": str(core.refused_states),
                      "refused_goals": str(core.refused_goals), "frozen_stamps": str(core.watchdog.frozen),
                      "stop_latency_ms": "" if core.stop_latency_s is None else f"{1e3 * core.stop_latency_s:.6g}",
                      "worst_stop_latency_ms": f"{1e3 * core.worst_stop_latency_s:.6g}",
                      "period_max_ms": f"{1e3 * core.stats.take_longest_period():.6g}",  # since the last report
                      "prediction_error_m": "" if self.last_error is None else f"{self.last_error:.6g}",
                      "firing_rate_hz": str({k: [round(x, 1) for x in v] for k, v in core.firing_rates_hz().items()})}
            status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def close(self) -> None:
        """The way out of every exit path (run_node calls it while the context still works)."""
        self.stop_arm("exiting")
        self._state_node.destroy_node()


def main(args: list[str] | None = None) -> int:
    sys.setswitchinterval(1e-3)  # a waking command thread waits at most ~1 ms for the GIL
    return run_node(SnnControllerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
