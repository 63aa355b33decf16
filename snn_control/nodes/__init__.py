"""rclpy nodes: thin shells (parameters, topics, timers) around the ROS-free modules above.

The only package that imports rclpy: everything else is testable without DDS.
"""
