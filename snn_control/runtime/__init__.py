"""ROS-free controller core: batch-1 inference, safety filter, timing (DESIGN.md section 2)."""

from .controller import ControllerCore, ControllerSettings, LoadedModel, TickResult
from .goals import GoalRejected, Workspace
from .inference import FastPolicy, FastPredictor
from .joint_states import JointStateError, order_joint_state
from .safety import TorqueSafetyFilter
from .timing import LoopStats

__all__ = ["ControllerCore", "ControllerSettings", "FastPolicy", "FastPredictor", "GoalRejected",
           "JointStateError", "LoadedModel", "LoopStats", "TickResult", "TorqueSafetyFilter",
           "Workspace", "order_joint_state"]
