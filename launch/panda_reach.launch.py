"""Panda reach with a spiking controller: simulator (or a real arm), controller, RViz goals.

    ros2 launch snn_control panda_reach.launch.py [use_sim:=true] [use_rviz:=true]
        [record:=false] [finetune:=false] [checkpoint:=<model dir>]
        [joint_states_topic:=/joint_states]

Parameters come from config/panda_reach.yaml (the file `snn-control bringup` uses too).
With a real Panda (use_sim:=false), remap its joint states, e.g.
joint_states_topic:=/franka/joint_states, and see docs/real_robot.md. finetune:=true records
too and starts the trainer, which fine-tunes the running model from the recorded bags and
hot-swaps accepted versions into the controller.

snn_controller is a managed (lifecycle) node: this file configures it once its process
starts and activates it once configured, as bring-up does through the same services.
"""

import os

from ament_index_python.packages import get_package_share_directory
import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState


def _managed(controller):
    """Configure ``controller`` now, activate it once it reaches inactive."""
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(controller),
                                            transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=controller, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(controller),
                                              transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))]))
    return [controller, activate, configure]


def generate_launch_description():
    share = get_package_share_directory("snn_control")
    params = os.path.join(share, "config", "panda_reach.yaml")
    rviz_config = os.path.join(share, "config", "panda_reach.rviz")
    from snn_control.envs.panda import urdf_for_rviz  # absolute mesh paths RViz can open

    use_sim = LaunchConfiguration("use_sim")
    checkpoint = LaunchConfiguration("checkpoint")
    joint_states = LaunchConfiguration("joint_states_topic")
    controller_params = [params]
    has_checkpoint = PythonExpression(["'", checkpoint, "' != ''"])
    finetune = LaunchConfiguration("finetune")
    record = PythonExpression(["'", LaunchConfiguration("record"), "' == 'true' or '", finetune, "' == 'true'"])
    finetune_default = PythonExpression(["'", finetune, "' == 'true' and '", checkpoint, "' == ''"])
    finetune_given = PythonExpression(["'", finetune, "' == 'true' and '", checkpoint, "' != ''"])
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true", description="PyBullet Panda (false: a real arm)"),
        DeclareLaunchArgument("use_rviz", default_value="true", description="start RViz with the goal marker"),
        DeclareLaunchArgument("record", default_value="false", description="record a rosbag2 (MCAP) session"),
        DeclareLaunchArgument("finetune", default_value="false",
                              description="record, fine-tune from the bags and hot-swap (trainer node)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="model directory (default: params file)"),
        DeclareLaunchArgument("joint_states_topic", default_value="/joint_states",
                              description="joint state topic of the arm (real Panda: /franka/joint_states)"),
        Node(package="snn_control", executable="panda_sim", name="panda_sim", parameters=[params],
             condition=IfCondition(use_sim), output="screen"),
        *_managed(LifecycleNode(package="snn_control", executable="snn_controller", name="snn_controller",
                                namespace="", parameters=controller_params,
                                remappings=[("/joint_states", joint_states)],
                                condition=IfCondition(PythonExpression(["not ", has_checkpoint])), output="screen")),
        *_managed(LifecycleNode(package="snn_control", executable="snn_controller", name="snn_controller",
                                namespace="", parameters=controller_params + [{"checkpoint": checkpoint}],
                                remappings=[("/joint_states", joint_states)], condition=IfCondition(has_checkpoint),
                                output="screen")),
        Node(package="snn_control", executable="goal_teleop", name="goal_teleop", parameters=[params],
             output="screen"),
        Node(package="snn_control", executable="recorder", name="recorder", parameters=[params],
             remappings=[("/joint_states", joint_states)], condition=IfCondition(record),
             output="screen"),
        Node(package="snn_control", executable="trainer", name="trainer", parameters=[params],
             condition=IfCondition(finetune_default), output="screen"),
        Node(package="snn_control", executable="trainer", name="trainer",
             parameters=[params, {"checkpoint": checkpoint}], condition=IfCondition(finetune_given),
             output="screen"),
        Node(package="robot_state_publisher", executable="robot_state_publisher", name="robot_state_publisher",
             parameters=[{"robot_description": urdf_for_rviz()}], remappings=[("/joint_states", joint_states)],
             output="screen"),
        Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", rviz_config],
             condition=IfCondition(LaunchConfiguration("use_rviz")), output="screen"),
    ])
