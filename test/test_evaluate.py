import json

import numpy as np
import pytest
import torch

from snn_control.classical import run_classical
from snn_control.envs import make_batch
from snn_control.training.evaluate import action_response, evaluate, heldout_tasks, policy_at_rest, reach_metrics

from test.conftest import ScriptedPolicy

CONTRACT = {"task", "episodes", "success_rate", "final_distance_median_m", "final_distance_p90_m",
            "parameters", "firing_rate_hz"}


def test_eval_json_contract(tiny_run):
    result = evaluate(tiny_run, episodes=8, seed=0)
    assert CONTRACT <= set(result)
    assert result["task"] == "reacher" and result["episodes"] == 8
    assert 0.0 <= result["success_rate"] <= 1.0
    assert result["final_distance_p90_m"] >= result["final_distance_median_m"] >= 0
    assert set(result["firing_rate_hz"]) == {"predictor.layer1", "predictor.layer2", "policy.layer1", "policy.layer2"}
    assert all(rate > 0 for rate in result["firing_rate_hz"].values())
    assert result["parameters"] == result["parameters_predictor"] + result["parameters_policy"]
    pred = result["predictor"]
    assert set(pred["one_step"]) == set(pred["open_loop_50"]) == {"model", "no_change", "linear"}
    response = pred["action_response"]
    assert response["pairs"] == 4 and len(response["ratio_median"]) == 2  # the reacher's 2 joints
    assert all(np.isfinite(response["ratio_median"])) and min(response["real_separation_median"]) > 0
    assert result["synaptic_ops_per_step"]["policy"]["spike_events"] > 0
    at_rest = result["policy_at_rest"]
    assert at_rest["steps"] == 100 and all(np.isfinite(v) and v >= 0 for v in at_rest.values())
    json.dumps({k: v for k, v in result.items() if not k.startswith("_")})  # serialisable


class _FrozenPredictor:
    """A model that predicts no motion at all: its action response must read 0."""

    def initial_state(self, batch, like):
        return None

    def step(self, obs, action, state):
        return obs, state


def test_action_response_separates_real_pushes_and_scores_a_frozen_model_zero():
    env = make_batch("reacher", 7)  # odd: the spare env runs along, unscored
    starts, goals = heldout_tasks(env, 7)
    response = action_response(env, _FrozenPredictor(), starts, goals, env.spec.effector)
    assert response["pairs"] == 3
    # +1 against -1 on either joint for 10 steps moves the real hand apart
    assert min(response["real_separation_median"]) > 0.05
    assert response["predicted_separation_median"] == [0.0, 0.0]
    assert response["ratio_median"] == [0.0, 0.0]
    assert action_response(make_batch("reacher", 1), _FrozenPredictor(), starts[:1], goals[:1],
                           env.spec.effector) is None


def test_policy_at_rest_measures_bias_and_fluctuation_at_a_still_goal_state():
    spec = make_batch("reacher", 1).spec
    final = np.random.default_rng(0).normal(size=(3, spec.obs_dim)).astype(np.float32)
    still = ScriptedPolicy(bias=0.0, swing=0.0)
    assert policy_at_rest(still, final, spec) == {"steps": 100, "action_rms": 0.0, "action_mean_abs": 0.0,
                                                   "action_std": 0.0, "action_change_per_step": 0.0}
    obs, goal = still.seen[0]
    velocity = [spec.obs_names.index("omega1"), spec.obs_names.index("omega2")]
    assert torch.all(obs[:, velocity] == 0) and torch.equal(goal, obs[:, slice(*spec.effector)])
    assert all(torch.equal(o, obs) for o, _ in still.seen)  # frozen: the same input every step
    m = policy_at_rest(ScriptedPolicy(bias=0.2, swing=0.1), final, spec)
    assert m["action_mean_abs"] == pytest.approx(0.2) and m["action_std"] == pytest.approx(0.1)
    assert m["action_change_per_step"] == pytest.approx(0.2)
    assert m["action_rms"] == pytest.approx(np.sqrt(0.2**2 + 0.1**2))


def test_heldout_goals_fixed_and_distinct_from_training():
    env = make_batch("reacher", 4)
    a = heldout_tasks(env, 4, seed=0)[1]
    b = heldout_tasks(env, 4, seed=0)[1]
    c = heldout_tasks(env, 4, seed=1)[1]
    train = env.sample_tasks(np.random.default_rng([0, 1]), 4)[1]  # trainer's stream for seed 0
    assert np.array_equal(a, b) and not np.allclose(a, c) and not np.allclose(a, train)
    # "the first N": a smaller request is a prefix of a larger one
    assert np.array_equal(heldout_tasks(env, 2)[1], a[:2])


