"""What a trial's ``ctx.decide`` asks: a policy snapshot, or a schedule to replay.

Both are :class:`~paretune.search.DeciderRef` s: plain data a :class:`~paretune.search.Job`
carries to wherever its trial runs (a worker process, a Ray worker), built there into the
decider once per trial.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from paretune._errors import ConfigError
from paretune.search.dac._policy import Policy, PolicySnapshot
from paretune.spaces.dynamic import Decision, DecisionState

if TYPE_CHECKING:
    from paretune.objectives import Decider, TrialContext

__all__ = ["PolicyDecider", "ScheduleDecider"]


@dataclass(frozen=True)
class PolicyDecider:
    """Decisions by a policy: sampled (training: the draws are keyed by ``seed`` and the trial
    number, so a retried trial decides the same way) or greedy (the most probable action:
    a saved policy evaluated, deterministic).

    Attributes:
        snapshot: The policy as it was when the trial started.
        greedy: Take the most probable action instead of sampling.
        seed: The draws' seed (``None``: the trial's ``ctx.seed``).
    """

    snapshot: PolicySnapshot
    greedy: bool = False
    seed: int | None = None

    def build(self, ctx: TrialContext) -> Decider:
        policy = Policy.from_snapshot(self.snapshot)
        rng = None
        if not self.greedy:
            seed = ctx.seed if self.seed is None else self.seed
            rng = np.random.default_rng([abs(int(seed)), ctx.trial_number])

        name = self.snapshot.param.name

        def decide(state: DecisionState) -> Decision:
            if state.name and state.name != name:
                raise ValueError(
                    f"this policy sets {name!r}, but the objective asked it to decide "
                    f"{state.name!r}"
                )
            index, value, log_prob = policy.act(state, rng=rng)
            return Decision(state=state, action=index, value=value, log_prob=log_prob)

        return decide


@dataclass(frozen=True)
class ScheduleDecider:
    """Replays a recorded schedule: from ``steps[i]`` on, the value is ``values[i]``.

    What a PBT trial's exported schedule, or another run's trajectory
    (:meth:`from_trajectory`), becomes so that it can be run again.

    Attributes:
        steps: Increasing steps at which each value starts (the first is usually 0).
        values: The parameter's value from each of those steps.
    """

    steps: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values) or not self.steps:
            raise ConfigError(
                f"a schedule needs one value per step, at least one, but got "
                f"{len(self.steps)} steps and {len(self.values)} values."
            )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ConfigError(f"a schedule's steps must increase, but got {list(self.steps)}.")

    @classmethod
    def from_trajectory(cls, trajectory: Sequence[dict[str, object]]) -> ScheduleDecider:
        """The values a trajectory (``Decision.to_dict()`` list) set, at its steps."""
        steps = tuple(int(d["state"]["step"]) for d in trajectory)  # type: ignore[index]
        values = tuple(float(d["value"]) for d in trajectory)  # type: ignore[arg-type]
        return cls(steps, values)

    def value_at(self, step: int) -> float:
        """The schedule's value at ``step`` (the first value before the first step)."""
        i = bisect.bisect_right(self.steps, step) - 1
        return self.values[max(0, i)]

    def build(self, ctx: TrialContext) -> Decider:
        def decide(state: DecisionState) -> Decision:
            value = self.value_at(state.step)
            return Decision(state=state, action=None, value=value)

        return decide
