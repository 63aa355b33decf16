"""Model-free spiking RL parts (snn_control.rl): population code, slope and guide
schedules against their formulas, TD3's target smoothing and delayed updates, the proxy
target's imitation, and a short TD3 run on the reacher whose critic loss falls."""

import json
import math

import numpy as np
import pytest
import torch

from snn_control.rl.guide import GuideSchedule
from snn_control.models.actors import MLPActor, SpikingActor
from snn_control.models.population import PopulationDecoder, PopulationEncoder
from snn_control.rl.slopes import AdaptiveSlope, FixedSlope, ScheduledSlope, make_slope_schedule
from snn_control.config import RLConfig
from snn_control.rl.td3 import TD3, TransitionReplay


def test_population_code_round_trip():
    enc = PopulationEncoder(3, pop=10)
    x = torch.tensor([[-0.8, 0.0, 0.55], [0.3, -0.25, 0.9]])
    a = enc(x)
    assert a.shape == (2, 30) and torch.all((a > 0) & (a <= 1))
    # centre of mass of the receptive fields: close inside the range, a little pulled in at its ends
    grid = torch.linspace(-1, 1, 41)[:, None].repeat(1, 3)
    error = (enc.decode(enc(grid)) - grid).abs()
    assert error[5:-5].max() < 0.01 and error.max() < 0.04
    # the neuron whose centre is nearest the value responds most
    assert int(a[0, :10].argmax()) == int(torch.argmin((enc.centres[0] - x[0, 0]).abs()))
    dec = PopulationDecoder(2, pop=10)
    rates = torch.zeros(1, 20)
    rates[0, 3] = 1.0
    assert torch.allclose(dec(rates), dec.weight[:, 3] * torch.tensor([1.0, 0.0]) + dec.bias)


def test_slope_schedules_follow_their_formulas():
    assert FixedSlope(100.0).value(12345) == 100.0
    s = ScheduledSlope(k0=2.0, k1=100.0, steps=1000)
    for t in (0, 250, 500, 1000, 5000):
        assert s.value(t) == pytest.approx(2.0 * 50.0 ** min(1.0, t / 1000))
    a = AdaptiveSlope(k0=2.0, k1=100.0, return_low=-100.0, return_high=0.0, smoothing=0.5)
    assert a.value(0) == 2.0  # no returns yet: shallow
    a.observe_return(-50.0)
    assert a.value(0) == pytest.approx(2.0 * 50.0**0.5)
    a.observe_return(10.0)  # average (-50 + 10) / 2 = -20 -> progress 0.8
    assert a.value(0) == pytest.approx(2.0 * 50.0**0.8)
    with pytest.raises(ValueError, match="unknown slope schedule"):
        make_slope_schedule("cosine", 1, 1, 1, 1, 0, 1)


def test_slope_reaches_the_actor_surrogate_derivative():
    actor = SpikingActor(4, 2, hidden=(16, 16), pop=4)
    actor.set_slope(7.0)
    v = torch.tensor([0.0, 0.1, -0.3])
    assert all(layer.surrogate.slope == 7.0 for layer in actor.layers)
    assert torch.allclose(actor.layers[1].surrogate.derivative(v), 1.0 / (1.0 + 7.0 * v.abs()) ** 2)


def test_guide_share_shrinks_linearly_to_zero():
    g = GuideSchedule(share0=0.5, decay_steps=10_000)
    assert [g.share(t) for t in (0, 5_000, 10_000, 20_000)] == pytest.approx([0.5, 0.25, 0.0, 0.0])
    assert g.guided_steps(5_000, 200) == 50


def _agent(target="proxy", delay=2):
    torch.manual_seed(0)
    actor = SpikingActor(5, 2, hidden=(32, 32), pop=4)
    return TD3(actor, 5, 2, RLConfig(target=target, policy_delay=delay, proxy_hidden=[64, 64], batch=32),
               critic_hidden=(32, 32))


