"""The I/O spec a checkpoint carries beside its weights.

It says what the network expects and produces (joint names and order, observation
layout and scaling, action scale, control period, substeps), so a controller can refuse
a checkpoint that does not match the robot it drives, with a message saying what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class IOSpecMismatch(ValueError):
    """A checkpoint's I/O spec disagrees with what the caller expects."""


class ObservationError(ValueError):
    """An observation that a network must not act on (wrong size, NaN, Inf)."""


@dataclass(frozen=True)
class IOSpec:
    task: str
    joint_names: tuple[str, ...]
    obs_names: tuple[str, ...]
    obs_scaling: str  # how each observation entry is scaled, in words
    effector: tuple[int, int]  # obs slice holding the effector position (goal units)
    goal_dim: int
    act_dim: int
    action_scale: tuple[float, ...]  # N m per unit action, joint order
    control_period_s: float
    substeps: int  # neural substeps per control step (0 for non-spiking models)
    neural_dt_s: float
    distance_unit: str

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def interface(self) -> dict[str, Any]:
        """:meth:`to_dict` without how the policy computes (its substeps): what another model must
        share to take this one's place or to go on from it."""
        return {k: v for k, v in self.to_dict().items() if k != "substeps"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "io_spec") -> "IOSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise IOSpecMismatch(f"{where}: missing keys {missing}, unknown keys {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def differences(self, expected: dict[str, Any]) -> list[str]:
        """Human-readable differences against the entries of ``expected`` (others ignored)."""
        mine = self.to_dict()
        out = []
        for key, want in expected.items():
            if key not in mine:
                out.append(f"{key}: not part of the I/O spec")
                continue
            have = mine[key]
            want = list(want) if isinstance(want, tuple) else want
            if isinstance(have, float) and isinstance(want, (int, float)):
                same = abs(have - want) <= 1e-9 * max(1.0, abs(want))
            else:
                same = have == want
            if not same:
                out.append(f"{key}: checkpoint has {have!r}, expected {want!r}")
        return out

    def validate_observation(self, obs: Any, source: str = "observation") -> None:
        """Refuse observations ``(..., obs_dim)`` of the wrong size or with NaN/Inf,
        naming the first bad entry (e.g. ``dq3``) and its row."""
        import numpy as np

        array = np.asarray(obs)
        if array.shape[-1:] != (self.obs_dim,):
            raise ObservationError(f"{source}: expected {self.obs_dim} entries {list(self.obs_names)}, "
                                   f"got shape {array.shape}")
        bad = ~np.isfinite(array)
        if bad.any():
            index = np.argwhere(bad)[0]
            row, column = ", ".join(str(int(i)) for i in index[:-1]), int(index[-1])
            where = f" (row {row})" if row else ""
            raise ObservationError(f"{source}: entry {self.obs_names[column]!r} is "
                                   f"{array[tuple(index)]}{where}; refusing to act on it")

    def check(self, expected: dict[str, Any], source: str = "checkpoint") -> None:
        diffs = self.differences(expected)
        if diffs:
            raise IOSpecMismatch(f"{source} does not match: " + "; ".join(diffs))
