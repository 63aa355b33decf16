"""ROS-free controller core: batch-1 inference, safety filter, watchdog, timing."""

from .controller import ControllerCore, LoadedModel, TickResult, check_model_dir
from .goals import GoalRejected, Workspace
from .inference import FastPolicy, FastPredictor
from .joint_states import JointStateError, order_joint_state
from .safety import TorqueSafetyFilter
from .settings import ControllerSettings, SettingsError, settings_from_parameters
from .timing import LoopStats
from .watchdog import StateWatchdog

__all__ = ["ControllerCore", "ControllerSettings", "FastPolicy", "FastPredictor", "GoalRejected",
           "JointStateError", "LoadedModel", "LoopStats", "SettingsError", "StateWatchdog", "TickResult",
           "TorqueSafetyFilter", "Workspace", "check_model_dir", "order_joint_state", "settings_from_parameters"]
