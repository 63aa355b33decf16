"""The controller's logic without ROS: joint states and goals in, safe torques out.

:class:`ControllerCore` runs at two rates. :meth:`~ControllerCore.command` is called once
per command period (1 kHz, the real arm's cycle) and returns the torque to publish: the
previous command moved towards the policy's latest torque by at most
``torque_rate_limit x command_period`` (1 N m at 1 kHz), so the arm sees ramps, never
steps, as the training env's plant does. Every ``commands_per_tick`` commands it runs a
policy :meth:`~ControllerCore.tick`, which

- reads joint states by name, checks them for plausibility and freshness
  (:class:`~.watchdog.StateWatchdog`), accepts goals inside its :class:`~.goals.Workspace`
  and in its base frame;
- steps the policy and the forward model on the compiled batch-1 path
  (:mod:`.inference`) and reports the model's prediction error as a health signal;
- sets the torque target to zero (reached by the same ramp) before the first goal, while
  disabled, and when the joint states are missing, stale, implausible or invalid;
- swaps in a new model at a tick boundary (new network state, previous model kept for
  :meth:`rollback`), built beforehand so the swapping tick costs no more than any other.

A model directory is refused unless its I/O spec matches the configured joint names and
control period (:class:`~snn_control.models.IOSpecMismatch` names what differs).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..envs.panda import (JOINT_NAMES, LOWER, NEUTRAL, TORQUE_LIMIT, UPPER, VELOCITY_LIMIT, PandaConfig,
                          kinematic_layout, observation)
from ..models import FastPolicy, FastPredictor, IOSpecMismatch, load_model
from ..models.kinematics import ChainKinematics
from .goals import GoalRejected
from .joint_states import JointStateError, check_plausible, order_joint_state
from .safety import TorqueSafetyFilter
from .settings import ControllerSettings
from .timing import LoopStats
from .watchdog import StateWatchdog


def arm_kinematics() -> ChainKinematics:
    """The effector (finger midpoint, base frame) from all seven arm joints, from the
    simulator's URDF: compiled forward kinematics, about 4 us a call against 23 us for
    asking a PyBullet client (agree within 1e-7 m, test_runtime)."""
    layout = kinematic_layout(PandaConfig())
    fingers = {name: value for name, value in layout["fixed"].items() if name != JOINT_NAMES[6]}
    return ChainKinematics(layout["urdf"], layout["base_link"], list(JOINT_NAMES[:7]), fingers,
                           layout["effector_links"])


@dataclass
class LoadedModel:
    """A model directory ready to run: fast networks plus what the controller needs of its spec."""

    path: Path
    version: str
    policy: FastPolicy
    predictor: FastPredictor | None  # None: a TD3-trained model (no forward model, no health signal)
    action_scale: np.ndarray
    observe_velocity: bool
    effector: slice

    @classmethod
    def load(cls, model_dir: str | Path, joint_names, control_period_s: float) -> "LoadedModel":
        loaded = load_model(model_dir, {"joint_names": list(joint_names), "control_period_s": control_period_s})
        spec = loaded.spec
        if spec.task != "panda":
            raise IOSpecMismatch(f"{model_dir}: a {spec.task!r} model cannot drive a Panda")
        version = (Path(model_dir) / "VERSION").read_text().strip() if (Path(model_dir) / "VERSION").exists() else "0"
        model = cls(Path(model_dir), version, loaded.fast_policy(), loaded.fast_predictor(),
                    np.asarray(spec.action_scale, dtype=np.float64), "dq1" in spec.obs_names,
                    slice(*spec.effector))
        # One step on zeros compiles (or loads from cache) the kernels now, not on a control tick.
        obs = np.zeros(spec.obs_dim)
        action = model.policy.act(obs, np.zeros(spec.goal_dim))
        if model.predictor is not None:
            model.predictor.predict(obs, action)
        model.reset()
        return model

    def reset(self) -> None:
        self.policy.reset()
        if self.predictor is not None:
            self.predictor.reset()


@dataclass
class TickResult:
    torque: np.ndarray  # N m, joint order: the policy's torque target (clipped, finite), 0 when stopped
    status: str  # active | no_goal | no_state | stale | invalid_state | disabled
    observation: np.ndarray | None = None
    prediction: np.ndarray | None = None  # the forward model's next observation
    prediction_error_m: float | None = None  # |predicted - measured| effector, last step
    detail: str = ""
    # What an active tick acted on: the joint state's positions, velocities (controlled
    # joints, rad, rad/s) and the stamp it came with (recording aligns actions by it).
    joint_positions: np.ndarray | None = None
    joint_velocities: np.ndarray | None = None
    state_stamp: object = None


class ControllerCore:
    def __init__(self, model_dir: str | Path, settings: ControllerSettings | None = None) -> None:
        self.settings = s = settings or ControllerSettings()
        self.model = LoadedModel.load(model_dir, s.joint_names, s.control_period_s)
        self.previous_model: LoadedModel | None = None
        self._pending: LoadedModel | None = None
        self._pending_is_rollback = False
        self._lock = threading.Lock()
        index = [JOINT_NAMES.index(n) for n in s.joint_names]  # the model's spec matched them
        self.limits = np.array([TORQUE_LIMIT[i] for i in index])
        self._lower, self._upper, self._vmax = LOWER[index], UPPER[index], VELOCITY_LIMIT[index]
        self.safety = TorqueSafetyFilter(self.limits, s.torque_rate_limit, s.command_period_s)
        self.target = np.zeros(len(s.joint_names))  # N m: where the command stream ramps to
        self.watchdog = StateWatchdog(s.state_timeout_s, s.state_recovery_s, s.check_stamp)
        self.kinematics = arm_kinematics()
        self.stats = LoopStats(s.control_period_s, window=s.stats_window)  # policy ticks
        self.command_stats = LoopStats(s.command_period_s, window=s.stats_window)  # published commands
        self.goal: np.ndarray | None = None
        self.enabled = True
        self.swaps = 0
        self.refused_states = 0  # joint states refused (missing joints, NaN, implausible)
        self.refused_goals = 0
        self._q = self._dq = self._effort = None
        self._q7 = float(NEUTRAL[6])
        self._state_error: str | None = None
        self._stamp = None
        self._status = ""
        self._prediction: np.ndarray | None = None
        self._active = False
        self._cycle = 0  # commands since start: a policy tick every commands_per_tick
        self.stop_latency_s: float | None = None  # last stale stop: s from the last valid state
        self.worst_stop_latency_s = 0.0

    @property
    def stale_events(self) -> int:  # times the joint states went stale while running
        return self.watchdog.stale_events

    # -- inputs ---------------------------------------------------------------------
    def set_goal(self, point, frame_id: str = "") -> np.ndarray:
        """Accept a goal (m) in the base frame (``frame_id`` empty or the base frame's name),
        or raise :class:`~.goals.GoalRejected` with the reason."""
        try:
            if frame_id and frame_id != self.settings.base_frame:
                raise GoalRejected(f"goal in frame {frame_id!r}; this controller takes goals in "
                                   f"{self.settings.base_frame!r} (transform it first)")
            self.goal = self.settings.workspace.check(point)
        except GoalRejected:
            self.refused_goals += 1
            raise
        return self.goal

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def update_joint_state(self, names, positions, velocities, received_s: float, stamp=None,
                           stamp_s: float | None = None, clock_s: float | None = None, efforts=None) -> None:
        """Store a joint state (by name) received at ``received_s`` (monotonic clock) and its
        ``stamp`` (kept opaque, handed back with the tick that uses it; ``stamp_s`` the same in
        seconds of the ROS clock, which read ``clock_s`` on receipt). A bad one is remembered:
        the next tick stops."""
        names = list(names)
        try:
            q, dq = order_joint_state(names, positions, velocities, self.settings.joint_names)
            check_plausible(self.settings.joint_names, q, dq, self._lower, self._upper, self._vmax,
                            self.settings.position_margin_rad, self.settings.velocity_factor)
            q7 = self._q7
            if "panda_joint7" in names:  # the effector's forward kinematics uses joint 7 too
                q7 = float(positions[names.index("panda_joint7")])
                if not np.isfinite(q7):
                    raise JointStateError(f"position of panda_joint7 is {q7}")
            effort = None
            if efforts is not None and len(efforts) == len(names):
                effort = np.array([efforts[names.index(n)] for n in self.settings.joint_names], dtype=np.float64)
        except JointStateError as exc:
            with self._lock:
                self._state_error = str(exc)
                self.refused_states += 1
            raise
        with self._lock:  # the tick may run in another thread: never a torn state
            if not self.watchdog.received(received_s, stamp_s, clock_s):
                return  # a frozen stamp: the same state again, not a new one
            self._q, self._dq, self._q7, self._state_error = q, dq, q7, None
            self._stamp, self._effort = stamp, effort

    def start_from_reported_effort(self) -> None:
        """Make the command stream start from the effort the arm reports, so that taking
        over from another controller is a ramp, not a step (ignored without one)."""
        with self._lock:
            effort = self._effort
        if self.settings.start_from_effort and effort is not None and np.all(np.isfinite(effort)):
            self.safety.last = np.clip(effort, -self.limits, self.limits)

    # -- model swap -----------------------------------------------------------------
    def check_model(self, model_dir: str | Path) -> None:
        """Refuse a model directory whose files are missing or whose I/O spec does not fit,
        without building its networks."""
        check_model_dir(model_dir, self.settings.joint_names, self.settings.control_period_s)

    def prepare_model(self, model_dir: str | Path) -> LoadedModel:
        """Load and check a model off the control path (raises on a mismatch or corruption)."""
        return LoadedModel.load(model_dir, self.settings.joint_names, self.settings.control_period_s)

    def request_swap(self, model: LoadedModel) -> None:
        """Swap to ``model`` at the start of the next tick."""
        with self._lock:
            self._pending, self._pending_is_rollback = model, False

    def rollback(self) -> bool:
        """Go back to the model before the last swap (at the next tick). The model it
        replaces is dropped: a second rollback does not return to it."""
        with self._lock:
            if self.previous_model is None:
                return False
            self._pending, self._pending_is_rollback = self.previous_model, True
        return True

    # -- the command stream and the tick --------------------------------------------
    def command(self, now_s: float) -> tuple[np.ndarray, TickResult | None]:
        """The torque to publish this command period (N m), and the policy tick's result on
        the periods that run one. ``now_s``: monotonic clock."""
        result = None
        if self._cycle % self.settings.commands_per_tick == 0:
            result = self.tick(now_s)
        elif self._active:  # between ticks: stop as soon as the state goes bad, not at the next tick
            reason = self._stop_reason(now_s)
            if reason is not None:
                result = self._stop(*reason, now_s=now_s)
        self._cycle += 1
        return self.safety(self.target), result

    def stop_command(self) -> np.ndarray:
        """The next command of a ramp to zero torque, whatever the state (the way out)."""
        self.target = np.zeros_like(self.target)
        return self.safety(self.target)

    def at_zero(self) -> bool:
        return not np.any(self.safety.last)

    def tick(self, now_s: float) -> TickResult:
        start = time.perf_counter()
        with self._lock:
            pending, self._pending = self._pending, None
            rollback = self._pending_is_rollback
        if pending is not None:
            self.previous_model, self.model = (None if rollback else self.model), pending
            self.model.reset()
            self._prediction = None
            self.swaps += 1
        result = self._compute(now_s)
        self.stats.record(now_s, time.perf_counter() - start)
        return result

    def _stop(self, status: str, detail: str = "", now_s: float | None = None) -> TickResult:
        if self._active and status == "stale" and now_s is not None and self.watchdog.valid_s is not None:
            # from the last valid joint state to this first command of the stop ramp
            self.stop_latency_s = now_s - self.watchdog.valid_s
            self.worst_stop_latency_s = max(self.worst_stop_latency_s, self.stop_latency_s)
        self._status = status
        if self._active:  # leaving control: the next active stretch starts from a fresh state
            self.model.reset()
            self._prediction = None
            self._active = False
        self.target = np.zeros_like(self.target)
        return TickResult(self.target.copy(), status, detail=detail)

    def _stop_reason(self, now_s: float) -> tuple[str, str] | None:
        with self._lock:
            state_error = self._state_error
            reason = self.watchdog.check(now_s)
            started = self.watchdog.received_s is not None
        if not self.enabled:
            return "disabled", ""
        if state_error is not None:
            return "invalid_state", state_error
        if not started:
            return "no_state", ""
        if reason is not None:
            return "stale", reason
        if self.goal is None:
            return "no_goal", ""
        return None

    def _compute(self, now_s: float) -> TickResult:
        reason = self._stop_reason(now_s)
        if reason is not None:
            return self._stop(*reason, now_s=now_s)
        with self._lock:
            q, dq, q7, stamp = self._q, self._dq, self._q7, self._stamp
        model = self.model
        ee = self.kinematics(np.concatenate([q, [q7]]) if len(q) == 6 else q)
        obs = observation(q, dq, ee, model.observe_velocity).astype(np.float64)
        error = None
        if self._prediction is not None:
            error = float(np.linalg.norm(self._prediction[model.effector] - obs[model.effector]))
        action = model.policy.act(obs, self.goal)
        torque = np.asarray(action, dtype=np.float64) * model.action_scale
        if not np.all(np.isfinite(torque)):  # a diverged network: stop, and say so
            self.safety.non_finite_count += 1
            return self._stop("invalid_output", f"the policy gave {torque.tolist()}")
        self.target = np.clip(torque, -self.limits, self.limits)
        self._prediction = model.predictor.predict(obs, action).copy() if model.predictor is not None else None
        self._active = True
        self._status = "active"
        return TickResult(self.target.copy(), "active", obs, self._prediction, error, joint_positions=q,
                          joint_velocities=dq, state_stamp=stamp)

    def firing_rates_hz(self) -> dict[str, list[float]]:
        return {"policy": self.model.policy.firing_rates_hz().tolist(),
                "predictor": self.model.predictor.firing_rates_hz().tolist() if self.model.predictor else []}


def check_model_dir(model_dir: str | Path, joint_names, control_period_s: float) -> None:
    """Refuse a model directory before loading it: its files must be regular files inside
    it (no links out), ``io_spec.json`` a valid spec that fits, ``model.pt`` present.
    Raises :class:`~snn_control.models.checkpoint.CheckpointError` or
    :class:`~snn_control.models.IOSpecMismatch`, whatever the directory holds."""
    from ..models import CheckpointError, IOSpec

    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointError(f"{model_dir}: not a directory")
    for name in ("io_spec.json", "model.pt", "config.yaml"):
        path = root / name
        if path.is_symlink() or not path.is_file():
            raise CheckpointError(f"{model_dir}: {name} is missing or not a regular file")
    path = root / "io_spec.json"
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        spec = IOSpec.from_dict(data, str(path))
        spec.check({"joint_names": list(joint_names), "control_period_s": control_period_s}, str(model_dir))
    except IOSpecMismatch:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{model_dir}: cannot use io_spec.json ({type(exc).__name__}: {exc})") from exc
