"""Fine-tune a running model from recorded sessions, check it, and write it as a new version.

The trainer node (and ``snn-control finetune``) call :func:`finetune` with the windows
:func:`.bags.read_sessions` cut from the recorded bags:

1. every ``heldout_every``-th window (in time order) is held out, the rest train; the
   held-out windows alternate between a selection half (early stopping) and a gate half
   (the imagined check), so nothing is judged on the windows it was chosen on;
2. the forward model learns the recorded dynamics (teacher-forced, as in training; the
   weights with the lowest error on the selection windows are kept: early stopping), then
   the policy learns through it, both from the running weights at a small learning rate.
   The policy is scored in simulation on the held-out goals of ``SELECTION_SET`` every
   ``policy_check_every`` updates and the best snapshot is the candidate;
3. the candidate is accepted only if it passes :func:`gate` against two references: the
   running model and the model the session started from (``session_start_dir``: the
   trainer node's first model; for ``snn-control finetune`` the running model itself), so
   that accepted rounds cannot drift further than one tolerance from where the session
   began: each figure may exceed the better reference's by its tolerance at most. Every
   model is measured the same way:
   - imagination from the gate windows' states towards their goals, all policies judged
     by the candidate's forward model (the better model of the recorded world), with
     ``heldout_tolerance`` slack;
   - simulation on the held-out goals of ``GATE_SET`` (median final distance,
     ``sim_tolerance`` slack); ``env_overrides`` set the simulated plant (for example a
     known payload), else it is the plant the model was trained on;
   - every figure and every training loss finite (a NaN anywhere rejects).
   Goal sets: ``snn-control eval`` reports set 0, the snapshot is chosen on set 1, the gate
   judges on set 2 (each drawn from its own seeded stream, so the goals differ). The
   report's ``checks`` name each check with its figures, limit and verdict;
4. :func:`write_version` writes an accepted candidate atomically as ``<root>/vNNNN/``: a
   complete model directory with ``VERSION`` and ``finetune.json`` (this report), made
   under a temporary name and renamed, so a reader never sees half a model.

Nothing here deletes or changes a bag or an existing model directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import ConfigError
from ..envs import EnvError, make_batch
from ..envs.base import velocity_indices
from ..models import IOSpecMismatch
from .bags import SessionEpisodes
from ..models.checkpoint import CheckpointError, load_model, save_model
from ..training.collect import rollout
from ..training.evaluate import heldout_tasks
from .replay import EpisodicReplay
from .updates import (imagined_distance, make_optimizer, mean_distance, policy_step, predictor_loss, predictor_step,
                      real_rest_windows, use_training_path)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

SELECTION_SET = 1  # held-out goals the policy snapshot is chosen on; `snn-control eval` reports set 0
GATE_SET = 2  # held-out goals the chosen snapshot is then judged on, against both references


class FinetuneError(ValueError):
    """Not enough usable data, or settings that cannot work; the message says which."""


@dataclass
class FinetuneSettings:
    window: int = 50  # control steps per recorded window (predictor: warm-up + unroll)
    predictor_updates: int = 150
    policy_updates: int = 150
    batch: int = 32
    predictor_lr: float = 1e-3  # half of training's: the model must learn what changed
    policy_lr: float = 3e-4  # a seventh of training's: adapt the policy, do not relearn it
    heldout_every: int = 5  # every 5th window is held out (alternately for selection and for the gate)
    check_every: int = 25  # predictor updates between held-out checks (early stopping)
    min_train_windows: int = 8
    validation_episodes: int = 32  # simulated reaches per goal set (selection and gate each)
    policy_check_every: int = 50  # policy updates between simulated checks (best snapshot kept)
    sim_tolerance: float = 0.10  # candidate's sim median may exceed the better reference's by 10 %
    heldout_tolerance: float = 0.0  # held-out imagined distance: no worse than either reference
    env_overrides: dict[str, Any] = field(default_factory=dict)  # simulated plant for validation
    seed: int = 0
    threads: int = 1
    compile: bool = True  # torch.compile the control steps (the model's train.compile also must be on)


def plain_settings() -> dict[str, Any]:
    """Name -> default of every setting that is one plain value: the trainer node's parameters
    and ``snn-control finetune``'s ``--set`` keys. ``env_overrides`` (a mapping, built by a
    default factory) is given as KEY=VALUE items instead (``validation_env``, ``--env``)."""
    hints = typing.get_type_hints(FinetuneSettings)
    # A ROS parameter takes its type from its default: a float setting must not default to an int.
    return {f.name: float(f.default) if hints[f.name] is float else f.default
            for f in dataclasses.fields(FinetuneSettings) if f.default is not dataclasses.MISSING}


def settings_from(values: dict[str, Any], env_overrides: dict[str, Any], what: str) -> FinetuneSettings:
    """Settings from plain ``values`` by name (the rest keep their defaults) and ``env_overrides``;
    a name that is no plain setting is refused, named, with ``what`` (where it came from)."""
    known = plain_settings()
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{what}: unknown fine-tuning keys {sorted(unknown)}; known: {sorted(known)}")
    return FinetuneSettings(**values, env_overrides=env_overrides)


def split_windows(sessions: SessionEpisodes, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out windows: every ``every``-th window is held out."""
    index = np.arange(len(sessions.obs))
    held = index % every == every - 1
    return index[~held], index[held]


