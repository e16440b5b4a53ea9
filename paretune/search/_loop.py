"""The one trial loop: when to start a trial, where it runs, and how each ending is recorded.

Every runner and :func:`~paretune.search.reevaluate` share what is written here:

* :class:`Budget` and :class:`StopPolicy`: the trial budget, the wall time, the failure and
  duplicate streaks and the stop signal decide whether another trial starts;
* :class:`TrialSource`: the bookkeeping of a trial (started: RUNNING in the study with its
  MLflow run; finished: told; interrupted: failed and queued again), :class:`StudyTrials` for a
  search's study;
* :func:`run_trials`: the loop over an executor (this process, or a :class:`WorkerPool` of
  processes) with the fault semantics:

  - SIGINT/SIGTERM to the driver or its whole process group: the running trials are
    interrupted (queued again) and :class:`SearchInterrupted` is raised;
  - a trial past ``budget.trial_timeout`` seconds: its worker is killed and replaced, the trial
    is recorded FAIL with the reason, the search goes on;
  - a worker that dies: only its trial is affected; it is retried up to
    ``budget.max_retries`` times (recorded once), then recorded FAIL;
  - any error of the driver itself (storage, tracking): what finished is kept, what was
    running is interrupted, and the error propagates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from paretune._errors import ConfigError, SearchFailed
from paretune.search._jobs import DeciderRef, Job, ObjectiveRef, Outcome, evaluate
from paretune.search._signals import (
    SearchInterrupted,
    clear_stop_request,
    stop_reason,
    stop_requested,
)
from paretune.trials_store import METRICS_ATTR, TrialLink

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from paretune.trials_store import PendingTrial, TrialsStore

__all__ = [
    "Budget",
    "InlineExecutor",
    "Started",
    "StopPolicy",
    "StudyTrials",
    "TrialSource",
    "run_trials",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """When a search stops starting trials, and how long one trial may take.

    Attributes:
        trials: Trials that count (COMPLETE, PRUNED, FAIL by the objective), or ``None``.
        wall_time: Seconds after which no trial starts (running ones finish), or ``None``.
        max_failures_in_a_row: Stop after this many failed trials in a row (``None``: never).
        trial_timeout: Seconds a trial may run before its worker is killed and it fails.
        max_retries: Retries of a trial whose worker process died.
        max_consecutive_duplicates: Stop after this many proposals of completed parameters
            in a row (a small discrete space is exhausted).
    """

    trials: int | None = None
    wall_time: float | None = None
    max_failures_in_a_row: int | None = 10
    trial_timeout: float | None = None
    max_retries: int = 1
    max_consecutive_duplicates: int = 100

    def __post_init__(self) -> None:
        for name, low in (
            ("trials", 1),
            ("max_failures_in_a_row", 1),
            ("max_retries", 0),
            ("max_consecutive_duplicates", 1),
        ):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < low
            ):
                raise ConfigError(f"budget.{name} must be an integer >= {low}, but got {value!r}")
        for name in ("wall_time", "trial_timeout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"budget.{name} must be a number > 0, but got {value!r}")


class StopPolicy:
    """Whether another trial may start: the budget's rules, checked in one place.

    Args:
        budget: The rules.
        finished: How many trials count against ``budget.trials`` now, running ones included
            (every process's, when several drivers share a study); ``None``: no trial budget.
    """

    def __init__(self, budget: Budget, *, finished: Callable[[], int] | None = None) -> None:
        if budget.trials is not None and finished is None:
            raise ConfigError(
                "a budget of trials needs `finished` to count them (StudyTrials.stop_policy "
                "gives the policy of a study)"
            )
        self.budget = budget
        self._finished = finished
        self._deadline = None if budget.wall_time is None else time.monotonic() + budget.wall_time
        self.failures = 0
        self.duplicates = 0
        self._last_error: str | None = None
        self._last_failed: int | None = None

    @property
    def failed_too_often(self) -> bool:
        limit = self.budget.max_failures_in_a_row
        return limit is not None and self.failures >= limit

    @property
    def exhausted(self) -> bool:
        return self.duplicates >= self.budget.max_consecutive_duplicates

    def may_start(self) -> bool:
        if stop_requested() or self.failed_too_often or self.exhausted:
            return False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        trials = self.budget.trials
        return trials is None or self._finished is None or self._finished() < trials

    def remaining(self) -> int | None:
        """Trials the budget leaves room for now (``None``: no trial budget)."""
        if self.budget.trials is None or self._finished is None:
            return None
        return max(0, self.budget.trials - self._finished())

    def started(self, *, duplicate: bool) -> None:
        self.duplicates = self.duplicates + 1 if duplicate else 0

    def observe(self, number: int, outcome: Outcome) -> None:
        """Count a recorded outcome (in the order outcomes are recorded)."""
        if outcome.state == "FAIL":
            self.failures += 1
            self._last_error, self._last_failed = outcome.error, number
        else:
            self.failures = 0

    def finish(self) -> None:
        """Say why the search ended early, or raise :class:`SearchFailed`."""
        if self.exhausted:
            _log.warning(
                "stopping: the controller proposed %d already evaluated parameter sets in a "
                "row; the space looks exhausted",
                self.duplicates,
            )
        if self.failed_too_often:
            raise self.failure()

    def failure(self) -> SearchFailed:
        lines = (self._last_error or "no error message").strip().splitlines() or ["?"]
        return SearchFailed(
            f"stopped: {self.failures} trials failed in a row (budget.max_failures_in_a_row = "
            f"{self.budget.max_failures_in_a_row}); the last, trial {self._last_failed}, with: "
            f"{lines[-1][:500]}\nThe failed trials stay in the study with their errors "
            "(`paretune export` shows them); fix the cause, then continue with `paretune "
            "resume` (failed trials count against the trial budget)."
        )


@dataclass
class Started:
    """A trial the loop started: its job, and for a completed twin the outcome to copy."""

    number: int
    job: Job
    token: Any  # the source's own handle (a PendingTrial, ...)
    copy: Outcome | None = None
    attempts: int = 1


class TrialSource(Protocol):
    """The bookkeeping of the trials one loop runs."""

    def next(self) -> Started | None:
        """Start the next trial (RUNNING, with its MLflow run), or ``None``: none to start."""

    def finish(self, started: Started, outcome: Outcome) -> object:
        """Record how a trial ended."""

    def interrupt(self, started: Started, reason: str) -> bool:
        """A trial stopped before it ended: fail it so that it is done again; whether this
        call did it."""


class StudyTrials:
    """The trials of a search: asked from the study, told to it (and to MLflow).

    Args:
        store: The open, started store.
        objective: What every trial evaluates.
        pruner: The study's pruner (reports of one optimised metric go to it), or ``None``.
        progress: Called as ``progress.update(store, frozen_trial)`` after each recorded trial.
        device: ``ctx.device`` of the trials (``"auto"``: a GPU where the worker sees one).
        decider: What each trial's ``ctx.decide`` asks (a saved policy), or ``None``: dynamic
            parameters are held. :meth:`decider_for` can give each trial its own.
    """

    def __init__(
        self,
        store: TrialsStore,
        objective: ObjectiveRef,
        *,
        pruner: optuna.pruners.BasePruner | None = None,
        constraint_metrics: tuple[str, ...] = (),
        progress: Any = None,
        device: str = "auto",
        decider: DeciderRef | None = None,
    ) -> None:
        self.store = store
        self.decider = decider
        self.objective = objective
        self.pruner = pruner
        self.constraint_metrics = constraint_metrics
        self.progress = progress
        self.device = device

    def stop_policy(self, budget: Budget) -> StopPolicy:
        """The rules of ``budget`` for this study: its trial budget counts the study's trials,
        running ones included, whichever process runs them (several drivers stop together)."""
        return StopPolicy(budget, finished=lambda: self.store.n_finished(running=True))

    def next(self) -> Started | None:
        if not self.prepare_queue():
            return None
        return self.started(self.store.ask())

    def prepare_queue(self) -> bool:
        """Called before each trial is asked from the study, by every runner: queue what the
        next trial must be (a DAC run queues its next episode); ``False``: no trial is to start
        now. The default leaves the choice to the controller."""
        return True

    def started(self, pending: PendingTrial) -> Started:
        copy = None
        if pending.duplicate_of is not None:
            copy = copy_of(pending.duplicate_of, self.store.config.metric_names)
        return Started(pending.number, self.job(pending), pending, copy=copy)

    def job(self, pending: PendingTrial) -> Job:
        store = self.store
        names = tuple(store.config.metric_names)
        link = TrialLink(
            trial_number=pending.number,
            trial_id=pending.trial_id,
            storage_url=store.storage_url,
            study_name=store.config.name,
            report_metric=names[0] if len(names) == 1 else None,
            pruner=self.pruner,
            tracking_uri=store.tracking_uri if store.mlflow is not None else None,
            mlflow_run_id=pending.mlflow_run_id,
        )
        return Job(
            objective=self.objective,
            metric_names=names,
            constraint_metrics=self.constraint_metrics,
            params=pending.params,
            seed=pending.seed,
            link=link,
            device=self.device,
            decider=self.decider_for(pending),
        )

    def decider_for(self, pending: PendingTrial) -> DeciderRef | None:
        """The decider of a trial about to start: :attr:`decider` (the DAC trainer gives each
        trial the policy as it is then)."""
        return self.decider

    def finish(self, started: Started, outcome: Outcome) -> FrozenTrial:
        from optuna.trial import TrialState

        frozen = self.store.tell(
            started.token,
            state=TrialState[outcome.state],
            metrics=outcome.metrics,
            error=outcome.error,
            final_step=0 if outcome.last_step is None else outcome.last_step + 1,
            trajectory=outcome.trajectory,
        )
        if self.progress is not None:
            self.progress.update(self.store, frozen)
        return frozen

    def interrupt(self, started: Started, reason: str) -> bool:
        return self.store.fail_interrupted(started.token, reason=reason)


def copy_of(twin: FrozenTrial, metric_names: list[str]) -> Outcome:
    """A trial whose parameters already completed: its metrics are copied, not recomputed."""
    metrics = twin.user_attrs.get(METRICS_ATTR)
    if metrics is None:  # a trial added with values only (study.add_trial)
        metrics = dict(zip(metric_names, twin.values or [], strict=False))
    return Outcome("COMPLETE", metrics=dict(metrics))


class _Handle:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.started = time.monotonic()


class InlineExecutor:
    """Evaluates one job at a time in this process (``n_jobs: 1``): simple to debug.

    The job runs inside :meth:`wait`; a stop signal interrupts the objective (it runs in the
    main thread), and the loop then interrupts its trial. It cannot enforce a trial timeout:
    the local runner uses a one-worker pool for that.
    """

    def __init__(self) -> None:
        self._queued: _Handle | None = None

    def free_slots(self) -> int:
        return 0 if self._queued is not None else 1

    def submit(self, job: Job) -> _Handle:
        self._queued = _Handle(job)
        return self._queued

    def wait(self, timeout: float) -> list[tuple[_Handle, Outcome]]:
        handle, self._queued = self._queued, None
        return [] if handle is None else [(handle, evaluate(handle.job))]

    def running(self) -> list[_Handle]:
        return []

    def cancel(self, handle: Any) -> None:
        raise NotImplementedError("jobs in the driver cannot be cancelled")

    def kill(self) -> None:
        self._queued = None

    def close(self) -> None:
        self._queued = None


class Executor(Protocol):
    """Where :func:`run_trials` evaluates jobs (this process, a pool of worker processes,
    threads, a batch queue).

    A handle, returned by :meth:`submit`, is hashed by identity and has ``started``: the
    ``time.monotonic()`` at which the job began, or ``None`` while it waits for its worker
    (``budget.trial_timeout`` counts from ``started``). :meth:`wait` returns each ended job
    once, as ``(handle, outcome)`` (``outcome.lost``: its worker died, and the job may be
    submitted again); :meth:`running` lists the handles not yet returned; after
    :meth:`cancel` a job is never returned; :meth:`kill` stops every job and :meth:`close`
    releases what the executor holds.
    """

    def free_slots(self) -> int: ...
    def submit(self, job: Job) -> Any: ...
    def wait(self, timeout: float) -> list[tuple[Any, Outcome]]: ...
    def running(self) -> list[Any]: ...
    def cancel(self, handle: Any) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...


def run_trials(
    source: TrialSource,
    executor: Executor,
    policy: StopPolicy,
    *,
    poll_interval: float = 0.5,
) -> None:
    """Start trials from ``source`` on ``executor`` while ``policy`` allows, record each end.

    See the module docstring for what happens on a stop, a timeout, a dead worker and an
    error. Returns when no trial runs and none may start.

    Raises:
        SearchInterrupted: Stopped by a signal; the running trials were queued again.
        SearchFailed: ``budget.max_failures_in_a_row`` trials failed in a row.
    """
    budget = policy.budget
    in_flight: dict[Any, Started] = {}

    def record(started: Started, outcome: Outcome) -> None:
        source.finish(started, outcome)
        policy.observe(started.number, outcome)

    # A trial asked but not yet submitted, and ended jobs not yet recorded: if the driver fails
    # (a stop, a storage error) between those steps, the cleanup below still accounts for them.
    submitting: list[Started] = []
    unrecorded: list[tuple[Any, Outcome]] = []

    def submit(started: Started) -> None:
        submitting.append(started)
        in_flight[executor.submit(started.job)] = started
        submitting.clear()

    try:
        while True:
            while executor.free_slots() > 0 and policy.may_start():
                started = source.next()
                if started is None:
                    break
                policy.started(duplicate=started.copy is not None)
                if started.copy is not None:
                    submitting.append(started)
                    record(started, started.copy)
                    submitting.clear()
                    continue
                submit(started)
            if stop_requested():
                raise KeyboardInterrupt
            if not in_flight:
                break
            unrecorded[:] = executor.wait(poll_interval)
            while unrecorded:
                handle, outcome = unrecorded[0]
                started = in_flight[handle]
                if outcome.lost and started.attempts <= budget.max_retries:
                    _log.warning(
                        "trial %d: %s; retry %d of %d",
                        started.number,
                        (outcome.error or "its worker died").strip().splitlines()[-1],
                        started.attempts,
                        budget.max_retries,
                    )
                    started.attempts += 1
                    del in_flight[handle]
                    unrecorded.pop(0)
                    submit(started)
                    continue
                record(started, outcome)  # if this raises, the trial is still in flight
                del in_flight[handle]
                unrecorded.pop(0)
            if budget.trial_timeout is not None:
                now, limit = time.monotonic(), budget.trial_timeout
                for handle in executor.running():
                    began = handle.started  # None: its worker is still starting up
                    if handle in in_flight and began is not None and now - began > limit:
                        executor.cancel(handle)
                        record(
                            in_flight.pop(handle),
                            Outcome(
                                "FAIL",
                                error=f"stopped: the trial ran longer than budget.trial_timeout"
                                f" = {budget.trial_timeout:g} s (its worker was killed)",
                            ),
                        )
    except BaseException as err:
        # Keep what finished, then interrupt what was still running: a stop (Ctrl-C, SIGTERM)
        # or a failure of the driver itself (storage, tracking) loses no completed result and
        # leaves nothing RUNNING.
        # (BaseException: a second Ctrl-C during this bookkeeping does not cut it short.)
        with contextlib.suppress(BaseException):
            unrecorded.extend(executor.wait(0.0) if executor.running() else [])
        for handle, outcome in unrecorded:
            if handle in in_flight and not outcome.lost:
                with contextlib.suppress(BaseException):
                    record(in_flight[handle], outcome)
                    del in_flight[handle]  # else interrupted (done again) with the others
        with contextlib.suppress(BaseException):
            executor.kill()
        reason = stop_reason() if isinstance(err, KeyboardInterrupt) else repr(err)
        requeued = []
        for started in [*in_flight.values(), *submitting]:
            with contextlib.suppress(BaseException):
                if source.interrupt(started, reason):
                    requeued.append(started.number)
        if isinstance(err, KeyboardInterrupt):
            clear_stop_request()  # honoured; a stop during the start-up was kept until here
            raise SearchInterrupted(sorted(requeued)) from None
        raise
    finally:
        executor.close()
    policy.finish()
