"""``recorder``: what the robot did, as rosbag2 MCAP files split by time.

Subscribes (raw, no deserialization) to the joint states, the torque commands, the
controller's stamped command copy (``/snn_controller/command_stamped``: the torques with
the stamp of the joint state they were computed from, so actions align with observations),
the goals and the controller's health; hands the bytes to
:class:`~snn_control.runtime.recording.SplitBagRecorder`. Runs in its own process, so
writing never delays the control loop. Parameters: ``directory``, ``split_s``.
"""

from __future__ import annotations

from pathlib import Path

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


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    return getattr(module, name)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = declare(self, directory="bags", split_s=60.0)
        self.recorder = SplitBagRecorder(Path(p["directory"]).expanduser(), TOPICS, p["split_s"])
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, msgtype in TOPICS.items():
            qos = latched if topic in LATCHED else 1000
            self.create_subscription(_message_class(msgtype), topic, self._callback(topic), qos, raw=True)
        self.get_logger().info(f"recording {len(TOPICS)} topics to {self.recorder.directory}/"
                               f"{self.recorder.session}_NNN (MCAP, a new split every {p['split_s']:.0f} s)")

    def _callback(self, topic: str):
        clock = self.get_clock()

        def record(data: bytes) -> None:
            self.recorder.record(topic, data, clock.now().nanoseconds)

        return record

    def close(self) -> None:
        bags = self.recorder.close()
        self.get_logger().info(f"closed {len(bags)} bag(s), {self.recorder.written} messages, "
                               f"{self.recorder.dropped} dropped")


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
