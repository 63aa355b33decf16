"""Recorded sessions (rosbag2, as the recorder writes them) back into training episodes.

Each ``/snn_controller/command_stamped`` message is one control step: its torques (turned
back into actions by the model's ``action_scale``), the positions and velocities of the
joint state the controller acted on, and that state's stamp. With the effector from
forward kinematics they make the step's observation, built by the same function the
simulator and the controller use. (Recordings whose stamped commands carry no positions
take them from the ``/joint_states`` message with the same stamp.) The goal is the last ``/snn_controller/goal``
accepted before the step. Consecutive steps under one goal, one control period apart,
form a segment; segments are cut into windows of ``length`` steps (``length + 1``
observations), the unit the trainer's replay holds.

A bag that cannot be read, or that lacks these topics (someone else's bag), is skipped
with a message naming the bag and the reason; nothing is deleted or changed on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from ..envs.panda import NEUTRAL, PandaKinematics, observation
from ..models import IOSpec

STORE = get_typestore(Stores.ROS2_KILTED)
STATES, COMMANDS, GOALS = "/joint_states", "/snn_controller/command_stamped", "/snn_controller/goal"


@dataclass
class SessionEpisodes:
    """``obs (N, L+1, O)``, ``actions (N, L, A)``, ``goals (N, G)`` float32, plus what was skipped."""

    obs: np.ndarray
    actions: np.ndarray
    goals: np.ndarray
    bags_read: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "bag: reason"


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _read_bag(bag: Path) -> tuple[dict[int, object], list, list]:
    states, commands, goals = {}, [], []
    with Reader(bag) as reader:
        topics = {c.topic for c in reader.connections}
        missing = {STATES, COMMANDS, GOALS} - topics
        if missing:
            raise ValueError(f"not a recorded controller session (no {sorted(missing)})")
        wanted = [c for c in reader.connections if c.topic in (STATES, COMMANDS, GOALS)]
        for conn, _, raw in reader.messages(connections=wanted):
            msg = STORE.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == STATES:
                states[_stamp(msg)] = msg
            elif conn.topic == COMMANDS:
                commands.append(msg)
            else:
                goals.append((_stamp(msg), np.array([msg.point.x, msg.point.y, msg.point.z])))
    return states, commands, goals


def _q7_at(states: dict[int, object], stamps: np.ndarray, stamp: int) -> float:
    """Joint 7's position in the latest recorded state at or before ``stamp`` (it is held by
    its own PD loop and barely moves; only the effector's forward kinematics needs it)."""
    i = int(np.searchsorted(stamps, stamp, side="right")) - 1
    if i >= 0:
        msg = states[int(stamps[i])]
        if "panda_joint7" in msg.name:
            return float(msg.position[list(msg.name).index("panda_joint7")])
    return float(NEUTRAL[6])


def _step_state(cmd, states: dict[int, object], spec: IOSpec):
    """``(q, dq)`` the controller acted on: carried by the stamped command itself, or (older
    recordings) looked up in the joint state with the command's stamp."""
    n = len(spec.joint_names)
    if len(cmd.position) == n and len(cmd.velocity) == n:
        return np.asarray(cmd.position, dtype=np.float64), np.asarray(cmd.velocity, dtype=np.float64)
    state = states.get(_stamp(cmd))
    if state is None:
        return None
    index = {name: i for i, name in enumerate(state.name)}
    if not all(name in index for name in spec.joint_names):
        return None
    return (np.array([state.position[index[name]] for name in spec.joint_names]),
            np.array([state.velocity[index[name]] for name in spec.joint_names]))


def read_sessions(bags, spec: IOSpec, length: int, max_gap_periods: float = 1.5) -> SessionEpisodes:
    """Windows of ``length`` control steps from every readable bag of ``bags``.

    The readable bags are read as one timeline, so the goal in force carries across the
    splits of a session. ``max_gap_periods``: a gap between consecutive steps longer than
    this many control periods ends a segment (a missed tick, a pause); so does a new goal.
    """
    obs_out, act_out, goal_out, read, skipped = [], [], [], [], []
    scale = np.asarray(spec.action_scale, dtype=np.float64)
    period_ns = spec.control_period_s * 1e9
    observe_velocity = "dq1" in spec.obs_names
    states, commands, goals = {}, [], []
    for bag in sorted(Path(b) for b in bags):
        try:
            bag_states, bag_commands, bag_goals = _read_bag(bag)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign bag is reported, not fatal
            skipped.append(f"{bag}: {type(exc).__name__}: {exc}")
            continue
        read.append(bag)
        states.update(bag_states)
        commands += bag_commands
        goals += bag_goals
    goals.sort(key=lambda g: g[0])
    goal_stamps = np.array([t for t, _ in goals], dtype=np.int64)
    state_stamps = np.array(sorted(states), dtype=np.int64)
    kinematics = PandaKinematics()
    try:
        steps = []  # (stamp, obs, action, goal index)
        for cmd in sorted(commands, key=_stamp):
            stamp = _stamp(cmd)
            goal_index = int(np.searchsorted(goal_stamps, stamp, side="right")) - 1
            state = _step_state(cmd, states, spec)
            if state is None or goal_index < 0 or list(cmd.name) != list(spec.joint_names):
                continue
            q, dq = state
            ee = kinematics.effector(np.concatenate([q, [_q7_at(states, state_stamps, stamp)]]))
            obs = observation(q, dq, ee, observe_velocity)
            action = np.clip(np.asarray(cmd.effort, dtype=np.float64) / scale, -1.0, 1.0)
            if np.all(np.isfinite(obs)) and np.all(np.isfinite(action)):
                steps.append((stamp, obs, action, goal_index))
    finally:
        kinematics.close()
    segment: list = []
    for step in steps + [None]:
        breaks = (step is None or not segment or step[3] != segment[-1][3]
                  or step[0] - segment[-1][0] > max_gap_periods * period_ns)
        if breaks and segment:
            # observation k+1 is the state the next command answered: windows need length + 1
            for start in range(0, len(segment) - length, length):
                window = segment[start:start + length + 1]
                obs_out.append(np.stack([s[1] for s in window]))
                act_out.append(np.stack([s[2] for s in window[:-1]]))
                goal_out.append(goals[window[0][3]][1])
            segment = []
        if step is not None:
            segment.append(step)
    obs_dim, act_dim = spec.obs_dim, spec.act_dim
    return SessionEpisodes(
        np.array(obs_out, dtype=np.float32).reshape(-1, length + 1, obs_dim),
        np.array(act_out, dtype=np.float32).reshape(-1, length, act_dim),
        np.array(goal_out, dtype=np.float32).reshape(-1, spec.goal_dim), read, skipped)
