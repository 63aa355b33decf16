"""The last gate before a torque reaches the arm.

ros2_control's forward effort controller keeps applying the last command forever (no
timeout), and the real Panda trips when the commanded torque changes faster than
1000 N m/s. So every command passes :class:`TorqueSafetyFilter`: non-finite entries become
0, each joint is clipped to its limit, and the change since the last command is limited
to ``rate_limit * period``. Stopping (zero torque) goes through the same rate limit, so a
stop is never itself a jump.
"""

from __future__ import annotations

import numpy as np


class TorqueSafetyFilter:
    """``filter(desired (A,) N m) -> safe (A,) N m``; remembers what it last let through."""

    def __init__(self, torque_limit, rate_limit_nm_s: float, period_s: float) -> None:
        self.limit = np.asarray(torque_limit, dtype=np.float64)
        if np.any(self.limit <= 0) or not np.all(np.isfinite(self.limit)):
            raise ValueError(f"torque limits must be positive and finite, got {self.limit.tolist()}")
        if not rate_limit_nm_s > 0 or not period_s > 0:
            raise ValueError("rate limit and period must be positive")
        # N m per command, a hair under the limit so that rounding never lands above it
        self.max_step = rate_limit_nm_s * period_s * (1.0 - 1e-9)
        self.last = np.zeros_like(self.limit)
        self.non_finite_count = 0  # commands that had NaN/Inf entries (replaced by 0)

    def __call__(self, desired) -> np.ndarray:
        desired = np.asarray(desired, dtype=np.float64)
        if desired.shape != self.limit.shape:
            raise ValueError(f"torque command needs {self.limit.size} entries, got shape {desired.shape}")
        finite = np.isfinite(desired)
        if not finite.all():
            self.non_finite_count += 1
            desired = np.where(finite, desired, 0.0)
        target = np.clip(desired, -self.limit, self.limit)
        safe = self.last + np.clip(target - self.last, -self.max_step, self.max_step)
        self.last = safe
        return safe.copy()

    def stop(self) -> np.ndarray:
        """Towards zero torque, within the rate limit."""
        return self(np.zeros_like(self.limit))
