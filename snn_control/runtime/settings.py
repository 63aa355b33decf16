"""The controller's settings, checked before any of them acts.

Every value arrives from outside (YAML, ``ros2 param set``, a launch file), and a bad one
must be refused with the reason rather than discovered on the arm: a NaN timeout that
never fires, an infinite rate limit that lets 87 N m through in one command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..envs.panda import JOINT_NAMES
from .goals import Workspace

PANDA_TORQUE_RATE_LIMIT = 1000.0  # N m/s; libfranka's kMaxTorqueRate: above it the arm stops


class SettingsError(ValueError):
    """A setting the controller refuses; the message names it and says why."""


@dataclass
class ControllerSettings:
    joint_names: tuple[str, ...] = JOINT_NAMES[:6]
    control_period_s: float = 0.02  # the policy's period (the checkpoint's)
    command_period_s: float = 0.001  # torque commands: the real arm's 1 kHz cycle
    state_timeout_s: float = 0.05  # joint states older than this: stop (ramp to zero torque)
    state_recovery_s: float = 0.5  # after a stale spell, fresh this long before acting again
    check_stamp: bool = True  # also judge the header stamps' age against the ROS clock
    torque_rate_limit: float = PANDA_TORQUE_RATE_LIMIT  # N m/s between consecutive commands
    workspace: Workspace = field(default_factory=Workspace)
    base_frame: str = "panda_link0"  # goals must be in this frame (an empty frame_id means it)
    position_margin_rad: float = 0.1  # joint states beyond the limits by more: implausible
    velocity_factor: float = 1.5  # joint speeds beyond this x the limits: implausible
    start_from_effort: bool = True  # on activation, ramp from the effort the joint states report
    stats_window: int = 5000  # ticks kept for the loop statistics

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{f.name} must be finite, got {value}")
        positive = ("control_period_s", "command_period_s", "state_timeout_s", "torque_rate_limit")
        for name in positive:
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.torque_rate_limit > PANDA_TORQUE_RATE_LIMIT:
            raise SettingsError(f"torque_rate_limit {self.torque_rate_limit} N m/s is above the Panda's "
                                f"{PANDA_TORQUE_RATE_LIMIT} N m/s: the arm would stop with a reflex")
        ratio = self.control_period_s / self.command_period_s
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise SettingsError(f"the control period {self.control_period_s} s must be a whole multiple of the "
                                f"command period {self.command_period_s} s (command_rate_hz)")
        for name in ("state_recovery_s", "position_margin_rad"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.velocity_factor >= 1:
            raise SettingsError(f"velocity_factor must be >= 1, got {self.velocity_factor}")
        if self.stats_window < 10:
            raise SettingsError(f"stats_window must be >= 10, got {self.stats_window}")
        if len(set(self.joint_names)) != len(self.joint_names) or not all(self.joint_names):
            raise SettingsError(f"joint_names must be distinct and non-empty, got {list(self.joint_names)}")

    @property
    def commands_per_tick(self) -> int:
        return round(self.control_period_s / self.command_period_s)


def settings_from_parameters(p: dict) -> ControllerSettings:
    """Settings from the ``snn_controller`` node's parameters (raises :class:`SettingsError`)."""
    for name in ("control_rate_hz", "command_rate_hz"):
        if not (math.isfinite(p[name]) and p[name] > 0):
            raise SettingsError(f"{name} must be a finite rate > 0, got {p[name]}")
    try:
        workspace = Workspace(tuple(p["workspace_center"]), p["workspace_min_radius"], p["workspace_max_radius"],
                              p["workspace_min_z"], p["workspace_max_z"])
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return ControllerSettings(
        joint_names=tuple(p["joint_names"]), control_period_s=1.0 / p["control_rate_hz"],
        command_period_s=1.0 / p["command_rate_hz"], state_timeout_s=p["state_timeout_s"],
        state_recovery_s=p["state_recovery_s"], check_stamp=p["check_stamp"],
        torque_rate_limit=p["torque_rate_limit"], workspace=workspace, base_frame=p["base_frame"],
        position_margin_rad=p["position_margin_rad"], velocity_factor=p["velocity_factor"],
        start_from_effort=p["start_from_effort"], stats_window=p["stats_window"])
