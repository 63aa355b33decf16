"""``goal_teleop``: a draggable 3-D goal for RViz, published to ``/goal_pose`` on mouse-up.

Speaks the interactive-marker protocol under the namespace ``/reach_goal`` itself (the
``interactive_markers`` library is not on PyPI): the service
``/reach_goal/get_interactive_markers`` returns the marker, ``/reach_goal/update`` carries
full updates and pose updates with consecutive sequence numbers plus keep-alives, and
``/reach_goal/feedback`` brings RViz's drags. A POSE_UPDATE moves the marker; a MOUSE_UP
publishes the goal (``geometry_msgs/PoseStamped`` on ``/goal_pose``) and a goal sphere on
``/goal_marker`` for display.
"""

from __future__ import annotations

import threading

from geometry_msgs.msg import Pose, PoseStamped
from rclpy.node import Node
from visualization_msgs.msg import (InteractiveMarker, InteractiveMarkerControl, InteractiveMarkerFeedback,
                                    InteractiveMarkerPose, InteractiveMarkerUpdate, Marker)
from visualization_msgs.srv import GetInteractiveMarkers

from .common import declare, run_node

MARKER_NAME = "reach_goal"


def _axis_control(name: str, x: float, y: float, z: float) -> InteractiveMarkerControl:
    control = InteractiveMarkerControl(name=name, interaction_mode=InteractiveMarkerControl.MOVE_AXIS)
    control.orientation.w, control.orientation.x, control.orientation.y, control.orientation.z = 1.0, x, y, z
    return control


def _sphere(frame_id: str, diameter: float, rgba) -> Marker:
    m = Marker(type=Marker.SPHERE, action=Marker.ADD)
    m.header.frame_id = frame_id
    m.scale.x = m.scale.y = m.scale.z = diameter
    m.color.r, m.color.g, m.color.b, m.color.a = rgba
    m.pose.orientation.w = 1.0
    return m


class GoalTeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("goal_teleop")
        p = declare(self, frame_id="panda_link0", initial_goal=[0.45, 0.0, 0.45], keep_alive_period_s=0.5)
        self.frame_id = p["frame_id"]
        self.pose = Pose()
        self.pose.position.x, self.pose.position.y, self.pose.position.z = p["initial_goal"]
        self.pose.orientation.w = 1.0
        self.seq = 0
        self.server_id = f"{self.get_fully_qualified_name()}"
        self._lock = threading.Lock()
        self.update_pub = self.create_publisher(InteractiveMarkerUpdate, "/reach_goal/update", 100)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal_pose", 10)
        self.marker_pub = self.create_publisher(Marker, "/goal_marker", 10)
        self.create_subscription(InteractiveMarkerFeedback, "/reach_goal/feedback", self.on_feedback, 100)
        self.create_service(GetInteractiveMarkers, "/reach_goal/get_interactive_markers", self.on_get_markers)
        self.create_timer(p["keep_alive_period_s"], self.keep_alive)
        self.publish_update(full=True)

    def marker(self) -> InteractiveMarker:
        im = InteractiveMarker(name=MARKER_NAME, description="reach goal (drag, release to send)", scale=0.15)
        im.header.frame_id = self.frame_id
        im.pose = self.pose
        free = InteractiveMarkerControl(name="move_3d", interaction_mode=InteractiveMarkerControl.MOVE_3D,
                                        always_visible=True)
        free.markers.append(_sphere(self.frame_id, 0.05, (1.0, 0.4, 0.0, 0.9)))
        im.controls.append(free)
        im.controls += [_axis_control("move_x", 1.0, 0.0, 0.0), _axis_control("move_z", 0.0, 1.0, 0.0),
                        _axis_control("move_y", 0.0, 0.0, 1.0)]
        return im

    def publish_update(self, full: bool) -> None:
        with self._lock:
            self.seq += 1
            update = InteractiveMarkerUpdate(server_id=self.server_id, seq_num=self.seq,
                                             type=InteractiveMarkerUpdate.UPDATE)
            if full:
                update.markers = [self.marker()]
            else:
                pose = InteractiveMarkerPose(name=MARKER_NAME, pose=self.pose)
                pose.header.frame_id = self.frame_id
                update.poses = [pose]
        self.update_pub.publish(update)

    def keep_alive(self) -> None:
        with self._lock:
            update = InteractiveMarkerUpdate(server_id=self.server_id, seq_num=self.seq,
                                             type=InteractiveMarkerUpdate.KEEP_ALIVE)
        self.update_pub.publish(update)

    def on_get_markers(self, request, response):
        with self._lock:
            response.sequence_number = self.seq
            response.markers = [self.marker()]
        return response

    def on_feedback(self, msg: InteractiveMarkerFeedback) -> None:
        if msg.marker_name != MARKER_NAME:
            return
        if msg.event_type in (InteractiveMarkerFeedback.POSE_UPDATE, InteractiveMarkerFeedback.MOUSE_UP):
            with self._lock:
                self.pose = msg.pose
            self.publish_update(full=False)
        if msg.event_type == InteractiveMarkerFeedback.MOUSE_UP:
            goal = PoseStamped(pose=self.pose)
            goal.header.frame_id = self.frame_id
            goal.header.stamp = self.get_clock().now().to_msg()
            self.goal_pub.publish(goal)
            display = _sphere(self.frame_id, 0.04, (0.1, 0.8, 0.1, 0.8))
            display.ns, display.pose = "reach_goal", self.pose
            self.marker_pub.publish(display)
            p = self.pose.position
            self.get_logger().info(f"goal sent: [{p.x:.3f}, {p.y:.3f}, {p.z:.3f}]")


def main(args: list[str] | None = None) -> int:
    return run_node(GoalTeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
