import json

import numpy as np
import pytest
import torch

from snn_control.predictive.trainer import Trainer, make_optimizer
from snn_control.predictive.updates import still_action_penalties

from test.conftest import ScriptedPolicy, steady_readout, tiny_config


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_reacher_run_losses_fall(tiny_run):
    rows = _rows(tiny_run)
    assert len(rows) == 6
    assert rows[-1]["losses/predictor"] < 0.7 * rows[0]["losses/predictor"]
    assert (tiny_run / "tensorboard").is_dir()
    assert all(np.isfinite(r["losses/policy"]) for r in rows)


def test_time_constants_have_their_own_optimizer_group():
    trainer = Trainer(tiny_config(), "/tmp/unused-run-dir")
    opt = make_optimizer(trainer.policy, 1e-3, 1e-2)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [1e-3, 1e-2]
    tau_group = next(g for g in opt.param_groups if g["lr"] == 1e-2)
    names = {id(p): n for n, p in trainer.policy.named_parameters()}
    assert all("log_tau" in names[id(p)] for p in tau_group["params"])


def test_policy_update_steps_only_the_policy(tiny_run):
    trainer = Trainer(tiny_config(["train.iterations=7"]), tiny_run)
    trainer._resume()
    before = {n: p.clone() for n, p in trainer.predictor.named_parameters()}
    pol_before = [p.clone() for p in trainer.policy.parameters()]
    trainer.policy_update()
    assert all(torch.equal(before[n], p) for n, p in trainer.predictor.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(pol_before, trainer.policy.parameters(), strict=True))
    assert all(p.requires_grad for n, p in trainer.predictor.named_parameters())


class _KnownPlant(torch.nn.Module):
    """A differentiable stand-in forward model with known physics: the hand moves by
    0.05 x action per step. It isolates the policy update's gradient path."""

    def __init__(self, obs_dim):
        super().__init__()
        self.register_buffer("delta_scale", torch.ones(obs_dim))

    def initial_state(self, batch, like):
        return None

    def step(self, obs, action, state):
        moved = obs[:, :2] + 0.05 * action
        return torch.cat([moved, obs[:, 2:]], dim=1), None


