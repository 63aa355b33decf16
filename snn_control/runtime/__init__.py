"""ROS-free controller core: model loading and swaps, safety filter, watchdog, timing."""

from .controller import ControllerCore, LoadedModel, TickResult, check_model_dir
from .goals import GoalRejected, Workspace
from .joint_states import JointStateError, order_joint_state
from .safety import TorqueSafetyFilter
from .settings import ControllerSettings, SettingsError, settings_from_parameters
from .timing import LoopStats
from .watchdog import StateWatchdog

__all__ = ["ControllerCore", "ControllerSettings", "GoalRejected",
           "JointStateError", "LoadedModel", "LoopStats", "SettingsError", "StateWatchdog", "TickResult",
           "TorqueSafetyFilter", "Workspace", "check_model_dir", "order_joint_state", "settings_from_parameters"]
