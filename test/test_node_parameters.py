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
