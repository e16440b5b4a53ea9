"""The trial loop's own rules, on its protocols: a source of trials kept in a list, and an
executor whose jobs end as the test says (the searches of test_local.py and test_cli.py run the
same loop on a real study, MLflow and worker processes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from paretune import ConfigError
from paretune.search import (
    Budget,
    Job,
    ObjectiveRef,
    Outcome,
    SearchInterrupted,
    Started,
    StopPolicy,
    handle_stop_signal,
    run_trials,
)
from paretune.search._signals import clear_stop_request
from paretune.trials_store import TrialLink


def _job(number: int) -> Job:
    return Job(
        objective=ObjectiveRef(type="python"),
        metric_names=("f0",),
        params={"x": number},
        seed=number,
        link=TrialLink(trial_number=number, trial_id=number),
    )


@dataclass
class ListSource:
    """Trials 0, 1, ... up to ``size``; ``finish`` fails for the numbers in ``broken``."""

    size: int
    broken: set[int] = field(default_factory=set)
    asked: int = 0
    finished: dict[int, list[Outcome]] = field(default_factory=dict)
    interrupted: list[int] = field(default_factory=list)

    def next(self) -> Started | None:
        if self.asked >= self.size:
            return None
        self.asked += 1
        return Started(self.asked - 1, _job(self.asked - 1), token=None)

    def finish(self, started: Started, outcome: Outcome) -> None:
        if started.number in self.broken:
            raise OSError(f"the storage is gone (trial {started.number})")
        self.finished.setdefault(started.number, []).append(outcome)

    def interrupt(self, started: Started, reason: str) -> bool:
        self.interrupted.append(started.number)
        return True


class _Handle:
    def __init__(self, number: int) -> None:
        self.number, self.started = number, time.monotonic()


class ScriptedExecutor:
    """Runs ``slots`` jobs at once; each ``wait`` ends them all with ``outcome(number,
    attempt)``; submitting a number in ``unsubmittable`` raises."""

    def __init__(self, slots: int, outcome: Any, unsubmittable: frozenset[int] = frozenset()):
        self.slots, self.outcome, self.unsubmittable = slots, outcome, unsubmittable
        self.handles: list[_Handle] = []
        self.attempts: dict[int, int] = {}
        self.killed = False

    def free_slots(self) -> int:
        return self.slots - len(self.handles)

    def submit(self, job: Job) -> _Handle:
        number = job.trial_number
        if number in self.unsubmittable:
            raise OSError("cannot start a worker")
        self.attempts[number] = self.attempts.get(number, 0) + 1
        self.handles.append(_Handle(number))
        return self.handles[-1]

    def wait(self, timeout: float) -> list[tuple[_Handle, Outcome]]:
        done, self.handles = self.handles, []
        return [(h, self.outcome(h.number, self.attempts[h.number])) for h in done]

    def running(self) -> list[_Handle]:
        return list(self.handles)

    def cancel(self, handle: _Handle) -> None:
        self.handles.remove(handle)

    def kill(self) -> None:
        self.killed = True
        self.handles = []

    def close(self) -> None:
        pass


def complete(number: int, attempt: int) -> Outcome:
    return Outcome("COMPLETE", metrics={"f0": float(number)})


def _policy(budget: Budget, source: ListSource) -> StopPolicy:
    # As a study counts them: every trial asked and not interrupted, running ones included.
    return StopPolicy(budget, finished=lambda: source.asked - len(source.interrupted))


@pytest.fixture(autouse=True)
def _no_stop_request():
    clear_stop_request()
    yield
    clear_stop_request()


def test_every_trial_is_recorded_once_up_to_the_budget() -> None:
    source = ListSource(size=10)
    run_trials(source, ScriptedExecutor(2, complete), _policy(Budget(trials=5), source))
    assert sorted(source.finished) == [0, 1, 2, 3, 4]
    assert all(len(outcomes) == 1 for outcomes in source.finished.values())
    assert source.interrupted == []


def test_a_lost_job_is_retried_and_recorded_once() -> None:
    def lost_first(number: int, attempt: int) -> Outcome:
        if number == 1 and attempt == 1:
            return Outcome("FAIL", error="the worker died", lost=True)
        return complete(number, attempt)

    source, executor = ListSource(size=3), ScriptedExecutor(2, lost_first)
    run_trials(source, executor, _policy(Budget(trials=3, max_retries=1), source))
    assert executor.attempts == {0: 1, 1: 2, 2: 1}
    assert [o.state for o in source.finished[1]] == ["COMPLETE"]


def test_a_job_lost_more_often_than_its_retries_fails() -> None:
    def always_lost(number: int, attempt: int) -> Outcome:
        return Outcome("FAIL", error="the worker died", lost=True)

    source, executor = ListSource(size=1), ScriptedExecutor(1, always_lost)
    run_trials(
        source,
        executor,
        _policy(Budget(trials=1, max_retries=2, max_failures_in_a_row=None), source),
    )
    assert executor.attempts == {0: 3}
    assert [o.state for o in source.finished[0]] == ["FAIL"]


def test_a_record_that_fails_mid_batch_keeps_the_others_and_interrupts_that_trial() -> None:
    # Trials 0 and 1 end in one wait; recording 0 fails (the storage is gone).
    source = ListSource(size=4, broken={0})
    with pytest.raises(OSError, match="storage is gone"):
        run_trials(source, ScriptedExecutor(2, complete), _policy(Budget(trials=4), source))
    assert list(source.finished) == [1]  # its result was kept
    assert source.interrupted == [0]  # not left RUNNING: queued to be done again


def test_a_trial_that_cannot_be_submitted_is_interrupted_not_left_running() -> None:
    source = ListSource(size=3)
    executor = ScriptedExecutor(2, complete, unsubmittable=frozenset({1}))
    with pytest.raises(OSError, match="cannot start a worker"):
        run_trials(source, executor, _policy(Budget(trials=3), source))
    assert list(source.finished) == [0]  # it had ended: kept
    assert source.interrupted == [1]  # asked, never submitted: queued to be done again
    assert executor.killed


def test_a_stop_request_interrupts_the_running_trials() -> None:
    def stop_during(number: int, attempt: int) -> Outcome:
        if number == 1:
            handle_stop_signal(2, None)  # what Ctrl-C does while trial 1 runs
        return complete(number, attempt)

    source = ListSource(size=10)
    with pytest.raises(SearchInterrupted):
        run_trials(source, ScriptedExecutor(1, stop_during), _policy(Budget(trials=10), source))
    assert sorted(source.finished) == [0, 1]  # trial 1 ended before the stop was seen
    assert source.asked == 2  # nothing started after the stop


def test_failures_in_a_row_are_counted_anew_after_each_success() -> None:
    policy = StopPolicy(Budget(max_failures_in_a_row=2))
    policy.observe(0, Outcome("FAIL", error="a"))
    assert policy.may_start()
    policy.observe(1, Outcome("COMPLETE", metrics={"f0": 1.0}))
    policy.observe(2, Outcome("FAIL", error="b"))
    assert policy.may_start()  # one in a row, not two
    policy.observe(3, Outcome("FAIL", error="c"))
    assert not policy.may_start()
    with pytest.raises(Exception, match="2 trials failed in a row"):
        policy.finish()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"trials": 0}, "budget.trials must be an integer >= 1"),
        ({"max_retries": -1}, "budget.max_retries must be an integer >= 0"),
        ({"trial_timeout": 0}, "budget.trial_timeout must be a number > 0"),
        ({"wall_time": "1h"}, "budget.wall_time must be a number > 0"),
    ],
)
def test_a_bad_budget_is_refused(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Budget(**settings)


def test_a_trial_budget_needs_a_count_of_finished_trials() -> None:
    with pytest.raises(ConfigError, match="stop_policy"):
        StopPolicy(Budget(trials=3))
