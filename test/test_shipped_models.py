"""The controllers in models/: loadable, their eval.json honours the contract and agrees
with the weights, and `snn-control demo` runs one in the closed loop."""

import dataclasses
import json
from pathlib import Path

import pytest

from snn_control import config as C
from snn_control.cli import main
from snn_control.models import parameter_count
from snn_control.models.checkpoint import load_model
from snn_control.training.evaluate import HELDOUT_EPISODES

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = ["reacher_snn", "panda_snn_base", "panda_snn_hold", "panda_snn", "panda_gru"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_and_its_eval_json(name):
    model_dir = MODELS / name
    predictor, policy, spec, config = load_model(model_dir)
    shipped_config = C.load(Path("config") / f"{name}.yaml")
    # trained by the config of the same name (threads is a run-time setting only); the integral
    # action and damping of panda_snn (and of panda_snn_hold, shipped before it), which have no
    # weights, were added after their training (docs/training.md)
    model = config.model
    added = {"panda_snn": (1.0, 1.0, 0.1, 0.1, 0.03), "panda_snn_hold": (2.0, 1.0, 0.1, 0.1, 0.0)}
    if name in added:  # gain, leak, bound, radius, closing speed
        integral = (model.goal_integral_gain, model.goal_integral_tau_s, model.goal_integral_limit_m,
                    model.goal_integral_radius_m, model.goal_integral_closing_m_s)
        assert integral == added[name] and model.action_damping == 0.5
        assert policy.action_damping is not None and policy.action_damping.velocity == (6, 12)
        assert policy.goal_integral.closing_m_s == added[name][4]
        model = dataclasses.replace(model, goal_integral_gain=0.0, goal_integral_radius_m=0.0,
                                    goal_integral_closing_m_s=0.0, action_damping=0.0)
    assert model == shipped_config.model and config.env == shipped_config.env
    assert config.train.iterations == shipped_config.train.iterations
    assert config.train.init_from == shipped_config.train.init_from  # a fine-tune names where it started
    result = json.loads((model_dir / "eval.json").read_text())
    assert result["task"] == spec.task == config.task
    assert result["episodes"] == HELDOUT_EPISODES[spec.task]  # the full held-out set
    assert result["parameters"] == parameter_count(predictor) + parameter_count(policy)
    for key in ("success_rate", "final_distance_median_m", "final_distance_p90_m", "firing_rate_hz",
                "held_last_1s_rate", "last_1s_distance_range_median_m", "last_1s_path_median_m"):
        assert key in result
    if spec.task == "panda":
        assert "success_rate_2cm" in result
    if config.model.kind == "snn":
        assert len(result["firing_rate_hz"]) == 4


def test_shipped_td3_reacher_and_its_eval_json():
    predictor, policy, spec, config = load_model(MODELS / "reacher_td3")
    assert predictor is None and config.algorithm == "td3" and spec.task == "reacher"
    shipped_config = C.load(Path("config") / "reacher_td3.yaml")
    assert config.rl == shipped_config.rl and config.env == shipped_config.env  # seed aside
    result = json.loads((MODELS / "reacher_td3" / "eval.json").read_text())
    assert result["algorithm"] == "td3" and result["predictor"] is None
    assert result["episodes"] == HELDOUT_EPISODES["reacher"] and result["parameters"] == parameter_count(policy)
    assert sorted(result["firing_rate_hz"]) == ["policy.layer1", "policy.layer2", "policy.layer3"]
    # the checkpoint the trainer kept as its best validation, at the step best.json names
    best = json.loads((MODELS / "reacher_td3" / "best.json").read_text())
    rows = [json.loads(line) for line in (MODELS / "reacher_td3" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == best["env_steps"]
    assert rows[-1]["validation/success_rate"] == best["validation/success_rate"]


def test_panda_snn_uses_at_most_a_fifth_of_the_gru_parameters():
    snn = json.loads((MODELS / "panda_snn" / "eval.json").read_text())["parameters"]
    gru = json.loads((MODELS / "panda_gru" / "eval.json").read_text())["parameters"]
    assert 5 * snn <= gru


def test_demo_runs_closed_loop_and_prints_each_goal(capsys):
    code = main(["demo", str(MODELS / "panda_snn"), "--goals", "2"])
    out = capsys.readouterr().out
    assert out.count("goal 1/2") == 1 and out.count("goal 2/2") == 1
    assert "goals reached" in out
    assert code in (0, 1)  # 0 only when every goal was reached


def test_reacher_demo_reaches_its_goals(capsys):
    assert main(["demo", str(MODELS / "reacher_snn"), "--goals", "3"]) == 0
    assert "3/3 goals reached" in capsys.readouterr().out
