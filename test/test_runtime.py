"""The ROS-free controller core: safety filter, joint states by name, goals, faults, hot swap."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from snn_control.models import IOSpecMismatch
from snn_control.runtime import (ControllerCore, ControllerSettings, GoalRejected, JointStateError, LoopStats,
                                 SettingsError, StateWatchdog, TorqueSafetyFilter, Workspace, order_joint_state)
from snn_control.models.checkpoint import CheckpointError

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
def loaded_core():
    return ControllerCore(PANDA)


@pytest.fixture
def core(loaded_core):
    """The module's controller (its model loads once) with a fresh watchdog and command stream."""
    c = loaded_core
    c.watchdog = StateWatchdog(c.settings.state_timeout_s, c.settings.state_recovery_s, c.settings.check_stamp)
    c._cycle, c._state_error, c.enabled, c.goal = 0, None, True, None
    c.safety.last[:] = 0.0
    c.target[:] = 0.0
    return c


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


def test_stale_joint_states_stop_within_the_timeout_and_resume_after_recovery(core):
    core.set_goal([0.4, 0.2, 0.5])
    s = core.settings
    _feed(core, 0.0)
    assert core.tick(0.0).status == "active"
    # No new state: the stop comes at the first command past the timeout (checked every command).
    t, stopped_at = 0.0, None
    while stopped_at is None and t < 1.0:
        t += s.command_period_s
        _, result = core.command(t)
        if result is not None and result.status == "stale":
            stopped_at = t
    assert stopped_at is not None and stopped_at <= s.state_timeout_s + s.command_period_s + 1e-9
    events = core.stale_events
    assert not np.any(core.target)
    # Fresh again: it acts only after recovery_s of fresh states (one fault, not chatter).
    results = []
    for k in range(int(round(0.8 / s.control_period_s))):
        t += s.control_period_s
        _feed(core, t)
        results.append(core.tick(t).status)
    first_active = results.index("active")
    assert all(r == "stale" for r in results[:first_active])
    assert first_active * s.control_period_s >= s.state_recovery_s - 2 * s.control_period_s
    assert core.stale_events == events


def test_a_slow_publisher_is_one_stale_fault_not_chatter(core):
    core.set_goal([0.4, 0.2, 0.5])
    events, statuses = core.stale_events, []
    for k in range(4000):  # 4 s of commands at 1 kHz, joint states at 15 Hz
        t = k * core.settings.command_period_s
        if k % 67 == 0:
            _feed(core, t)
        _, result = core.command(t)
        if result is not None:
            statuses.append(result.status)
    flips = sum(a != b for a, b in zip(statuses, statuses[1:]))
    assert core.stale_events == events + 1 and flips <= 2, (core.stale_events - events, flips)


def test_watchdog_on_a_monotonic_clock_with_stamps_frozen_old_or_ahead():
    w = StateWatchdog(timeout_s=0.05, recovery_s=0.0)
    assert w.received(10.0, stamp_s=100.0, clock_s=100.001) and w.check(10.01) is None
    assert not w.received(10.02, stamp_s=100.0, clock_s=100.02)  # frozen stamp: not a new state
    assert "no new joint state" in w.check(10.07) and w.frozen == 1
    old = StateWatchdog(timeout_s=0.05, recovery_s=0.0)
    old.received(0.0, stamp_s=90.0, clock_s=100.0)  # stamped 10 s in the past (a clock jump)
    assert "stamped" in old.check(0.0)
    ahead = StateWatchdog(timeout_s=0.05, recovery_s=0.0)
    ahead.received(0.0, stamp_s=110.0, clock_s=100.0)  # 10 s in the future: negative age
    assert "future" in ahead.check(0.0)
    unchecked = StateWatchdog(timeout_s=0.05, recovery_s=0.0, check_stamp=False)
    unchecked.received(0.0, stamp_s=90.0, clock_s=100.0)
    assert unchecked.check(0.01) is None and "no new" in unchecked.check(0.06)  # receipt age still counts


