import pytest

from snn_control import config as C


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load():
    for name in ("reacher_snn", "panda_snn_base", "panda_snn", "panda_gru"):
        cfg = C.load(f"config/{name}.yaml")
        assert cfg.task in ("reacher", "panda")


def test_every_training_config_in_the_repository_loads():
    """The experiment configs the docs name (config/*.yaml with a task) stay valid as the code moves."""
    from pathlib import Path

    import yaml

    tasks = {p: (yaml.safe_load(p.read_text()) or {}).get("task") for p in sorted(Path("config").glob("*.yaml"))}
    tasks = {p: task for p, task in tasks.items() if task}
    assert len(tasks) >= 15 and Path("config/panda_snn_damped.yaml") in tasks
    for path, task in tasks.items():
        assert C.load(path).task == task, path  # a config that no longer validates raises here


def test_td3_configs_load_and_panda_td3_flies_the_panda_snn_env():
    for name in ("reacher_td3", "panda_td3"):
        assert C.load(f"config/{name}.yaml").algorithm == "td3"
    # the Panda TD3 actor is compared with panda_snn on the same held-out goals: same arm
    assert C.load("config/panda_td3.yaml").env == C.load("config/panda_snn.yaml").env


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, "task: reacher\nmodel:\n  hiden: 12\n")
    with pytest.raises(C.ConfigError, match=r"cfg.yaml.model: unknown key\(s\) \['hiden'\]"):
        C.load(path)


def test_unknown_env_key_is_named(tmp_path):
    path = _write(tmp_path, "task: panda\nenv:\n  gravity: false\n")
    with pytest.raises(C.ConfigError, match=r"env: unknown key\(s\) \['gravity'\]"):
        C.load(path)


@pytest.mark.parametrize("text, match", [
    ("model:\n  hidden: many\n", r"model.hidden: expected an integer, got 'many'"),
    ("train:\n  lr: fast\n", r"train.lr: expected a number"),
    ("model:\n  learn_tau: 1\n", r"model.learn_tau: expected true/false"),
    ("model:\n  hidden: 1.5\n", r"model.hidden: expected an integer"),
    ("task: walker\n", r"task: unknown task 'walker'"),
    ("train:\n  teacher_forcing: 2\n", r"teacher_forcing: must lie in \[0, 1\]"),
    ("model:\n  kind: gru\n  policy_recurrent: true\n", r"model.policy_recurrent: for a spiking policy"),
    ("model:\n  kind: gru\n  policy_fine_error_m: 0.05\n", r"model.policy_fine_error_m: for a spiking policy"),
    ("model:\n  policy_fine_error_m: -1\n", r"model.policy_fine_error_m: must be >= 0"),
    ("model:\n  goal_integral_radius_m: -0.1\n", r"goal_integral_radius_m and goal_integral_closing_m_s must be >= 0"),
    ("model:\n  goal_integral_gain: 1.0\n  goal_integral_closing_m_s: -0.1\n", r"goal_integral_closing_m_s must be >= 0"),
    ("model:\n  goal_integral_closing_m_s: 0.03\n", r"goal_integral_closing_m_s: gates the integral action, which is off"),
    ("model:\n  action_damping: -0.5\n", r"model.action_damping: must be >= 0"),
    ("model:\n  kind: gru\n  action_damping: 0.5\n", r"model.action_damping: for a spiking policy"),
    ("train:\n  settle_radius_m: 0\n", r"train: settle must be >= 0 \(0: off\) and settle_radius_m > 0"),
    ("train:\n  real_rest: -1\n", r"train: real_rest must be >= 0 \(0: off\) and real_rest_radius_m > 0"),
])
def test_wrong_types_and_values(tmp_path, text, match):
    with pytest.raises(C.ConfigError, match=match):
        C.load(_write(tmp_path, text))


def test_overrides_and_null_rank(tmp_path):
    path = _write(tmp_path, "task: reacher\nmodel:\n  rank: 16\n")
    cfg = C.load(path, ["train.iterations=3", "model.rank=null", "env.observe_velocity=false"])
    assert cfg.train.iterations == 3 and cfg.model.rank is None and not cfg.env.observe_velocity
    with pytest.raises(C.ConfigError, match="expected KEY=VALUE"):
        C.load(path, ["train.iterations"])
    with pytest.raises(C.ConfigError, match=r"unknown key\(s\) \['iters'\]"):
        C.load(path, ["train.iters=3"])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(C.ConfigError, match="no such config file"):
        C.load(tmp_path / "nope.yaml")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(_write(tmp_path, "task: [unclosed\n"))
