"""PyBullet Franka Panda reach, batched: one DIRECT physics client per copy.

Joints 1-6 are torque controlled: ``tau = action * torque_scale * (87, 87, 87, 87, 12, 12)``
N m, held
for one control period (20 ms) while physics runs at 1 ms. Gravity is compensated
exactly, as the real Panda's torque interface compensates it with its own model at every
joint, so a commanded torque means the same in sim and on the robot. Exact compensation
with the simulator's own model cancels gravity; the simulation therefore runs without
gravity (an uncompensated payload's weight is applied as a force), which costs a third
less per physics step than computing ``g(q)`` every millisecond and adding it.
The commanded torque reaches the joints through the real robot's torque-rate limit
(1000 N m/s, checked at the physics rate), the same limit the ROS safety filter applies.
Joint friction (viscous ``joint_damping`` and Gaz et al.'s identified model, ``joint_friction``)
acts against the motion at every physics step, as on the real arm, whose torque interface
does not compensate it; :mod:`.plant` also draws randomised plants per episode.
Joint 7 is held by a PD position loop, the fingers are held open.

Observation: 6 joint positions scaled to [-1, 1] by their limits, (optionally) 6 joint
velocities divided by their limits, end-effector position in metres (finger midpoint,
base frame). Goals: end-effector positions of random collision-free configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet
import pybullet_data

from .base import BatchedReachEnv, EnvError, ReachSpec
from .plant import FRICTION_MODELS, PlantRandomization, friction_torque

URDF = "franka_panda/panda.urdf"
JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
ACTUATED = 6  # joints 1-6 torque controlled
ARM_JOINTS = list(range(7))
FINGER_JOINTS = [9, 10]
MOVABLE = ARM_JOINTS + FINGER_JOINTS  # the 9 DoF pybullet's dynamics functions expect
LOWER = np.array([-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671])  # rad
UPPER = np.array([2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671])  # rad
VELOCITY_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])  # rad/s
TORQUE_LIMIT = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0)  # N m
NEUTRAL = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # rad, Franka's ready pose
FINGER_OPENING = 0.04  # m per finger
HAND_LINK = 8  # panda_hand
GRAVITY = 9.81  # m/s^2


@dataclass
class PandaConfig:
    """Panda reach options (defaults: Huebotter et al. 2025's reach task, real Panda limits)."""

    episode_steps: int = 200
    control_period: float = 0.02  # s
    physics_dt: float = 0.001  # s
    observe_velocity: bool = True  # Huebotter et al. 2025 observed positions only
    torque_scale: float = 1.0  # torque = action * torque_scale * limit; the shipped configs use
    # 0.25: at 1.0 the learned policy went bang-bang and sat on joint limits 30-75 % of the time
    torque_rate_limit: float = 1000.0  # N m/s at the joints (real Panda trips above it); 0: off
    joint_damping: list[float] = field(default_factory=lambda: [0.0] * ACTUATED)  # N m s/rad,
    # joints 1-6: viscous friction, a torque -d * dq at every physics step
    joint_friction: str = "none"  # "gaz2019": the real Panda's identified joint friction
    # (Gaz et al. 2019, about +-0.15-0.65 N m once moving; envs.plant), not compensated by its torque interface
    friction_scale: float = 1.0  # x both friction terms (the robustness suite's "friction x2")
    link_mass_scale: float = 1.0  # x every link's mass and inertia; gravity compensation keeps the
    # URDF's masses, so the difference's weight acts on the arm
    torque_offset_nm: list[float] = field(default_factory=lambda: [0.0] * ACTUATED)  # added to
    # every applied torque (a miscalibrated motor constant or torque sensor)
    joint_noise: list[float] = field(default_factory=lambda: [0.0, 0.0])  # std of the noise on
    # observed joint positions (rad) and velocities (rad/s); the real arm's encoders resolve ~1e-4 rad
    randomize: PlantRandomization = field(default_factory=PlantRandomization)  # per-episode plants
    limit_joint_velocity: bool = False  # clamp joint speeds at the Panda's velocity limits
    inertia_from_urdf: bool = False  # use the URDF's declared link inertias (0.1 kg m^2); by
    # default pybullet recomputes them from collision shapes, which leaves the 6-joint mass
    # matrix's weakest mode at 0.018 kg m^2 and the wrist at 0.05: far lighter than the geared
    # real arm (its reflected rotor inertia; MuJoCo Menagerie's Panda uses armature 0.1)
    self_collision: bool = False  # in the dynamics; sampled starts/goals are always collision-free
    joint_range_fraction: float = 0.5  # starts/goals: neutral +- this share of each joint's range
    min_goal_height: float = 0.1  # m, end effector above the table
    joint7_gains: list[float] = field(default_factory=lambda: [50.0, 5.0])  # PD (N m/rad, N m s/rad)
    gui: bool = False  # show the first copy in PyBullet's window (needs a display)
    hand_payload_kg: float = 0.0  # an uncompensated payload at the hand (a wrong payload
    # setting on the real robot): its weight acts on the arm, gravity compensation ignores it
    action_delay_steps: int = 0  # the torque a step commands acts this many control steps later
    # (from a reset, zero torque meanwhile): the latency of a live loop, to evaluate or train with


def observation(q: np.ndarray, dq: np.ndarray, ee: np.ndarray, observe_velocity: bool) -> np.ndarray:
    """The policy's observation from joint positions ``q`` and velocities ``dq`` (rad, rad/s;
    ``(..., >= 6)``, joint order) and the effector position ``ee`` ``(..., 3)`` in metres.
    Shared by the simulator and the ROS controller, so both feed a network the same thing."""
    q6 = 2.0 * (q[..., :ACTUATED] - LOWER[:ACTUATED]) / (UPPER - LOWER)[:ACTUATED] - 1.0
    parts = [q6]
    if observe_velocity:
        parts.append(dq[..., :ACTUATED] / VELOCITY_LIMIT[:ACTUATED])
    parts.append(ee)
    return np.concatenate(parts, axis=-1).astype(np.float32)


def kinematic_layout(config: PandaConfig) -> dict:
    """What a forward model may know of the arm's kinematics (models.kinematics): the URDF,
    the observed joints, the values of the held ones, the effector links and where each
    part sits in the observation. Needs observed velocities."""
    if not config.observe_velocity:
        raise EnvError("panda: the kinematic prior needs observe_velocity: true")
    n = ACTUATED
    return {
        "urdf": str(pybullet_data.getDataPath() + "/" + URDF), "base_link": "panda_link0",
        "joints": list(JOINT_NAMES[:n]),
        "fixed": {JOINT_NAMES[6]: float(NEUTRAL[6]), "panda_finger_joint1": FINGER_OPENING,
                  "panda_finger_joint2": FINGER_OPENING},
        "effector_links": ["panda_leftfinger", "panda_rightfinger"],
        "position": [0, n], "velocity": [n, 2 * n], "effector": [2 * n, 2 * n + 3],
        "position_lower": LOWER[:n].tolist(), "position_upper": UPPER[:n].tolist(),
    }


def urdf_for_rviz() -> str:
    """The simulated Panda's URDF with mesh paths RViz resolves (absolute ``file://``; the
    pybullet_data copy says ``package://meshes/...``, a package that does not exist)."""
    root = pybullet_data.getDataPath() + "/franka_panda/"
    with open(root + "panda.urdf") as fh:
        return fh.read().replace('filename="package://meshes/', f'filename="file://{root}meshes/')


class PandaKinematics:
    """Forward kinematics of the Panda's effector (finger midpoint, base frame) from the
    same URDF as the simulator, in a private DIRECT client; for controllers that get joint
    angles only (a real arm's /joint_states)."""

    def __init__(self) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.body = pybullet.loadURDF(URDF, useFixedBase=True, physicsClientId=self.client)
        for j in FINGER_JOINTS:
            pybullet.resetJointState(self.body, j, FINGER_OPENING, 0.0, physicsClientId=self.client)

    def effector(self, q7: np.ndarray) -> np.ndarray:
        for j in ARM_JOINTS:
            pybullet.resetJointState(self.body, j, float(q7[j]), 0.0, physicsClientId=self.client)
        links = pybullet.getLinkStates(self.body, FINGER_JOINTS, computeForwardKinematics=1,
                                       physicsClientId=self.client)
        return 0.5 * (np.asarray(links[0][4]) + np.asarray(links[1][4]))

    def close(self) -> None:
        try:
            pybullet.disconnect(physicsClientId=self.client)
        except pybullet.error:
            pass


class PandaBatch(BatchedReachEnv):
    def __init__(self, num_envs: int, config: PandaConfig | None = None, first_copy: int = 0) -> None:
        """``first_copy``: the global index of this batch's first copy (a slice of a batch
        split over processes draws the randomised plants of its own copies)."""
        self.config = cfg = config or PandaConfig()
        substeps = cfg.control_period / cfg.physics_dt
        if abs(substeps - round(substeps)) > 1e-9 or substeps < 1:
            raise EnvError(
                f"control_period {cfg.control_period} s must be a multiple of physics_dt {cfg.physics_dt} s"
            )
        self.physics_substeps = int(round(substeps))
        self.num_envs = num_envs
        names = [f"q{i}" for i in range(1, 7)]
        if cfg.observe_velocity:
            names += [f"dq{i}" for i in range(1, 7)]
        names += ["ee_x", "ee_y", "ee_z"]
        self.spec = ReachSpec(
            task="panda", obs_names=tuple(names), obs_dim=len(names), act_dim=ACTUATED,
            goal_dim=3, effector=(len(names) - 3, len(names)),
            control_period_s=cfg.control_period, episode_steps=cfg.episode_steps,
            success_radius=0.05, distance_unit="m", joint_names=JOINT_NAMES[:ACTUATED],
            action_scale=tuple(cfg.torque_scale * t for t in TORQUE_LIMIT),
        )
        if not 0.0 < cfg.torque_scale <= 1.0:
            raise EnvError(f"torque_scale must lie in (0, 1], got {cfg.torque_scale}")
        if cfg.action_delay_steps < 0:
            raise EnvError(f"action_delay_steps must be >= 0, got {cfg.action_delay_steps}")
        flags = pybullet.URDF_USE_SELF_COLLISION if cfg.self_collision else 0
        if cfg.inertia_from_urdf:
            flags |= pybullet.URDF_USE_INERTIA_FROM_FILE
        if len(cfg.joint_damping) != ACTUATED or min(cfg.joint_damping) < 0:
            raise EnvError(f"joint_damping needs {ACTUATED} values >= 0, got {cfg.joint_damping}")
        if cfg.joint_friction not in FRICTION_MODELS:
            raise EnvError(f"joint_friction: expected one of {list(FRICTION_MODELS)}, got {cfg.joint_friction!r}")
        if not (cfg.friction_scale >= 0 and cfg.link_mass_scale > 0 and cfg.hand_payload_kg >= 0):
            raise EnvError("friction_scale and hand_payload_kg must be >= 0, link_mass_scale > 0")
        if len(cfg.torque_offset_nm) != ACTUATED or not np.all(np.isfinite(cfg.torque_offset_nm)):
            raise EnvError(f"torque_offset_nm needs {ACTUATED} finite values, got {cfg.torque_offset_nm}")
        if len(cfg.joint_noise) != 2 or min(cfg.joint_noise) < 0:
            raise EnvError(f"joint_noise needs [position std, velocity std] >= 0, got {cfg.joint_noise}")
        self.first_copy = first_copy
        self._resets = 0
        self._noise_rng = np.random.default_rng([cfg.randomize.seed, first_copy, 1])
        # This episode's plant, per copy (reset_to draws them when randomize is active).
        self.payload_kg = np.full(num_envs, cfg.hand_payload_kg)
        self.friction_scale = np.full(num_envs, cfg.friction_scale)
        self.delay = np.full(num_envs, cfg.action_delay_steps)
        self.torque_offset = np.tile(np.asarray(cfg.torque_offset_nm, dtype=np.float64), (num_envs, 1))
        self._viscous = np.asarray(cfg.joint_damping, dtype=np.float64)
        self.clients = [self._connect(flags, gui=cfg.gui and i == 0) for i in range(num_envs)]
        self._probe = self._connect(
            pybullet.URDF_USE_SELF_COLLISION | pybullet.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
        )
        cid, body = self.clients[0]
        self._nominal_dynamics = [pybullet.getDynamicsInfo(body, link, physicsClientId=cid)
                                  for link in range(pybullet.getNumJoints(body, physicsClientId=cid))]
        self.mass_scale = np.ones(num_envs)
        for i in range(num_envs):
            self._set_mass_scale(i, cfg.link_mass_scale)
        self.applied = np.zeros((num_envs, ACTUATED))  # N m, after the rate limit
        self._internal_substeps = [1] * num_envs  # physics steps per stepSimulation call
        self.pending = np.zeros((1, num_envs, ACTUATED))  # commands not yet acting (reset_to)
        self.q = np.zeros((num_envs, 7))
        self.dq = np.zeros((num_envs, 7))
        self.ee = np.zeros((num_envs, 3))

    # -- simulator plumbing -------------------------------------------------------------
    def _connect(self, flags: int, gui: bool = False) -> tuple[int, int]:
        cid = pybullet.connect(pybullet.GUI if gui else pybullet.DIRECT)
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        body = pybullet.loadURDF(URDF, useFixedBase=True, flags=flags, physicsClientId=cid)
        pybullet.setGravity(0, 0, 0, physicsClientId=cid)  # compensated exactly (module docstring)
        pybullet.setPhysicsEngineParameter(fixedTimeStep=self.config.physics_dt, numSubSteps=1, physicsClientId=cid)
        # Default velocity motors would fight the torques: switch them off for joints 1-6.
        pybullet.setJointMotorControlArray(
            body, list(range(ACTUATED)), pybullet.VELOCITY_CONTROL, forces=[0.0] * ACTUATED,
            physicsClientId=cid,
        )
        # PyBullet's own jointDamping does not act on torque-controlled joints: friction is
        # applied as a torque in advance(), and the default damping is removed.
        for j in range(ACTUATED):
            extra = {"maxJointVelocity": float(VELOCITY_LIMIT[j])} if self.config.limit_joint_velocity else {}
            pybullet.changeDynamics(body, j, jointDamping=0.0, physicsClientId=cid, **extra)
        return cid, body

    def _set_mass_scale(self, i: int, scale: float) -> None:
        """Scale copy ``i``'s link masses and inertias (from the values the URDF loaded with)."""
        if scale == self.mass_scale[i]:
            return
        cid, body = self.clients[i]
        for link, info in enumerate(self._nominal_dynamics):
            pybullet.changeDynamics(body, link, mass=info[0] * scale,
                                    localInertiaDiagonal=[x * scale for x in info[2]], physicsClientId=cid)
        self.mass_scale[i] = scale

    def _set_configuration(self, client: tuple[int, int], q7: np.ndarray) -> None:
        cid, body = client
        for j in ARM_JOINTS:
            pybullet.resetJointState(body, j, float(q7[j]), 0.0, physicsClientId=cid)
        for j in FINGER_JOINTS:
            pybullet.resetJointState(body, j, FINGER_OPENING, 0.0, physicsClientId=cid)

    def _effector_position(self, client: tuple[int, int]) -> np.ndarray:
        cid, body = client
        links = pybullet.getLinkStates(body, FINGER_JOINTS, computeForwardKinematics=1, physicsClientId=cid)
        return 0.5 * (np.asarray(links[0][4]) + np.asarray(links[1][4]))

    def _hold_joint7_and_fingers(self, client: tuple[int, int], q7_target: float) -> None:
        cid, body = client
        kp, kd = self.config.joint7_gains
        pybullet.setJointMotorControl2(
            body, 6, pybullet.POSITION_CONTROL, targetPosition=q7_target, force=TORQUE_LIMIT[-1],
            positionGain=kp * self.config.physics_dt, velocityGain=kd * 0.1,
            physicsClientId=cid,
        )
        pybullet.setJointMotorControlArray(
            body, FINGER_JOINTS, pybullet.POSITION_CONTROL, targetPositions=[FINGER_OPENING] * 2,
            forces=[20.0, 20.0], physicsClientId=cid,
        )

    def configuration_is_valid(self, q7: np.ndarray) -> bool:
        """No self-collision, every link above the table, effector above ``min_goal_height``."""
        self._set_configuration(self._probe, q7)
        cid, body = self._probe
        pybullet.performCollisionDetection(physicsClientId=cid)
        for contact in pybullet.getContactPoints(body, body, physicsClientId=cid):
            if abs(contact[3] - contact[4]) > 2 and min(contact[3], contact[4]) < 8:
                return False  # links within two joints of each other touch in every pose
        links = pybullet.getLinkStates(body, list(range(2, 11)), physicsClientId=cid)
        if min(state[4][2] for state in links) < 0.02:
            return False
        return self._effector_position(self._probe)[2] >= self.config.min_goal_height

    def effector_of(self, q7: np.ndarray) -> np.ndarray:
        self._set_configuration(self._probe, q7)
        return self._effector_position(self._probe)

    # -- BatchedReachEnv -----------------------------------------------------------------
    def sample_configuration(self, rng: np.random.Generator) -> np.ndarray:
        half_range = 0.5 * (UPPER - LOWER) * self.config.joint_range_fraction
        for _ in range(1000):
            q7 = np.clip(NEUTRAL + rng.uniform(-half_range, half_range), LOWER, UPPER)
            q7[6] = NEUTRAL[6]
            if self.configuration_is_valid(q7):
                return q7
        raise EnvError("could not sample a collision-free Panda configuration in 1000 tries")

    def sample_tasks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.stack([self.sample_configuration(rng) for _ in range(n)])
        goals = np.stack([self.effector_of(self.sample_configuration(rng)) for _ in range(n)])
        return starts, goals

    def reset_to(self, starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.float64)
        if starts.shape == (self.num_envs, ACTUATED):
            starts = np.concatenate([starts, np.full((self.num_envs, 1), NEUTRAL[6])], axis=1)
        if starts.shape != (self.num_envs, 7):
            raise EnvError(f"panda: starts must have shape ({self.num_envs}, 7), got {starts.shape}")
        for client, q7 in zip(self.clients, starts, strict=True):
            self._set_configuration(client, q7)
            self._hold_joint7_and_fingers(client, float(q7[6]))
        self.q7_hold = starts[:, 6].copy()
        self.applied[:] = 0.0
        self._draw_plants()
        # Commands not yet acting, newest first: copy i applies row delay[i] (zeros at first).
        self.pending = np.zeros((int(self.delay.max()) + 1, self.num_envs, ACTUATED))
        self._read_state()
        return self.observe()

    def _draw_plants(self) -> None:
        rand = self.config.randomize
        self._resets += 1
        if not rand.active:
            return
        plants = rand.draw(self._resets - 1, self.first_copy + np.arange(self.num_envs), ACTUATED)
        cfg = self.config
        self.payload_kg = cfg.hand_payload_kg + plants["payload_kg"]
        self.friction_scale = cfg.friction_scale * plants["friction_scale"]
        self.delay = cfg.action_delay_steps + plants["action_delay_steps"]
        self.torque_offset = (np.asarray(cfg.torque_offset_nm)
                              + plants["torque_offset_fraction"] * np.asarray(TORQUE_LIMIT))
        for i, scale in enumerate(cfg.link_mass_scale * plants["link_mass_scale"]):
            self._set_mass_scale(i, scale)

    def _read_state(self) -> None:
        for i, (cid, body) in enumerate(self.clients):
            states = pybullet.getJointStates(body, ARM_JOINTS, physicsClientId=cid)
            self.q[i] = [s[0] for s in states]
            self.dq[i] = [s[1] for s in states]
            self.ee[i] = self._effector_position((cid, body))

    def observe(self) -> np.ndarray:
        std_q, std_dq = self.config.joint_noise
        if std_q or std_dq:  # what the encoders report, not what the arm does
            q = self.q + self._noise_rng.normal(0.0, std_q, self.q.shape)
            dq = self.dq + self._noise_rng.normal(0.0, std_dq, self.dq.shape)
            return observation(q, dq, self.ee, self.config.observe_velocity)
        return observation(self.q, self.dq, self.ee, self.config.observe_velocity)

    def step(self, actions: np.ndarray) -> np.ndarray:
        command = self.check_actions(actions) * np.asarray(self.spec.action_scale)
        if len(self.pending) > 1:
            self.pending = np.roll(self.pending, 1, axis=0)
            self.pending[0] = command
            command = self.pending[self.delay, np.arange(self.num_envs)]
        self.advance(command, self.physics_substeps)
        return self.observe()

    def advance(self, torques: np.ndarray, physics_steps: int) -> None:
        """Hold joint torques ``(N, 6)`` N m (before the rate limit) for ``physics_steps``
        physics steps, gravity compensated, then read the new state."""
        cfg = self.config
        schedule = self._rate_limited(torques, physics_steps)  # (N, steps, 6), N m
        if physics_steps:
            self.applied = schedule[:, -1].copy()
        actuated = list(range(ACTUATED))
        friction = cfg.joint_friction != "none" or any(cfg.joint_damping)
        # Once the rate limit has brought the applied torque to the command, it stays
        # constant: those physics steps run as one call of PyBullet's internal substeps
        # (the same steps, bit for bit; it keeps a call's torque for all of them), the
        # ramp before it one call per step. Friction depends on the velocity, and the weight
        # of a payload or of a link-mass error moves with the arm: every step on its own then.
        # Plain Python floats keep the loop at the simulator's cost.
        ramp = _ramp_lengths(schedule)
        for i, ((cid, body), steps) in enumerate(zip(self.clients, schedule.tolist())):
            offset = self.torque_offset[i]
            load = self._gravity_error(i)
            stepwise = friction or load is not None
            ramp_steps = physics_steps if stepwise else int(ramp[i])
            if ramp_steps:
                self._set_internal_substeps(i, 1)
            for applied in steps[:ramp_steps]:
                if stepwise:
                    dq = np.array([s[1] for s in pybullet.getJointStates(body, actuated, physicsClientId=cid)])
                    tau = np.asarray(applied) + offset
                    if friction:
                        tau -= friction_torque(dq, cfg.joint_friction, self._viscous, self.friction_scale[i])
                    applied = tau.tolist()
                    if load is not None:
                        load()
                elif offset.any():
                    applied = (np.asarray(applied) + offset).tolist()
                pybullet.setJointMotorControlArray(body, actuated, pybullet.TORQUE_CONTROL,
                                                   forces=applied, physicsClientId=cid)
                pybullet.stepSimulation(physicsClientId=cid)
            if ramp_steps < physics_steps:
                self._set_internal_substeps(i, physics_steps - ramp_steps)
                pybullet.setJointMotorControlArray(body, actuated, pybullet.TORQUE_CONTROL,
                                                   forces=(np.asarray(steps[-1]) + offset).tolist(),
                                                   physicsClientId=cid)
                pybullet.stepSimulation(physicsClientId=cid)
        self._read_state()

    def _gravity_error(self, i: int):
        """What copy ``i``'s gravity compensation gets wrong, as a function that applies it
        for one physics step (external forces at the links' centres of mass), or None: the
        payload's weight and ``(mass scale - 1)`` x every link's weight."""
        payload, extra = float(self.payload_kg[i]), float(self.mass_scale[i]) - 1.0
        if not payload and not extra:
            return None
        cid, body = self.clients[i]
        links = [link for link, info in enumerate(self._nominal_dynamics) if info[0] > 0] if extra else []
        weights = [[0.0, 0.0, -GRAVITY * extra * self._nominal_dynamics[link][0]] for link in links]

        def apply() -> None:
            if payload:
                at = pybullet.getLinkState(body, HAND_LINK, physicsClientId=cid)[0]
                pybullet.applyExternalForce(body, HAND_LINK, [0.0, 0.0, -GRAVITY * payload], at,
                                            pybullet.WORLD_FRAME, physicsClientId=cid)
            if links:
                states = pybullet.getLinkStates(body, links, physicsClientId=cid)
                for link, state, weight in zip(links, states, weights):
                    pybullet.applyExternalForce(body, link, weight, state[0], pybullet.WORLD_FRAME,
                                                physicsClientId=cid)
        return apply

    def hold(self, q7: np.ndarray) -> None:
        """Stop every copy at joint angles ``q7`` ``(7,)`` or ``(N, 7)`` with zero velocity and no
        torque: the real arm's reaction to a reflex (it brakes and holds its position)."""
        q7 = np.broadcast_to(np.asarray(q7, dtype=np.float64), (self.num_envs, 7))
        for client, q in zip(self.clients, q7):
            self._set_configuration(client, q)
        self.applied[:] = 0.0
        self._read_state()

    def _set_internal_substeps(self, i: int, n: int) -> None:
        """Make copy ``i``'s next ``stepSimulation`` run ``n`` physics steps."""
        if self._internal_substeps[i] != n:
            pybullet.setPhysicsEngineParameter(fixedTimeStep=n * self.config.physics_dt, numSubSteps=n,
                                               physicsClientId=self.clients[i][0])
            self._internal_substeps[i] = n

    def _rate_limited(self, torques: np.ndarray, physics_steps: int) -> np.ndarray:
        """``(N, physics_steps, 6)``: the torque each physics step applies when the applied
        torque moves towards ``torques`` at most ``torque_rate_limit`` N m/s."""
        cfg = self.config
        max_delta = cfg.torque_rate_limit * cfg.physics_dt if cfg.torque_rate_limit > 0 else np.inf
        torques = np.asarray(torques, dtype=np.float64)
        out = np.empty((self.num_envs, physics_steps, ACTUATED))
        applied = self.applied
        for k in range(physics_steps):
            applied = applied + np.clip(torques - applied, -max_delta, max_delta)
            out[:, k] = applied
        return out

    def effector_jacobians(self) -> np.ndarray:
        jac = np.empty((self.num_envs, 3, ACTUATED))
        for i, (cid, body) in enumerate(self.clients):
            q9 = [s[0] for s in pybullet.getJointStates(body, MOVABLE, physicsClientId=cid)]
            zeros = [0.0] * len(MOVABLE)
            linear = [
                np.asarray(pybullet.calculateJacobian(body, link, [0, 0, 0], q9, zeros, zeros, physicsClientId=cid)[0])
                for link in FINGER_JOINTS
            ]
            jac[i] = 0.5 * (linear[0] + linear[1])[:, :ACTUATED]
        return jac

    def joint_velocities(self) -> np.ndarray:
        return self.dq[:, :ACTUATED].copy()

    def close(self) -> None:
        for cid, _ in [*self.clients, self._probe]:
            try:
                pybullet.disconnect(physicsClientId=cid)
            except pybullet.error:
                pass
        self.clients = []

    def __del__(self) -> None:  # DIRECT clients are process-global; do not leak them
        if getattr(self, "clients", None):
            self.close()


def _ramp_lengths(schedule: np.ndarray) -> np.ndarray:
    """Per copy, the number of leading physics steps of ``schedule`` ``(N, steps, 6)`` after
    which its torque no longer changes (0: constant throughout)."""
    if schedule.shape[1] < 2:
        return np.zeros(schedule.shape[0], dtype=int)
    changes = np.any(schedule[:, 1:] != schedule[:, :-1], axis=2)  # (N, steps - 1)
    last = changes.shape[1] - np.argmax(changes[:, ::-1], axis=1)  # index after the last change
    return np.where(changes.any(axis=1), last, 0)