def test_policy_updates_backpropagate_through_the_forward_model(tiny_run, tmp_path):
    """Repeated policy updates on one fixed replay batch must bring the imagined hand
    closer to the goals, with gradients flowing through the forward model into the policy."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    trainer = Trainer(tiny_config(["train.iterations=7"]), run)
    trainer._resume()
    trainer.predictor = _KnownPlant(trainer.io_spec.obs_dim)
    distances = []
    for _ in range(30):
        trainer.rng = np.random.default_rng(123)  # the same windows every update
        distances.append(trainer.policy_update()["imagined_distance"])  # measured before the step
    assert distances[-1] < 0.7 * distances[0]


def test_still_action_power_by_hand():
    obs = torch.randn(4, 3, 8)  # (L+1, B, O): reacher, velocities at 6 and 7, hand at 0:2
    policy = ScriptedPolicy(bias=0.3, swing=0.4)
    power, fluctuation = still_action_penalties(policy, obs, slice(0, 2), [6, 7], warmup=3, steps=6)
    assert float(power) == pytest.approx(0.3**2 + 0.4**2)  # bias and swing both count
    assert float(fluctuation) == pytest.approx(0.4**2)  # the swing only: a steady torque is free
    x, goal = policy.seen[0]
    assert torch.all(x[:, [6, 7]] == 0) and torch.equal(goal, x[:, 0:2])  # at rest, at its goal
    assert torch.equal(x[:, :6], obs[-1][:, :6]) and len(policy.seen) == 9
    assert all(torch.equal(o, x) for o, _ in policy.seen)  # frozen: the same input every step


@pytest.mark.parametrize("key, which", [("hold_still", 0), ("hold_fluctuation", 1)])
def test_hold_still_penalty_quiets_the_policy_at_rest(tiny_run, tmp_path, key, which):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    trainer = Trainer(tiny_config(["train.iterations=7", f"train.{key}=10.0"]), run)
    trainer._resume()
    obs = torch.as_tensor(trainer.replay.obs[:16, :2]).transpose(0, 1)  # last state: step 1

    def at_rest():
        with torch.no_grad():
            return float(still_action_penalties(trainer.policy, obs, trainer.effector, trainer.velocity)[which])

    before = at_rest()
    for _ in range(20):
        trainer.policy_update()
    assert trainer.velocity == [6, 7] and at_rest() < 0.5 * before
    # without the velocities' positions there is no state at rest to hold: refused, not guessed
    trainer.velocity = []
    with pytest.raises(ValueError, match="hold_still and train.hold_fluctuation need the joint velocities"):
        trainer.policy_update()


def test_settle_penalises_the_imagined_path_near_the_goal_only():
    """``train.settle`` adds weight x the effector's path per imagined step while within
    ``settle_radius_m`` of the goal; farther away, or at weight 0, nothing."""
    from snn_control.config import TrainConfig
    from snn_control.predictive.updates import imagined_distance

    obs = torch.zeros(3, 2, 8)  # (L+1, B, O): hand at 0:2
    goals = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # the first at the hand, the second 1.4 m away
    policy = ScriptedPolicy(bias=1.0, swing=0.0)
    plant = _KnownPlant(8)  # moves the hand 0.05 x action per step on each axis

    def penalty(**settings):
        t = TrainConfig(warmup=1, unroll=2, readout_penalty=0.0, **settings)
        return float(imagined_distance(policy, plant, obs, torch.zeros(2, 2, 2), goals, t, slice(0, 2))[1])

    assert penalty() == 0.0
    step = 0.05 * 2**0.5  # the first hand ends its steps 7.1 and 14.1 cm from its goal
    assert penalty(settle=2.0, settle_radius_m=0.2) == pytest.approx(2.0 * (step + step) / 2)
    assert penalty(settle=2.0, settle_radius_m=0.1) == pytest.approx(2.0 * step / 2)  # 2nd step 14 cm off
    assert penalty(settle=2.0, settle_radius_m=0.01) == 0.0


def test_real_rest_is_the_action_variance_at_recorded_steps_near_the_goal():
    """``train.real_rest``'s term by hand: the policy's actions along the recorded windows
    after the warm-up, their variance over the steps within the radius of the goal."""
    from snn_control.predictive.updates import real_rest_fluctuation

    obs = torch.zeros(6, 2, 8)  # (T, B, O): hand at 0:2, at the origin throughout
    goals = torch.tensor([[0.0, 0.01], [1.0, 1.0]])  # the first 1 cm from the hand, the second far
    swinging = ScriptedPolicy(bias=0.3, swing=1.0)  # +-1 about 0.3: variance 1 per joint
    assert real_rest_fluctuation(swinging, obs, goals, slice(0, 2), 0.02, warmup=2) == pytest.approx(1.0)
    assert len(swinging.seen) == 6 and torch.equal(swinging.seen[3][0], obs[3])  # it saw the recording
    assert real_rest_fluctuation(ScriptedPolicy(bias=0.3, swing=0.0), obs, goals, slice(0, 2), 0.02, warmup=2) == 0.0
    assert real_rest_fluctuation(swinging, obs, goals, slice(0, 2), 0.005, warmup=2) == 0.0  # none near
    near_once = obs.clone()
    near_once[2:5, 0, 1] = 0.5  # only the last step near: one step has no variance to count
    assert real_rest_fluctuation(swinging, near_once, goals, slice(0, 2), 0.02, warmup=2) == 0.0


def test_real_rest_calms_the_policy_along_recorded_windows(tiny_run, tmp_path):
    import shutil

    from snn_control.predictive.updates import REAL_REST_STEPS, REAL_REST_WARMUP, real_rest_fluctuation, real_rest_windows

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    trainer = Trainer(tiny_config(["train.iterations=7", "train.real_rest=10.0", "train.real_rest_radius_m=10.0"]), run)
    trainer._resume()
    obs, _, goals = (torch.as_tensor(a) for a in trainer.replay.sample(np.random.default_rng(1), 16,
                                                                       REAL_REST_WARMUP + REAL_REST_STEPS))

    def wander():
        with torch.no_grad():
            return float(real_rest_fluctuation(trainer.policy, obs, goals, trainer.effector, 10.0))

    before = wander()
    for _ in range(20):
        trainer.policy_update()
    assert before > 0 and wander() < 0.5 * before
    # off: no windows drawn; a replay of short episodes (a fine-tune's 1 s windows): as long as they are
    assert real_rest_windows(trainer.replay, np.random.default_rng(0), 4, tiny_config().train) is None
    short = type(trainer.replay)(8, 20, trainer.replay.obs.shape[-1], trainer.replay.actions.shape[-1],
                                 trainer.replay.goals.shape[-1])
    short.add(trainer.replay.obs[:8, :21], trainer.replay.actions[:8, :20], trainer.replay.goals[:8])
    rest_obs, rest_goals = real_rest_windows(short, np.random.default_rng(0), 4, trainer.config.train)
    assert rest_obs.shape[:2] == (21, 4) and rest_goals.shape[0] == 4
    assert float(real_rest_fluctuation(trainer.policy, rest_obs, rest_goals, trainer.effector, 10.0)) > 0


def test_training_goes_on_from_a_trained_model(tiny_run, tmp_path):
    from snn_control.models.checkpoint import CheckpointError, load_model

    predictor, policy, _, _ = load_model(tiny_run)
    # another seed: other data in the first collection, so a recalibration would show
    trainer = Trainer(tiny_config([f"train.init_from={tiny_run}", "train.iterations=1", "train.eval_every=0",
                                   "seed=1"]), tmp_path / "on")
    for mine, theirs in ((trainer.predictor, predictor), (trainer.policy, policy)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    calibration = {n: b.clone() for n, b in trainer.predictor.named_buffers()}
    trainer.fit(progress=False)
    # its calibration is kept (a from-scratch run fits it to its first collection) ...
    assert all(torch.equal(calibration[n], b) for n, b in trainer.predictor.named_buffers() if n in calibration)
    # ... and the weights trained on
    assert any(not torch.equal(a, b) for a, b in zip(trainer.policy.state_dict().values(),
                                                     policy.state_dict().values()))
    # the eval's training summary counts the wall time of the run it went on from
    from snn_control.training.evaluate import _training_summary

    own, start = _training_summary(tmp_path / "on"), _training_summary(tiny_run)
    assert own["init_from"] == str(tiny_run) and "init_from" not in start
    assert own["wall_time_total_s"] == pytest.approx(own["wall_time_s"] + start["wall_time_s"])
    with pytest.raises(CheckpointError, match="do not fit this config"):
        Trainer(tiny_config([f"train.init_from={tiny_run}", "model.hidden=24"]), tmp_path / "other")


def _actions(policy, spec, steps=15, seed=3):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(steps, 2, spec.obs_dim, generator=generator)
    goal = torch.randn(steps, 2, spec.goal_dim, generator=generator)
    state, out = policy.initial_state(2, obs), []
    with torch.no_grad():
        for k in range(steps):
            action, _, state = policy.step(obs[k], goal[k], state)
            out.append(action)
    return torch.stack(out)


@pytest.mark.parametrize("grown, new_weight", [("model.policy_recurrent=true", "net.layers.0.recurrent.up.weight"),
                                                ("model.policy_fine_error_m=0.05", "net.layers.0.input.weight")])
def test_a_larger_policy_goes_on_from_a_smaller_one(tiny_run, tmp_path, grown, new_weight):
    """A recurrent connection or fine-error inputs added to a trained policy start silent."""
    from snn_control.models.checkpoint import CheckpointError, load_model

    _, policy, _, _ = load_model(tiny_run)
    trainer = Trainer(tiny_config([f"train.init_from={tiny_run}", "train.iterations=1", "train.eval_every=0",
                                   grown]), tmp_path / "on")
    weight = dict(trainer.policy.named_parameters())[new_weight]
    added = (slice(None), slice(policy.net.input_gain.numel(), None)) if "input" in new_weight else (...,)
    # what it adds starts silent: the policy acts exactly as the one it came from ...
    assert torch.equal(_actions(trainer.policy, trainer.io_spec), _actions(policy, trainer.io_spec))
    # ... and the setting acts once those weights are not zero
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[added] = torch.randn_like(weight[added])
    assert not torch.allclose(_actions(trainer.policy, trainer.io_spec), _actions(policy, trainer.io_spec))
    with torch.no_grad():
        weight.copy_(saved)
    trainer.fit(progress=False)
    assert weight[added].abs().sum() > 0  # it trains
    # going back (into the smaller policy's config) does not fit
    with pytest.raises(CheckpointError, match="do not fit this config"):
        Trainer(tiny_config([f"train.init_from={tmp_path / 'on'}"]), tmp_path / "back")


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    Trainer(tiny_config(["train.iterations=2", "train.eval_every=0"]), tmp_path).fit(progress=False)
    resumed = Trainer(tiny_config(["train.iterations=3", "train.eval_every=0"]), tmp_path)
    resumed.fit(progress=False)
    assert resumed.iteration == 3
    assert [r["iteration"] for r in _rows(tmp_path)] == [1, 2, 3]
    assert resumed.replay.size == 3 * 16


def test_fit_stops_when_asked_after_saving_that_iteration(tmp_path):
    seen = []
    trainer = Trainer(tiny_config(["train.iterations=5", "train.eval_every=0"]), tmp_path)
    trainer.fit(progress=False, stop_when=lambda m: seen.append(m) or len(seen) == 2)
    assert trainer.iteration == 2 and [r["iteration"] for r in _rows(tmp_path)] == [1, 2]
    assert "losses/predictor" in seen[-1]


def test_activity_penalty_against_its_formula():
    from snn_control.predictive.trainer import activity_penalty

    rates = [torch.tensor([0.0, 50.0, 300.0]), torch.tensor([5.0])]
    expected = ((1.0 / 100) ** 2 + 0 + (200.0 / 100) ** 2) / 3 / 2 + 0 / 2  # low 1 Hz, high 100 Hz
    assert activity_penalty(rates, 1.0, 100.0).item() == pytest.approx(expected)


def test_activity_bounds_regulariser_raises_silent_firing(tmp_path):
    """With a lower bound far above the current rates, updates must raise firing."""
    from snn_control.models import spiking_nets

    trainer = Trainer(tiny_config(["train.iterations=1", "train.eval_every=0", "train.activity_bounds=50.0",
                                   "train.activity_min_hz=200.0", "train.activity_max_hz=400.0",
                                   "train.predictor_updates=0", "train.policy_updates=0"]), tmp_path)
    trainer.fit(progress=False)
    net = spiking_nets(trainer.predictor)[0]

    def rate():
        net.start_activity()
        trainer.rng = np.random.default_rng(0)
        obs, actions, _ = [torch.as_tensor(a) for a in trainer.replay.sample(trainer.rng, 32, 10)]
        with torch.no_grad():
            state = trainer.predictor.initial_state(32, obs)
            for k in range(10):
                _, state = trainer.predictor.step(obs[k], actions[k], state)
        return float(torch.stack([r.mean() for r in net.activity_rates()]).mean())

    before = rate()
    for _ in range(15):
        trainer.predictor_update()
    assert rate() > 1.5 * before


def test_learning_rates_decay_linearly_from_the_configured_iteration(tmp_path):
    cfg = tiny_config(["train.iterations=11", "train.lr_decay_start=5", "train.lr_final_scale=0.1"])
    trainer = Trainer(cfg, tmp_path)
    expected = {0: 1.0, 4: 1.0, 5: 1.0, 7: 1.0 - 0.9 * 2 / 5, 10: 0.1}
    for iteration, scale in expected.items():
        trainer.iteration = iteration
        assert trainer.lr_scale() == pytest.approx(scale)
        trainer._apply_lr()
        for opt in (trainer.pred_opt, trainer.policy_opt):
            assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(
                sorted([cfg.train.lr * scale, cfg.train.tau_lr * scale]))


def test_fit_predictor_on_a_runs_replay_lowers_the_held_out_loss(tiny_run, capsys):
    from studies.fit_predictor import main

    assert main([str(tiny_run), "--updates", "40", "--every", "20",
                 "--set", "train.batch=16"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["update"] for r in rows] == [0, 20, 40]
    assert rows[-1]["held_out_loss"] < 0.95 * rows[0]["held_out_loss"]  # measured: 9 % lower
    assert rows[0]["set"] == ["train.batch=16"]


def test_fit_predictor_without_a_replay_says_so(tiny_run, tmp_path, capsys):
    from studies.fit_predictor import main

    (tmp_path / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    assert main([str(tmp_path)]) == 2
    assert "no replay" in capsys.readouterr().err


def test_run_keeps_its_best_validation_checkpoint(tiny_run):
    from snn_control.models.checkpoint import load_model

    record = json.loads((tiny_run / "best" / "best.json").read_text())
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    validated = [r for r in rows if "validation/success_rate" in r]
    best = max(validated, key=lambda r: (r["validation/success_rate"], -r["validation/final_distance_median"]))
    assert record["iteration"] == best["iteration"]  # the first of equals: a later tie does not replace it
    assert record["validation/success_rate"] == best["validation/success_rate"]
    kept = [json.loads(line) for line in (tiny_run / "best" / "metrics.jsonl").read_text().splitlines()]
    assert kept[-1]["iteration"] == record["iteration"]
    predictor, policy, _, _ = load_model(tiny_run / "best")
    assert predictor is not None and policy is not None


def test_training_goes_on_with_another_policy_timing(tiny_run, tmp_path):
    """More substeps and a slower, fixed readout for a trained policy: the readout keeps its
    steady gain, the I/O spec and the saved model carry the new timing."""
    from snn_control.models.checkpoint import CheckpointError, load_model

    _, policy, _, _ = load_model(tiny_run)
    timing = ["model.policy_substeps=3", "model.policy_readout_learn_tau=false",
              "model.policy_readout_tau_syn=0.02", "model.policy_readout_tau_mem=0.02"]
    trainer = Trainer(tiny_config([f"train.init_from={tiny_run}", "train.iterations=1", "train.eval_every=0",
                                   *timing]), tmp_path / "on")
    readout = trainer.policy.net.readout
    assert trainer.policy.net.substeps == 3 and trainer.io_spec.substeps == 3
    torch.testing.assert_close(readout.time_constants()[0], torch.full_like(readout.time_constants()[0], 0.02))
    spikes = (torch.rand(2, readout.weight.in_features, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    torch.testing.assert_close(steady_readout(readout, spikes, 500), steady_readout(policy.net.readout, spikes, 500),
                               rtol=1e-3, atol=1e-4)
    trainer.fit(progress=False)
    _, again, spec, _ = load_model(tmp_path / "on")
    assert again.net.substeps == 3 and spec.substeps == 3
    torch.testing.assert_close(again.net.readout.time_constants()[0], readout.time_constants()[0])
    # the shared substeps are the forward model's timing: another value does not go on from it
    shared = trainer.config.model.substeps + 1
    with pytest.raises(CheckpointError, match="model.substeps and model.dt say"):
        Trainer(tiny_config([f"train.init_from={tiny_run}", f"model.substeps={shared}"]), tmp_path / "other")


def test_a_model_directory_edited_to_another_policy_timing(tiny_run, tmp_path):
    """config.yaml's policy timing acts on a saved model: the readout is retimed on load;
    substeps that its io_spec.json does not say are refused."""
    import shutil

    import yaml

    from snn_control.models.checkpoint import CheckpointError, load_model

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model, ignore=shutil.ignore_patterns("train_state.pt", "replay.npz"))
    config = yaml.safe_load((model / "config.yaml").read_text())
    config["model"].update(policy_readout_learn_tau=False, policy_readout_tau_syn=0.03, policy_readout_tau_mem=0.03)
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    _, policy, _, _ = load_model(model)
    torch.testing.assert_close(policy.net.readout.time_constants()[1], torch.full((policy.net.readout.size,), 0.03))
    config["model"]["policy_substeps"] = config["model"]["substeps"] + 1
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="io_spec.json says"):
        load_model(model)
