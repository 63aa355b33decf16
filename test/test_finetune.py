"""Fine-tuning from recorded sessions (training.finetune), without DDS: a session the shipped
Panda controller drove with an uncompensated 1 kg payload is written as a real rosbag2
(MCAP) bag, read back, and the running model is fine-tuned on it. The gate (a candidate
against the running model and the session's first model) and the trainer's bag ledger are
tested on their own."""

import dataclasses
import json
import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from snn_control.envs import make_batch
from snn_control.envs.panda import LOWER, UPPER, VELOCITY_LIMIT
from snn_control.runtime.controller import LoadedModel
from snn_control.runtime.recording import SplitBagRecorder
from snn_control.predictive.bags import COMMANDS, GOALS, STATES, read_sessions
from snn_control.models.checkpoint import load_model
from snn_control.training.collect import rollout
from snn_control.predictive import finetune as finetune_mod
from snn_control.predictive.bag_ledger import BagLedger
from snn_control.training.evaluate import heldout_tasks
from snn_control.predictive.finetune import (GATE_SET, SELECTION_SET, FinetuneError, FinetuneSettings, SimulatedReach,
                                           finetune, gate, split_heldout, split_windows, verdict, windows_needed,
                                           write_version)

MODEL = "models/panda_snn"
BASE = "models/panda_snn_base"  # panda_snn's first stage: a session start that differs from the running model
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
    select, gate_windows = split_heldout(held)  # early stopping and the gate never share a window
    assert not set(select) & set(gate_windows) and sorted([*select, *gate_windows]) == sorted(held)
    assert len(select) >= 1 and len(gate_windows) >= 1
    assert windows_needed(FinetuneSettings()) == 10  # 8 to train, one to select, one to gate


