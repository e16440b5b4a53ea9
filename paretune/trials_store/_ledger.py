"""What the store asks of a study's trials on every trial, kept up to date trial by trial.

Every ask looks at the whole study: the budget counts the finished trials, recovery looks for
RUNNING trials of dead processes and interrupted trials never queued again, and the duplicate
check looks for a completed trial with the same parameters. Scanning every trial each time
made a trial cost O(n): on SQLite the loop took 57 ms a trial at 1,000 trials and 78 ms at
2,000 (``benchmarks/scale.py``, 2026-12-07, a loaded 2-core machine), about 20 ms more per
1,000 trials.

A finished trial never changes (Optuna refuses updates to it), so :class:`TrialLedger` reads
each finished trial once and keeps what those questions need; only the unfinished trials
(RUNNING, WAITING) are looked at again on each :meth:`~TrialLedger.refresh`. Trials that
other drivers add to the study are found there too: the study's storage (Optuna's cached RDB
storage) reads the new and the unfinished trials from the database on every ``get_trials``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from paretune.trials_store._attrs import INTERRUPTED_ATTR, INTERRUPTED_BY_ATTR, RETRY_OF_ATTR

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialLedger", "params_key"]


def params_key(params: Mapping[str, Any]) -> Hashable | None:
    """A hashable key that two parameter dicts share exactly when they are equal (``==``), or
    ``None`` for values that cannot be hashed (those are compared one by one)."""
    try:
        key = frozenset(params.items())
        hash(key)
    except TypeError:
        return None
    return key


class TrialLedger:
    """A study's trials, read incrementally: each finished trial once, the unfinished ones on
    every :meth:`refresh`.

    Args:
        study: The study (trials numbered 0, 1, ... as Optuna numbers them).
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._reset()

    def _reset(self) -> None:
        self._seen = 0  # trials [0, _seen) of the sorted list have been looked at
        self._last_number = -1  # the number of trial _seen - 1: a changed one means a rebuild
        self._open: dict[int, FrozenTrial] = {}  # unfinished trials by number
        self._states = {s: 0 for s in TrialState}  # finished trials per state
        self._completed_or_pruned = 0
        self._failed_counted: set[int] = set()  # FAIL trials that count unless retried
        self._retried_finished: set[int] = set()  # RETRY_OF of finished trials
        self._interrupted: dict[int, FrozenTrial] = {}  # FAIL + INTERRUPTED, not yet retried
        self._twins: dict[Hashable, FrozenTrial] = {}  # the first COMPLETE trial per key
        self._unhashable: list[FrozenTrial] = []  # COMPLETE trials whose params cannot key

    def refresh(self) -> None:
        """Take in what changed in the study since the last call."""
        trials = self._study.get_trials(deepcopy=False)
        if len(trials) < self._seen or (
            self._seen and trials[self._seen - 1].number != self._last_number
        ):
            self._reset()  # not the list seen before (trials do not go away): read it again
        fresh = [trials[i] for i in range(self._seen, len(trials))]
        by_number = None
        if self._open:
            by_number = {t.number: t for t in fresh}
            reread = []
            for number in list(self._open):
                # Trials before _seen keep their places: numbers are the list's order.
                t = by_number.get(number) or self._at(trials, number)
                if t is not None:
                    reread.append(t)
            fresh = reread + [t for t in fresh if t.number not in self._open]
        for t in fresh:
            if t.state.is_finished():
                self._open.pop(t.number, None)
                self._finish(t)
            else:
                self._open[t.number] = t
        self._seen = len(trials)
        self._last_number = trials[-1].number if trials else -1

    @staticmethod
    def _at(trials: list[FrozenTrial], number: int) -> FrozenTrial | None:
        if number < len(trials) and trials[number].number == number:
            return trials[number]
        return next((t for t in trials if t.number == number), None)

    def _finish(self, t: FrozenTrial) -> None:
        attrs = t.user_attrs
        self._states[t.state] += 1
        if RETRY_OF_ATTR in attrs:
            self._retried_finished.add(attrs[RETRY_OF_ATTR])
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self._completed_or_pruned += 1
        if t.state == TrialState.COMPLETE:
            key = params_key(t.params)
            if key is None:
                self._unhashable.append(t)
            else:
                known = self._twins.get(key)
                if known is None or t.number < known.number:
                    self._twins[key] = t
        elif t.state == TrialState.FAIL:
            if INTERRUPTED_BY_ATTR not in attrs:
                self._failed_counted.add(t.number)
            if INTERRUPTED_ATTR in attrs:
                self._interrupted[t.number] = t

    # -- views (as of the last refresh) ------------------------------------------------------

    def retried(self) -> set[int]:
        """The numbers of the trials that have a retry (of any state)."""
        open_retries = {
            t.user_attrs[RETRY_OF_ATTR]
            for t in self._open.values()
            if RETRY_OF_ATTR in t.user_attrs
        }
        return self._retried_finished | open_retries if open_retries else self._retried_finished

    def running(self) -> list[FrozenTrial]:
        return [t for t in self._open.values() if t.state == TrialState.RUNNING]

    def interrupted_not_retried(self) -> list[FrozenTrial]:
        """FAIL trials that were interrupted and have no retry yet."""
        retried = self.retried()
        for number in [n for n in self._interrupted if n in retried]:
            del self._interrupted[number]  # a retry never goes away
        return list(self._interrupted.values())

    def counts(self) -> dict[str, int]:
        out = {s.name: n for s, n in self._states.items()}
        for t in self._open.values():
            out[t.state.name] += 1
        return out

    def n_finished(self, *, running: bool = False) -> int:
        """COMPLETE and PRUNED trials, FAIL trials neither retried nor marked for a retry, and
        with ``running`` the RUNNING trials: see :meth:`TrialsStore.n_finished`."""
        retried = self.retried()
        failed = self._failed_counted
        n = self._completed_or_pruned + len(failed)
        n -= len(failed & retried) if len(retried) < len(failed) else len(retried & failed)
        if running:
            n += sum(t.state == TrialState.RUNNING for t in self._open.values())
        return n

    def completed_twin(self, params: Mapping[str, Any]) -> FrozenTrial | None:
        """The first COMPLETE trial (by number) whose parameters equal ``params``."""
        key = params_key(params)
        if key is not None:
            return self._twins.get(key)
        # Only parameters holding an unhashable value (a list) can equal those.
        matches = (t for t in self._unhashable if t.params == params)
        return min(matches, key=lambda t: t.number, default=None)
