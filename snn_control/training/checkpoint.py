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
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import config as config_mod
from ..envs import kinematic_layout
from ..models import IOSpec, IOSpecMismatch, build_networks


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


def keep_best(run_dir: Path, metrics: dict[str, float], position: dict[str, int], save) -> bool:
    """Keep the checkpoint of the best validation so far (success, then median final
    distance) as the model directory ``run_dir/best/``, with the run's metrics up to it and
    ``best.json`` (``position``, e.g. the iteration, and the validation figures).
    ``save(directory)`` writes the model directory. Validation goals are the trainer's own,
    never the held-out ones, so picking on them leaves the held-out evaluation honest.
    Returns whether this checkpoint became the best."""
    best = Path(run_dir) / "best"
    score = [metrics["validation/success_rate"], -metrics["validation/final_distance_median"]]
    record = best / "best.json"
    if record.exists() and json.loads(record.read_text())["score"] >= score:
        return False
    save(best)
    metrics_text = (Path(run_dir) / "metrics.jsonl").read_bytes()
    atomic_write_bytes(best / "metrics.jsonl", lambda p: p.write_bytes(metrics_text))
    summary = {**position, "score": score, **{k: v for k, v in metrics.items() if k.startswith("validation/")}}
    atomic_write_bytes(record, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return True


def networks_for(config, spec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Untrained predictor and policy for ``config`` on a task of I/O ``spec``, with the
    task's kinematic layout when the config asks for the kinematic prior."""
    layout = kinematic_layout(config.task, config.env) if config.model.kinematic_prior else None
    effector = tuple(spec.effector) if (config.model.goal_error or config.model.goal_integral_gain) else None
    return build_networks(config.model, spec.obs_dim, spec.act_dim, spec.goal_dim, layout, effector,
                          spec.control_period_s)


def load_model(directory: str | Path, expected_spec: dict[str, Any] | None = None):
    """Returns ``(predictor, policy, io_spec, config)`` in eval mode. ``predictor`` is None
    for a TD3-trained model (``algorithm: td3``), whose policy is its actor.

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
        from ..rl.networks import ActorPolicy, build_actor

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
    return predictor, policy, spec, config