def test_finetune_keeps_the_forward_model_that_predicts_held_out_windows_best(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    report, _ = finetune(MODEL, sessions, FinetuneSettings(**FAST))
    curve = report["predictor_early_stop"]["heldout_curve"]  # on the selection windows
    assert [step for step, _ in curve] == [0, 10, 20, 30]
    kept = report["predictor_early_stop"]["kept_update"]
    assert dict(curve)[kept] == min(error for _, error in curve)
    # the payload changes the dynamics: the recorded data teaches the model something, and
    # it shows on the gate windows, which early stopping never saw
    assert report["heldout"]["candidate"]["predictor_error"] < report["heldout"]["running"]["predictor_error"]
    windows = report["windows"]
    assert windows["selection"] + windows["gate"] == windows["heldout"] and windows["gate"] > 0
    assert report["bags"] == [str(b) for b in bags]
    # offline, the session starts from the running model: its figures are the running model's
    assert report["session_start"] == MODEL
    assert report["heldout"]["session_start"] == report["heldout"]["running"]
    assert report["simulation"]["session_start"] == report["simulation"]["running"]


def test_a_candidate_that_reaches_worse_is_rejected_with_the_reason(payload_session):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    wrecked = FinetuneSettings(**{**FAST, "policy_updates": 8, "policy_lr": 0.2, "validation_episodes": 4})
    report, candidate = finetune(MODEL, sessions, wrecked)
    assert candidate is None and not report["accepted"]
    assert "imagined distance" in report["reason"] or "simulated median" in report["reason"]
    failed = [c for c in report["checks"] if not c["passed"]]
    assert failed and "FAILED" in report["reason"] and "no worse" not in report["reason"]


def test_a_nan_learning_rate_is_rejected_not_raised(payload_session):
    """NaN weights: NaN losses, and NaN actions the simulator refuses; the round still ends
    with a verdict (a crash would leave the bags to be retried forever)."""
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    report, candidate = finetune(MODEL, sessions, FinetuneSettings(**{**FAST, "policy_lr": math.nan}))
    assert candidate is None and not report["accepted"]
    assert report["losses"]["non_finite"] > 0 and "non-finite figures or losses" in report["reason"]
    assert any("NaN" in error for error in report["simulation"]["errors"])


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
    with pytest.raises(FinetuneError, match="sim_tolerance must be a number >= 0, got nan"):
        finetune(MODEL, sessions, FinetuneSettings(**{**FAST, "sim_tolerance": math.nan}))
    with pytest.raises(FinetuneError, match="session start model: models/reacher_snn does not match: task"):
        finetune(MODEL, sessions, FinetuneSettings(**FAST), session_start_dir="models/reacher_snn")


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


def trainer_settings(tmp_path, monkeypatch, *params: str):
    """The fine-tuning settings a trainer node builds from ``params`` (NAME:=VALUE)."""
    rclpy = pytest.importorskip("rclpy")
    from snn_control.nodes.trainer import TrainerNode

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # a node is made, never spun
    given = [f"checkpoint:={MODEL}", f"bag_dir:={tmp_path / 'bags'}", f"output_dir:={tmp_path / 'out'}", *params]
    rclpy.init(args=["trainer", "--ros-args", *[a for p in given for a in ("-p", p)]])
    try:
        node = TrainerNode()
        node.destroy_node()
        return node.settings
    finally:
        rclpy.shutdown()


def test_trainer_node_takes_every_plain_setting_as_a_parameter_and_refuses_unknown_ones(tmp_path, monkeypatch):
    from snn_control.nodes.common import StartupError

    changed = {name: (not v if isinstance(v, bool) else v + 1 if isinstance(v, int) else v + 0.5)
               for name, v in finetune_mod.plain_settings().items()}
    assert {"window", "predictor_lr", "min_train_windows", "compile"} <= set(changed)  # names users set
    params = [f"{name}:={str(v).lower() if isinstance(v, bool) else v}" for name, v in changed.items()]
    settings = trainer_settings(tmp_path, monkeypatch, *params, "validation_env:=[hand_payload_kg=1.0]")
    assert settings == FinetuneSettings(**changed, env_overrides={"hand_payload_kg": 1.0})
    with pytest.raises(StartupError, match=r"unknown parameter\(s\) \['predictor_update'\]"):
        trainer_settings(tmp_path, monkeypatch, "predictor_update:=10")


def test_used_bags_are_remembered_across_restarts_and_a_corrupt_ledger_is_kept_aside(tmp_path):
    from snn_control.predictive.bag_ledger import BagLedger

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


# -- the gate: a candidate against the running model and the session's first model ----------

FIGURES = {"imagined_distance_m": 0.040, "predictor_error": 1.5, "final_distance_median_m": 0.030,
           "success_rate": 0.9}


def figures(**changes) -> dict:
    return {**FIGURES, **changes}


def passed(checks) -> dict:
    return {c["check"]: c["passed"] for c in checks}


@pytest.mark.parametrize("where", ["running", "session_start", "candidate", "loss"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_gate_rejects_a_non_finite_figure_or_loss_of_either_model(where, bad):
    models = {"running": figures(), "session_start": figures(), "candidate": figures()}
    losses = [0.3, 0.2]
    if where == "loss":
        losses.append(bad)
    else:
        models[where]["final_distance_median_m"] = bad
        models[where]["predictor_error"] = bad  # a figure no comparison covers counts too
    checks = gate(models["running"], models["session_start"], models["candidate"], losses, FinetuneSettings())
    assert not passed(checks)["non_finite_values"]
    if where != "loss":  # NaN in either reference or the candidate fails the comparison itself
        assert not passed(checks)["simulated_final_distance_median_m"]
    assert "FAILED" in verdict(checks)


def test_gate_rejects_a_candidate_better_than_the_running_model_but_worse_than_the_session_start():
    start, running = figures(final_distance_median_m=0.030), figures(final_distance_median_m=0.033)
    candidate = figures(final_distance_median_m=0.0332)  # 0.6 % better than running, 10.7 % worse than the start
    checks = gate(running, start, candidate, [0.1], FinetuneSettings(sim_tolerance=0.10))
    sim = next(c for c in checks if c["check"] == "simulated_final_distance_median_m")
    assert not sim["passed"] and sim["limit"] == pytest.approx(0.033)  # 10 % over the better reference
    assert (sim["before"], sim["session_start"], sim["after"]) == (0.033, 0.030, 0.0332)
    assert passed(checks) == {"heldout_imagined_distance_m": True, "simulated_final_distance_median_m": False,
                              "non_finite_values": True}
    reason = verdict(checks)
    assert "simulated median final distance" in reason and "+10.7%" in reason and "tolerance +10%" in reason


def test_rounds_each_a_little_worse_cannot_drift_from_the_session_start():
    """Each round 9 % worse than the one before passed a gate against the running model
    alone (1.09^n); against the session start too, the second such round fails."""
    settings, start = FinetuneSettings(sim_tolerance=0.10), figures()
    running, verdicts = start, []
    for _ in range(3):
        candidate = figures(final_distance_median_m=running["final_distance_median_m"] * 1.09)
        checks = gate(running, start, candidate, [0.1], settings)
        verdicts.append(all(c["passed"] for c in checks))
        if verdicts[-1]:
            running = candidate
    assert verdicts == [True, False, False]


def test_a_worse_candidate_within_tolerance_is_not_called_no_worse():
    candidate = figures(final_distance_median_m=0.030 * 1.09)
    checks = gate(figures(), figures(), candidate, [0.1], FinetuneSettings(sim_tolerance=0.10))
    reason = verdict(checks)
    assert all(c["passed"] for c in checks)
    assert "no worse" not in reason and "+9.0%" in reason and "tolerance +10%" in reason
    for check in checks:  # each check names itself and its figures
        assert set(check) == {"check", "before", "session_start", "after", "limit", "tolerance", "passed"}


def test_snapshot_is_chosen_on_other_goals_than_gate_it_and_the_session_start_is_measured_alike(
        payload_session, monkeypatch):
    bags, spec, _ = payload_session
    sessions = read_sessions(bags, spec, FAST["window"])
    scored, reaches = [], []

    class Spy(SimulatedReach):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            reaches.append(self)

        def score(self, policy, goal_set):
            scored.append(goal_set)
            return super().score(policy, goal_set)

    monkeypatch.setattr(finetune_mod, "SimulatedReach", Spy)
    settings = FinetuneSettings(**{**FAST, "policy_check_every": 1})
    report, _ = finetune(MODEL, sessions, settings, session_start_dir=BASE)
    # snapshots (one per policy update) on the selection goals; running, session start and candidate on the gate's
    assert scored == [SELECTION_SET] * FAST["policy_updates"] + [GATE_SET] * 3
    (sim,) = reaches
    select_goals, gate_goals = sim.tasks[SELECTION_SET][1], sim.tasks[GATE_SET][1]
    # the session start is measured the same way, on the same gate goals, as the others
    base_predictor, base_policy, _, config = load_model(BASE)
    reach = SimulatedReach(config, FAST["validation_episodes"], {}, goal_sets=[GATE_SET])
    try:
        assert report["simulation"]["session_start"] == reach.score(base_policy, GATE_SET)
        # the default 32 goals of each set: selection, gate and `snn-control eval`'s set 0 share none
        sets = [heldout_tasks(reach.env, FinetuneSettings().validation_episodes, k)[1]
                for k in (SELECTION_SET, GATE_SET, 0)]
    finally:
        reach.close()
    np.testing.assert_array_equal(select_goals, sets[0][:len(select_goals)])
    np.testing.assert_array_equal(gate_goals, sets[1][:len(gate_goals)])
    for a, b in [(sets[0], sets[1]), (sets[0], sets[2]), (sets[1], sets[2])]:
        assert np.abs(a[:, None] - b[None]).max(axis=-1).min() > 1e-3  # no goal shared
    assert report["session_start"] == BASE and report["heldout"]["session_start"] != report["heldout"]["running"]
    for check in report["checks"][:2]:  # the limit is set by the better of the two references
        assert check["limit"] == pytest.approx(min(check["before"], check["session_start"]) * (1 + check["tolerance"]))
        assert check["passed"] == (check["after"] <= check["limit"])
    assert report["accepted"] == all(c["passed"] for c in report["checks"])


# -- bags are used up only by a round that completes ------------------------------------------

def test_the_ledger_marks_bags_only_when_the_block_completes(tmp_path):
    ledger, bags = BagLedger(tmp_path), [tmp_path / "s_000", tmp_path / "s_001"]
    with pytest.raises(RuntimeError):
        with ledger.marking(bags):
            raise RuntimeError("crash mid-round")
    assert len(ledger) == 0 and len(BagLedger(tmp_path)) == 0
    with ledger.marking(bags):
        pass
    assert all(b in BagLedger(tmp_path) for b in bags)


def trainer_round(bags, tmp_path, monkeypatch, fake_finetune):
    """One round of the trainer node's worker, without ROS: ``fake_finetune`` stands in for
    :func:`finetune`. Returns the node's stand-in (its ledger, its reports)."""
    from snn_control.nodes.trainer import TrainerNode

    monkeypatch.setattr(finetune_mod, "finetune", fake_finetune)
    reports = []
    node = SimpleNamespace(
        checkpoint=MODEL, session_start="session/start", settings=FinetuneSettings(**FAST),
        params={"min_windows": 10}, used=BagLedger(tmp_path), rounds=0, _busy=threading.Lock(),
        output_dir=tmp_path / "versions", _progress=lambda *a: None, _hot_swap=lambda path: None,
        _report=lambda state, log=True, **fields: reports.append((state, fields)))
    node._busy.acquire()  # as _start_round leaves it
    TrainerNode._round(node, list(bags), False)
    assert not node._busy.locked()
    return node, reports


def test_a_round_that_crashes_leaves_its_bags_for_the_next(payload_session, tmp_path, monkeypatch):
    bags, _, _ = payload_session

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory mid-round")

    node, reports = trainer_round(bags, tmp_path, monkeypatch, crash)
    assert reports[-1][0] == "error" and "out of memory mid-round" in reports[-1][1]["message"]
    assert not any(b in node.used for b in bags) and len(BagLedger(tmp_path)) == 0


def test_a_rejected_round_uses_its_bags_up_and_is_gated_against_the_session_start(payload_session, tmp_path,
                                                                                 monkeypatch):
    bags, _, _ = payload_session
    calls = []

    def reject(model_dir, sessions, settings, progress, session_start_dir):
        calls.append((model_dir, session_start_dir))
        return {"accepted": False, "reason": "simulated median final distance ...: FAILED"}, None

    node, reports = trainer_round(bags, tmp_path, monkeypatch, reject)
    assert calls == [(MODEL, "session/start")]
    assert reports[-1][0] == "rejected" and all(b in BagLedger(tmp_path) for b in bags)
    assert not (tmp_path / "versions").exists()
