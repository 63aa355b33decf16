"""Every node refuses a parameter it does not know, by name, before it starts anything:
rclpy alone would ignore it, and a misspelt setting would keep its default unseen."""

from __future__ import annotations

import importlib

import pytest

rclpy = pytest.importorskip("rclpy")

NODES = [("panda_sim", "PandaSimNode"), ("snn_controller", "SnnControllerNode"),
         ("goal_teleop", "GoalTeleopNode"), ("recorder", "RecorderNode"), ("trainer", "TrainerNode")]


@pytest.mark.parametrize("module, cls", NODES)
def test_a_misspelt_parameter_stops_the_node_naming_it(module, cls, monkeypatch, tmp_path):
    from snn_control.nodes.common import StartupError

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # made, never spun
    monkeypatch.chdir(tmp_path)  # the recorder would make its bag directory here
    node_class = getattr(importlib.import_module(f"snn_control.nodes.{module}"), cls)
    rclpy.init(args=[module, "--ros-args", "-p", "control_rate_hzz:=50.0"])
    try:
        with pytest.raises(StartupError, match=r"unknown parameter\(s\) \['control_rate_hzz'\]; known: \["):
            node_class()
    finally:
        rclpy.shutdown()



@pytest.mark.parametrize("given, default, expected", [("100", 50.0, 100.0), ("many", 3, None)])
def test_a_whole_number_for_a_real_parameter_is_taken_and_a_wrong_type_is_refused(given, default, expected,
                                                                                 monkeypatch):
    from rclpy.node import Node

    from snn_control.nodes.common import StartupError, declare

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=["probe", "--ros-args", "-p", f"value:={given}"])
    try:
        node = Node("probe")
        try:
            if expected is None:
                with pytest.raises(StartupError, match=r"parameter value: expected int like its default 3, "
                                                       r"got 'many'"):
                    declare(node, value=default)
            else:
                assert declare(node, value=default) == {"value": expected}
                assert isinstance(node.get_parameter("value").value, float)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()
