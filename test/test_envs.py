import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from snn_control.envs import EnvError, make_batch, make_gym_env
from snn_control.envs.panda import PandaBatch, PandaConfig
from snn_control.envs.reacher import DAMPING, GAIN, MAX_OMEGA, ReacherBatch, ReacherConfig, hand_position


@pytest.mark.parametrize("task", ["reacher", "panda"])
def test_gymnasium_env_checker(task):
    env = make_gym_env(task)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["reacher", "panda"])
def test_seeded_and_deterministic(task):
    def run():
        env = make_batch(task, 3)
        obs, goals = env.reset(np.random.default_rng(7))
        actions = np.random.default_rng(1).uniform(-1, 1, size=(20, 3, env.spec.act_dim))
        trace = [obs] + [env.step(a) for a in actions]
        env.close()
        return np.stack(trace), goals

    (a, ga), (b, gb) = run(), run()
    assert np.array_equal(a, b) and np.array_equal(ga, gb)
    other = make_batch(task, 3)
    _, gc = other.reset(np.random.default_rng(8))
    other.close()
    assert not np.allclose(ga, gc)


def test_reacher_dynamics_match_equations():
    env = ReacherBatch(1, ReacherConfig())
    env.reset_to(np.array([[0.3, -0.2]]), np.zeros((1, 2)))
    u = np.array([[0.5, -1.0]])
    omega = np.zeros(2)
    q = np.array([0.3, -0.2])
    for _ in range(30):
        obs = env.step(u)
        omega = np.clip(omega + 0.02 * (GAIN * u[0] - DAMPING * omega), -MAX_OMEGA, MAX_OMEGA)
        q = q + 0.02 * omega
    assert np.allclose(env.q[0], q) and np.allclose(obs[0, :2], hand_position(q))
    assert np.allclose(obs[0, 6:8], omega / MAX_OMEGA)
    assert obs.shape == (1, 8)
    assert make_batch("reacher", 1, ReacherConfig(observe_velocity=False)).spec.obs_dim == 6


def test_reacher_success_is_per_axis():
    env = ReacherBatch(1)
    obs = np.zeros((2, 8), dtype=np.float32)
    goals = np.array([[0.049, 0.049], [0.051, 0.0]])
    assert env.success(obs, goals).tolist() == [True, False]


def test_panda_gravity_compensated_holds_still_and_torque_moves():
    env = PandaBatch(2)
    starts, goals = env.sample_tasks(np.random.default_rng(3), 2)
    obs0 = env.reset_to(starts, goals)
    obs = obs0
    for _ in range(25):  # 0.5 s with zero torque: gravity compensated, the arm stays put
        obs = env.step(np.zeros((2, 6)))
    assert np.abs(obs - obs0).max() < 1e-3
    for _ in range(5):
        obs = env.step(np.full((2, 6), 0.2))
    assert np.abs(obs[:, :6] - obs0[:, :6]).max() > 0.01
    env.close()


def _advance_one_call_per_physics_step(env, torques, compensate_gravity=False):
    """The reference ``advance``: one ``stepSimulation`` per physics step, and with
    ``compensate_gravity`` (gravity switched on by the caller) ``g(q)`` from PyBullet's
    inverse dynamics added to the torque of joints 1-6 at every step. Returns the
    rate-limited torque schedule."""
    import pybullet

    from snn_control.envs.panda import ACTUATED, MOVABLE

    schedule = env._rate_limited(torques, env.physics_substeps)
    env.applied = schedule[:, -1].copy()
    zeros = [0.0] * len(MOVABLE)
    for (cid, body), steps in zip(env.clients, schedule.tolist()):
        for applied in steps:
            if compensate_gravity:
                q = [s[0] for s in pybullet.getJointStates(body, MOVABLE, physicsClientId=cid)]
                gravity = pybullet.calculateInverseDynamics(body, q, zeros, zeros, physicsClientId=cid)
                applied = [a + g for a, g in zip(applied, gravity)]
            pybullet.setJointMotorControlArray(body, list(range(ACTUATED)), pybullet.TORQUE_CONTROL,
                                               forces=applied, physicsClientId=cid)
            pybullet.stepSimulation(physicsClientId=cid)
    env._read_state()
    return schedule