def _batch(n=32, obs_dim=5, act_dim=2):
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.rand(n, obs_dim, generator=g) * 2 - 1, "actions": torch.rand(n, act_dim, generator=g) * 2 - 1,
            "rewards": torch.rand(n, generator=g), "next_obs": torch.rand(n, obs_dim, generator=g) * 2 - 1,
            "dones": torch.zeros(n), "guide_actions": torch.full((n, act_dim), float("nan"))}


def test_target_action_is_smoothed_within_the_noise_clip():
    agent = _agent()
    obs = torch.rand(2000, 5) * 2 - 1
    clean = agent.actor_target(obs).detach()
    smoothed = agent.target_action(obs)
    diff = smoothed - clean
    assert torch.all(smoothed.abs() <= 1.0)
    inside = clean.abs() < 1.0 - agent.s.noise_clip  # no clipping to [-1, 1] there
    assert diff[inside].abs().max() <= agent.s.noise_clip + 1e-6
    assert diff[inside].std() == pytest.approx(0.2, rel=0.15)  # clipped N(0, 0.2)


def test_actor_and_targets_update_only_every_policy_delay():
    agent = _agent(delay=3)
    actor0 = [p.clone() for p in agent.actor.parameters()]
    target0 = [p.clone() for p in agent.actor_target.parameters()]
    critic_target0 = [p.clone() for p in agent.critic_target.parameters()]
    for k in range(1, 4):
        out = agent.update(_batch())
        changed = any(not torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
        assert changed == (k == 3) and ("actor_loss" in out) == (k == 3)
    assert any(not torch.equal(a, b) for a, b in zip(target0, agent.actor_target.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic_target0, agent.critic_target.parameters()))


def test_polyak_target_copies_the_spiking_actor():
    agent = _agent(target="polyak")
    assert agent.proxy is None and isinstance(agent.actor_target, SpikingActor)


def test_proxy_imitation_loss_falls_on_a_fixed_actor():
    agent = _agent()
    states = torch.rand(256, 5) * 2 - 1
    losses = [agent.proxy_step(states) for _ in range(150)]
    assert losses[-1] < 0.3 * losses[0]
    assert isinstance(agent.proxy, MLPActor)


def test_replay_refuses_non_finite_transitions():
    replay = TransitionReplay(10, 3, 1)
    good = dict(obs=np.zeros((2, 3)), actions=np.zeros((2, 1)), rewards=np.zeros(2), next_obs=np.zeros((2, 3)),
                dones=np.zeros(2))
    replay.add(**good)
    with pytest.raises(ValueError, match="non-finite rewards"):
        replay.add(**{**good, "rewards": np.array([0.0, math.nan])})
    with pytest.raises(ValueError, match="non-finite observations"):
        replay.add(**{**good, "obs": np.full((2, 3), np.inf)})
    assert replay.size == 2


def test_short_td3_run_on_the_reacher_critic_loss_falls(tmp_path):
    from snn_control import config as C
    from snn_control.models import parameter_count
    from snn_control.models.checkpoint import load_model
    from snn_control.training.evaluate import evaluate, write_eval
    from snn_control.rl.trainer import RLTrainer

    cfg = C.load("config/reacher_td3.yaml", [
        "rl.total_steps=3200", "rl.envs=4", "rl.start_steps=400", "rl.updates_per_step=0.5", "rl.batch=64",
        "rl.hidden=[32, 32]", "rl.pop=4", "rl.proxy_hidden=[32, 32]", "rl.eval_every=3200",
        "rl.eval_episodes=4", "rl.guide_share=0.5", "rl.guide_decay_steps=1600", "rl.bc_weight=0.5",
        "rl.slope_schedule=scheduled", "rl.goal_error=false"])
    trainer = RLTrainer(cfg, tmp_path)
    trainer.fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    critic = [r["losses/critic_loss"] for r in rows if "losses/critic_loss" in r]
    assert len(critic) >= 3 and critic[-1] < critic[0]
    assert all(np.isfinite(r["charts/episode_return"]) for r in rows)
    assert rows[0]["charts/guide_share"] > rows[-1]["charts/guide_share"] == 0.0
    assert "validation/success_rate" in rows[-1]
    predictor, policy, spec, _ = load_model(tmp_path)  # a model directory like predictive control's
    assert predictor is None and spec.task == "reacher" and spec.substeps == 5
    x = torch.rand(16, trainer.obs_dim) * 2 - 1
    with torch.no_grad():
        assert torch.equal(policy.actor(x), trainer.actor.eval()(x))
    # ... and snn-control eval evaluates it on the held-out goals with the same JSON keys
    result = evaluate(tmp_path, episodes=8)
    write_eval(result, tmp_path / "eval.json")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["algorithm"] == "td3" and saved["episodes"] == 8 and saved["predictor"] is None
    assert 0.0 <= saved["success_rate"] <= 1.0 and saved["parameters"] == parameter_count(policy)
    assert sorted(saved["firing_rate_hz"]) == ["policy.layer1", "policy.layer2", "policy.layer3"]
    assert all(0 <= r <= 1000 for r in saved["firing_rate_hz"].values())
    assert sum(saved["firing_rate_hz"].values()) > 0 and saved["synaptic_ops_per_step"]["policy"]["spike_events"] > 0
    slopes = [r["charts/slope"] for r in rows]
    assert slopes == sorted(slopes) and slopes[-1] > slopes[0]  # scheduled: shallow -> steep


def test_goal_error_actor_sees_goal_minus_effector_and_best_checkpoint_is_kept(tmp_path):
    from snn_control import config as C
    from snn_control.models.checkpoint import load_model
    from snn_control.rl.trainer import RLTrainer

    cfg = C.load("config/reacher_td3.yaml", [
        "rl.total_steps=1600", "rl.envs=4", "rl.start_steps=400", "rl.updates_per_step=0.25", "rl.batch=32",
        "rl.hidden=[16, 16]", "rl.pop=4", "rl.proxy_hidden=[16, 16]", "rl.eval_every=800",
        "rl.eval_episodes=4", "rl.goal_error=true"])
    trainer = RLTrainer(cfg, tmp_path)
    (tmp_path / "best").mkdir()  # a stale best/ from an earlier run in this directory is dropped
    (tmp_path / "best" / "best.json").write_text(json.dumps({"score": [2.0, 0.0]}))
    trainer.fit(progress=False)
    replay = trainer.replay
    a, b = trainer.env.spec.effector
    obs_dim = trainer.env.spec.obs_dim
    # the replay's goal columns hold goal minus effector: the next observation's goal columns
    # plus its effector are the same goal for every step of an episode
    goal_next = replay.next_obs[:replay.size, obs_dim:] + replay.next_obs[:replay.size, a:b]
    goal_now = replay.obs[:replay.size, obs_dim:] + replay.obs[:replay.size, a:b]
    np.testing.assert_allclose(goal_next, goal_now, atol=1e-5)
    assert np.abs(replay.obs[:replay.size, obs_dim:] - goal_now).max() > 0.01  # not the raw goal

    _, policy, spec, _ = load_model(tmp_path)
    assert policy.goal_error == (a, b)
    obs, goal = torch.rand(8, obs_dim) * 2 - 1, torch.rand(8, 2) * 2 - 1
    with torch.no_grad():
        action, _, _ = policy.step(obs, goal, None)
        wanted = trainer.actor.eval()(torch.cat([obs, goal - obs[:, a:b]], -1))
    assert torch.equal(action, wanted)

    record = json.loads((tmp_path / "best" / "best.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validated = [r for r in rows if "validation/success_rate" in r]
    assert len(validated) == 2 and record["score"][0] <= 1.0
    best_row = max(validated, key=lambda r: (r["validation/success_rate"], -r["validation/final_distance_median"]))
    assert record["env_steps"] == min(r["env_steps"] for r in validated if
                                      (r["validation/success_rate"], r["validation/final_distance_median"]) ==
                                      (best_row["validation/success_rate"], best_row["validation/final_distance_median"]))
    load_model(tmp_path / "best")  # a model directory of its own
    from studies.rl_experiments import evaluate_held_out

    held = evaluate_held_out(tmp_path)  # an experiment evaluates the best checkpoint, and says so
    assert held["checkpoint"] == f"best validation, env step {record['env_steps']}" and held["episodes"] == 256


def test_rl_config_errors_name_the_key():
    from snn_control import config as C

    with pytest.raises(C.ConfigError, match="unknown key"):
        C.load("config/reacher_td3.yaml", ["rl.learning_rate=0.1"])
    with pytest.raises(C.ConfigError, match="rl.target"):
        C.load("config/reacher_td3.yaml", ["rl.target=copy"])
    with pytest.raises(C.ConfigError, match="rl.updates_per_step"):
        C.load("config/idp_td3.yaml", ["rl.updates_per_step=0"])


def test_a_guide_that_does_not_fit_the_env_is_refused(tmp_path):
    from snn_control import config as C
    from snn_control.rl.trainer import GuideError, RLTrainer

    cfg = C.load("config/reacher_td3.yaml", ["rl.hidden=[8, 8]", "rl.pop=2", "rl.guide_share=0.5",
                                             "rl.guide_decay_steps=100"])
    trainer = RLTrainer(cfg, tmp_path)
    trainer.guide.act = lambda obs, goals: np.zeros((len(obs), 5))  # a guide for another arm
    with pytest.raises(GuideError, match=r"the env takes \(8, 2\)"):
        trainer.episode()


def test_short_td3_run_on_the_inverted_double_pendulum(tmp_path):
    """The gymnasium (MuJoCo) path: observation standardisation fitted on the random
    steps, evaluations logged with their running best, the actor saved with it."""
    from snn_control import config as C
    from snn_control.rl.gym_trainer import GymTD3Trainer

    cfg = C.load("config/idp_td3.yaml", [
        "rl.total_steps=900", "rl.start_steps=300", "rl.batch=32", "rl.hidden=[16, 16]", "rl.pop=4",
        "rl.proxy_hidden=[16, 16]", "rl.eval_every=300", "rl.eval_episodes=2"])
    trainer = GymTD3Trainer(cfg, tmp_path)
    trainer.fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [300, 600, 900]
    returns = [r["eval/return_mean"] for r in rows]
    assert all(r > 0 for r in returns)  # the pendulum pays ~9 per step alive
    assert [r["eval/max_average_return"] for r in rows] == list(np.maximum.accumulate(returns))
    assert "losses/proxy_loss" in rows[-1] and "losses/critic_loss" in rows[-1]
    saved = torch.load(tmp_path / "actor.pt", weights_only=True)
    assert saved["obs_std"].shape == (9,) and not torch.allclose(saved["obs_std"], torch.ones(9))
    # standardised with the random steps' statistics, clipped at +-5
    x = trainer.replay.obs[:300]
    z = trainer.scaler(x)
    expected = np.clip((x - x.mean(0)) / np.maximum(x.std(0), 1e-3), -5, 5)
    assert np.allclose(z, expected, atol=1e-4) and np.abs(z).max() <= 5.0
    assert torch.allclose(trainer.scaler(torch.as_tensor(x)), torch.as_tensor(expected), atol=1e-4)


def test_gym_task_errors_are_clear(tmp_path):
    from snn_control import config as C
    from snn_control.envs import EnvError
    from snn_control.rl.gym_trainer import GymTD3Trainer
    from snn_control.rl.trainer import GuideError

    with pytest.raises(C.ConfigError, match="'gym' is trained with 'td3' only"):
        C.load("config/idp_td3.yaml", ["algorithm=predictive"])
    with pytest.raises(C.ConfigError, match="unknown key"):
        C.load("config/idp_td3.yaml", ["env.id=CartPole-v1"])
    with pytest.raises(EnvError, match="NoSuchTask-v0"):
        GymTD3Trainer(C.load("config/idp_td3.yaml", ["env.env_id=NoSuchTask-v0"]), tmp_path)
    with pytest.raises(EnvError, match="bounded Box"):
        GymTD3Trainer(C.load("config/idp_td3.yaml", ["env.env_id=CartPole-v1"]), tmp_path)
    with pytest.raises(GuideError, match="no classical guide"):
        GymTD3Trainer(C.load("config/idp_td3.yaml", ["rl.guide_share=0.3"]), tmp_path)


def test_experiment_summary_and_table(tmp_path):
    """Mean and std over seeds of each run's best evaluation, and the docs table between
    its markers, from run directories (no training here)."""
    from studies import rl_experiments as X

    exp = X.EXPERIMENTS["idp"]
    curves = {"ann": [[10, 20], [30, 10]], "polyak_lif": [[5, 50], [60, 40]], "proxy_lif": [[90, 80], [70, 95]]}
    for name, per_seed in curves.items():
        for seed, values in enumerate(per_seed):
            run = tmp_path / "runs" / "idp" / f"{name}_seed{seed}"
            run.mkdir(parents=True)
            run.joinpath("metrics.jsonl").write_text("".join(
                json.dumps({"env_steps": 100 * (i + 1), "eval/return_mean": v, "time/elapsed_s": 60.0 * (i + 1)})
                + "\n" for i, v in enumerate(values)))
    results = X.summarise(exp, 2, tmp_path / "runs", 600.0, "snn-control rl-experiment idp --seeds 2")
    assert results["variants"]["ann"]["mean"] == pytest.approx(25.0)  # best per seed: 20, 30
    assert results["variants"]["ann"]["std"] == pytest.approx(5.0)
    assert results["variants"]["proxy_lif"]["mean"] == pytest.approx(92.5)
    assert results["wall_s"] == pytest.approx(6 * 120.0 / 2)  # six runs of 2 min, two at a time
    assert results["runs_total"] == 6 and results["runs_in_invocation"] == 0
    assert X.experiment_wall(results) == "6 min estimated (sum of run times / 2 workers)"
    whole = X.summarise(exp, 2, tmp_path / "runs", 600.0, "snn-control rl-experiment idp --seeds 2", 2, 6)
    assert X.experiment_wall(whole) == "10 min measured, one invocation, 2 runs at a time"
    docs = tmp_path / "rl.md"
    docs.write_text(f"intro\n{X.TABLE_BEGIN}\nold\n{X.TABLE_END}\noutro\n")
    X.write_results(exp, results, tmp_path / "results", docs)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["idp_proxy_lif_return_mean"] == pytest.approx(92.5) and summary["idp_seeds"] == 2
    text = docs.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "SNN TD3, proxy target (LIF) | 2 | max average return 92.5 ± 2.5 | 90.0, 95.0 |" in text
    assert (tmp_path / "results" / "idp_curves.png").stat().st_size > 10_000
    docs.write_text("no markers")
    with pytest.raises(ValueError, match="no table markers"):
        X.update_docs_table(docs, tmp_path / "results")


def test_reach_experiment_reports_held_out_success_beside_predictive_control(tmp_path):
    from studies import rl_experiments as X

    exp = X.EXPERIMENTS["reacher"]
    success = {"td3_proxy": [0.5, 0.7], "td3_proxy_guided": [0.9, 0.95]}
    for name, per_seed in success.items():
        for seed, rate in enumerate(per_seed):
            run = tmp_path / "reacher" / f"{name}_seed{seed}"
            run.mkdir(parents=True)
            run.joinpath("metrics.jsonl").write_text(json.dumps(
                {"env_steps": 1000, "validation/success_rate": rate - 0.1, "time/elapsed_s": 120.0}) + "\n")
            run.joinpath("heldout.json").write_text(json.dumps(
                {"episodes": 256, "success_rate": rate, "final_distance_median_m": 0.03,
                 "final_distance_p90_m": 0.1, "parameters": 1234}))
    results = X.summarise(exp, 2, tmp_path, 60.0, "cmd")
    assert results["variants"]["td3_proxy"]["heldout_success_mean"] == pytest.approx(0.6)
    assert results["variants"]["td3_proxy_guided"]["heldout_success_best"] == pytest.approx(0.95)
    assert results["reference"]["model"] == "models/reacher_snn" and results["reference"]["env_steps"] > 0
    X.write_results(exp, results, tmp_path / "results", None)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["reacher_best_rl_snn_success_rate"] == pytest.approx(0.95)  # the best variant's best run
    table = X.rl_table(tmp_path / "results")
    assert "| reacher | SNN TD3, proxy + guide (jump-start, BC), fixed k=5 | 92.5% ± 2.5%; 95.0% |" in table
    assert "| reacher | predictive control, `models/reacher_snn` (shipped) | 95.3% |" in table


def test_slope_study_reports_transitions_to_the_threshold(tmp_path):
    from studies import rl_experiments as X

    exp = X.EXPERIMENTS["slopes"]
    curves = {"k100": [[0.1, 0.2], [0.3, 0.4]], "k2": [[0.4, 0.6], [0.5, 0.7]],  # k100 never reaches 0.5
              "scheduled": [[0.6, 0.8], [0.2, 0.55]], "adaptive": [[0.1, 0.5], [0.5, 0.9]]}
    for name, per_seed in curves.items():
        for seed, rates in enumerate(per_seed):
            run = tmp_path / "slopes" / f"{name}_seed{seed}"
            run.mkdir(parents=True)
            run.joinpath("metrics.jsonl").write_text("".join(json.dumps(
                {"env_steps": 3200 * (i + 1), "validation/success_rate": r, "time/elapsed_s": 60.0 * (i + 1)}) + "\n"
                for i, r in enumerate(rates)))
    results = X.summarise(exp, 2, tmp_path, 60.0, "cmd")
    v = results["variants"]
    assert v["k100"]["threshold_reached"] == 0 and v["k100"]["steps_to_threshold_mean"] is None
    assert v["k2"]["steps_to_threshold_mean"] == pytest.approx((6400 + 3200) / 2)  # 0.5 counts as reached
    assert v["scheduled"]["runs"][1]["steps_to_threshold"] == 6400
    assert v["adaptive"]["runs"][0]["wall_s_to_threshold"] == pytest.approx(120.0)
    X.write_results(exp, results, tmp_path / "results", None)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["slopes_k2_steps_to_half_success_mean"] == pytest.approx(4800.0)
    assert summary["slopes_k100_steps_to_half_success_mean"] is None
    (tmp_path / "results" / "imitation.json").write_text(json.dumps({"results": []}))  # not an experiment
    table = X.rl_table(tmp_path / "results")
    assert "| slopes | fixed k=100 | 0/2 (validation/success_rate >= 0.5) | not within 6,400 | n/a |" in table
    assert "| slopes | fixed k=2 | 2/2 (validation/success_rate >= 0.5) | 4,800 ± 1,600 | 1.5 min |" in table


def test_imitation_check_fits_the_guide():
    from snn_control.config import load
    from studies.imitation import CONFIG, guide_data, imitate

    cfg = load(CONFIG)
    data = guide_data(cfg.task, cfg.env, copies=16, episodes=1, noise=0.3, seed=0)
    assert data[0].shape == (16 * 200, 8) and data[2].shape == (16 * 200, 2)
    assert np.all(np.abs(data[2]) <= 1.0)
    untrained = imitate("snn_k5_goal_error", data, steps=0, test=500, validation_goals=4)
    fitted = imitate("snn_k5_goal_error", data, steps=150, test=500, validation_goals=4)
    assert fitted["test_mse"] < 0.7 * untrained["test_mse"]
    assert 0.0 <= fitted["validation_success_rate"] <= 1.0 and fitted["overrides"] == ["rl.slope=5.0", "rl.goal_error=true"]


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_fast_actor_matches_the_module_in_float64(neuron):
    import copy

    from snn_control.models.fast_actor import FastSpikingActor
    from snn_control.models.actors import ActorPolicy, SpikingActor
    from snn_control.models import FastPolicy

    torch.manual_seed(0)
    actor = SpikingActor(10, 2, hidden=(48, 32), pop=6, timesteps=5, neuron=neuron)
    with torch.no_grad():  # an untrained actor barely fires past its first layer: drive it harder
        for layer in actor.layers:
            layer.input.weight.mul_(4.0)
    ref = copy.deepcopy(actor).double().eval()
    ref.count_spikes = True
    fast = FastSpikingActor(actor)
    x = np.random.default_rng(0).uniform(-1.2, 1.2, size=(200, 10))
    with torch.no_grad():
        wanted = ref(torch.as_tensor(x)).numpy()
    got = np.stack([fast.act(row) for row in x])
    np.testing.assert_allclose(got, wanted, rtol=0, atol=1e-12)
    assert fast.spike_counts.tolist() == ref.spike_counts  # every layer's spikes, summed
    assert min(fast.spike_counts) > 0 and 0 < fast.firing_rates_hz().max() <= 1000
    # the controller's FastPolicy uses it for a TD3 model, goal error included
    policy = ActorPolicy(actor, (0, 2))
    fast_policy = FastPolicy(policy)
    obs, goal = x[0, :8], x[0, 8:]
    with torch.no_grad():
        a, _, _ = copy.deepcopy(policy).double().step(torch.as_tensor(obs)[None], torch.as_tensor(goal)[None], None)
    np.testing.assert_allclose(fast_policy.act(obs, goal), a[0].numpy(), atol=1e-12)


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_actor_layer_by_layer_matches_stepping_every_layer_each_substep(neuron):
    """The actor runs each layer over the whole window before the next one; in float64
    that gives the same action and parameter gradients as stepping every layer once per
    substep (the order Xu et al. 2025 (Proxy Target) describe), within 1e-12 relative."""
    torch.manual_seed(0)
    actor = SpikingActor(5, 2, hidden=(32, 24), pop=6, timesteps=5, neuron=neuron).double()
    with torch.no_grad():
        for layer in actor.layers:
            layer.input.weight.mul_(3.0)  # enough drive that every layer spikes
    obs = torch.rand(16, 5, dtype=torch.float64) * 2 - 1

    def grads(fn):
        actor.zero_grad()
        action = fn()
        (action * torch.linspace(-1, 1, 32, dtype=torch.float64).view(16, 2)).sum().backward()
        return action.detach(), {n: p.grad.clone() for n, p in actor.named_parameters() if p.grad is not None}

    ref_action, ref = grads(lambda: actor.forward_stepped(obs))
    action, got = grads(lambda: actor(obs))
    assert all(float(r) > 0.01 for r in actor.last_rates)
    assert torch.allclose(action, ref_action, rtol=0, atol=1e-14)
    assert set(got) == set(ref) and "layers.1.input.weight" in got
    for name in ref:
        assert float((got[name] - ref[name]).norm() / ref[name].norm().clamp(min=1e-30)) < 1e-12, name


def test_update_ratio_carries_fractions_over():
    from snn_control.rl.td3 import UpdateRatio

    half = UpdateRatio(0.5)
    assert [half.due(1) for _ in range(6)] == [0, 1, 0, 1, 0, 1]
    assert UpdateRatio(0.25).due(8) == 2 and UpdateRatio(1).due(1) == 1
    tenth = UpdateRatio(0.1)
    assert sum(tenth.due(1) for _ in range(100)) == 10
    with pytest.raises(ValueError, match="positive"):
        UpdateRatio(0)