def split_heldout(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-out windows for selection (early stopping) and for the gate, alternating in time."""
    return held[0::2], held[1::2]


def windows_needed(s: FinetuneSettings) -> int:
    """Fewest windows that give ``min_train_windows`` to train and two held out (select, gate)."""
    n = 1
    while n - n // s.heldout_every < s.min_train_windows or n // s.heldout_every < 2:
        n += 1
    return n


def _tensors(sessions: SessionEpisodes, idx: np.ndarray):
    """Time-major tensors of the windows ``idx``."""
    obs = torch.as_tensor(sessions.obs[idx].transpose(1, 0, 2))
    actions = torch.as_tensor(sessions.actions[idx].transpose(1, 0, 2))
    return obs, actions, torch.as_tensor(sessions.goals[idx])


@torch.no_grad()
def heldout_scores(predictor, policy, judge, sessions: SessionEpisodes, idx: np.ndarray, t, effector) -> dict:
    """Forward-model error on held-out windows (teacher-forced, normalised units) and the
    policy's mean imagined distance (m) from their states towards their goals, imagined
    by ``judge`` (a forward model)."""
    obs, actions, goals = _tensors(sessions, idx)
    error = float(predictor_loss(predictor, obs, actions, t))
    distance, _ = imagined_distance(policy, judge, obs, actions, goals, t, effector)
    return {"predictor_error": error, "imagined_distance_m": mean_distance(distance, t)}


class SimulatedReach:
    """Policies reaching seeded sets of held-out goals in one simulated plant."""

    def __init__(self, config, episodes: int, env_overrides: dict[str, Any],
                 goal_sets: Sequence[int] = (SELECTION_SET, GATE_SET)) -> None:
        env_cfg = dataclasses.replace(config.env, **env_overrides) if env_overrides else config.env
        self.env = make_batch(config.task, episodes, env_cfg)
        self.tasks = {k: heldout_tasks(self.env, episodes, k) for k in goal_sets}
        self.errors: list[str] = []  # why a policy could not be scored (its figures are NaN)

    @torch.no_grad()
    def score(self, policy, goal_set: int) -> dict[str, float]:
        """Median final distance and success rate on held-out goal set ``goal_set``; NaN
        for a policy the simulation refuses (NaN actions), which the gate then rejects."""
        starts, goals = self.tasks[goal_set]
        try:
            final = rollout(self.env, policy, starts, goals).obs[:, -1]
        except EnvError as exc:
            self.errors.append(f"goal set {goal_set}: {exc}")
            return {"final_distance_median_m": math.nan, "success_rate": math.nan}
        return {"final_distance_median_m": float(np.median(self.env.distance(final, goals))),
                "success_rate": float(np.mean(self.env.success(final, goals)))}

    def close(self) -> None:
        self.env.close()


# -- the gate ---------------------------------------------------------------------------
# Lower-is-better figures compared with both references: check name -> (figure, tolerance setting, words)
COMPARED = {
    "heldout_imagined_distance_m": ("imagined_distance_m", "heldout_tolerance", "held-out imagined distance"),
    "simulated_final_distance_median_m": ("final_distance_median_m", "sim_tolerance",
                                          "simulated median final distance"),
}
FINITE_CHECK = "non_finite_values"


def compare(name: str, before: float, session_start: float, after: float, tolerance: float) -> dict:
    """The candidate's figure ``after`` may exceed the better of the running model's
    (``before``) and the session start's by ``tolerance`` at most. NaN or inf anywhere fails:
    ``np.min`` propagates NaN into the limit and ``after <= NaN`` is False."""
    limit = float(np.min([before, session_start]) * (1.0 + tolerance))
    passed = bool(np.isfinite([before, session_start, after]).all() and after <= limit)
    return {"check": name, "before": before, "session_start": session_start, "after": after,
            "limit": limit, "tolerance": tolerance, "passed": passed}


def non_finite(values) -> int:
    return int(np.count_nonzero(~np.isfinite(np.asarray(list(values), dtype=float))))


def gate(before: dict, session_start: dict, after: dict, losses: Sequence[float],
         s: FinetuneSettings) -> list[dict]:
    """The checks a candidate must all pass. ``before``, ``session_start`` and ``after`` are
    the figures (:func:`heldout_scores` and :meth:`SimulatedReach.score`, merged) of the
    running model, the model the session started from and the candidate; ``losses`` are
    the fine-tuning's training losses, which must all be finite too."""
    checks = [compare(name, before[key], session_start[key], after[key], getattr(s, tolerance))
              for name, (key, tolerance, _) in COMPARED.items()]
    counts = non_finite(before.values()), non_finite(session_start.values()), non_finite([*after.values(), *losses])
    checks.append({"check": FINITE_CHECK, "before": counts[0], "session_start": counts[1], "after": counts[2],
                   "limit": 0, "tolerance": 0.0, "passed": not any(counts)})
    return checks


def _change(after: float, reference: float) -> str:
    if not (np.isfinite([after, reference]).all() and reference > 0):
        return "n/a"
    return f"{after / reference - 1:+.1%}"


def describe(check: dict) -> str:
    """One check in words: the candidate's figure, its change against each reference, the
    limit and tolerance, and the verdict (a worse candidate is never called 'no worse')."""
    outcome = "passed" if check["passed"] else "FAILED"
    if check["check"] == FINITE_CHECK:
        return (f"non-finite figures or losses: candidate {check['after']}, running model {check['before']}, "
                f"session start {check['session_start']} (none allowed): {outcome}")
    words = COMPARED[check["check"]][2]
    after, before, start = check["after"], check["before"], check["session_start"]
    return (f"{words} {after:.4g} m ({_change(after, before)} against the running model's {before:.4g} m, "
            f"{_change(after, start)} against the session start's {start:.4g} m; limit {check['limit']:.4g} m, "
            f"tolerance {check['tolerance']:+.0%}): {outcome}")


def verdict(checks: list[dict]) -> str:
    """The report's reason: the failed checks, or every check when all passed."""
    failed = [c for c in checks if not c["passed"]]
    if failed:
        return "; ".join(map(describe, failed))
    return "within tolerance on every check: " + "; ".join(map(describe, checks))


# -- fine-tuning ------------------------------------------------------------------------
@dataclass
class _Models:
    """The models of one fine-tuning, loaded and checked."""
    predictor: Any  # the running model's, fine-tuned in place into the candidate's
    policy: Any
    spec: Any
    config: Any
    running: tuple  # (predictor, policy) of the running model, untouched: the first reference
    start: tuple  # (predictor, policy) of the session start: the second reference
    start_is_running: bool  # then the session start is not measured twice


@dataclass
class _Windows:
    """Indices of the session's windows: training, held out, and the held-out halves."""
    train: np.ndarray
    held: np.ndarray
    select: np.ndarray  # early stopping
    gate: np.ndarray  # the imagined check

    @classmethod
    def split(cls, sessions: SessionEpisodes, every: int) -> _Windows:
        train, held = split_windows(sessions, every)
        return cls(train, held, *split_heldout(held))


@dataclass
class _Run:
    """What the fitting and measuring steps share."""
    s: FinetuneSettings
    t: Any  # TrainConfig with the fine-tuning batch
    rng: np.random.Generator
    replay: EpisodicReplay
    progress: Progress
    total: int  # updates in all, for progress
    effector: slice  # the effector's position in the observation
    velocity: Any  # observation indices of joint velocities (train.hold_still, kept from the model's training)


@dataclass
class _PredictorFit:
    losses: list
    curve: list  # (update, selection error) at each check
    kept_update: int


@dataclass
class _PolicyFit:
    losses: list
    distances: list  # imagined distance of each update
    snapshots: list  # (update, simulated median on the selection goals) at each check
    kept_update: int


def check_settings(s: FinetuneSettings, config) -> None:
    """Refuse settings that no recorded data can make work, for the model of ``config``."""
    unknown = set(s.env_overrides) - {f.name for f in dataclasses.fields(config.env)}
    if unknown:
        raise FinetuneError(f"env_overrides: unknown {config.task} env keys {sorted(unknown)}")
    if s.policy_updates < 1 or s.policy_check_every < 1:
        raise FinetuneError("policy_updates and policy_check_every must be at least 1")
    if s.heldout_every < 2:
        raise FinetuneError(f"heldout_every must be at least 2 (every window held out leaves none to train), "
                            f"got {s.heldout_every}")
    for name in ("sim_tolerance", "heldout_tolerance"):
        if not getattr(s, name) >= 0:  # also refuses NaN
            raise FinetuneError(f"{name} must be a number >= 0, got {getattr(s, name)}")
    if s.window <= config.train.warmup:
        raise FinetuneError(f"window {s.window} must be longer than the warm-up ({config.train.warmup} steps)")


def _check_sessions(s: FinetuneSettings, spec, sessions: SessionEpisodes) -> None:
    if sessions.obs.shape[1:] != (s.window + 1, spec.obs_dim):
        raise FinetuneError(f"session windows have shape {sessions.obs.shape[1:]}, expected "
                            f"({s.window + 1}, {spec.obs_dim}); read them with length={s.window}")
    if len(sessions.obs) < windows_needed(s):
        raise FinetuneError(f"{len(sessions.obs)} usable windows of {s.window} steps "
                            f"({s.window * spec.control_period_s:.1f} s) in the sessions; need at least "
                            f"{windows_needed(s)}")


def load_session_start(directory: str | Path, spec) -> tuple:
    """``(predictor, policy)`` of the model the session started from; it must share ``spec``'s
    interface (its policy may run other substeps)."""
    try:
        predictor, policy, _, _ = load_model(directory, expected_spec=spec.interface())
    except (CheckpointError, IOSpecMismatch) as exc:
        raise FinetuneError(f"session start model: {exc}") from None
    if predictor is None:
        raise FinetuneError(f"session start model {directory}: has no forward model to be measured with")
    return predictor, policy


def _load_and_check(model_dir: str | Path, sessions: SessionEpisodes, s: FinetuneSettings,
                    session_start_dir: Path) -> _Models:
    """Seed, load the running model (twice: one copy is fine-tuned, one stays the reference) and
    the session start, and refuse settings or sessions that cannot work."""
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)  # before loading: building the models draws from it
    predictor, policy, spec, config = load_model(model_dir)
    if predictor is None:
        raise FinetuneError(f"{model_dir}: a {config.algorithm} model has no forward model to fine-tune through")
    check_settings(s, config)
    _check_sessions(s, spec, sessions)
    running = load_model(model_dir)[:2]
    start_is_running = session_start_dir.resolve() == Path(model_dir).resolve()
    start = running if start_is_running else load_session_start(session_start_dir, spec)
    return _Models(predictor, policy, spec, config, running, start, start_is_running)


