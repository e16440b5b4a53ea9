"""The REINFORCE learner: the policy after a prefix of the study's completed trials."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretune.search._reinforce.policy import Policy
from paretune.search._reinforce.rewards import Reward


@dataclass(frozen=True)
class Settings:
    """The learning settings (the sampler's options of the same names)."""

    lr: float
    entropy: float
    baseline_decay: float
    n_startup_trials: int


class Learner:
    """Replays the completed trials, in trial-number order, as REINFORCE updates of a policy.

    For each trial (:meth:`consume`): its reward ``r`` (the worst feasible reward so far when
    it is infeasible; skipped while there is none), the running mean and standard deviation of
    all rewards so far (``r`` included), and, past the first ``n_startup_trials`` trials, one
    ascent step on ``A * log pi(actions) + entropy * H`` with the advantage
    ``A = (r - b) / std``. The baseline ``b`` is the mean reward of the start-up trials, then
    an exponential moving average, ``b <- decay * b + (1 - decay) * r`` after each step.

    Everything is deterministic: the same trials in the same order give the same policy.

    Attributes:
        consumed: The numbers of the trials replayed, in order.
    """

    def __init__(self, policy: Policy, reward: Reward, settings: Settings) -> None:
        self.policy = policy
        self.reward = reward
        self.settings = settings
        self.consumed: list[int] = []
        self.baseline = 0.0
        self.worst: float | None = None
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def std(self) -> float:
        """The standard deviation of the rewards so far (0 before two differ)."""
        return math.sqrt(self._m2 / self._n) if self._n else 0.0

    def consume(
        self, number: int, params: Mapping[str, Any], values: np.ndarray, *, feasible: bool
    ) -> float | None:
        """Replay trial ``number``; its reward, or ``None`` if it taught nothing."""
        self.consumed.append(number)
        r = self.reward(values) if feasible and np.isfinite(values).all() else None
        if r is None or not math.isfinite(r):
            if self.worst is None:
                return None
            r = self.worst
        else:
            self.worst = r if self.worst is None else min(self.worst, r)
        # Welford's running mean and variance.
        self._n += 1
        delta = r - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (r - self._mean)
        s = self.settings
        if len(self.consumed) <= s.n_startup_trials:
            self.baseline = self._mean
            return r
        std = self.std
        advantage = (r - self.baseline) / std if std > 0.0 else 0.0
        self.policy.step(self.policy.actions(params), advantage, lr=s.lr, entropy=s.entropy)
        self.baseline = s.baseline_decay * self.baseline + (1.0 - s.baseline_decay) * r
        return r
