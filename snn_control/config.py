"""Experiment configuration: dataclasses loaded from YAML and validated on load.

An unknown key or a value of the wrong type is a :class:`ConfigError` that names the
file and the key. Defaults are the published values of Huebotter et al. 2025 unless a
comment says why not (the shipped configs in ``config/`` choose smaller sizes for a 2-core CPU).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .envs import TASKS, env_config_class


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


@dataclass
class ModelConfig:
    kind: str = "snn"  # "snn" or "gru" (GRU predictor + MLP policy baseline)
    hidden: int = 512  # neurons per spiking layer (Huebotter et al. 2025)
    layers: int = 2
    rank: int | None = None  # bottleneck rank of spiking-to-spiking connections; None: dense
    neuron: str = "alif"  # "alif" or "lif"
    substeps: int = 7  # neural substeps per control step, input held (Huebotter et al. 2025)
    dt: float = 0.002  # s per neural substep (Huebotter et al. 2025)
    tau_mem: float = 0.01  # s (Huebotter et al. 2025, Franka)
    tau_syn: float = 0.005  # s (Huebotter et al. 2025, Franka)
    tau_ada: float = 0.1  # s
    xi: float = 0.05  # threshold adaptation strength (ALIF)
    learn_tau: bool = True
    init_rate_hz: float = 20.0  # presynaptic rate assumed by the fluctuation-driven init; at
    # 50 Hz (the usual choice) layer 2 fired 1.3 Hz at init because layer 1 fires ~12 Hz
    readout_tau_mem: float = 0.01  # s
    readout_tau_syn: float = 0.005  # s
    policy_substeps: int = 0  # > 0: the policy's own neural substeps per control step (0: substeps)
    policy_readout_tau_mem: float = 0.0  # s; > 0: the policy's readout time constants (0: the
    policy_readout_tau_syn: float = 0.0  # readout_tau_* above). More substeps and a slower readout
    # average the policy's torque over more spikes (docs/training.md, "The hover's source")
    policy_readout_learn_tau: bool = True  # the policy's readout time constants train (with
    # learn_tau). The Panda policy learned 8-65 ms: its torque lagged and the arm circled the goal
    surrogate: str = "multi_gaussian"  # or "fast_sigmoid", "rectangular"
    slope: float = 16.0  # multi-Gaussian: centre sigma 1/16 (Huebotter et al. 2025)
    calibrate_inputs: bool = False  # input gains = 1 / RMS of the first collected data, so
    # the fluctuation-driven init sees unit-power inputs (off: gains start at 1, and with the
    # Panda's inputs of RMS 0.14-0.57 both spiking nets were silent at init)
    momentum_prior: bool = False  # predictor adds alpha * (obs - previous obs), alpha fitted
    # per entry; the network learns the rest (linear extrapolation predicts Panda positions one
    # step ahead 4-12x better than a 2-substep spiking predictor; docs/training.md item 6)
    action_term: bool = False  # predictor adds a learned linear B action to its output (a
    # direct path for the action's effect: the Panda predictors underestimate the effector's
    # response to a torque 3-5x; docs/training.md item 8)
    kinematic_prior: bool = False  # predictor learns only the joint velocities' change;
    # positions integrate them and the effector follows from the URDF's forward kinematics
    # (models.kinematics; Panda). The kinematics of an arm are known, its dynamics are not
    goal_error: bool = False  # the policy sees the goal minus the effector's position (its
    # error) instead of the goal: a spiking net then need not resolve a 1 cm difference
    # between two inputs of ~0.5 m each
    goal_integral_gain: float = 0.0  # 1/s; > 0: integral action, the policy sees the goal moved
    # by this x the leaky integral of the effector's error (models.networks.GoalIntegral)
    goal_integral_tau_s: float = 1.0  # s, the integral's leak
    goal_integral_limit_m: float = 0.1  # m s per axis, the integral's bound (no wind-up)
    goal_integral_radius_m: float = 0.0  # > 0: the error adds to the integral only while the
    # effector is within this distance of the goal (it still leaks): a long reach winds nothing up
    goal_integral_closing_m_s: float = 0.0  # > 0: the error adds to the integral only while
    # the distance to the goal shrinks slower than this: an arm on its way in winds nothing up
    action_damping: float = 0.0  # > 0: the spiking policy's action less this x the joint
    # velocities (each / its limit; action units per unit): viscous damping the policy's own
    # velocity feedback, quantised by spikes, does not give (models.networks.ActionDamping)
    policy_recurrent: bool = False  # the spiking policy's first layer feeds its spikes back:
    # a state beyond membranes, so it can tell from the arm's recent answers which plant it is on
    policy_fine_error_m: float = 0.0  # > 0: the spiking policy also sees tanh((goal - effector)
    # / this) per axis, the last centimetres at full scale (models.networks.policy_input)
    gru_hidden: int = 500  # baseline sizes (Huebotter et al. 2025)
    mlp_hidden: int = 500


@dataclass
class TrainConfig:
    iterations: int = 100  # collect -> predictor updates -> policy updates (Huebotter et al. 2025)
    init_from: str | None = None  # a model directory (same I/O spec) whose weights and
    # calibration the networks start from: training goes on from a trained model
    envs: int = 64  # parallel envs per collection (Huebotter et al. 2025)
    predictor_updates: int = 25
    policy_updates: int = 25
    batch: int = 256
    warmup: int = 5  # real steps before unrolling
    unroll: int = 40  # predictor: teacher-forced steps; policy: imagined steps
    teacher_forcing: float = 1.0  # probability of feeding the real state while unrolling
    teacher_forcing_final: float | None = None  # linear schedule to this value; None: constant
    lr: float = 1e-3  # Adam, weights
    tau_lr: float = 1e-2  # Adam, log time constants
    lr_decay_start: int | None = None  # from this iteration, both learning rates fall linearly ...
    lr_final_scale: float = 0.1  # ... to this fraction of their value at the last iteration
    grad_clip: float = 30.0
    distance_loss: str = "squared"  # policy loss per imagined step: "squared" distance
    # (Huebotter et al. 2025) or "euclidean" (unsquared: its gradient does not vanish near
    # the goal)
    replay_episodes: int = 4096  # capacity, whole episodes
    random_iterations: int = 1  # first iterations act with smooth random torques ...
    random_velocity_feedback: float = 0.0  # ... minus this x joint velocity (action units per
    # rad/s), so they explore free space instead of pinning joints at their limits
    exploration_noise: float = 0.1  # Gaussian std added to policy actions while collecting
    readout_bound: float = 3.0  # policy readout potential kept within +- this ...
    readout_penalty: float = 1e-3  # ... by this L2 penalty on the excess
    # Regularisers of Huebotter et al. 2025's ablation; off by default (neutral or harmful).
    weight_l2: float = 0.0
    action_l2: float = 0.0
    action_smoothness: float = 0.0
    hold_still: float = 0.0  # weight of the mean squared action the policy gives at rest at
    # its goal, input frozen (policy_at_rest in the eval JSON); gravity is compensated, so the
    # right torque there is zero. Damps the hover, costs precision (docs/training.md item 18)
    hold_fluctuation: float = 0.0  # weight of the variance over time of those actions: the
    # policy may hold a steady torque at rest (an uncompensated load needs one), but not waver
    settle: float = 0.0  # weight of the imagined effector's path (m per step) while within
    # settle_radius_m of its goal: the hover the eval measures as the path in the last second,
    # penalised in the closed loop where it happens; reaching the goal from farther costs nothing
    settle_radius_m: float = 0.02
    real_rest: float = 0.0  # weight of the variance over time of the policy's actions along
    # recorded windows (its input the real observations) at the steps the effector was within
    # real_rest_radius_m of its goal: the wander at the real rest, which the imagined one misses
    real_rest_radius_m: float = 0.02
    activity_bounds: float = 0.0  # weight of the firing-rate penalty below ...
    activity_min_hz: float = 1.0  # ... this rate per neuron (dead neurons) or above ...
    activity_max_hz: float = 100.0  # ... this rate per neuron; in units of 100 Hz squared
    eval_every: int = 5  # iterations between quick validations (0: never)
    eval_episodes: int = 32  # validation episodes (training-distribution goals, not held out)
    threads: int = 2  # torch intra-op threads
    env_workers: int = 1  # processes stepping the collection envs (envs.parallel); the
    # Panda's physics is one core per process, so 2 on a 2-core machine
    fused_neurons: bool = True  # without compile: layer by layer, each layer's substeps one
    # fused autograd function (spiking.fused); same values and gradients (tested)
    compile: bool = True  # each net's control step through torch.compile (SpikingNet.compile_step;
    # same values and gradients, tested; needs a C++ compiler, else falls back to fused_neurons
    # with a warning); costs ~10-80 s of compiling over the first updates (a fine-tune too)


@dataclass
class RLConfig:
    """Model-free training (``algorithm: td3``; Van den Berghe et al. 2025 and Xu et al. 2025
    (Proxy Target)). Sizes default to Xu et al.'s."""

    total_steps: int = 50_000  # environment transitions
    envs: int = 8  # parallel copies stepped together
    start_steps: int = 2_000  # uniform random actions first
    updates_per_step: float = 1.0  # gradient updates per transition
    batch: int = 256
    replay_size: int = 1_000_000
    exploration_noise: float = 0.1  # Gaussian std added to the actor's actions
    goal_error: bool = False  # actor and critics see the goal minus the effector, not the goal
    actor: str = "snn"  # "snn" (population-coded spiking) or "mlp" (the ANN baseline)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    pop: int = 10  # neurons per observation / action dimension
    timesteps: int = 5  # neural steps per action
    neuron: str = "lif"  # or "alif"
    target: str = "proxy"  # target actor: "proxy" (non-spiking imitation) or "polyak"
    proxy_hidden: list[int] = field(default_factory=lambda: [512, 512])
    proxy_steps: int = 3
    proxy_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    slope_schedule: str = "fixed"  # "fixed", "scheduled" (shallow -> steep) or "adaptive" (by return)
    slope: float = 10.0  # fixed k
    slope_start: float = 2.0  # scheduled / adaptive: from this k ...
    slope_end: float = 100.0  # ... to this k
    slope_steps: int = 0  # scheduled: over this many transitions (0: total_steps)
    adaptive_return_low: float = -100.0  # adaptive: episode return mapped to slope_start ...
    adaptive_return_high: float = 0.0  # ... and to slope_end
    guide_share: float = 0.0  # share of each episode the classical guide flies at the start
    guide_decay_steps: int = 0  # transitions over which that share falls to 0
    bc_weight: float = 0.0  # TD3+BC term towards the guide's actions (0: off)
    eval_every: int = 5_000  # transitions between evaluations on validation goals
    eval_episodes: int = 32
    threads: int = 1