def _prepare_fitting(m: _Models, sessions: SessionEpisodes, train_idx: np.ndarray, s: FinetuneSettings,
                     progress: Progress) -> _Run:
    """The training windows' replay and the models set up for training as in the model's own."""
    spec = m.spec
    t = dataclasses.replace(m.config.train, batch=s.batch)
    replay = EpisodicReplay(len(train_idx), s.window, spec.obs_dim, spec.act_dim, spec.goal_dim)
    replay.add(sessions.obs[train_idx], sessions.actions[train_idx], sessions.goals[train_idx])
    compile_steps = t.compile and s.compile
    if compile_steps:  # the trainer node fine-tunes fresh copies each time: drop the last ones' graphs
        torch._dynamo.reset()
    use_training_path(m.predictor, m.policy, t, compile_steps)
    m.predictor.train()
    m.policy.train()
    return _Run(s, t, np.random.default_rng(s.seed), replay, progress, s.predictor_updates + s.policy_updates,
                slice(*spec.effector), velocity_indices(spec.obs_names))


def _fit_predictor(predictor, run: _Run, select: tuple) -> _PredictorFit:
    """Teacher-forced updates with early stopping on the selection windows ``select``: the
    forward model overfits a few minutes of data quickly (training loss can halve while the
    held-out error rises by a quarter), so the weights with the lowest selection
    error, checked every ``check_every`` updates, win."""
    s, t = run.s, run.t
    optimizer = make_optimizer(predictor, s.predictor_lr, t.tau_lr)
    losses, curve = [], []
    best: list = [None, math.inf, 0]  # state dict, error, update

    def check(step: int) -> None:
        with torch.no_grad():
            predictor.eval()
            error = float(predictor_loss(predictor, select[0], select[1], t))
            predictor.train()
        curve.append((step, error))
        if error < best[1]:
            best[:] = [copy.deepcopy(predictor.state_dict()), error, step]

    check(0)
    for i in range(s.predictor_updates):
        obs, actions, _ = (torch.as_tensor(a) for a in run.replay.sample(run.rng, s.batch, s.window))
        losses.append(predictor_step(predictor, optimizer, obs, actions, t))
        if (i + 1) % s.check_every == 0 or i + 1 == s.predictor_updates:
            check(i + 1)
        run.progress("predictor", i + 1, run.total)
    if best[0] is not None:  # None: every error was NaN; the gate rejects what is left
        predictor.load_state_dict(best[0])
    return _PredictorFit(losses, curve, best[2])


