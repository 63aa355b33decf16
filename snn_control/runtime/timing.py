"""Control-loop timing: tick periods, compute times and deadline misses, as /diagnostics reports them."""

from __future__ import annotations

import threading

import numpy as np


class LoopStats:
    """Keeps the last ``window`` ticks. A deadline miss is a tick that started more than
    half a period late (period > 1.5 x nominal) or whose compute took longer than a period.

    Samples go into preallocated ring buffers: recording is one store, and a summary (in
    another thread, every second) copies arrays rather than converting Python containers,
    which held the GIL long enough to delay a 1 kHz command."""

    def __init__(self, period_s: float, window: int = 5000) -> None:
        self.period_s = period_s
        self._periods = np.zeros(window)
        self._computes = np.zeros(window)
        self._n_periods = 0
        self.ticks = 0
        self.misses = 0
        self.late = 0  # ticks that started more than late_after_s after their slot
        self.late_after_s = 0.001
        self._last_start: float | None = None
        self._longest = 0.0  # longest period since take_longest_period(), seconds
        self._longest_lock = threading.Lock()  # record() and the diagnostics run in two threads

    def take_longest_period(self) -> float:
        """The longest tick period since the previous call (s); a stall shows in exactly one
        report, however long the statistics window."""
        with self._longest_lock:
            longest, self._longest = self._longest, 0.0
        return longest

    def record(self, start_s: float, compute_s: float, slot_s: float | None = None) -> None:
        """``slot_s``: when this tick was due (a fixed schedule); a start more than
        ``late_after_s`` past it counts in ``late``."""
        if slot_s is not None and start_s - slot_s > self.late_after_s:
            self.late += 1
        if self._last_start is not None:
            period = start_s - self._last_start
            self._periods[self._n_periods % len(self._periods)] = period
            self._n_periods += 1
            with self._longest_lock:
                self._longest = max(self._longest, period)
            if period > 1.5 * self.period_s:
                self.misses += 1
        if compute_s > self.period_s:
            self.misses += 1
        self._computes[self.ticks % len(self._computes)] = compute_s
        self._last_start = start_s
        self.ticks += 1

    @property
    def periods(self) -> np.ndarray:
        """The kept tick periods (s), oldest first."""
        return _ordered(self._periods, self._n_periods)

    @property
    def computes(self) -> np.ndarray:
        return _ordered(self._computes, self.ticks)

    def summary(self) -> dict[str, float]:
        periods = self.periods if self._n_periods else np.zeros(1)
        computes = self.computes if self.ticks else np.zeros(1)
        return {
            "ticks": self.ticks,
            "period_p50_ms": float(np.percentile(periods, 50) * 1e3),
            "period_p99_ms": float(np.percentile(periods, 99) * 1e3),
            "compute_p50_us": float(np.percentile(computes, 50) * 1e6),
            "compute_p99_us": float(np.percentile(computes, 99) * 1e6),
            "deadline_misses": self.misses,
            "deadline_miss_rate": self.misses / max(self.ticks, 1),
            "late": self.late,
            "late_rate": self.late / max(self.ticks, 1),
        }


def _ordered(ring: np.ndarray, count: int) -> np.ndarray:
    """The ``min(count, len(ring))`` samples of a ring buffer written ``count`` times, oldest first."""
    if count <= len(ring):
        return ring[:count].copy()
    start = count % len(ring)
    return np.concatenate([ring[start:], ring[:start]])
