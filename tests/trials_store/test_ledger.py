"""The store's incremental view of a study's trials: the same answers as a scan of every trial,
also when other drivers change the study between two looks."""

from __future__ import annotations

import random

import optuna
from optuna.trial import FrozenTrial, TrialState

from paretune.search import open_store
from paretune.spec import load_spec
from paretune.trials_store import TrialsStore
from paretune.trials_store._attrs import (
    INTERRUPTED_ATTR,
    INTERRUPTED_BY_ATTR,
    OWNER_ATTR,
    RETRY_OF_ATTR,
)
from paretune.trials_store._ledger import TrialLedger, params_key
from paretune.trials_store._ownership import owner_token
from tests.conftest import counting_spec
from tests.trials_store.test_store import _dead_owner


def _two_drivers(tmp_path, counting_objective) -> tuple[TrialsStore, TrialsStore]:
    """Two stores on one SQLite study, as two driver processes would open it."""
    plan = load_spec(counting_spec(tmp_path, counting_objective)).plan()
    return open_store(plan, mlflow=False), open_store(plan, create=False, mlflow=False)


def _ask_fixed(study: optuna.Study, x: float, y: float) -> optuna.Trial:
    study.enqueue_trial({"x": x, "y": y})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.suggest_float("y", 0, 1)
    return trial


def _complete(study: optuna.Study, x: float, y: float) -> int:
    trial = _ask_fixed(study, x, y)
    study.tell(trial, [x, y])
    return trial.number


def _scan_n_finished(trials: list[FrozenTrial], *, running: bool) -> int:
    """The budget's count by a scan of every trial (what the store did before the ledger)."""
    counted = {TrialState.COMPLETE, TrialState.PRUNED} | (
        {TrialState.RUNNING} if running else set()
    )
    retried = {t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs}
    return sum(
        t.state in counted
        or (
            t.state == TrialState.FAIL
            and t.number not in retried
            and INTERRUPTED_BY_ATTR not in t.user_attrs
        )
        for t in trials
    )


def test_a_twin_completed_by_another_driver_is_found(tmp_path, counting_objective):
    mine, other = _two_drivers(tmp_path, counting_objective)
    _complete(mine.study, 0.1, 0.1)
    assert mine._completed_twin({"x": 0.5, "y": 0.5}) is None  # the index is built here

    number = _complete(other.study, 0.5, 0.5)

    twin = mine._completed_twin({"x": 0.5, "y": 0.5})
    assert twin is not None and twin.number == number
    assert mine._completed_twin({"x": 0.1, "y": 0.1}).number == 0


def test_a_twin_running_at_the_last_look_is_found_once_completed(tmp_path, counting_objective):
    mine, other = _two_drivers(tmp_path, counting_objective)
    running = _ask_fixed(other.study, 0.3, 0.7)
    assert mine._completed_twin({"x": 0.3, "y": 0.7}) is None  # RUNNING is no twin

    other.study.tell(running, [1.0, 2.0])

    twin = mine._completed_twin({"x": 0.3, "y": 0.7})
    assert twin is not None and twin.number == running.number and twin.values == [1.0, 2.0]


def test_the_first_twin_by_number_wins_whatever_order_they_complete_in(
    tmp_path, counting_objective
):
    mine, other = _two_drivers(tmp_path, counting_objective)
    first = _ask_fixed(other.study, 0.2, 0.2)
    second = _ask_fixed(other.study, 0.2, 0.2)
    other.study.tell(second, [1.0, 1.0])
    assert mine._completed_twin({"x": 0.2, "y": 0.2}).number == second.number

    other.study.tell(first, [1.0, 1.0])

    assert mine._completed_twin({"x": 0.2, "y": 0.2}).number == first.number


def test_counts_match_a_scan_while_two_drivers_change_the_study(tmp_path, counting_objective):
    mine, other = _two_drivers(tmp_path, counting_objective)
    rng = random.Random(0)
    running: list[optuna.Trial] = []
    for step in range(60):
        study = rng.choice([mine.study, other.study])
        action = rng.random()
        if action < 0.3 or not running:
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            trial.suggest_float("y", 0, 1)
            trial.set_user_attr(OWNER_ATTR, owner_token())
            running.append(trial)
        else:
            trial = running.pop(rng.randrange(len(running)))
            if action < 0.6:
                study.tell(trial, [rng.random(), rng.random()])
            elif action < 0.7:
                study.tell(trial, state=TrialState.PRUNED)
            elif action < 0.8:
                study.tell(trial, state=TrialState.FAIL)
            else:  # interrupted: failed, then (mostly) queued again as a retry
                mine.fail_interrupted(mine.storage.get_trial(trial._trial_id), reason="test")
        if step % 7 == 0:  # an interrupter that died before queueing the retry
            trial = other.study.ask()
            trial.suggest_float("x", 0, 1)
            trial.suggest_float("y", 0, 1)
            other.storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, "test")
            other.storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_BY_ATTR, "x:?:1:?")
            other.study.tell(trial, state=TrialState.FAIL)
        trials = optuna.load_study(study_name="counting", storage=mine.storage_url).trials
        expected = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        assert mine.counts() == expected
        for flag in (False, True):
            assert mine.n_finished(running=flag) == _scan_n_finished(trials, running=flag)
            assert other.n_finished(running=flag) == _scan_n_finished(trials, running=flag)


def test_recover_queues_a_dead_interrupters_trial_once_and_fails_orphans(
    tmp_path, counting_objective
):
    mine, other = _two_drivers(tmp_path, counting_objective)
    assert mine.recover() == []  # the ledger has looked once
    orphan = other.study.ask()
    orphan.suggest_float("x", 0, 1)
    orphan.suggest_float("y", 0, 1)
    orphan.set_user_attr(OWNER_ATTR, _dead_owner())
    left = other.study.ask()  # failed by an interrupter that died before queueing its retry
    left.suggest_float("x", 0, 1)
    left.suggest_float("y", 0, 1)
    other.storage.set_trial_user_attr(left._trial_id, INTERRUPTED_ATTR, "stopped")
    other.storage.set_trial_user_attr(left._trial_id, INTERRUPTED_BY_ATTR, _dead_owner())
    other.study.tell(left, state=TrialState.FAIL)

    assert mine.recover() == [orphan.number, left.number]
    assert mine.recover() == []  # both have their retry now
    waiting = [t for t in mine.study.get_trials() if t.state == TrialState.WAITING]
    assert [t.user_attrs[RETRY_OF_ATTR] for t in waiting] == [orphan.number, left.number]


def test_params_key_is_equality_of_the_dicts():
    assert params_key({"a": 1, "b": "x"}) == params_key({"b": "x", "a": 1.0})
    assert params_key({"a": 1}) != params_key({"a": 2})
    assert params_key({"a": [1, 2]}) is None


def test_a_ledger_rebuilds_when_the_study_it_reads_is_another(tmp_path, counting_objective):
    mine, _ = _two_drivers(tmp_path, counting_objective)
    _complete(mine.study, 0.4, 0.4)
    ledger = TrialLedger(mine.study)
    ledger.refresh()
    assert ledger.counts()["COMPLETE"] == 1
    ledger._study = optuna.create_study(directions=["minimize", "minimize"])
    ledger.refresh()
    assert ledger.counts()["COMPLETE"] == 0
    assert ledger.completed_twin({"x": 0.4, "y": 0.4}) is None