def _fit_policy(policy, predictor, run: _Run, sim: SimulatedReach, learn_tau: bool) -> _PolicyFit:
    """Policy updates through the forward model. The snapshot with the lowest simulated
    median on the selection goals is the candidate: one run's end point varies widely
    (two similar runs can end at 7.1 cm and 12.6 cm median)."""
    s, t = run.s, run.t
    optimizer = make_optimizer(policy, s.policy_lr, t.tau_lr)
    losses, distances, snapshots = [], [], []
    best: list = [None, math.inf, 0]  # state dict, simulated median, update
    for i in range(s.policy_updates):
        obs, actions, goals = (torch.as_tensor(a) for a in run.replay.sample(run.rng, s.batch, t.warmup))
        step = policy_step(policy, predictor, optimizer, obs, actions, goals, t, run.effector, learn_tau,
                           run.velocity, real_rest_windows(run.replay, run.rng, s.batch, t))
        losses.append(step["loss"])
        distances.append(step["imagined_distance"])
        run.progress("policy", s.predictor_updates + i + 1, run.total)
        if (i + 1) % s.policy_check_every == 0 or i + 1 == s.policy_updates:
            policy.eval()
            median = sim.score(policy, SELECTION_SET)["final_distance_median_m"]
            policy.train()
            snapshots.append((i + 1, median))
            if median < best[1]:
                best[:] = [copy.deepcopy(policy.state_dict()), median, i + 1]
    if best[0] is not None:  # None: no finite score; the gate rejects the last weights
        policy.load_state_dict(best[0])
    return _PolicyFit(losses, distances, snapshots, best[2])


