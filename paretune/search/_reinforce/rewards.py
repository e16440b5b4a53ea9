"""Rewards: a completed trial's objective values as one number, larger is better.

A reward may keep state across trials (the hypervolume reward keeps the front of the trials
rewarded before): the learner calls it on the feasible trials in trial-number order, so the
reward of a trial depends only on the trials numbered before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from optuna.study import StudyDirection

from paretune._errors import ConfigError
from paretune.objectives import hypervolume, pareto_mask

REWARDS = ("value", "mnas", "hypervolume", "volume")

# Without a reference point the front's reference is the worst observed value plus this share
# of the observed range, so that the worst point still adds volume.
_RANGE_MARGIN = 0.1


class Reward:
    """``reward(values) -> float | None``; ``None``: the values cannot be rewarded (the
    learner then treats the trial as infeasible)."""

    def __call__(self, values: np.ndarray) -> float | None:
        raise NotImplementedError


class ValueReward(Reward):
    """One objective: its value, negated when minimised."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def __call__(self, values: np.ndarray) -> float | None:
        return self.sign * float(values[0])


class MnasReward(Reward):
    """MnasNet's soft-constrained reward ``s * (c / target)^w`` (Tan et al., 2019).

    ``s`` is the score metric in its maximised sign (negated when the study minimises it) and
    ``c`` the cost metric. MnasNet's score (an accuracy) is positive; for a negative ``s`` the
    reward is ``s / (c / target)^w`` instead, so that it rises with the score and, for
    ``w < 0``, falls with the cost everywhere. A cost that is not positive cannot be rewarded.
    """

    def __init__(self, *, score: int, cost: int, target: float, w: float, sign: float) -> None:
        self.score, self.cost, self.target, self.w, self.sign = score, cost, target, w, sign

    def __call__(self, values: np.ndarray) -> float | None:
        s = self.sign * float(values[self.score])
        c = float(values[self.cost])
        if not c > 0.0:
            return None
        factor = (c / self.target) ** self.w
        return s * factor if s >= 0.0 else s / factor


class HypervolumeReward(Reward):
    """The hypervolume improvement of a trial over the front of the trials rewarded before it
    (``own=False``), or the hypervolume the trial dominates on its own (``own=True``).

    Objectives are sign-flipped to be minimised and normalised per objective, at each trial, to
    ``(y - best) / (ref - best)`` with ``best`` the best value observed so far (this trial
    included) and ``ref`` the reference point, whose normalised value is then 1; without a
    reference point, ``ref`` is the worst observed value and the normalised reference is
    ``1.1``. Both rewards are shares of the normalised box, so objectives of different scales
    weigh alike. The improvement is 0 for a dominated trial (and one beyond the reference):
    a sparse reward once the front fills. The own volume, ``prod_i (ref_i - z_i)``, grades every
    trial inside the reference, dominated or not, and is largest towards the middle of the
    front.

    Args:
        signs: ``+1`` for a minimised objective, ``-1`` for a maximised one.
        reference: The reference point in the objectives' own units, or ``None``.
        own: Reward the trial's own volume instead of its improvement.
    """

    def __init__(
        self, signs: np.ndarray, reference: np.ndarray | None, *, own: bool = False
    ) -> None:
        self.signs = signs
        self.reference = None if reference is None else signs * reference
        self.own = own
        m = len(signs)
        self.front = np.empty((0, m))
        self.low = np.full(m, math.inf)
        self.high = np.full(m, -math.inf)

    def __call__(self, values: np.ndarray) -> float | None:
        y = self.signs * values
        self.low = np.minimum(self.low, y)
        self.high = np.maximum(self.high, y)
        if self.reference is None:
            scale = self.high - self.low
            ref = np.full(len(y), 1.0 + _RANGE_MARGIN)
        else:
            scale = self.reference - self.low
            ref = np.ones(len(y))
        scale = np.where(scale > 0.0, scale, 1.0)
        z = (y - self.low) / scale
        if self.own:
            return float(np.prod(np.clip(ref - z, 0.0, None)))
        front = (self.front - self.low) / scale
        before = hypervolume(front, ref)
        improvement = hypervolume(np.vstack([front, z]), ref) - before
        points = np.vstack([self.front, y])
        self.front = points[pareto_mask(points, ["minimize"] * len(y))]
        return max(improvement, 0.0)


def make_reward(
    kind: str,
    directions: Sequence[StudyDirection],
    *,
    score: int,
    cost: int,
    target: float | None,
    w: float,
    reference_point: Sequence[float] | None,
) -> Reward:
    """The reward ``kind`` (one of :data:`REWARDS`) for a study with ``directions``.

    Raises:
        ConfigError: The reward does not fit the study: ``value`` with several objectives,
            ``mnas`` with one, metric indices out of range, a reference point of another
            length.
    """
    n = len(directions)
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    if kind == "value":
        if n != 1:
            raise ConfigError(
                f"`reward='value'` needs one objective, but the study has {n}; use "
                "'hypervolume' or 'mnas'."
            )
        return ValueReward(-signs[0])
    if kind == "mnas":
        if n < 2:
            raise ConfigError(
                f"`reward='mnas'` needs a score and a cost objective, but the study has {n}; "
                "use 'value'."
            )
        for name, index in (("score", score), ("cost", cost)):
            if not 0 <= index < n:
                raise ConfigError(
                    f"`{name}` must be an objective index in [0, {n - 1}], but got {index}."
                )
        if target is None:
            raise ConfigError(
                "`reward='mnas'` needs `target`, the cost the reward is centred on (MnasNet's "
                "target latency), in the cost objective's units."
            )
        return MnasReward(score=score, cost=cost, target=target, w=w, sign=-signs[score])
    reference = None
    if reference_point is not None:
        if len(reference_point) != n:
            raise ConfigError(
                f"`reference_point` has {len(reference_point)} values but the study has {n} "
                "objectives; give one value per objective."
            )
        reference = np.asarray(reference_point, dtype=np.float64)
    return HypervolumeReward(signs, reference, own=kind == "volume")
