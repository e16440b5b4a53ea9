"""Repairing a study's MLflow runs after a kill: one finished child run per finished trial.

A driver killed at the wrong moment leaves MLflow behind the study: a trial killed before its
child run was started has none; one killed after starting it but before recording its id in the
trial has an unrecorded one; one killed while its run was being finished has a run that still
says RUNNING. Every child run carries its trial's id as the tag ``paretune.trial_id`` from the
moment it is created, so the runs of a trial are always found by that tag, recorded or not.

The repair never writes to the trial: Optuna refuses to change a finished trial, and a trial
is only repaired once it is finished (a RUNNING one may still be at work in some process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from paretune.trials_store._attrs import CHILD_RUN_ATTR, INTERRUPTED_ATTR, METRICS_ATTR

if TYPE_CHECKING:
    from paretune.trials_store._mlflow import MlflowLink

__all__ = ["TRIAL_ID_TAG", "finish_run_of", "missing_runs", "reconcile_runs"]

_log = logging.getLogger(__name__)

#: The tag that ties a child run to its trial (the trial's storage id).
TRIAL_ID_TAG = "paretune.trial_id"

_UNFINISHED = (TrialState.WAITING, TrialState.RUNNING)


def reconcile_runs(
    link: MlflowLink,
    parent_run_id: str,
    trials: Iterable[FrozenTrial],
    *,
    run_name: Callable[[FrozenTrial], str] | None = None,
) -> bool:
    """Give each finished trial of ``trials`` exactly one child run whose state is the trial's.

    The run kept is the one the trial records, else its oldest run; other runs of the trial
    are deleted; a trial without any gets a new run (found by its tag next time), named by
    ``run_name`` (default: the trial number). A kept run still RUNNING is finished with the
    trial's state and metrics. Best effort: MLflow errors are logged, never raised (the study
    is the record).

    Returns:
        Whether every finished trial now has its run (``False``: MLflow failed somewhere).
    """
    finished = [t for t in trials if t.state not in _UNFINISHED]
    if not finished:
        return True
    try:
        runs = link.child_runs(parent_run_id)
    except Exception as err:
        _log.warning("MLflow: could not list the study's runs: %s", err)
        return False
    complete = True
    for t in finished:
        try:
            name = run_name(t) if run_name is not None else None
            _reconcile_trial(link, parent_run_id, t, runs.get(str(t._trial_id), []), name)
        except Exception as err:  # one broken run must not stop the others
            _log.warning("MLflow: could not repair the run of trial %d: %s", t.number, err)
            complete = False
    return complete


def missing_runs(link: MlflowLink, parent_run_id: str, trials: Iterable[FrozenTrial]) -> list[int]:
    """The numbers of the finished trials of ``trials`` without a finished child run under
    ``parent_run_id``: what an MLflow outage left unlogged (:func:`reconcile_runs` logs it).

    Raises:
        Exception: MLflow's, when the runs cannot be listed.
    """
    runs = link.child_runs(parent_run_id)
    return [
        t.number
        for t in trials
        if t.state not in _UNFINISHED
        and not any(status != "RUNNING" for _, status in runs.get(str(t._trial_id), []))
    ]


def _reconcile_trial(
    link: MlflowLink,
    parent_run_id: str,
    t: FrozenTrial,
    runs: list[tuple[str, str]],
    name: str | None,
) -> None:
    ids = [run_id for run_id, _ in runs]
    kept = t.user_attrs.get(CHILD_RUN_ATTR) or (ids[0] if ids else None)
    if kept is None:
        kept = link.start_child(
            parent_run_id=parent_run_id,
            trial_number=t.number,
            params=t.params,
            tags={TRIAL_ID_TAG: str(t._trial_id)},
            run_name=name,
        )
    for run_id in ids:
        if run_id != kept:  # a second run of one trial: never more than one
            link.delete_run(run_id)
    if dict(runs).get(kept, "RUNNING") == "RUNNING":
        tags = {}
        if INTERRUPTED_ATTR in t.user_attrs:
            tags["paretune.fail_reason"] = f"interrupted: {t.user_attrs[INTERRUPTED_ATTR]}"
        link.finish_child(
            kept, state=t.state.name, metrics=t.user_attrs.get(METRICS_ATTR), tags=tags
        )


def finish_run_of(
    link: MlflowLink, frozen: FrozenTrial, state: str, tags: Mapping[str, str]
) -> bool:
    """Finish the run that ``frozen`` records (best effort); whether it records one."""
    run_id = frozen.user_attrs.get(CHILD_RUN_ATTR)
    if run_id is None:
        return False
    try:
        link.finish_child(run_id, state=state, tags=tags)
    except Exception as err:  # a lost MLflow run must not stop recovery
        _log.warning("could not close MLflow run %s of trial %d: %s", run_id, frozen.number, err)
    return True