def _measure(m: _Models, run: _Run, sim: SimulatedReach, sessions: SessionEpisodes,
             gate_idx: np.ndarray) -> dict[str, tuple[dict, dict]]:
    """Name -> (held-out figures, simulated figures) of the running model, the candidate and the
    session start, every one measured the same way: on the gate windows and the gate goals,
    imagined by the candidate's forward model."""
    m.predictor.eval()
    m.policy.eval()
    run.progress("validate", run.total, run.total)

    def measure(models) -> tuple[dict, dict]:
        return (heldout_scores(*models, m.predictor, sessions, gate_idx, run.t, run.effector),
                sim.score(models[1], GATE_SET))

    figures = {"running": measure(m.running), "candidate": measure((m.predictor, m.policy))}
    figures["session_start"] = figures["running"] if m.start_is_running else measure(m.start)
    return figures


def _judge(figures: dict[str, tuple[dict, dict]], losses: list, s: FinetuneSettings) -> list[dict]:
    """The gate's checks on the candidate's figures against both references'."""
    merged = {name: {**held, **simulated} for name, (held, simulated) in figures.items()}
    return gate(merged["running"], merged["session_start"], merged["candidate"], losses, s)


def _report(model_dir: str | Path, session_start_dir: Path, sessions: SessionEpisodes, s: FinetuneSettings,
            w: _Windows, predictor_fit: _PredictorFit, policy_fit: _PolicyFit,
            figures: dict[str, tuple[dict, dict]], sim_errors: list[str], checks: list[dict],
            losses: list) -> dict[str, Any]:
    """The report of one fine-tuning (without its wall time); ``accepted`` when every check passed."""
    pred_losses, distances = predictor_fit.losses, policy_fit.distances
    return {
        "accepted": all(c["passed"] for c in checks),
        "reason": verdict(checks),
        "checks": checks,
        "parent": str(model_dir),
        "session_start": str(session_start_dir),
        "bags": [str(b) for b in sessions.bags_read],
        "skipped_bags": list(sessions.skipped),
        "windows": {"train": int(len(w.train)), "heldout": int(len(w.held)), "selection": int(len(w.select)),
                    "gate": int(len(w.gate)), "steps": s.window},
        "heldout": {"windows": "gate", **{name: figures[name][0] for name in figures}},
        "simulation": {"episodes": s.validation_episodes, "env_overrides": dict(s.env_overrides),
                       "goal_set": GATE_SET, **{name: figures[name][1] for name in figures}, "errors": sim_errors},
        "predictor_early_stop": {"windows": "selection", "kept_update": predictor_fit.kept_update,
                                 "heldout_curve": predictor_fit.curve},
        "policy_selection": {"goal_set": SELECTION_SET, "kept_update": policy_fit.kept_update,
                             "simulated_median_m": policy_fit.snapshots},
        "losses": {"predictor_first": pred_losses[0] if pred_losses else None,
                   "predictor_last": pred_losses[-1] if pred_losses else None,
                   "imagined_distance_first": distances[0] if distances else None,
                   "imagined_distance_last": distances[-1] if distances else None,
                   "non_finite": non_finite(losses)},
        "settings": dataclasses.asdict(s),
    }


