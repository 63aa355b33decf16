"""The ROS-free controller core: safety filter, joint states by name, goals, faults, hot swap."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from snn_control.models import IOSpecMismatch
from snn_control.runtime import (ControllerCore, ControllerSettings, GoalRejected, JointStateError,
                                 LoopStats, TorqueSafetyFilter, Workspace, order_joint_state)
from snn_control.training.checkpoint import CheckpointError

PANDA = Path(__file__).resolve().parent.parent / "models" / "panda_snn"
NAMES = [f"panda_joint{i}" for i in range(1, 8)]
READY = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def test_safety_filter_clips_rate_limits_and_never_passes_nan():
    f = TorqueSafetyFilter([87.0, 12.0], rate_limit_nm_s=1000.0, period_s=0.002)  # 2 N m per command
    np.testing.assert_allclose(f([100.0, -1.0]), [2.0, -1.0])
    for _ in range(100):
        out = f([100.0, -100.0])
    np.testing.assert_allclose(out, [87.0, -12.0])  # limits
    out = f([np.nan, np.inf])
    assert np.all(np.isfinite(out)) and f.non_finite_count == 1
    np.testing.assert_allclose(out, [85.0, -10.0])  # NaN/Inf -> 0, approached within the rate limit
    with pytest.raises(ValueError, match="2 entries"):
        f([1.0, 2.0, 3.0])


def test_joint_states_by_name_any_order_extras_ignored():
    q, dq = order_joint_state(["b", "x", "a"], [2.0, 9.0, 1.0], [0.2, 9.0, 0.1], ["a", "b"])
    np.testing.assert_array_equal(q, [1.0, 2.0])
    np.testing.assert_array_equal(dq, [0.1, 0.2])
    with pytest.raises(JointStateError, match=r"lacks \['c'\]"):
        order_joint_state(["a", "b"], [1, 2], [0, 0], ["a", "c"])
    with pytest.raises(JointStateError, match="2 names but 1 positions"):
        order_joint_state(["a", "b"], [1], [0, 0], ["a"])
    with pytest.raises(JointStateError, match="velocity of b is nan"):
        order_joint_state(["a", "b"], [1, 2], [0, float("nan")], ["a", "b"])


def test_workspace_rejects_with_reasons():
    w = Workspace()
    np.testing.assert_allclose(w.check([0.4, 0.1, 0.4]), [0.4, 0.1, 0.4])
    with pytest.raises(GoalRejected, match="beyond"):
        w.check([1.5, 0.0, 0.4])
    with pytest.raises(GoalRejected, match="keep-out"):
        w.check([0.05, 0.0, 0.35])
    with pytest.raises(GoalRejected, match="height"):
        w.check([0.5, 0.0, 0.02])
    with pytest.raises(GoalRejected, match="finite"):
        w.check([0.5, float("nan"), 0.4])


def test_loop_stats_counts_late_ticks():
    s = LoopStats(0.01)
    for t in [0.0, 0.01, 0.02, 0.05, 0.06]:
        s.record(t, 0.001)
    summary = s.summary()
    assert summary["deadline_misses"] == 1 and summary["ticks"] == 5
    assert summary["period_p50_ms"] == pytest.approx(10.0)
    assert s.take_longest_period() == pytest.approx(0.03)  # the late tick, reported once
    assert s.take_longest_period() == 0.0
    s.record(0.07, 0.001)
    assert s.take_longest_period() == pytest.approx(0.01)


@pytest.fixture(scope="module")
def core():
    return ControllerCore(PANDA)


def test_arm_kinematics_agree_with_the_simulators():
    from snn_control.envs.panda import PandaKinematics
    from snn_control.runtime.controller import arm_kinematics

    compiled, simulator = arm_kinematics(), PandaKinematics()
    try:
        rng = np.random.default_rng(0)
        for q in rng.uniform(-2.5, 2.5, size=(100, 7)):  # all seven vary (the midpoint sits on joint 7's axis)
            np.testing.assert_allclose(compiled(q), simulator.effector(q), rtol=0, atol=1e-7)
    finally:
        simulator.close()


def _feed(core, t, positions=READY, velocities=(0.0,) * 7, names=NAMES):
    core.update_joint_state(names, list(positions), list(velocities), t)


def test_controller_waits_for_goal_and_state_then_acts(core):
    core.goal, core._state_time = None, None
    assert core.tick(0.0).status == "no_state"
    _feed(core, 0.0)
    r = core.tick(0.0)
    assert r.status == "no_goal" and np.all(r.torque == 0)
    core.set_goal([0.4, 0.2, 0.5])
    r = core.tick(0.01)
    assert r.status == "active" and np.any(r.torque != 0) and np.all(np.isfinite(r.torque))
    assert np.all(np.abs(r.torque) <= core.model.action_scale + 1e-12)


def test_stale_joint_states_stop_within_two_periods_and_resume(core):
    core.set_goal([0.4, 0.2, 0.5])
    period = core.settings.control_period_s
    _feed(core, 0.0)
    assert core.tick(0.0).status == "active"
    t = 0.0
    results = []
    for _ in range(4):  # simulator stopped: no new states
        t += period
        results.append(core.tick(t))
    stopped = [i for i, r in enumerate(results) if np.all(r.torque == 0)]
    assert stopped and stopped[0] <= 2 and results[-1].status == "stale"
    events = core.stale_events
    core.tick(t + period)  # still stale: the same event, not a new one
    assert core.stale_events == events >= 1
    _feed(core, t)
    assert core.tick(t).status == "active"
    for k in range(1, 5):  # stale again after resuming: a second event
        core.tick(t + k * period)
    assert core.stale_events == events + 1


def test_active_tick_hands_back_the_state_it_acted_on(core):
    core.set_goal([0.4, 0.2, 0.5])
    core.update_joint_state(NAMES, list(READY), [0.1] * 7, 0.0, stamp="stamp-42")
    r = core.tick(0.0)
    assert r.status == "active" and r.state_stamp == "stamp-42"
    np.testing.assert_allclose(r.joint_positions, READY[:6])
    np.testing.assert_allclose(r.joint_velocities, [0.1] * 6)


def test_bad_joint_states_stop_the_arm_with_a_reason(core):
    core.set_goal([0.4, 0.2, 0.5])
    with pytest.raises(JointStateError, match="position of panda_joint2 is nan"):
        _feed(core, 0.0, positions=[0.0, float("nan"), 0, -2.0, 0, 1.5, 0.7])
    r = core.tick(0.0)
    assert r.status == "invalid_state" and "nan" in r.detail
    with pytest.raises(JointStateError, match="lacks"):
        _feed(core, 0.0, names=["a", "b", "c", "d", "e", "f", "g"])
    _feed(core, 0.0)
    assert core.tick(0.0).status == "active"


def test_goal_outside_workspace_keeps_the_previous_goal(core):
    core.set_goal([0.4, 0.2, 0.5])
    with pytest.raises(GoalRejected):
        core.set_goal([3.0, 0.0, 0.0])
    np.testing.assert_allclose(core.goal, [0.4, 0.2, 0.5])


def test_checkpoint_with_other_joint_names_is_refused():
    settings = ControllerSettings(joint_names=tuple(f"fr3_joint{i}" for i in range(1, 7)))
    with pytest.raises(IOSpecMismatch, match="joint_names"):
        ControllerCore(PANDA, settings)
    with pytest.raises(IOSpecMismatch, match="control_period_s"):
        ControllerCore(PANDA, ControllerSettings(control_period_s=0.001))


def test_corrupt_checkpoint_refused_and_running_model_kept(core, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(PANDA, bad)
    (bad / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        core.prepare_model(bad)
    assert core.model.path == PANDA


def test_hot_swap_at_tick_boundary_without_torque_jump(core):
    core.set_goal([0.4, 0.2, 0.5])
    period = core.settings.control_period_s
    max_step = core.settings.torque_rate_limit * period
    t, last = 0.0, None
    new = core.prepare_model(PANDA)
    swaps = core.swaps
    for k in range(20):
        if k == 10:
            core.request_swap(new)
        _feed(core, t)
        r = core.tick(t)
        assert r.status == "active"
        if last is not None:
            assert np.all(np.abs(r.torque - last) <= max_step + 1e-9)
        last, t = r.torque, t + period
    assert core.swaps == swaps + 1 and core.model is new and core.previous_model is not None
    assert core.rollback()
    _feed(core, t)
    core.tick(t)
    assert core.model is not new


def test_a_td3_trained_model_drives_the_controller_without_a_forward_model(core, tmp_path):
    """A TD3 model directory (spiking actor, no predictor) loads and swaps in like a
    predictive-control one; it publishes no prediction, and its torques pass the filter."""
    from snn_control import config as C
    from snn_control.envs import make_batch
    from snn_control.rl.networks import ActorPolicy, build_actor
    from snn_control.training.checkpoint import save_model
    from snn_control.training.trainer import io_spec_for

    cfg = C.load(PANDA.parent.parent / "config" / "reacher_td3.yaml", ["task=panda", "rl.hidden=[32, 32]", "rl.pop=4"])
    env = make_batch("panda", 1, cfg.env)
    try:
        spec = env.spec
        actor = build_actor(cfg.rl, spec.obs_dim + spec.goal_dim, spec.act_dim)
        save_model(tmp_path, None, ActorPolicy(actor), io_spec_for(cfg, spec), cfg)
    finally:
        env.close()
    core.set_goal([0.4, 0.2, 0.5])
    core.request_swap(core.prepare_model(tmp_path))
    period, max_step = core.settings.control_period_s, core.settings.torque_rate_limit * core.settings.control_period_s
    last = None
    for k in range(5):
        _feed(core, k * period)
        r = core.tick(k * period)  # the swap happens at the first of these ticks
        assert core.model.predictor is None
        assert r.status == "active" and r.prediction is None and r.prediction_error_m is None
        assert np.all(np.isfinite(r.torque)) and np.all(np.abs(r.torque) <= core.model.action_scale + 1e-12)
        if last is not None:
            assert np.all(np.abs(r.torque - last) <= max_step + 1e-9)
        last = r.torque
    assert core.firing_rates_hz()["predictor"] == []
    assert core.rollback()
    _feed(core, 5 * period)
    core.tick(5 * period)
    assert core.model.predictor is not None
