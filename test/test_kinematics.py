"""The forward model's kinematic prior: URDF forward kinematics and the output head."""

import copy

import numpy as np
import pytest
import torch

from snn_control.config import ModelConfig, from_dict
from snn_control.envs import EnvError, kinematic_layout
from snn_control.envs.panda import LOWER, UPPER, VELOCITY_LIMIT, PandaBatch, PandaConfig
from snn_control.models import build_networks
from snn_control.models.kinematics import ChainKinematics, KinematicPrior, KinematicsError
from snn_control.models import FastPredictor
from snn_control.models.checkpoint import load_model, networks_for, save_model
from snn_control.training.collect import rollout
from snn_control.models import io_spec_for


@pytest.fixture(scope="module")
def panda():
    env = PandaBatch(4, PandaConfig(torque_scale=0.1, joint_damping=[1.0] * 4 + [0.3] * 2,
                                    limit_joint_velocity=True, inertia_from_urdf=True))
    yield env
    env.close()


@pytest.fixture(scope="module")
def layout(panda):
    return kinematic_layout("panda", panda.config)


def test_forward_kinematics_match_pybullet(panda, layout):
    fk = ChainKinematics(layout["urdf"], layout["base_link"], layout["joints"], layout["fixed"],
                         layout["effector_links"])
    rng = np.random.default_rng(3)
    q = np.stack([panda.sample_configuration(rng) for _ in range(8)])
    real = np.stack([panda.effector_of(qi) for qi in q])
    np.testing.assert_allclose(fk(q[:, :6]), real, atol=1e-6)  # numpy, batched
    np.testing.assert_allclose(fk(torch.as_tensor(q[:, :6])).numpy(), real, atol=1e-6)  # torch
    q6 = torch.as_tensor(q[:3, :6], dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(fk, (q6,))  # the analytic Jacobian against finite differences


def test_prior_integrates_real_motion(panda, layout):
    """On simulated motion, the fitted gain is the trapezoid's dt * v_limit / half-range, and
    given the true velocity change the prior predicts the effector to a fraction of a millimetre."""
    rng = np.random.default_rng(0)
    starts, goals = panda.sample_tasks(rng, panda.num_envs)
    episodes = rollout(panda, None, starts, goals, rng=rng, random_actions=True, velocity_feedback=0.9, steps=60)
    prior = KinematicPrior(layout, 15)
    scale, typical = prior.calibrate(episodes.obs)
    expected = 0.02 * VELOCITY_LIMIT[:6] / (UPPER - LOWER)[:6]
    np.testing.assert_allclose(prior.gain.numpy(), expected, rtol=0.05)
    assert np.all(scale[:6] < 0.2 * typical[:6])  # integration explains most of a position's change
    obs = episodes.obs.astype(np.float64)
    now, nxt = obs[:, :-1].reshape(-1, 15), obs[:, 1:].reshape(-1, 15)
    change = np.zeros_like(now)
    change[:, 6:12] = nxt[:, 6:12] - now[:, 6:12]  # a perfect velocity model, no position residual
    predicted = prior.next_obs(now, change)
    effector_error = np.linalg.norm(predicted[:, 12:] - nxt[:, 12:], axis=1)
    moved = np.linalg.norm(nxt[:, 12:] - now[:, 12:], axis=1)
    assert np.median(moved) > 2e-3  # the arm did move
    # typically ~20 um; the worst steps are joints stopping at a limit within the 20 ms
    assert np.median(effector_error) < 1e-4 and np.percentile(effector_error, 99) < 1e-3
    torch_predicted = prior.next_obs(torch.as_tensor(now), torch.as_tensor(change))
    np.testing.assert_allclose(torch_predicted.numpy(), predicted, atol=1e-6)


def test_fast_predictor_matches_module_with_the_prior(layout):
    cfg = ModelConfig(hidden=48, rank=8, substeps=2, kinematic_prior=True)
    torch.manual_seed(0)
    predictor, _ = build_networks(cfg, 15, 6, 3, layout)
    with torch.no_grad():
        predictor.delta_scale.uniform_(0.01, 0.1)
        predictor.kinematics.gain.fill_(0.01)
    fast = FastPredictor(predictor)
    reference = copy.deepcopy(predictor).to(torch.float64)
    state = reference.initial_state(1, torch.zeros(1, dtype=torch.float64))
    rng = np.random.default_rng(1)
    obs = np.concatenate([rng.uniform(-0.5, 0.5, 6), rng.normal(0, 0.3, 6), [0.4, 0.1, 0.5]])
    with torch.no_grad():
        for _ in range(30):
            action = rng.uniform(-1, 1, 6)
            fast_next = fast.predict(obs, action)
            ref_next, state = reference.step(torch.as_tensor(obs)[None], torch.as_tensor(action)[None], state)
            np.testing.assert_allclose(fast_next, ref_next[0].numpy(), atol=1e-12, rtol=0)
            obs = fast_next


def test_checkpoint_round_trip_keeps_the_prior(panda, tmp_path):
    config = from_dict({"task": "panda", "model": {"hidden": 16, "rank": 4, "kinematic_prior": True},
                                         "env": {"torque_scale": 0.1}})
    predictor, policy = networks_for(config, panda.spec)
    with torch.no_grad():
        predictor.kinematics.gain.copy_(torch.arange(1.0, 7.0) * 0.01)
        predictor.typical_change.fill_(0.5)
    save_model(tmp_path, predictor, policy, io_spec_for(config, panda.spec), config)
    loaded, _, _, _ = load_model(tmp_path)
    assert torch.equal(loaded.kinematics.gain, predictor.kinematics.gain)
    assert torch.equal(loaded.loss_scale, predictor.loss_scale)


def test_bad_layouts_are_refused_with_the_reason(layout, tmp_path):
    with pytest.raises(KinematicsError, match="positions"):
        KinematicPrior(layout, 12)
    with pytest.raises(KinematicsError, match="no joint path"):
        ChainKinematics(layout["urdf"], "panda_link0", layout["joints"], {}, ["no_such_link"])
    broken = tmp_path / "broken.urdf"
    broken.write_text("<robot><joint")
    with pytest.raises(KinematicsError, match="cannot read URDF"):
        ChainKinematics(broken, "panda_link0", layout["joints"], {}, ["panda_hand"])
    with pytest.raises(ValueError, match="exclude each other"):
        build_networks(ModelConfig(hidden=16, rank=4, kinematic_prior=True, momentum_prior=True), 15, 6, 3, layout)
    with pytest.raises(ValueError, match="needs the task's kinematic layout"):
        build_networks(ModelConfig(hidden=16, rank=4, kinematic_prior=True), 15, 6, 3)
    with pytest.raises(EnvError, match="no kinematic layout"):
        kinematic_layout("reacher", None)
    with pytest.raises(EnvError, match="observe_velocity"):
        kinematic_layout("panda", PandaConfig(observe_velocity=False))