def finetune(model_dir: str | Path, sessions: SessionEpisodes, settings: FinetuneSettings | None = None,
             progress: Progress | None = None,
             session_start_dir: str | Path | None = None) -> tuple[dict[str, Any], tuple | None]:
    """Fine-tune ``model_dir`` on ``sessions`` and gate the candidate against ``model_dir`` and
    ``session_start_dir`` (the model the session started from; default ``model_dir``).
    Returns ``(report, candidate)``, where ``candidate`` is ``(predictor, policy, io_spec,
    config)`` when accepted, else ``None``."""
    s = settings or FinetuneSettings()
    started = time.perf_counter()
    session_start_dir = Path(session_start_dir or model_dir)
    m = _load_and_check(model_dir, sessions, s, session_start_dir)
    w = _Windows.split(sessions, s.heldout_every)
    run = _prepare_fitting(m, sessions, w.train, s, progress or (lambda stage, done, total: None))
    predictor_fit = _fit_predictor(m.predictor, run, _tensors(sessions, w.select))
    sim = SimulatedReach(m.config, s.validation_episodes, s.env_overrides)
    try:
        policy_fit = _fit_policy(m.policy, m.predictor, run, sim, m.config.model.learn_tau)
        figures = _measure(m, run, sim, sessions, w.gate)
    finally:
        sim.close()
    losses = [*predictor_fit.losses, *policy_fit.losses, *policy_fit.distances]
    checks = _judge(figures, losses, s)
    report = _report(model_dir, session_start_dir, sessions, s, w, predictor_fit, policy_fit, figures, sim.errors,
                     checks, losses)
    report["elapsed_s"] = time.perf_counter() - started
    return report, ((m.predictor, m.policy, m.spec, m.config) if report["accepted"] else None)


_VERSION_DIR = re.compile(r"^v(\d{4,})$")


def next_version(root: Path) -> int:
    taken = [int(m.group(1)) for p in root.glob("v*") if (m := _VERSION_DIR.match(p.name))]
    return max(taken, default=0) + 1


def write_version(root: str | Path, candidate: tuple, report: dict[str, Any]) -> Path:
    """Write an accepted candidate as ``root/vNNNN/`` (atomically: built aside, renamed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    final = root / f"v{version:04d}"
    partial = root / f".v{version:04d}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a crash: never a model
    predictor, policy, spec, config = candidate
    save_model(partial, predictor, policy, spec, config)
    (partial / "VERSION").write_text(f"{version}\n")
    (partial / "finetune.json").write_text(json.dumps({**report, "version": version}, indent=2) + "\n")
    os.rename(partial, final)  # atomic on one file system; fails rather than overwrite
    return final
