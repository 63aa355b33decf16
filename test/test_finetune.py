"""Fine-tuning from recorded sessions (training.finetune), without DDS: a session the shipped
Panda controller drove with an uncompensated 1 kg payload is written as a real rosbag2
(MCAP) bag, read back, and the running model is fine-tuned on it."""

import dataclasses
import json

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from snn_control.envs import make_batch
from snn_control.envs.panda import LOWER, UPPER, VELOCITY_LIMIT
from snn_control.runtime.controller import LoadedModel
from snn_control.runtime.recording import SplitBagRecorder
from snn_control.training.bags import COMMANDS, GOALS, STATES, read_sessions
from snn_control.training.checkpoint import load_model
from snn_control.training.collect import rollout
from snn_control.training.finetune import (FinetuneError, FinetuneSettings, finetune, split_windows,
                                           write_version)

MODEL = "models/panda_snn"
STORE = get_typestore(Stores.ROS2_KILTED)
T = STORE.types
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FAST = dict(window=40, predictor_updates=30, policy_updates=3, batch=8, check_every=10,
            validation_episodes=2, compile=False)


def _stamp(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def write_session(directory, obs, actions, goals, q7, spec) -> list:
    """Episodes as the recorder would have recorded them: joint states, stamped commands, goals."""
    rec = SplitBagRecorder(directory, {STATES: "sensor_msgs/msg/JointState",
                                       COMMANDS: "sensor_msgs/msg/JointState",
                                       GOALS: "geometry_msgs/msg/PointStamped"}, split_s=1e9, session="payload")
    scale = np.asarray(spec.action_scale)
    period_ns = int(spec.control_period_s * 1e9)
    t = 1_000_000_000
    for e in range(len(obs)):
        header = T["std_msgs/msg/Header"](stamp=_stamp(t), frame_id="panda_link0")
        goal = T["geometry_msgs/msg/PointStamped"](header=header, point=T["geometry_msgs/msg/Point"](
            x=float(goals[e, 0]), y=float(goals[e, 1]), z=float(goals[e, 2])))
        rec.record(GOALS, STORE.serialize_cdr(goal, goal.__msgtype__), t)
        for k in range(obs.shape[1]):
            t += period_ns
            q = (obs[e, k, :6] + 1.0) / 2.0 * (UPPER - LOWER)[:6] + LOWER[:6]
            dq = obs[e, k, 6:12] * VELOCITY_LIMIT[:6]
            header = T["std_msgs/msg/Header"](stamp=_stamp(t), frame_id="")
            state = T["sensor_msgs/msg/JointState"](
                header=header, name=ARM, position=np.append(q, q7[e]), velocity=np.append(dq, 0.0),
                effort=np.zeros(7))
            rec.record(STATES, STORE.serialize_cdr(state, state.__msgtype__), t)
            if k < actions.shape[1]:
                command = T["sensor_msgs/msg/JointState"](
                    header=header, name=ARM[:6], position=np.zeros(0), velocity=np.zeros(0),
                    effort=actions[e, k].astype(np.float64) * scale)
                rec.record(COMMANDS, STORE.serialize_cdr(command, command.__msgtype__), t)
        t += 10 * period_ns  # the next goal comes after a pause: a new segment
    return rec.close()


@pytest.fixture(scope="module")
def payload_session(tmp_path_factory):
    """The shipped policy reaching 12 goals with a 1 kg payload, recorded to a bag."""
    _, policy, spec, config = load_model(MODEL)
    env = make_batch("panda", 12, dataclasses.replace(config.env, hand_payload_kg=1.0))
    try:
        starts, goals = env.sample_tasks(np.random.default_rng(7), 12)
        episodes = rollout(env, policy, starts, goals)
    finally:
        env.close()
    directory = tmp_path_factory.mktemp("bags")
    bags = write_session(directory, episodes.obs, episodes.actions, episodes.goals, starts[:, 6], spec)
    return bags, spec, episodes


def test_recorded_session_becomes_the_windows_that_were_driven(payload_session):
    bags, spec, episodes = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    # 200 commands per goal: windows of 40 steps need 41 states, so 4 per goal
    assert not sessions.skipped and len(sessions.obs) == 12 * 4
    # the first window of the first goal is exactly what the simulator produced
    np.testing.assert_allclose(sessions.actions[0], episodes.actions[0, :FAST["window"]], atol=1e-6)
    np.testing.assert_allclose(sessions.obs[0, :, :12], episodes.obs[0, :FAST["window"] + 1, :12], atol=1e-5)
    np.testing.assert_allclose(sessions.obs[0, :, 12:], episodes.obs[0, :FAST["window"] + 1, 12:], atol=2e-3)


def test_split_holds_out_every_nth_window(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    train, held = split_windows(sessions, 5)
    assert set(held) == {i for i in range(len(sessions.obs)) if i % 5 == 4}
    assert not set(train) & set(held) and len(train) + len(held) == len(sessions.obs)


def test_finetune_keeps_the_forward_model_that_predicts_held_out_windows_best(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    report, _ = finetune(MODEL, sessions, FinetuneSettings(**FAST))
    curve = report["predictor_early_stop"]["heldout_curve"]
    assert [step for step, _ in curve] == [0, 10, 20, 30]
    kept = report["predictor_early_stop"]["kept_update"]
    assert dict(curve)[kept] == min(error for _, error in curve)
    assert report["heldout"]["candidate"]["predictor_error"] == pytest.approx(dict(curve)[kept], rel=1e-5)
    # the payload changes the dynamics: the recorded data teaches the model something
    assert report["heldout"]["candidate"]["predictor_error"] < report["heldout"]["running"]["predictor_error"]
    assert report["bags"] == [str(b) for b in bags] and report["windows"]["heldout"] > 0


def test_a_candidate_that_reaches_worse_is_rejected_with_the_reason(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    wrecked = FinetuneSettings(**{**FAST, "policy_updates": 8, "policy_lr": 0.2, "validation_episodes": 4})
    report, candidate = finetune(MODEL, sessions, wrecked)
    assert candidate is None and not report["accepted"]
    assert "imagined distance" in report["reason"] or "simulated median" in report["reason"]


def test_bad_sessions_and_settings_are_refused_with_clear_messages(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    few = dataclasses.replace(sessions, obs=sessions.obs[:3], actions=sessions.actions[:3], goals=sessions.goals[:3])
    with pytest.raises(FinetuneError, match="usable windows"):
        finetune(MODEL, few, FinetuneSettings(**FAST))
    with pytest.raises(FinetuneError, match="read them with length=50"):
        finetune(MODEL, sessions, FinetuneSettings(**{**FAST, "window": 50}))
    with pytest.raises(FinetuneError, match="unknown panda env keys"):
        finetune(MODEL, sessions, FinetuneSettings(**FAST, env_overrides={"payload": 1.0}))


def test_versions_are_written_whole_and_numbered(tmp_path):
    candidate = load_model(MODEL)
    (tmp_path / ".v0001.partial").mkdir()  # a crash mid-write leaves this: never a model
    first = write_version(tmp_path, candidate, {"accepted": True})
    second = write_version(tmp_path, candidate, {"accepted": True})
    assert (first.name, second.name) == ("v0001", "v0002")
    assert not (tmp_path / ".v0001.partial").exists()
    assert json.loads((second / "finetune.json").read_text())["version"] == 2
    model = LoadedModel.load(second, spec_joints(candidate), candidate[2].control_period_s)
    assert model.version == "2"


def spec_joints(candidate):
    return candidate[2].joint_names


def test_finetune_command_writes_a_version_or_says_why_not(payload_session, tmp_path, capsys):
    from snn_control.cli import main

    bags, _, _ = payload_session
    settings = [f"{k}={v}" for k, v in FAST.items()]
    args = ["finetune", MODEL, *map(str, bags), "--out", str(tmp_path), "--no-progress",
            "--env", "hand_payload_kg=1.0"]
    for item in settings:
        args += ["--set", item]
    code = main(args)
    out = capsys.readouterr().out
    assert "48 windows of 40 steps from 1 bag(s)" in out
    if code == 0:
        assert "accepted: wrote" in out and (tmp_path / "v0001" / "VERSION").read_text() == "1\n"
    else:
        assert code == 1 and "rejected" in out and not list(tmp_path.glob("v*"))
    assert main(["finetune", MODEL, *map(str, bags), "--set", "learning_rate=1"]) == 2
    assert "unknown fine-tuning keys ['learning_rate']" in capsys.readouterr().err


def test_used_bags_are_remembered_across_restarts_and_a_corrupt_ledger_is_kept_aside(tmp_path):
    from snn_control.training.bag_ledger import BagLedger

    out = tmp_path / "versions"
    ledger = BagLedger(out)
    assert len(ledger) == 0 and ledger.problem is None
    ledger.add([tmp_path / "bags" / "s_000", tmp_path / "bags" / "s_001"])
    again = BagLedger(out)  # a restarted trainer
    assert tmp_path / "bags" / "s_000" in again and tmp_path / "bags" / "s_002" not in again
    assert len(again) == 2
    (out / "used_bags.json").write_text("{half a file")
    fresh = BagLedger(out)
    assert len(fresh) == 0 and "unreadable" in fresh.problem
    assert (out / "used_bags.json.corrupt").read_text() == "{half a file"  # kept, not deleted
