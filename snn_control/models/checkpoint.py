"""Model directories: weights, I/O spec and the config that trained them.

Layout of a model directory::

    model.pt        tensors only (predictor and policy state dicts; a TD3-trained model,
                    ``algorithm: td3``, has a policy only), loaded with
                    ``torch.load(weights_only=True)``: no pickled code is executed
    io_spec.json    the I/O spec (models.io_spec)
    config.yaml     the experiment config that trained the model
    eval.json       written by ``snn-control eval``

Training also keeps ``train_state.pt`` (optimizers, iteration, RNG) and
``replay.npz`` there, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from .. import config as config_mod
from ..envs import kinematic_layout
from .actors import ACTOR_DT_S, ActorPolicy, SpikingActor, build_actor
from .inference import FastPolicy, FastPredictor
from .io_spec import IOSpec, IOSpecMismatch
from .networks import SpikingPolicy, build_networks, match_readout_timing, policy_timing

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A model directory that is missing, incomplete or corrupt; the message names the file."""


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(directory: Path, predictor, policy, io_spec: IOSpec, config: config_mod.ExperimentConfig) -> None:
    """``predictor`` is None for a model trained without one (TD3)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"policy": policy.state_dict()}
    if predictor is not None:
        tensors["predictor"] = predictor.state_dict()
    atomic_write_bytes(directory / "model.pt", lambda p: torch.save(tensors, p))
    atomic_write_bytes(directory / "io_spec.json",
                       lambda p: p.write_text(json.dumps(io_spec.to_dict(), indent=2) + "\n"))
    atomic_write_bytes(directory / "config.yaml",
                       lambda p: p.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False)))


def io_spec_for(config: config_mod.ExperimentConfig, env_spec) -> IOSpec:
    """The I/O spec a model trained by ``config`` on a task of ``env_spec`` carries."""
    if config.algorithm == "td3":  # the actor's neural steps per action
        snn, substeps, dt = config.rl.actor == "snn", config.rl.timesteps, ACTOR_DT_S
    else:
        snn, substeps, dt = config.model.kind == "snn", policy_timing(config.model)["substeps"], config.model.dt
    scaling = {
        "reacher": "hand (x, y) / 0.9 m; sin, cos of both joints; joint velocity / (pi/2) rad/s",
        "panda": "joint position scaled to [-1, 1] by its limits; joint velocity / velocity limit; "
                 "effector position in m (base frame)",
    }[config.task]
    return IOSpec(
        task=config.task, joint_names=env_spec.joint_names, obs_names=env_spec.obs_names,
        obs_scaling=scaling, effector=env_spec.effector, goal_dim=env_spec.goal_dim,
        act_dim=env_spec.act_dim, action_scale=tuple(env_spec.action_scale),
        control_period_s=env_spec.control_period_s, substeps=substeps if snn else 0,
        neural_dt_s=dt if snn else 0.0, distance_unit=env_spec.distance_unit,
    )


def networks_for(config, spec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Untrained predictor and policy for ``config`` on a task of I/O ``spec``, with the
    task's kinematic layout when the config asks for the kinematic prior."""
    layout = kinematic_layout(config.task, config.env) if config.model.kinematic_prior else None
    return build_networks(config.model, spec.obs_dim, spec.act_dim, spec.goal_dim, layout, tuple(spec.effector),
                          spec.control_period_s, velocity_slice(spec.obs_names))


def velocity_slice(obs_names) -> tuple[int, int] | None:
    """The joint velocities' slice of the observation (names ``dq*``), None without one."""
    at = [i for i, name in enumerate(obs_names) if name.startswith("dq")]
    return (at[0], at[-1] + 1) if at and at == list(range(at[0], at[-1] + 1)) else None


