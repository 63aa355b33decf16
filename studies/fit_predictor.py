"""Fit a fresh forward model to a finished run's replay: which predictor settings learn
the same data fastest and best, without the policy in the loop.

``python -m studies.fit_predictor RUN_DIR [--set KEY=VALUE ...]`` builds the predictor of the
run's own config (with the overrides), fits it with the trainer's own update on windows
from most of the run's episodes, and prints the loss on windows from the rest (the held-out
episodes and windows are drawn by ``--seed``, so they are the same for every setting).
Losses are in units of each entry's one-step change (its standard deviation) on the
held-out episodes, the same for every setting, so runs with different overrides compare
directly (the trainer's own loss unit is fitted per run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from snn_control import config as config_mod
from snn_control.config import ExperimentConfig
from snn_control.envs import make_batch
from snn_control.models import spiking_nets
from snn_control.models.checkpoint import networks_for
from snn_control.predictive.replay import EpisodicReplay, ReplayError
from snn_control.predictive.updates import make_optimizer, predictor_loss, predictor_step

HELD_OUT_EPISODES = 64
HELD_OUT_WINDOWS = 128


def _subset(replay: EpisodicReplay, episodes: np.ndarray) -> EpisodicReplay:
    """A replay holding only ``episodes`` of ``replay`` (its window sampling is reused)."""
    part = EpisodicReplay(len(episodes), replay.steps, replay.obs.shape[-1], replay.actions.shape[-1],
                          replay.goals.shape[-1])
    part.add(replay.obs[episodes], replay.actions[episodes], replay.goals[episodes])
    return part


def _windows(replay: EpisodicReplay, rng: np.random.Generator, count: int, length: int):
    obs, actions, _ = replay.sample(rng, count, length)
    return torch.as_tensor(obs), torch.as_tensor(actions)


def load_replay(run_dir: Path, config: ExperimentConfig, spec) -> EpisodicReplay:
    path = run_dir / "replay.npz"
    if not path.exists():
        raise ReplayError(f"{path}: no replay (studies.fit_predictor needs a `snn-control train` run directory)")
    replay = EpisodicReplay(config.train.replay_episodes, spec.episode_steps, spec.obs_dim, spec.act_dim, spec.goal_dim)
    replay.load(path)
    if replay.size <= HELD_OUT_EPISODES:
        raise ReplayError(f"{path}: {replay.size} episodes; studies.fit_predictor holds out {HELD_OUT_EPISODES} and needs more")
    return replay


def fit_predictor(run_dir: str | Path, config: ExperimentConfig, updates: int, every: int = 50,
                  seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``{"update", "held_out_loss", "elapsed_s"}`` every ``every`` updates (and at 0)."""
    torch.set_num_threads(config.train.threads)
    torch.manual_seed(seed)
    env = make_batch(config.task, 1, config.env)
    spec = env.spec
    env.close()
    replay = load_replay(Path(run_dir), config, spec)
    obs = replay.obs[: replay.size]
    predictor, _ = networks_for(config, spec)
    for net in spiking_nets(predictor):
        net.fused = config.train.fused_neurons
    t = config.train
    # Calibrated on the run's first collection, as the trainer does; that collection is
    # always trained on, never held out.
    first = min(t.envs, replay.size - HELD_OUT_EPISODES - 1)
    predictor.calibrate(obs[:first], replay.actions[:first], inputs=config.model.calibrate_inputs)
    rng = np.random.default_rng(seed)
    order = first + rng.permutation(replay.size - first)
    held_out = order[:HELD_OUT_EPISODES]
    train = _subset(replay, np.concatenate([np.arange(first), order[HELD_OUT_EPISODES:]]))
    length = t.warmup + t.unroll
    test_obs, test_actions = _windows(_subset(replay, held_out), rng, HELD_OUT_WINDOWS, length)
    # One loss unit for every setting: the held-out episodes' own typical one-step change.
    unit = torch.as_tensor(np.diff(obs[held_out], axis=1).reshape(-1, obs.shape[-1]).std(0), dtype=torch.float32)
    unit = unit.clamp(min=1e-6)
    optimizer = make_optimizer(predictor, t.lr, t.tau_lr)
    start = time.perf_counter()
    for update in range(updates + 1):
        if update % every == 0 or update == updates:
            with torch.no_grad():
                predictor.eval()
                loss = float(predictor_loss(predictor, test_obs, test_actions, t, scale=unit))
                predictor.train()
            yield {"update": update, "held_out_loss": loss, "elapsed_s": time.perf_counter() - start}
        if update < updates:
            batch_obs, batch_actions = _windows(train, rng, t.batch, length)
            predictor_step(predictor, optimizer, batch_obs, batch_actions, t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a `snn-control train` run directory (its replay.npz and config.yaml)")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="updates between held-out losses")
    parser.add_argument("--seed", type=int, default=0, help="held-out episodes, windows and initial weights")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the run's config, e.g. --set model.dt=0.005 (repeatable)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        cfg = config_mod.load(run_dir / "config.yaml", args.set)
        for row in fit_predictor(run_dir, cfg, args.updates, args.every, args.seed):
            print(json.dumps({**row, "set": args.set}), flush=True)
    except (config_mod.ConfigError, ReplayError) as exc:
        print(f"fit_predictor: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
