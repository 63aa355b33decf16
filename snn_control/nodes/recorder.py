"""``recorder``: what the robot did, as rosbag2 MCAP files split by time.

Subscribes (raw, no deserialization) to the joint states, the torque commands, the
controller's stamped command copy (``/snn_controller/command_stamped``: the torques with
the stamp of the joint state they were computed from, so actions align with observations),
the goals and the controller's health; hands the bytes to
:class:`~snn_control.runtime.recording.SplitBagRecorder`. Runs in its own process, so
writing never delays the control loop. Parameters: ``directory``, ``split_s``,
``diagnostics_period_s``.

Its health goes to ``/diagnostics`` (status ``recorder: bag writer``): OK while it writes,
every ``diagnostics_period_s``; ERROR, logged and published at once (within ``WATCH_PERIOD_S``
of the writer seeing it), when the writer fails (disk full, bag directory deleted, any
exception), with the reason naming the file; it stays ERROR, and messages are counted as
dropped, until the node is restarted. Splits an earlier crash left without ``metadata.yaml``
are reindexed at start, or logged and reported as ``recorder: unclosed splits`` (WARN).
"""

from __future__ import annotations

import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ..runtime.recording import SplitBagRecorder
from .common import declare, run_node

TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/effort_controller/commands": "std_msgs/msg/Float64MultiArray",
    "/snn_controller/command_stamped": "sensor_msgs/msg/JointState",
    "/snn_controller/goal": "geometry_msgs/msg/PointStamped",
    "/snn_controller/prediction_error": "std_msgs/msg/Float64",
    "/goal_pose": "geometry_msgs/msg/PoseStamped",
    "/clicked_point": "geometry_msgs/msg/PointStamped",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}

LATCHED = {"/snn_controller/goal"}  # state published once per change, transient local
STATUS = "recorder: bag writer"
RECOVERY_STATUS = "recorder: unclosed splits"
WATCH_PERIOD_S = 0.1  # how often the node looks at its writer: a failure is published this soon


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    return getattr(module, name)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = declare(self, directory="bags", split_s=60.0, diagnostics_period_s=1.0)
        self.diagnostics_period_s = p["diagnostics_period_s"]
        self.recorder = SplitBagRecorder(Path(p["directory"]).expanduser(), TOPICS, p["split_s"])
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, msgtype in TOPICS.items():
            qos = latched if topic in LATCHED else 1000
            self.create_subscription(_message_class(msgtype), topic, self._callback(topic), qos, raw=True)
        self._log_recoveries()
        if self.recorder.failure is None:
            self.get_logger().info(f"recording {len(TOPICS)} topics to {self.recorder.directory}/"
                                   f"{self.recorder.session}_NNN (MCAP, a new split every {p['split_s']:.0f} s)")
        self._reported: tuple[str | None, str | None] = (None, None)  # failure, salvage as logged
        self._last_published = float("-inf")
        self.create_timer(WATCH_PERIOD_S, self._watch)

    def _callback(self, topic: str):
        clock = self.get_clock()

        def record(data: bytes) -> None:
            self.recorder.record(topic, data, clock.now().nanoseconds)

        return record

    def _log_recoveries(self) -> None:
        for recovery in self.recorder.recovered:
            if recovery.reindexed:
                self.get_logger().info(recovery.message)
            else:
                self.get_logger().error(recovery.message)

    def _watch(self) -> None:
        """Report a writer failure at once, the writer's state every diagnostics period."""
        self.recorder.check()
        news = (self.recorder.failure, self.recorder.salvage) != self._reported
        if news:
            self._log_failure()
        if news or time.monotonic() - self._last_published >= self.diagnostics_period_s:
            self.publish_diagnostics()

    def _log_failure(self) -> None:
        failure, salvage = self.recorder.failure, self.recorder.salvage
        if failure != self._reported[0]:
            self.get_logger().error(f"recording failed: {failure}; nothing more is recorded")
        if salvage is not None and salvage != self._reported[1]:
            self.get_logger().warning(f"after the recording failure: {salvage}")
        self._reported = (failure, salvage)

    def publish_diagnostics(self) -> None:
        statuses = [self._writer_status()]
        if self.recorder.recovered:
            statuses.append(self._recovery_status())
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        self._last_published = time.monotonic()

    def _writer_status(self) -> DiagnosticStatus:
        failure, values = self.recorder.failure, self.recorder.stats()
        status = DiagnosticStatus(name=STATUS, hardware_id=str(self.recorder.directory))
        status.level = DiagnosticStatus.OK if failure is None else DiagnosticStatus.ERROR
        status.message = f"writing {values['split']}" if failure is None else failure
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _recovery_status(self) -> DiagnosticStatus:
        recovered = self.recorder.recovered
        lost = [r for r in recovered if not r.reindexed]
        status = DiagnosticStatus(name=RECOVERY_STATUS, hardware_id=str(self.recorder.directory))
        status.level = DiagnosticStatus.WARN if lost else DiagnosticStatus.OK
        status.message = (f"{len(lost)} split(s) without metadata.yaml could not be reindexed" if lost
                          else f"{len(recovered)} split(s) without metadata.yaml reindexed at start")
        status.values = [KeyValue(key=str(r.path), value=r.message) for r in recovered]
        return status

    def close(self) -> None:
        bags = self.recorder.close()
        failure = "" if self.recorder.failure is None else f"; recording had failed: {self.recorder.failure}"
        self.get_logger().info(f"closed {len(bags)} bag(s), {self.recorder.written} messages, "
                               f"{self.recorder.dropped} dropped{failure}")


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