class Model(NamedTuple):
    """A loaded model directory. Unpacks as ``predictor, policy, spec, config``;
    ``predictor`` is None for a TD3-trained model (``algorithm: td3``), whose policy is its
    actor. Callers ask it, not the config, what it is and how to run it."""

    predictor: torch.nn.Module | None
    policy: torch.nn.Module
    spec: IOSpec
    config: config_mod.ExperimentConfig

    @property
    def td3(self) -> bool:
        """Trained model-free (``algorithm: td3``): an actor and no forward model."""
        return self.config.algorithm == "td3"

    @property
    def kind(self) -> str:
        """The policy's network family: ``snn``, ``gru``, ``mlp``."""
        return self.config.rl.actor if self.td3 else self.config.model.kind

    @property
    def label(self) -> str:
        """How a person names it: ``snn``, ``gru``, ``td3 snn actor``."""
        return f"td3 {self.kind} actor" if self.td3 else self.kind

    @property
    def spiking_actor(self) -> torch.nn.Module | None:
        """A TD3 model's spiking actor (it counts its own spikes), else None."""
        actor = getattr(self.policy, "actor", None)
        return actor if isinstance(actor, SpikingActor) else None

    @property
    def threads(self) -> int:
        """The torch threads its training used (evaluation runs with the same)."""
        return self.config.rl.threads if self.td3 else self.config.train.threads

    def fast_policy(self) -> FastPolicy:
        return FastPolicy(self.policy)

    def fast_predictor(self) -> FastPredictor | None:
        """None: a model without a forward model (nothing to predict, no health signal)."""
        return FastPredictor(self.predictor) if self.predictor is not None else None


def load_model(directory: str | Path, expected_spec: dict[str, Any] | None = None) -> Model:
    """The model in ``directory``, its networks in eval mode.

    Raises :class:`CheckpointError` for a missing or corrupt directory and
    :class:`IOSpecMismatch` when ``expected_spec`` entries differ from the checkpoint's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    for name in ("model.pt", "io_spec.json", "config.yaml"):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: missing (a model directory needs model.pt, io_spec.json, config.yaml)")
    try:
        spec = IOSpec.from_dict(json.loads((directory / "io_spec.json").read_text()), str(directory / "io_spec.json"))
    except (json.JSONDecodeError, TypeError, IOSpecMismatch) as exc:
        raise CheckpointError(f"{directory / 'io_spec.json'}: corrupt I/O spec ({exc})") from None
    if expected_spec:
        spec.check(expected_spec, source=str(directory))
    try:
        config = config_mod.load(directory / "config.yaml")
    except config_mod.ConfigError as exc:
        raise CheckpointError(f"{directory / 'config.yaml'}: {exc}") from None
    try:
        tensors = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"{directory / 'model.pt'}: corrupt or not a weights file ({exc})") from None
    if config.algorithm == "td3":
        expected = {"policy"}
        predictor = None
        policy = ActorPolicy(build_actor(config.rl, spec.obs_dim + spec.goal_dim, spec.act_dim),
                             tuple(spec.effector) if config.rl.goal_error else None)
    else:
        expected = {"predictor", "policy"}
        predictor, policy = networks_for(config, spec)
    if not isinstance(tensors, dict) or set(tensors) != expected:
        raise CheckpointError(f"{directory / 'model.pt'}: expected {' and '.join(sorted(expected))} weights "
                              f"for algorithm {config.algorithm!r}")
    for name, net in (("predictor", predictor), ("policy", policy)):
        if net is None:
            continue
        try:
            net.load_state_dict(tensors[name])
        except RuntimeError as exc:
            raise CheckpointError(f"{directory / 'model.pt'}: {name} weights do not fit config.yaml ({exc})") from None
        net.eval()
    if isinstance(policy, SpikingPolicy):
        if match_readout_timing(policy, config.model):
            log.info("%s: the policy's readout retimed to config.yaml's time constants", directory)
        if spec.substeps != policy.net.substeps:
            raise CheckpointError(f"{directory}: io_spec.json says {spec.substeps} neural substeps per control "
                                  f"step, config.yaml's policy runs {policy.net.substeps}")
    return Model(predictor, policy, spec, config)
