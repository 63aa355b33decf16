"""Which goals a controller accepts: finite points inside a configured reach workspace."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class GoalRejected(ValueError):
    """A goal outside the workspace (or not a number); the message says which bound."""


@dataclass(frozen=True)
class Workspace:
    """A shell around the shoulder, above a floor: where the trained policy was taught to reach.

    Defaults fit the Panda task's goal distribution (effector positions of sampled joint
    configurations, at least 0.1 m above the table; the arm's reach is about 0.85 m from
    its shoulder, 0.333 m above the base).
    """

    center: tuple[float, float, float] = (0.0, 0.0, 0.333)  # m, base frame
    min_radius: float = 0.25  # m: closer goals make the arm fold into itself
    max_radius: float = 0.80  # m
    min_z: float = 0.10  # m above the base (table)
    max_z: float = 1.10  # m

    def __post_init__(self) -> None:
        values = [*self.center, self.min_radius, self.max_radius, self.min_z, self.max_z]
        if len(self.center) != 3 or not np.all(np.isfinite(values)):
            raise ValueError(f"workspace: center needs 3 finite numbers and every bound must be finite, got {values}")
        if not (0 <= self.min_radius < self.max_radius and self.min_z < self.max_z):
            raise ValueError(f"workspace: need 0 <= min_radius < max_radius and min_z < max_z, got radii "
                             f"{self.min_radius}, {self.max_radius}, heights {self.min_z}, {self.max_z}")

    def check(self, point) -> np.ndarray:
        p = np.asarray(point, dtype=np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise GoalRejected(f"goal must be 3 finite numbers, got {np.asarray(point).tolist()}")
        r = float(np.linalg.norm(p - np.asarray(self.center)))
        if r > self.max_radius:
            raise GoalRejected(f"goal {np.round(p, 3).tolist()} is {r:.3f} m from the shoulder, "
                               f"beyond the {self.max_radius} m workspace")
        if r < self.min_radius:
            raise GoalRejected(f"goal {np.round(p, 3).tolist()} is {r:.3f} m from the shoulder, "
                               f"inside the {self.min_radius} m keep-out")
        if not self.min_z <= p[2] <= self.max_z:
            raise GoalRejected(f"goal height {p[2]:.3f} m is outside [{self.min_z}, {self.max_z}] m")
        return p
