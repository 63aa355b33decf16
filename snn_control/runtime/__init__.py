"""ROS-free controller core: batch-1 inference, safety filter, timing (DESIGN.md section 2)."""

from .inference import FastPolicy, FastPredictor

__all__ = ["FastPolicy", "FastPredictor"]
