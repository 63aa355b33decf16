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
