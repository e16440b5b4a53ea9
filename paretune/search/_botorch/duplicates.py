"""Duplicate avoidance: what the trials of a study hold, and "is this proposal new?"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from paretune.spaces import SearchSpace

# Trial system attribute holding the proposal of a trial still running (see Seen).
PROPOSAL_KEY = "paretune:botorch_proposal"


@dataclass(frozen=True)
class Seen:
    """A trial's state and params, with the sampler's proposal for a trial still running."""

    state: TrialState
    params: dict[str, Any]

    @classmethod
    def of(cls, trial: FrozenTrial) -> Seen:
        params = trial.params
        if not trial.state.is_finished():
            proposed = trial.system_attrs.get(PROPOSAL_KEY)
            if isinstance(proposed, dict):
                params = {**proposed, **params}
        return cls(trial.state, params)


def params_key(space: SearchSpace, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable form of ``params``: canonical values, booleans apart from numbers."""
    out = []
    for name, value in params.items():
        if name in space and space[name].contains(value):
            value = space[name].canonical(value)
        out.append((name, isinstance(value, (bool, np.bool_)), _hashable(value)))
    return tuple(sorted(out, key=repr))


class Avoid:
    """The params of existing trials, for "is this proposal new?" in O(1) per check.

    With a known space (``exact``), proposals and trials hold exactly the active params:
    equal canonical dicts are duplicates. In a union space (define-by-run) a proposal holds
    every parameter ever seen, and duplicates a COMPLETE or PRUNED trial when it agrees on
    all of that trial's params; RUNNING and FAIL trials may hold only some of their params
    (still suggesting, or crashed part-way) and must match exactly.
    """

    def __init__(self, space: SearchSpace, trials: Sequence[Seen], *, exact: bool) -> None:
        self._space = space
        self._keys: set[tuple[Any, ...]] = set()
        self._subsets: list[tuple[Any, ...]] = []
        for t in trials:
            key = params_key(space, t.params)
            self._keys.add(key)
            if not exact and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                self._subsets.append(key)

    def has(self, params: Mapping[str, Any]) -> bool:
        key = params_key(self._space, params)
        if key in self._keys:
            return True
        if self._subsets:
            items = set(key)
            return any(items.issuperset(sub) for sub in self._subsets)
        return False

    def add(self, params: Mapping[str, Any]) -> None:
        self._keys.add(params_key(self._space, params))


def jsonable(value: Any) -> Any:
    """A storable form of a param value (numpy scalars to Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