def test_reach_metrics_by_hand():
    env = make_batch("reacher", 2)
    obs = np.zeros((2, 3, 8), dtype=np.float32)
    obs[0, :, 0] = [0.5, 0.04, 0.0]  # reaches goal (0, 0) at step 1
    obs[1, :, 0] = [0.5, 0.4, 0.3]  # never within 0.05
    m = reach_metrics(env, obs, np.zeros((2, 2)))
    assert m["success_rate"] == 0.5
    assert m["final_distance_median_m"] == pytest.approx(0.15)
    assert m["time_to_reach_median_s"] == pytest.approx(0.02)
    assert m["reached_at_least_once_rate"] == 0.5


def test_hold_metrics_tell_a_settled_arm_from_a_hovering_one():
    env = make_batch("reacher", 2)
    hold = round(1.0 / env.spec.control_period_s)  # steps in the last second
    obs = np.zeros((2, hold + 10, 8), dtype=np.float32)
    obs[:, :, 0] = 0.5  # far from goal (0, 0) first ...
    obs[0, -hold - 1:, 0] = 0.03  # ... then still, within the radius, for the whole last second
    obs[1, -hold - 1:, 0] = np.where(np.arange(hold + 1) % 2, 0.07, 0.03)  # in and out
    m = reach_metrics(env, obs, np.zeros((2, 2)))
    assert m["success_rate"] == 1.0  # the final sample alone cannot tell them apart ...
    assert m["held_last_1s_rate"] == 0.5  # ... the last second can
    assert m["last_1s_distance_range_median_m"] == pytest.approx(0.02)  # ranges 0 and 0.04
    assert m["last_1s_path_median_m"] == pytest.approx(hold * 0.04 / 2)  # paths 0 and 50 x 4 cm


def test_classical_reference_reaches_reacher_goals():
    env = make_batch("reacher", 32)
    starts, goals = heldout_tasks(env, 32)
    obs = run_classical(env, starts, goals)
    assert reach_metrics(env, obs, goals)["success_rate"] >= 0.9


def test_eval_with_a_changed_plant_records_it_and_refuses_unknown_keys(tmp_path, capsys):
    from snn_control.cli import main
    from snn_control.training.evaluate import evaluate as run_eval

    nominal = run_eval("models/panda_snn", 4)
    loaded = run_eval("models/panda_snn", 4, env_overrides={"hand_payload_kg": 1.0})
    assert loaded["env_overrides"] == {"hand_payload_kg": 1.0} and nominal["env_overrides"] == {}
    assert loaded["final_distance_mean_m"] != nominal["final_distance_mean_m"]  # the payload acts
    assert main(["eval", "models/panda_snn", "--episodes", "2", "--env", "payload=1",
                 "--out", str(tmp_path / "e.json")]) == 2
    assert "unknown panda env keys ['payload']" in capsys.readouterr().err


def test_robustness_suite_names_its_plants_and_keys():
    """The suite's JSON: every named plant with the five figures, their mean and the worst
    plant, and the classical reference through the same plants."""
    from snn_control.training.robustness import KEYS, PLANTS, robustness

    rob = robustness("models/panda_snn", 2)
    names = ["nominal", "payload_1kg", "friction_x2", "action_delay_2_steps", "joint_noise",
             "link_masses_plus_20pct", "wider_workspace"]
    assert list(rob["plants"]) == names == list(PLANTS)
    assert rob["plants"]["payload_1kg"]["hand_payload_kg"] == 1.0
    assert rob["plants"]["nominal"]["joint_friction"] == "gaz2019"  # every plant has the arm's friction
    for part in (rob, rob["classical"]):
        for name in names:
            assert set(part[name]) == set(KEYS) and 0.0 <= part[name]["success_rate"] <= 1.0
        assert set(part["mean"]) == set(KEYS)
        assert part["worst"]["plant"] in names
        assert part["worst"]["success_rate"] == min(part[n]["success_rate"] for n in names)
        assert part["mean"]["success_rate"] == pytest.approx(np.mean([part[n]["success_rate"] for n in names]))


def test_robustness_suite_is_for_the_panda():
    from snn_control.envs import EnvError
    from snn_control.training.robustness import robustness

    with pytest.raises(EnvError, match="Panda only"):
        robustness("models/reacher_snn", 2)


def test_plant_identification_study_reports_a_steady_error_per_joint():
    from studies.plant_identification import velocity_bias

    row = velocity_bias("models/panda_snn", "payload_1kg", 2)
    assert row["plant"] == "payload_1kg" and len(row["bias_per_joint"]) == 6
    assert np.isfinite(row["bias_per_joint"]).all() and 0 < row["bias_rms"] <= row["error_rms"]


