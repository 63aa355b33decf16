"""How a simulated Panda differs from the nominal one: joint friction and randomised plants.

The real arm's torque interface compensates gravity with its own model of the links and
nothing else, so a controller meets three kinds of difference there:

- **joint friction**, which nothing compensates. Gaz, Cognetti, Oliva, Robuffo Giordano
  and De Luca ("Dynamic Identification of the Franka Emika Panda Robot With Retrieval of
  Feasible Parameters Using Penalty-Based Optimization", IEEE RA-L 2019) identified a
  sigmoid per joint, ``tau_f = phi1 / (1 + exp(-phi2 (dq + phi3))) - phi1 / (1 + exp(-phi2
  phi3))``: about +-phi1/2 N m once the joint moves, a steep viscous-like slope near rest;
  :func:`friction_torque` adds a plain viscous term ``d * dq`` on top (``joint_damping``);
- **a plant that is not the model**: a payload at the hand, heavier or lighter links
  (whose weight the compensation then gets wrong), latency, encoder noise, a constant
  torque offset;
- **which** of these a given arm has: :class:`PlantRandomization` draws them per episode
  and copy from seeded ranges (domain randomisation), so a policy trains on many arms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import EnvError

# Gaz et al. 2019, joints 1-7: phi1 (N m), phi2 (s/rad), phi3 (rad/s).
GAZ_PHI1 = np.array([0.54615, 0.87224, 0.64068, 1.2794, 0.83904, 0.30301, 0.56489])
GAZ_PHI2 = np.array([5.1181, 9.0657, 10.136, 5.5903, 8.3469, 17.133, 10.336])
GAZ_PHI3 = np.array([0.039533, 0.025882, -0.04607, 0.036194, 0.026226, -0.021047, 0.0035526])
FRICTION_MODELS = ("none", "gaz2019")


def friction_torque(dq: np.ndarray, model: str, viscous: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """The torque (N m) that friction takes from each joint moving at ``dq`` ``(..., J)`` rad/s:
    the motor must give this much more to move as commanded. ``viscous`` ``(J,)`` N m s/rad;
    ``scale`` multiplies the whole (a plant with more or less friction)."""
    j = dq.shape[-1]
    tau = viscous * dq
    if model == "gaz2019":
        phi1, phi2, phi3 = GAZ_PHI1[:j], GAZ_PHI2[:j], GAZ_PHI3[:j]
        tau = tau + phi1 / (1.0 + np.exp(-phi2 * (dq + phi3))) - phi1 / (1.0 + np.exp(-phi2 * phi3))
    return scale * tau


def _check_range(name: str, value: list, low: float, high: float | None = None) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] or (high is not None and value[1] > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise EnvError(f"randomize.{name}: expected [low, high] within {bound}, low <= high; got {value}")


@dataclass
class PlantRandomization:
    """Per episode and copy, each quantity is drawn uniformly from its ``[low, high]``
    (integers for the delay). The defaults draw the nominal plant: randomisation off.

    The draws depend only on ``seed``, the number of resets so far and the copy's index,
    so a run is reproducible, and a batch split over worker processes draws what the
    serial batch draws."""

    seed: int = 0
    payload_kg: list[float] = field(default_factory=lambda: [0.0, 0.0])  # uncompensated, at the hand
    friction_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # x the configured friction
    link_mass_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # x every link's mass and
    # inertia; the compensation keeps the nominal masses, so the difference's weight acts on the arm
    action_delay_steps: list[int] = field(default_factory=lambda: [0, 0])  # control steps of latency
    torque_offset_fraction: float = 0.0  # a constant offset per joint, uniform in +- this share
    # of the joint's torque limit (a miscalibrated torque sensor or motor constant)

    def __post_init__(self) -> None:
        _check_range("payload_kg", self.payload_kg, 0.0)
        _check_range("friction_scale", self.friction_scale, 0.0)
        _check_range("link_mass_scale", self.link_mass_scale, 0.1)
        _check_range("action_delay_steps", self.action_delay_steps, 0, 10)
        if not 0.0 <= self.torque_offset_fraction <= 0.5:
            raise EnvError(f"randomize.torque_offset_fraction: expected [0, 0.5], got {self.torque_offset_fraction}")

    @property
    def active(self) -> bool:
        nominal = PlantRandomization(seed=self.seed)
        return any(getattr(self, k) != getattr(nominal, k) for k in
                   ("payload_kg", "friction_scale", "link_mass_scale", "action_delay_steps", "torque_offset_fraction"))

    def draw(self, reset_index: int, copies: np.ndarray, joints: int) -> dict[str, np.ndarray]:
        """The plants of copies ``copies`` (global indices) for reset number ``reset_index``."""
        out = {k: [] for k in ("payload_kg", "friction_scale", "link_mass_scale", "action_delay_steps",
                               "torque_offset_fraction")}
        for copy in copies:
            rng = np.random.default_rng([self.seed, reset_index, int(copy)])
            out["payload_kg"].append(rng.uniform(*self.payload_kg))
            out["friction_scale"].append(rng.uniform(*self.friction_scale))
            out["link_mass_scale"].append(rng.uniform(*self.link_mass_scale))
            out["action_delay_steps"].append(rng.integers(self.action_delay_steps[0], self.action_delay_steps[1] + 1))
            out["torque_offset_fraction"].append(rng.uniform(-1.0, 1.0, joints) * self.torque_offset_fraction)
        return {k: np.asarray(v) for k, v in out.items()}