def test_command_stream_ramps_never_steps_and_reaches_zero_on_the_way_out(core):
    core.set_goal([0.4, 0.2, 0.5])
    s = core.settings
    step = s.torque_rate_limit * s.command_period_s
    torques = []
    for k in range(400):
        t = k * s.command_period_s
        if k % 4 == 0:
            _feed(core, t)
        torques.append(core.command(t)[0])
    torques = np.array(torques)
    assert np.abs(torques).max() > 2 * step  # it did command torque ...
    assert np.abs(np.diff(torques, axis=0)).max() <= step + 1e-12  # ... never more than 1 N m per command
    out = [core.stop_command()]
    while np.any(out[-1]):
        out.append(core.stop_command())
    assert len(out) <= int(np.ceil(np.abs(torques[-1]).max() / step)) + 1 and core.at_zero()
    assert np.abs(np.diff(np.vstack([torques[-1:], out]), axis=0)).max() <= step + 1e-12


def test_activation_ramps_from_the_reported_effort(core):
    effort = [5.0, -3.0, 0.0, 2.0, 0.5, 0.0, 0.0]
    core.update_joint_state(NAMES, list(READY), [0.0] * 7, 0.0, efforts=effort)
    core.start_from_reported_effort()
    first, _ = core.command(0.0)  # no goal: towards zero, from the reported effort
    np.testing.assert_allclose(first, [4.0, -2.0, 0.0, 1.0, 0.0, 0.0])


def test_implausible_joint_states_are_refused_and_counted(core):
    core.set_goal([0.4, 0.2, 0.5])
    with pytest.raises(JointStateError, match="outside its limits"):
        _feed(core, 0.0, positions=[1e6] + list(READY[1:]))
    with pytest.raises(JointStateError, match="velocity of panda_joint2"):
        _feed(core, 0.0, velocities=[0.0, 1e6, 0, 0, 0, 0, 0])
    with pytest.raises(JointStateError, match="panda_joint7 is nan"):
        _feed(core, 0.0, positions=list(READY[:6]) + [float("nan")])
    assert core.refused_states == 3 and core.tick(0.0).status == "invalid_state"


def test_goals_in_another_frame_are_refused(core):
    core.set_goal([0.4, 0.2, 0.5], "panda_link0")
    core.set_goal([0.4, 0.1, 0.5], "")  # no frame: the base frame
    with pytest.raises(GoalRejected, match="frame 'world'"):
        core.set_goal([0.4, 0.2, 0.5], "world")
    np.testing.assert_allclose(core.goal, [0.4, 0.1, 0.5])
    assert core.refused_goals == 1


@pytest.mark.parametrize("change, message", [
    ({"state_timeout_s": float("nan")}, "state_timeout_s must be finite"),
    ({"torque_rate_limit": float("inf")}, "torque_rate_limit must be finite"),
    ({"torque_rate_limit": 5000.0}, "above the Panda's"),
    ({"command_period_s": 0.003}, "whole multiple"),
    ({"state_timeout_s": -1.0}, "state_timeout_s must be > 0"),
    ({"velocity_factor": 0.5}, "velocity_factor"),
])
def test_bad_settings_are_refused_with_the_reason(change, message):
    with pytest.raises(SettingsError, match=message):
        ControllerSettings(**change)


@pytest.mark.parametrize("content", [b"5", b"null", b"[1, 2]", b"\xff\xfe garbage", b"{}", b'{"task": 5}'])
def test_reload_of_any_io_spec_is_refused_and_the_model_kept(core, tmp_path, content):
    bad = tmp_path / "bad"
    shutil.copytree(PANDA, bad)
    (bad / "io_spec.json").write_bytes(content)
    with pytest.raises((CheckpointError, IOSpecMismatch)):
        core.check_model(bad)
    assert core.model.path == PANDA


