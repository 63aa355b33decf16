"""Surrogate-slope schedules (Van den Berghe et al. 2025) for the fast-sigmoid derivative
``1 / (1 + k|U - theta|)^2``.

- :class:`FixedSlope`: ``k`` throughout;
- :class:`ScheduledSlope`: shallow to steep over training, geometric in the step:
  ``k(t) = k0 (k1 / k0)^min(1, t / T)``;
- :class:`AdaptiveSlope`: steepens as the agent gets better, by the moving average of its
  episode returns ``R``: ``k = k0 (k1 / k0)^p``, ``p = clip((R - R_low) / (R_high - R_low), 0, 1)``.

Each returns the slope for the current step via ``value(step)``; the trainer sets it on
the actor's shared surrogate object and logs it.
"""

from __future__ import annotations

from dataclasses import dataclass


class FixedSlope:
    def __init__(self, k: float) -> None:
        self.k = float(k)

    def value(self, step: int) -> float:
        return self.k

    def observe_return(self, episode_return: float) -> None:
        pass


@dataclass
class ScheduledSlope:
    k0: float  # shallow, at the start
    k1: float  # steep, from ``steps`` on
    steps: int

    def value(self, step: int) -> float:
        frac = min(1.0, max(0.0, step / max(1, self.steps)))
        return self.k0 * (self.k1 / self.k0) ** frac

    def observe_return(self, episode_return: float) -> None:
        pass


class AdaptiveSlope:
    def __init__(self, k0: float, k1: float, return_low: float, return_high: float, smoothing: float = 0.9) -> None:
        if return_high <= return_low:
            raise ValueError(f"return_high {return_high} must exceed return_low {return_low}")
        self.k0, self.k1, self.low, self.high, self.smoothing = k0, k1, return_low, return_high, smoothing
        self.average: float | None = None

    def observe_return(self, episode_return: float) -> None:
        r = float(episode_return)
        self.average = r if self.average is None else self.smoothing * self.average + (1 - self.smoothing) * r

    def progress(self) -> float:
        if self.average is None:
            return 0.0
        return min(1.0, max(0.0, (self.average - self.low) / (self.high - self.low)))

    def value(self, step: int) -> float:
        return self.k0 * (self.k1 / self.k0) ** self.progress()


def make_slope_schedule(kind: str, k: float, k0: float, k1: float, steps: int,
                        return_low: float, return_high: float):
    if kind == "fixed":
        return FixedSlope(k)
    if kind == "scheduled":
        return ScheduledSlope(k0, k1, steps)
    if kind == "adaptive":
        return AdaptiveSlope(k0, k1, return_low, return_high)
    raise ValueError(f"unknown slope schedule {kind!r}; choose fixed, scheduled or adaptive")