def test_suite_misses_study_lists_each_goal_it_misses():
    from studies.suite_misses import misses

    out = misses("models/panda_snn", "link_masses_plus_20pct", 2, radius=0.0)  # every goal a miss
    assert out["misses"] == 2 and len(out["rows"]) == 2
    row = out["rows"][0]
    assert row["closest_m"] <= row["start_m"] and len(row["saturated_last_1s"]) == 6
    assert out["rows"][0]["each_second_m"][-1] >= out["rows"][1]["each_second_m"][-1]  # worst first


def test_hover_study_tells_an_approach_from_a_wander():
    from studies.hover import approach

    steps = np.arange(51)[:, None] * np.array([0.001, 0.0, 0.0])  # 1 mm per step along x
    wander = (np.arange(51) % 2)[:, None] * np.array([0.001, 0.0, 0.0])  # 1 mm there and back
    net, path = approach(np.stack([steps, wander]))
    assert net[0] == pytest.approx(0.05) and path[0] == pytest.approx(0.05)  # all approach
    assert net[1] == 0.0 and path[1] == pytest.approx(0.05)  # the same path, leading nowhere


def test_hover_study_low_passes_the_policy_and_reports_the_last_second():
    from studies.hover import last_second

    plain, calm = (last_second("models/panda_snn", "nominal", 2, alpha) for alpha in (0.0, 0.9))
    assert plain["alpha"] == 0.0 and len(plain["joint_velocity_rms_last_1s"]) == len(plain["action_std_last_1s"]) == 6
    assert 0.0 <= plain["effector_motion_below_2hz"] <= 1.0 and plain["last_1s_path_median_m"] > 0.0
    assert 0.0 <= plain["last_1s_approach_share_median"] <= 1.0
    assert plain["last_1s_net_displacement_median_m"] <= plain["last_1s_path_median_m"] + 1e-4
    # the filter reaches the rollout (how much it calms the closed loop depends on the
    # controller: a stiffer policy behind a lagging filter swings more; the filter itself is
    # checked on its own below)
    assert calm["alpha"] == 0.9 and calm["action_change_per_step_last_1s"] != plain["action_change_per_step_last_1s"]
    undamped, damped = (last_second("models/panda_snn", "nominal", 2, 0.0, d) for d in (0.0, 2.0))
    assert undamped["damping"] == 0.0 and damped["damping"] == 2.0  # in place of the model's own
    assert damped["joint_velocity_rms_last_1s"] != undamped["joint_velocity_rms_last_1s"]


def test_hover_study_low_pass_cuts_the_change_per_step_of_any_policy():
    from studies.hover import LowPassed

    class Alternating:  # +1, -1, +1, ...: the largest change per step a policy can make
        def initial_state(self, n, goal):
            return 0

        def step(self, obs, goal, state):
            return torch.full((1, 2), (-1.0) ** state), None, state + 1

    for alpha in (0.0, 0.9):
        policy, actions = LowPassed(Alternating(), alpha), []
        state = policy.initial_state(1, None)
        for _ in range(20):
            action, _, state = policy.step(None, None, state)
            actions.append(action)
        change = torch.stack(actions).diff(dim=0).abs().max()
        assert float(actions[0][0, 0]) == 1.0  # the first step as the policy gives it
        # a_t = alpha a_(t-1) + (1 - alpha) p_t changes by at most (1 - alpha) |p_t - a_(t-1)| <= 2 (1 - alpha)
        assert float(change) == pytest.approx(2.0) if alpha == 0.0 else float(change) <= 2 * (1 - alpha) + 1e-6


def test_hover_study_runs_the_policy_with_other_substeps_and_readout():
    from studies.hover import last_second

    own = last_second("models/panda_snn_hold", "nominal", 2, 0.0)
    slow = last_second("models/panda_snn_hold", "nominal", 2, 0.0, substeps=8, readout_ms=20.0)
    assert (own["substeps"], own["readout_ms"]) == (2, 5.0) and (slow["substeps"], slow["readout_ms"]) == (8, 20.0)
    assert len(own["action_std_frozen_input"]) == 6
    # more spikes per torque, averaged longer: the torque wanders less, input frozen or not
    assert np.mean(slow["action_std_frozen_input"]) < 0.7 * np.mean(own["action_std_frozen_input"])
    assert slow["action_change_per_step_last_1s"] < 0.7 * own["action_change_per_step_last_1s"]
