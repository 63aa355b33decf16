"""The controller's logic without ROS: joint states and goals in, safe torques out.

:class:`ControllerCore` is what the ``snn_controller`` node runs on every timer tick. It

- loads a model directory and refuses it unless its I/O spec matches the configured joint
  names and control period (:class:`~snn_control.models.IOSpecMismatch` names what differs);
- reads joint states by name, accepts goals inside its :class:`~.goals.Workspace`;
- steps the policy and the forward model on the compiled batch-1 path
  (:mod:`.inference`) and reports the model's prediction error as a health signal;
- sends every torque through :class:`~.safety.TorqueSafetyFilter`, and ramps to zero
  torque (within the rate limit) before the first goal, while disabled, and when the
  joint states are missing, stale or invalid;
- swaps in a new model at a tick boundary (new network state, previous model kept for
  :meth:`rollback`), built beforehand so the swapping tick costs no more than any other.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..envs.panda import JOINT_NAMES, NEUTRAL, TORQUE_LIMIT, PandaConfig, kinematic_layout, observation
from ..models import IOSpecMismatch
from ..models.kinematics import ChainKinematics
from ..training.checkpoint import load_model
from .goals import Workspace
from .inference import FastPolicy, FastPredictor
from .joint_states import JointStateError, order_joint_state
from .safety import TorqueSafetyFilter
from .timing import LoopStats


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
        predictor, policy, spec, config = load_model(
            model_dir, {"joint_names": list(joint_names), "control_period_s": control_period_s})
        if spec.task != "panda":
            raise IOSpecMismatch(f"{model_dir}: a {spec.task!r} model cannot drive a Panda")
        version = (Path(model_dir) / "VERSION").read_text().strip() if (Path(model_dir) / "VERSION").exists() else "0"
        model = cls(Path(model_dir), version, FastPolicy(policy),
                    FastPredictor(predictor) if predictor is not None else None,
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
    torque: np.ndarray  # N m, joint order, after the safety filter
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


@dataclass
class ControllerSettings:
    joint_names: tuple[str, ...] = JOINT_NAMES[:6]
    control_period_s: float = 0.02
    state_timeout_s: float = 0.05  # joint states older than this: zero torque
    torque_rate_limit: float = 1000.0  # N m/s
    workspace: Workspace = field(default_factory=Workspace)
    stats_window: int = 5000  # ticks kept for the loop statistics


class ControllerCore:
    def __init__(self, model_dir: str | Path, settings: ControllerSettings | None = None) -> None:
        self.settings = s = settings or ControllerSettings()
        self.model = LoadedModel.load(model_dir, s.joint_names, s.control_period_s)
        self.previous_model: LoadedModel | None = None
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        limits = [TORQUE_LIMIT[JOINT_NAMES.index(n)] for n in s.joint_names]
        self.safety = TorqueSafetyFilter(limits, s.torque_rate_limit, s.control_period_s)
        self.kinematics = arm_kinematics()
        self.stats = LoopStats(s.control_period_s, window=s.stats_window)
        self.goal: np.ndarray | None = None
        self.enabled = True
        self.swaps = 0
        self._q = self._dq = None
        self._q7 = float(NEUTRAL[6])
        self._state_time: float | None = None
        self._state_error: str | None = None
        self._stamp = None
        self._status = ""
        self.stale_events = 0  # times the joint states went stale while running
        self._prediction: np.ndarray | None = None
        self._active = False

    # -- inputs ---------------------------------------------------------------------
    def set_goal(self, point) -> np.ndarray:
        """Accept a goal (m, base frame) or raise :class:`~.goals.GoalRejected` with the reason."""
        self.goal = self.settings.workspace.check(point)
        return self.goal

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def update_joint_state(self, names, positions, velocities, received_s: float, stamp=None) -> None:
        """Store a joint state (by name) and its ``stamp`` (kept opaque, handed back with the
        tick that uses it). A bad one is remembered: the next tick stops."""
        try:
            q, dq = order_joint_state(names, positions, velocities, self.settings.joint_names)
        except JointStateError as exc:
            with self._lock:
                self._state_error = str(exc)
            raise
        if "panda_joint7" in names:  # the effector's forward kinematics uses joint 7 too
            i = list(names).index("panda_joint7")
            if np.isfinite(positions[i]):
                self._q7 = float(positions[i])
        with self._lock:  # the tick may run in another thread: never a torn state
            self._q, self._dq, self._state_time, self._state_error = q, dq, received_s, None
            self._stamp = stamp

    # -- model swap -----------------------------------------------------------------
    def check_model(self, model_dir: str | Path) -> None:
        """Refuse a model directory whose files are missing or whose I/O spec does not fit,
        without building its networks."""
        from ..models import IOSpec
        from ..training.checkpoint import CheckpointError

        path = Path(model_dir) / "io_spec.json"
        try:
            spec = IOSpec.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{model_dir}: cannot read io_spec.json ({exc})") from exc
        if not (Path(model_dir) / "model.pt").exists():
            raise CheckpointError(f"{model_dir}: no model.pt")
        spec.check({"joint_names": list(self.settings.joint_names),
                    "control_period_s": self.settings.control_period_s}, str(model_dir))

    def prepare_model(self, model_dir: str | Path) -> LoadedModel:
        """Load and check a model off the control path (raises on a mismatch or corruption)."""
        return LoadedModel.load(model_dir, self.settings.joint_names, self.settings.control_period_s)

    def request_swap(self, model: LoadedModel) -> None:
        """Swap to ``model`` at the start of the next tick."""
        with self._lock:
            self._pending = model

    def rollback(self) -> bool:
        """Go back to the model before the last swap (at the next tick)."""
        if self.previous_model is None:
            return False
        self.request_swap(self.previous_model)
        return True

    # -- the tick -------------------------------------------------------------------
    def tick(self, now_s: float) -> TickResult:
        start = time.perf_counter()
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.previous_model, self.model = self.model, pending
            self.model.reset()
            self._prediction = None
            self.swaps += 1
        result = self._compute(now_s)
        self.stats.record(now_s, time.perf_counter() - start)
        return result

    def _stop(self, status: str, detail: str = "") -> TickResult:
        if status == "stale" and self._status != "stale":
            self.stale_events += 1
        self._status = status
        if self._active:  # leaving control: the next active stretch starts from a fresh state
            self.model.reset()
            self._prediction = None
            self._active = False
        return TickResult(self.safety.stop(), status, detail=detail)

    def _compute(self, now_s: float) -> TickResult:
        s = self.settings
        with self._lock:
            q, dq, q7, state_time, state_error = self._q, self._dq, self._q7, self._state_time, self._state_error
            stamp = self._stamp
        if not self.enabled:
            return self._stop("disabled")
        if state_error is not None:
            return self._stop("invalid_state", state_error)
        if state_time is None:
            return self._stop("no_state")
        age = now_s - state_time
        if age > s.state_timeout_s:
            return self._stop("stale", f"joint states {age * 1e3:.0f} ms old")
        if self.goal is None:
            return self._stop("no_goal")
        model = self.model
        ee = self.kinematics(np.concatenate([q, [q7]]) if len(q) == 6 else q)
        obs = observation(q, dq, ee, model.observe_velocity).astype(np.float64)
        error = None
        if self._prediction is not None:
            error = float(np.linalg.norm(self._prediction[model.effector] - obs[model.effector]))
        action = model.policy.act(obs, self.goal)
        torque = self.safety(action * model.action_scale)
        self._prediction = model.predictor.predict(obs, action).copy() if model.predictor is not None else None
        self._active = True
        self._status = "active"
        return TickResult(torque, "active", obs, self._prediction, error, joint_positions=q, joint_velocities=dq,
                          state_stamp=stamp)

    def firing_rates_hz(self) -> dict[str, list[float]]:
        return {"policy": self.model.policy.firing_rates_hz().tolist(),
                "predictor": self.model.predictor.firing_rates_hz().tolist() if self.model.predictor else []}
