"""Guided training (Van den Berghe et al. 2025): a privileged non-spiking guide flies the
first part of each episode (jump-start), its share shrinking during training.

The guide here is the classical operational-space controller (:mod:`snn_control.classical`),
which knows the robot model. :class:`GuideSchedule` says, per episode, how many of its
first steps the guide acts; the trainer switches between guide and spiking actor per step
(the env is not edited). The same guide's actions feed the behaviour-cloning term.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GuideSchedule:
    share0: float  # share of an episode flown by the guide at the start of training
    decay_steps: int  # environment steps over which the share falls linearly to 0

    def share(self, env_step: int) -> float:
        if self.decay_steps <= 0:
            return 0.0
        return max(0.0, self.share0 * (1.0 - env_step / self.decay_steps))

    def guided_steps(self, env_step: int, episode_steps: int) -> int:
        """How many of an episode's first steps the guide flies, for an episode starting now."""
        return int(round(self.share(env_step) * episode_steps))