@dataclass
class ExperimentConfig:
    task: str = "reacher"
    seed: int = 0
    algorithm: str = "predictive"  # "predictive" (Huebotter et al. 2025, train) or "td3" (rl)
    env: Any = None  # ReacherConfig or PandaConfig, chosen by ``task``
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected None")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(annotation)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # a dataclass that checks its own values
        raise ConfigError(f"{where}: {exc}") from None


def from_dict(data: dict[str, Any], where: str = "config") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    task = data.get("task", "reacher")
    if task not in TASKS:
        raise ConfigError(f"{where}.task: unknown task {task!r}; choose one of {list(TASKS)}")
    env_data = data.pop("env", None)
    config = build(ExperimentConfig, data, where)
    config.env = build(env_config_class(task), env_data, f"{where}.env")
    _validate(config, where)
    return config


def _validate(config: ExperimentConfig, where: str) -> None:
    m, t, r = config.model, config.train, config.rl
    if config.algorithm not in ("predictive", "td3"):
        raise ConfigError(f"{where}.algorithm: expected 'predictive' or 'td3', got {config.algorithm!r}")
    if config.task == "gym" and config.algorithm != "td3":
        raise ConfigError(f"{where}.algorithm: task 'gym' is trained with 'td3' only, got {config.algorithm!r}")
    for key, allowed in (("actor", ("snn", "mlp")), ("neuron", ("lif", "alif")), ("target", ("proxy", "polyak")),
                         ("slope_schedule", ("fixed", "scheduled", "adaptive"))):
        if getattr(r, key) not in allowed:
            raise ConfigError(f"{where}.rl.{key}: expected one of {list(allowed)}, got {getattr(r, key)!r}")
    for key in ("total_steps", "envs", "batch", "pop", "timesteps", "policy_delay", "eval_episodes"):
        if getattr(r, key) < 1:
            raise ConfigError(f"{where}.rl.{key}: must be >= 1")
    if not r.updates_per_step > 0:
        raise ConfigError(f"{where}.rl.updates_per_step: must be > 0 (fractions carry over), got {r.updates_per_step}")
    if m.kind not in ("snn", "gru"):
        raise ConfigError(f"{where}.model.kind: expected 'snn' or 'gru', got {m.kind!r}")
    if not (m.goal_integral_gain >= 0 and m.goal_integral_tau_s > 0 and m.goal_integral_limit_m > 0
            and m.goal_integral_radius_m >= 0 and m.goal_integral_closing_m_s >= 0):
        raise ConfigError(f"{where}.model: goal_integral_gain, goal_integral_radius_m and "
                          f"goal_integral_closing_m_s must be >= 0, "
                          f"goal_integral_tau_s and goal_integral_limit_m > 0")
    if m.goal_integral_closing_m_s and not m.goal_integral_gain:
        raise ConfigError(f"{where}.model.goal_integral_closing_m_s: gates the integral action, which is off "
                          f"(goal_integral_gain 0)")
    if not m.action_damping >= 0:
        raise ConfigError(f"{where}.model.action_damping: must be >= 0 (0: off), got {m.action_damping}")
    for key in ("policy_recurrent", "policy_fine_error_m", "action_damping"):
        if getattr(m, key) and m.kind != "snn":
            raise ConfigError(f"{where}.model.{key}: for a spiking policy (kind 'snn'), got kind {m.kind!r}")
    if not (t.settle >= 0 and t.settle_radius_m > 0):
        raise ConfigError(f"{where}.train: settle must be >= 0 (0: off) and settle_radius_m > 0, "
                          f"got {t.settle} and {t.settle_radius_m}")
    if not (t.real_rest >= 0 and t.real_rest_radius_m > 0):
        raise ConfigError(f"{where}.train: real_rest must be >= 0 (0: off) and real_rest_radius_m > 0, "
                          f"got {t.real_rest} and {t.real_rest_radius_m}")
    if m.policy_fine_error_m < 0:
        raise ConfigError(f"{where}.model.policy_fine_error_m: must be >= 0 (0: off), got {m.policy_fine_error_m}")
    if m.neuron not in ("alif", "lif"):
        raise ConfigError(f"{where}.model.neuron: expected 'alif' or 'lif', got {m.neuron!r}")
    for key in ("hidden", "layers", "substeps"):
        if getattr(m, key) < 1:
            raise ConfigError(f"{where}.model.{key}: must be >= 1")
    for key in ("policy_substeps", "policy_readout_tau_mem", "policy_readout_tau_syn"):
        if not getattr(m, key) >= 0:
            raise ConfigError(f"{where}.model.{key}: must be >= 0 (0: as the shared setting), got {getattr(m, key)}")
        if getattr(m, key) and (m.kind != "snn" or config.algorithm != "predictive"):
            raise ConfigError(f"{where}.model.{key}: for a spiking policy trained by algorithm 'predictive', "
                              f"got kind {m.kind!r}, algorithm {config.algorithm!r}")
    for key in ("policy_readout_tau_mem", "policy_readout_tau_syn"):
        value = getattr(m, key)
        if value and not 1e-3 <= value <= 7.0:
            raise ConfigError(f"{where}.model.{key}: must be 0 or within [0.001, 7] s, got {value}")
        if value and m.learn_tau and m.policy_readout_learn_tau:
            raise ConfigError(f"{where}.model.{key}: fixes the policy's readout time constants; set "
                              f"model.policy_readout_learn_tau: false (a learned readout keeps its own)")
    for key in ("iterations", "envs", "batch", "unroll", "replay_episodes"):
        if getattr(t, key) < 1:
            raise ConfigError(f"{where}.train.{key}: must be >= 1")
    if t.distance_loss not in ("squared", "euclidean"):
        raise ConfigError(f"{where}.train.distance_loss: expected 'squared' or 'euclidean', got {t.distance_loss!r}")
    if not 0.0 <= t.teacher_forcing <= 1.0:
        raise ConfigError(f"{where}.train.teacher_forcing: must lie in [0, 1]")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.iterations=10"`` -> (["train", "iterations"], 10); value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.iterations=10")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def key_values(items: list[str], what: str) -> dict[str, Any]:
    """``["hand_payload_kg=1.0"]`` -> ``{"hand_payload_kg": 1.0}`` (values read as YAML);
    blank items are ignored (ROS string-array parameters cannot be empty)."""
    out = {}
    for item in items:
        if not item.strip():
            continue
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"{what} {item!r} is not KEY=VALUE")
        path, value = parse_override(item)
        out[".".join(path)] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return from_dict(apply_overrides(data or {}, overrides or []), where=str(path))