def test_reload_refuses_missing_files_and_links(core, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        core.check_model(tmp_path / "nowhere")
    linked = tmp_path / "linked"
    shutil.copytree(PANDA, linked)
    (linked / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt is missing"):
        core.check_model(linked)
    (linked / "model.pt").symlink_to(PANDA / "model.pt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        core.check_model(linked)


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
    s = core.settings
    max_step = s.torque_rate_limit * s.command_period_s
    new = core.prepare_model(PANDA)
    swaps = core.swaps
    last = None
    for k in range(20 * s.commands_per_tick):
        t = k * s.command_period_s
        if k == 10 * s.commands_per_tick:
            core.request_swap(new)
        if k % 4 == 0:
            _feed(core, t)
        torque, result = core.command(t)
        assert result is None or result.status == "active"
        if last is not None:
            assert np.all(np.abs(torque - last) <= max_step + 1e-9)
        last = torque
    assert core.swaps == swaps + 1 and core.model is new and core.previous_model is not None
    assert core.rollback()
    _feed(core, t)
    core.tick(t)
    assert core.model is not new
    assert not core.rollback()  # the model it replaced is gone: no way back to it


def test_a_td3_trained_model_drives_the_controller_without_a_forward_model(core, tmp_path):
    """A TD3 model directory (spiking actor, no predictor) loads and swaps in like a
    predictive-control one; it publishes no prediction, and its torques pass the filter."""
    from snn_control import config as C
    from snn_control.envs import make_batch
    from snn_control.models.actors import ActorPolicy, build_actor
    from snn_control.models.checkpoint import save_model
    from snn_control.models import io_spec_for

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
    period = core.settings.control_period_s
    for k in range(5):
        _feed(core, k * period)
        r = core.tick(k * period)  # the swap happens at the first of these ticks
        assert core.model.predictor is None
        assert r.status == "active" and r.prediction is None and r.prediction_error_m is None
        assert np.all(np.isfinite(r.torque)) and np.all(np.abs(r.torque) <= core.model.action_scale + 1e-12)
    assert core.firing_rates_hz()["predictor"] == []
    assert core.rollback()
    _feed(core, 5 * period)
    core.tick(5 * period)
    assert core.model.predictor is not None


def test_loop_stats_keep_the_last_window_in_order():
    s = LoopStats(0.001, window=10)
    for k in range(25):  # periods 1, 2, ..., 24 ms
        s.record(sum(range(1, k + 1)) * 1e-3, 1e-4)
    np.testing.assert_allclose(s.periods, np.arange(15, 25) * 1e-3)
    assert len(s.computes) == 10 and s.summary()["ticks"] == 25


def test_simulator_skips_a_refused_joint_state_and_stops_when_refusals_go_on():
    """DDS now and then refuses a publish ("cannot publish data"): panda_sim skips that joint
    state, as a lost packet, and stops physics only after MAX_PUBLISH_FAILURES in a row."""
    from types import SimpleNamespace

    from snn_control.nodes import panda_sim

    refuse = [True] * 3 + [False] + [True] * panda_sim.MAX_PUBLISH_FAILURES
    warnings = []

    def publish():
        if refuse.pop(0):
            raise panda_sim.RCLError("cannot publish data")

    sim = SimpleNamespace(_publish=publish, publish_failures=0,
                          get_logger=lambda: SimpleNamespace(warning=lambda m, **kw: warnings.append(m)))
    step = panda_sim.PandaSimNode._publish_or_skip
    for _ in range(3):
        step(sim)
    assert sim.publish_failures == 3 and len(warnings) == 3
    step(sim)  # one goes through: the count starts again
    assert sim.publish_failures == 0
    for _ in range(panda_sim.MAX_PUBLISH_FAILURES - 1):
        step(sim)
    with pytest.raises(panda_sim.RCLError):
        step(sim)
