"""rclpy nodes: thin shells (parameters, topics, timers) around the ROS-free modules above.

The only package that imports rclpy (DESIGN.md section 2).
"""
