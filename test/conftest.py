import numpy as np
import pytest
import torch

from snn_control import config as C
from snn_control.predictive.trainer import Trainer

# A reacher run small enough for CI (seconds), big enough that its losses must fall.
TINY = [
    "model.hidden=48", "model.rank=8", "model.substeps=2", "model.surrogate=fast_sigmoid",
    "model.slope=10.0", "model.readout_tau_mem=0.002", "model.readout_tau_syn=0.002",
    "train.iterations=6", "train.envs=16", "train.predictor_updates=8", "train.policy_updates=8",
    "train.batch=32", "train.lr=0.003", "train.eval_every=3", "train.eval_episodes=16",
    "train.replay_episodes=256", "train.threads=1", "train.compile=false",
]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)


def tiny_config(extra=()):
    return C.load("config/reacher_snn.yaml", TINY + list(extra))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A short reacher training run shared by the tests that need a trained model dir."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    Trainer(tiny_config(), run_dir).fit(progress=False)
    return run_dir


class ScriptedPolicy:
    """A policy acting ``bias + swing * (-1)^t`` on two joints whatever it sees; records its
    inputs (for measurements of a policy at rest)."""

    def __init__(self, bias, swing):
        self.bias, self.swing, self.seen = bias, swing, []

    def initial_state(self, batch, like):
        return 0

    def step(self, obs, goal, t):
        import torch

        self.seen.append((obs.clone(), goal.clone()))  # as shown, even if changed later
        action = torch.full((len(obs), 2), self.bias + self.swing * (-1) ** t)
        return action, action, t + 1


def steady_readout(readout, spikes, steps=400):
    """A readout's output after ``steps`` substeps of the same ``spikes``: its steady state."""
    state = readout.initial_state(spikes.shape[0], spikes)
    with torch.no_grad():
        for _ in range(steps):
            state = readout.step(spikes, state, readout.decays())
    return state.output
