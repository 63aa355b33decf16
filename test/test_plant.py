"""Plant variations of the simulated Panda: every option that claims to change the plant does."""

import dataclasses

import numpy as np
import pytest

from snn_control.config import ConfigError, from_dict
from snn_control.envs import EnvError, make_batch
from snn_control.envs.panda import PandaBatch, PandaConfig
from snn_control.envs.plant import GAZ_PHI1, PlantRandomization, friction_torque

BASE = PandaConfig(torque_scale=0.1)
RANDOM = PlantRandomization(seed=3, payload_kg=[0.0, 1.5], friction_scale=[0.5, 2.0], link_mass_scale=[0.8, 1.2],
                            action_delay_steps=[0, 2], torque_offset_fraction=0.02)


def run(config, copies=2, steps=15, seed=0, episodes=1):
    """Observations of ``episodes`` episodes of the same seeded random torques from the same starts."""
    env = PandaBatch(copies, config)
    try:
        starts, goals = env.sample_tasks(np.random.default_rng(seed), copies)
        actions = np.random.default_rng(seed + 1).uniform(-1, 1, (steps, copies, 6))
        out = []
        for _ in range(episodes):
            env.reset_to(starts, goals)
            out.append(np.array([env.step(a) for a in actions]))
        return np.array(out)
    finally:
        env.close()


def test_gaz_friction_matches_the_identified_model():
    dq = np.array([[0.0] * 6, [10.0] * 6, [-10.0] * 6])
    tau = friction_torque(dq, "gaz2019", np.zeros(6))
    np.testing.assert_allclose(tau[0], 0.0, atol=1e-12)  # no friction at rest
    # Moving fast: about +-phi1 / 2 (the sigmoid's offset phi3 makes it slightly asymmetric).
    np.testing.assert_allclose(tau[1] - tau[2], GAZ_PHI1[:6], rtol=1e-3)
    assert np.all(tau[1] > 0) and np.all(tau[2] < 0)
    np.testing.assert_allclose(friction_torque(dq, "none", np.full(6, 2.0), 0.5), dq)  # viscous, scaled


@pytest.mark.parametrize("change", [
    {"joint_damping": [1.0] * 4 + [0.3] * 2}, {"joint_friction": "gaz2019"},
    {"link_mass_scale": 1.2}, {"hand_payload_kg": 1.0}, {"torque_offset_nm": [0.5, 0, 0, 0, 0, 0]},
    {"joint_noise": [1e-4, 1e-3]}, {"action_delay_steps": 1}, {"randomize": RANDOM},
])
def test_every_plant_option_changes_the_motion(change):
    nominal = run(BASE)
    changed = run(dataclasses.replace(BASE, **change))
    assert np.abs(changed - nominal).max() > 1e-4, change


def test_friction_scale_scales_friction_and_slows_the_arm():
    friction = dataclasses.replace(BASE, joint_friction="gaz2019", joint_damping=[1.0] * 4 + [0.3] * 2)
    speeds = [np.abs(run(dataclasses.replace(friction, friction_scale=s))[0, :, :, 6:12]).mean() for s in (0.0, 1.0, 2.0)]
    assert speeds[0] > speeds[1] > speeds[2]
    np.testing.assert_array_equal(run(dataclasses.replace(friction, friction_scale=0.0)), run(BASE))


def test_randomised_plants_are_seeded_and_differ_per_episode_and_copy():
    config = dataclasses.replace(BASE, randomize=RANDOM)
    first, again = run(config, episodes=2), run(config, episodes=2)
    np.testing.assert_array_equal(first, again)  # reproducible
    assert np.abs(first[0] - first[1]).max() > 1e-4  # a new plant each episode
    other = run(dataclasses.replace(BASE, randomize=dataclasses.replace(RANDOM, seed=4)), episodes=2)
    assert np.abs(first - other).max() > 1e-4
    draws = RANDOM.draw(0, np.arange(8), 6)
    assert len(set(draws["payload_kg"].round(6))) == 8 and set(draws["action_delay_steps"]) <= {0, 1, 2}
    assert np.all(np.abs(draws["torque_offset_fraction"]) <= 0.02)


def test_randomised_plants_of_a_split_batch_are_the_serial_batch_plants():
    config = dataclasses.replace(BASE, randomize=RANDOM)
    serial, parallel = make_batch("panda", 3, config), make_batch("panda", 3, config, workers=2)
    try:
        starts, goals = serial.sample_tasks(np.random.default_rng(5), 3)
        for _ in range(2):
            np.testing.assert_array_equal(serial.reset_to(starts, goals), parallel.reset_to(starts, goals))
            for a in np.random.default_rng(6).uniform(-1, 1, size=(5, 3, 6)):
                np.testing.assert_array_equal(serial.step(a), parallel.step(a))
    finally:
        serial.close()
        parallel.close()


def test_bad_plant_settings_are_refused_with_the_key():
    with pytest.raises(EnvError, match="joint_friction"):
        PandaBatch(1, dataclasses.replace(BASE, joint_friction="coulomb"))
    with pytest.raises(EnvError, match="joint_noise"):
        PandaBatch(1, dataclasses.replace(BASE, joint_noise=[-1.0, 0.0]))
    with pytest.raises(ConfigError, match=r"env.randomize: randomize.payload_kg"):
        from_dict({"task": "panda", "env": {"randomize": {"payload_kg": [1.0, 0.5]}}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['payload'\]"):
        from_dict({"task": "panda", "env": {"randomize": {"payload": [0.0, 1.0]}}})
    config = from_dict({"task": "panda", "env": {"randomize": {"payload_kg": [0.0, 1.5], "seed": 7}}})
    assert config.env.randomize.payload_kg == [0.0, 1.5] and config.env.randomize.active