def test_panda_without_gravity_moves_like_the_arm_with_gravity_compensated():
    """The simulation leaves gravity out because the torque interface compensates it
    exactly. Reference: gravity on, and ``g(q)`` added to the torque of joints 1-6 at every
    physics step (joint 7 and the fingers hold position against gravity)."""
    import pybullet

    from snn_control.envs.panda import ACTUATED, GRAVITY

    env, reference = PandaBatch(1), PandaBatch(1)
    pybullet.setGravity(0, 0, -GRAVITY, physicsClientId=reference.clients[0][0])
    starts, goals = env.sample_tasks(np.random.default_rng(4), 1)
    env.reset_to(starts, goals)
    reference.reset_to(starts, goals)
    torques = np.random.default_rng(5).uniform(-0.3, 0.3, size=(10, 6)) * np.asarray(env.spec.action_scale)
    for command in torques:
        _advance_one_call_per_physics_step(reference, command[None], compensate_gravity=True)
        env.advance(command[None], env.physics_substeps)
    moved = np.abs(env.q[0, :ACTUATED] - starts[0, :ACTUATED]).max()
    assert moved > 0.05  # the torques moved the arm ...
    assert np.abs(env.q[0, :ACTUATED] - reference.q[0, :ACTUATED]).max() < 1e-4  # ... the same way
    assert np.abs(env.q[0, 6] - reference.q[0, 6]).max() < 1e-3  # joint 7 sagged a little under gravity
    env.close()
    reference.close()


def test_panda_steps_after_the_rate_limit_ramp_run_as_one_call_with_the_same_result():
    """``advance`` runs the physics steps after the torque ramp as one ``stepSimulation``
    with internal substeps; stepping each physics step on its own gives the same arm."""
    from snn_control.envs.panda import _ramp_lengths

    config = PandaConfig(torque_scale=0.1)
    env, reference = PandaBatch(2, config), PandaBatch(2, config)
    starts, goals = env.sample_tasks(np.random.default_rng(4), 2)
    env.reset_to(starts, goals)
    reference.reset_to(starts, goals)
    actions = np.cumsum(np.random.default_rng(0).normal(0, 0.15, (30, 2, 6)), axis=0).clip(-1, 1)
    ramps = []
    for action in actions:
        schedule = _advance_one_call_per_physics_step(reference, action * np.asarray(env.spec.action_scale))
        ramps.extend(_ramp_lengths(schedule).tolist())
        env.step(action)
    assert 0 < np.mean(ramps) < env.physics_substeps  # both kinds of step were taken
    assert np.abs(env.q - starts).max() > 0.05
    assert np.array_equal(env.q, reference.q) and np.array_equal(env.dq, reference.dq)
    # one physics step per call, as the ROS simulator runs at 1000 Hz joint states
    assert _ramp_lengths(np.zeros((2, 1, 6))).tolist() == [0, 0]
    before, applied = env.q.copy(), env.applied.copy()
    env.advance(applied + 5.0, 1)
    assert not np.array_equal(env.q, before) and np.allclose(env.applied - applied, 1.0)  # 1 N m in 1 ms
    env.close()
    reference.close()


def test_panda_torque_rate_limit():
    env = PandaBatch(1)
    starts, goals = env.sample_tasks(np.random.default_rng(0), 1)
    env.reset_to(starts, goals)
    env.step(np.ones((1, 6)))
    # 1000 N m/s for 20 ms: at most 20 N m after one control step from 0 (wrist: its 12 N m)
    assert np.allclose(env.applied[0], [20.0, 20.0, 20.0, 20.0, 12.0, 12.0])
    env.close()


