"""Joint states by name: any order, extra joints ignored, bad data refused with a reason."""

from __future__ import annotations

from typing import Sequence

import numpy as np


class JointStateError(ValueError):
    """A joint state message the controller must not act on; the message says why."""


def order_joint_state(names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                      wanted: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities of the ``wanted`` joints, in that order.

    Raises :class:`JointStateError` when a wanted joint is missing, when the arrays'
    lengths disagree with ``names``, or when a wanted entry is NaN or infinite.
    """
    names = list(names)
    if len(positions) != len(names) or len(velocities) != len(names):
        raise JointStateError(f"{len(names)} names but {len(positions)} positions and "
                              f"{len(velocities)} velocities")
    index = {name: i for i, name in enumerate(names)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise JointStateError(f"joint state lacks {missing} (has {names})")
    rows = [index[w] for w in wanted]
    q = np.asarray(positions, dtype=np.float64)[rows]
    dq = np.asarray(velocities, dtype=np.float64)[rows]
    for label, values in (("position", q), ("velocity", dq)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise JointStateError(f"{label} of {wanted[int(np.argmax(bad))]} is {values[bad][0]}")
    return q, dq


def check_plausible(names: Sequence[str], q: np.ndarray, dq: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    velocity_limit: np.ndarray, margin_rad: float, velocity_factor: float) -> None:
    """Raise :class:`JointStateError` unless every position lies within its limits plus
    ``margin_rad`` and every velocity within ``velocity_factor`` x its limit: a state beyond
    what the arm can do is a sensor or driver fault, not something to act on."""
    outside = (q < lower - margin_rad) | (q > upper + margin_rad)
    if outside.any():
        i = int(np.argmax(outside))
        raise JointStateError(f"position of {names[i]} is {q[i]:.4g} rad, outside its limits "
                              f"[{lower[i]:.4g}, {upper[i]:.4g}] + {margin_rad} rad")
    fast = np.abs(dq) > velocity_factor * velocity_limit
    if fast.any():
        i = int(np.argmax(fast))
        raise JointStateError(f"velocity of {names[i]} is {dq[i]:.4g} rad/s, beyond {velocity_factor} x its "
                              f"limit {velocity_limit[i]:.4g} rad/s")
