"""What the model learns from: the study's completed trials that fit the current space."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from paretune.search._botorch.problem import Problem


def observations(
    problem: Problem, trials: Sequence[FrozenTrial], *, has_constraints_func: bool
) -> tuple[list[FrozenTrial], list[list[float]] | None]:
    """The trials the model learns from, and their constraint values (``<= 0`` feasible).

    A complete trial is left out when a value is not finite, when its params are not valid in
    the current space (a range changed between sessions: its point would be mislabelled), or,
    in a constrained study, when its constraints are missing, not finite or not the same set
    as the latest trial's. Constraints come from ``constraints_func`` or from
    ``Trial.set_constraint``; with a ``constraints_func`` (``has_constraints_func``) but no
    trial carrying constraints yet, there is nothing to learn from.
    """
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.values is not None
        and all(math.isfinite(v) for v in t.values)
        and problem.covers(t.params)
    ]
    keys = next((sorted(t.constraints) for t in reversed(complete) if t.constraints), None)
    if keys is None:
        if has_constraints_func:
            # Not computed yet (trials from before this sampler): nothing to learn from.
            return [], None
        return complete, None
    kept, values = [], []
    for t in complete:
        c = t.constraints
        if sorted(c) == keys and all(math.isfinite(c[k]) for k in keys):
            kept.append(t)
            values.append([float(c[k]) for k in keys])
    return kept, values
