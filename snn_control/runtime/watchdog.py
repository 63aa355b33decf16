"""Is the newest joint state fresh enough to act on?

A real Panda keeps the last torque it was sent, so the controller must stop the arm on
its own when joint states stop coming. Ages are measured on a monotonic clock from the
moment a state was received, so no step of the ROS or system clock can hide a dead
publisher. Where the header stamps come from the same clock as the controller's ROS
clock (the real arm, the simulator), their age is checked too (``check_stamp``): a
stamp from the past beyond the timeout, one from the future, or one that does not move
on (a frozen driver republishing its last state) is not fresh.

A stream that is stale now and then (a publisher slower than the timeout) is one fault,
not a chatter of stops and restarts that reset the networks each time: once stale, the
states must stay fresh for ``recovery_s`` before the controller acts again.
"""

from __future__ import annotations

from dataclasses import dataclass

FUTURE_SLACK_S = 0.002  # stamps this far ahead of the clock still count (clock granularity)


@dataclass
class StateWatchdog:
    timeout_s: float  # s: an older state is stale
    recovery_s: float  # s of fresh states before a stale stream counts as fresh again
    check_stamp: bool = True

    def __post_init__(self) -> None:
        self.received_s: float | None = None  # monotonic receipt time of the last fresh state
        self.stamp_s: float | None = None  # its header stamp (ROS clock)
        self.stamp_age_s: float | None = None  # stamp age at receipt
        self.valid_s: float | None = None  # receipt time of the last state that was fresh on arrival
        self.frozen = 0  # states received whose stamp did not move on
        self.stale = False
        self.stale_events = 0
        self._fresh_since: float | None = None

    def received(self, mono_s: float, stamp_s: float | None = None, clock_s: float | None = None) -> bool:
        """A state arrived at ``mono_s`` (monotonic) stamped ``stamp_s`` while the ROS
        clock read ``clock_s``. False when its stamp is frozen: it does not count as new."""
        if stamp_s is not None and self.stamp_s is not None and stamp_s <= self.stamp_s:
            self.frozen += 1
            return False
        self.received_s, self.stamp_s = mono_s, stamp_s
        self.stamp_age_s = (clock_s - stamp_s) if (stamp_s is not None and clock_s is not None) else None
        if not (self.check_stamp and self.stamp_age_s is not None
                and not -FUTURE_SLACK_S <= self.stamp_age_s <= self.timeout_s):
            self.valid_s = mono_s
        return True

    def problem(self, mono_s: float) -> str | None:
        """Why the state is not fresh at ``mono_s``, or None."""
        if self.received_s is None:
            return "no joint state yet"
        age = mono_s - self.received_s
        if age > self.timeout_s:
            return f"no new joint state for {age * 1e3:.0f} ms (timeout {self.timeout_s * 1e3:.0f} ms)"
        if self.check_stamp and self.stamp_age_s is not None:
            stamp_age = self.stamp_age_s + age
            if stamp_age > self.timeout_s:
                return f"joint state stamped {stamp_age * 1e3:.0f} ms ago (timeout {self.timeout_s * 1e3:.0f} ms)"
            if stamp_age < -FUTURE_SLACK_S:
                return f"joint state stamped {-stamp_age * 1e3:.0f} ms in the future"
        return None

    def check(self, mono_s: float) -> str | None:
        """:meth:`problem`, latched: after a stale spell, fresh only once fresh for ``recovery_s``."""
        reason = self.problem(mono_s)
        if self.received_s is None:  # not started yet: nothing went stale
            return reason
        if reason is not None:
            if not self.stale:
                self.stale_events += 1
            self.stale, self._fresh_since = True, None
            return reason
        if self.stale:
            if self._fresh_since is None:
                self._fresh_since = mono_s
            if mono_s - self._fresh_since < self.recovery_s:
                return f"joint states recovering ({(mono_s - self._fresh_since) * 1e3:.0f} of " \
                       f"{self.recovery_s * 1e3:.0f} ms fresh)"
            self.stale = False
        return None