def test_panda_action_delay_applies_each_torque_that_many_steps_later():
    """``action_delay_steps=2``: zero torque for the first two steps after a reset, then
    each step's command two steps late; the same trajectory as an undelayed arm fed
    zeros first."""
    from snn_control.envs.panda import PandaConfig

    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (5, 2, 6))
    delayed, prompt = PandaBatch(2, PandaConfig(action_delay_steps=2)), PandaBatch(2)
    starts, goals = prompt.sample_tasks(np.random.default_rng(0), 2)
    try:
        for _ in range(2):  # a second episode: the reset empties the queue
            delayed.reset_to(starts, goals)
            prompt.reset_to(starts, goals)
            late = [delayed.step(a) for a in actions]
            on_time = [prompt.step(a) for a in [np.zeros((2, 6)), np.zeros((2, 6)), *actions[:3]]]
            np.testing.assert_array_equal(np.array(late), np.array(on_time))
        assert not np.allclose(late[-1], late[1])  # the late torques did move the arm
    finally:
        delayed.close()
        prompt.close()
    with pytest.raises(EnvError, match="action_delay_steps"):
        PandaBatch(1, PandaConfig(action_delay_steps=-1))


def test_panda_goals_reachable_and_above_table():
    env = PandaBatch(1)
    _, goals = env.sample_tasks(np.random.default_rng(5), 20)
    assert goals.shape == (20, 3)
    assert np.all(goals[:, 2] >= env.config.min_goal_height)
    assert np.all(np.linalg.norm(goals, axis=1) < 1.2)  # Panda reach is about 0.86 m from joint 2
    env.close()


@pytest.mark.parametrize("task", ["reacher", "panda"])
def test_bad_actions_rejected(task):
    env = make_batch(task, 2)
    env.reset(np.random.default_rng(0))
    bad = np.zeros((2, env.spec.act_dim))
    bad[1, 0] = np.nan
    with pytest.raises(EnvError, match="NaN or Inf"):
        env.step(bad)
    with pytest.raises(EnvError, match="actions must have shape"):
        env.step(np.zeros((2, env.spec.act_dim + 1)))
    env.close()


def test_diverged_simulation_is_reported_not_trained_on(monkeypatch):
    from snn_control.training.collect import rollout

    env = ReacherBatch(2)
    starts, goals = env.sample_tasks(np.random.default_rng(0), 2)
    real_step = env.step

    def diverging_step(actions):
        obs = real_step(actions)
        obs[1, 6] = np.inf
        return obs

    monkeypatch.setattr(env, "step", diverging_step)
    with pytest.raises(EnvError, match=r"copy 1 produced a non-finite observation 'omega1' = inf"):
        rollout(env, None, starts, goals, rng=np.random.default_rng(0), random_actions=True)


@pytest.mark.parametrize("task", ["reacher", "panda"])
def test_parallel_workers_give_the_serial_batch_results(task):
    serial, parallel = make_batch(task, 3), make_batch(task, 3, workers=2)
    try:
        starts, goals = serial.sample_tasks(np.random.default_rng(5), 3)
        starts_p, goals_p = parallel.sample_tasks(np.random.default_rng(5), 3)
        np.testing.assert_array_equal(starts, starts_p)
        np.testing.assert_array_equal(serial.reset_to(starts, goals), parallel.reset_to(starts, goals))
        actions = np.random.default_rng(6).uniform(-1, 1, size=(10, 3, serial.spec.act_dim))
        for a in actions:
            np.testing.assert_array_equal(serial.step(a), parallel.step(a))
        np.testing.assert_array_equal(serial.joint_velocities(), parallel.joint_velocities())
        np.testing.assert_allclose(serial.effector_jacobians(), parallel.effector_jacobians())
        with pytest.raises(EnvError, match="shape"):
            parallel.step(np.zeros((2, serial.spec.act_dim)))
        with pytest.raises(EnvError, match="starts"):
            parallel.reset_to(starts[:2], goals[:2])
    finally:
        serial.close()
        parallel.close()
