"""The local runner: trials in the driver process or in a pool of worker processes."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from paretune.search._runner import (
    FailureStreak,
    Job,
    Outcome,
    Runner,
    SearchInterrupted,
    clear_stop_request,
    evaluate,
    record_outcome,
    stop_requested,
)
from paretune.trials_store._store import METRICS_ATTR

if TYPE_CHECKING:
    from paretune.trials_store import PendingTrial, TrialsStore

__all__ = ["LocalRunner"]

_log = logging.getLogger(__name__)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group; only the driver decides what happens to trials.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Read by torch (and numpy's BLAS) when the objective first imports them in this process.
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)


def default_threads(n_jobs: int) -> int:
    """Threads per worker process when the spec sets none: this machine's CPUs shared evenly
    among ``n_jobs`` workers (at least 1), so concurrent trials do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // n_jobs)


class WorkerPool:
    """Evaluations of :class:`Job` in up to ``n_jobs`` worker processes started with ``spawn``.

    Each worker sets ``OMP_NUM_THREADS`` (and MKL's and OpenBLAS's) to ``threads`` before the
    objective imports torch and ignores Ctrl-C (the driver decides what happens to trials).
    Workers start with the first submission and serve the next ones. When a worker dies (out of
    memory, a segfault), every evaluation of its pool fails (the pool cannot tell which one
    killed it) and the next submission starts a new pool. Used by :class:`LocalRunner` and by
    :func:`paretune.search.reevaluate`.
    """

    def __init__(self, n_jobs: int, threads: int) -> None:
        self.n_jobs = n_jobs
        self.threads = threads
        self._executor: cf.ProcessPoolExecutor | None = None
        self._pool_of: dict[cf.Future[Outcome], cf.ProcessPoolExecutor] = {}

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.n_jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads,),
        )

    def _retire(self, broken: cf.ProcessPoolExecutor) -> None:
        if broken is self._executor:  # not a newer, healthy pool
            _kill_workers(broken)
            self._executor = None

    def submit(self, job: Job) -> cf.Future[Outcome]:
        if self._executor is None:
            self._executor = self._new()
        try:
            future = self._executor.submit(evaluate, job)
        except cf.process.BrokenProcessPool:
            # The pool broke since the last check; its running evaluations fail on their own.
            self._retire(self._executor)
            self._executor = self._new()
            future = self._executor.submit(evaluate, job)
        self._pool_of[future] = self._executor
        return future

    def outcome(self, future: cf.Future[Outcome]) -> Outcome:
        """The finished ``future``'s outcome; a dead worker or a lost result is a FAIL.

        ``KeyboardInterrupt`` raised by the objective in the worker propagates.
        """
        pool = self._pool_of.pop(future, None)
        try:
            return future.result()
        except cf.process.BrokenProcessPool as err:
            if pool is not None:
                self._retire(pool)
            return Outcome("FAIL", error=f"the worker process died: {err}", lost=True)
        except Exception as err:  # e.g. an objective result that does not unpickle
            return Outcome("FAIL", error=f"the worker's result was lost: {err!r}")

    def kill(self) -> None:
        """Stop every worker now (what they were running is lost)."""
        if self._executor is not None:
            _kill_workers(self._executor)
            self._executor = None
        self._pool_of.clear()

    def close(self) -> None:
        """Wait for the workers to exit."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _kill_workers(executor: cf.ProcessPoolExecutor) -> None:
    kill = getattr(executor, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
    else:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


class LocalRunner(Runner):
    """Evaluates trials on this machine.

    With ``n_jobs=1`` the objective runs in the driver (simple to debug, no pickling). With
    ``n_jobs > 1`` up to ``n_jobs`` trials run at once in worker processes started with
    ``spawn`` (safe with torch and threads); the controller sees the running trials as pending.
    A worker that dies (out of memory, a segfault) fails its trial and is replaced.

    The trial budget counts the study's trials, not this process's: several drivers on one
    study (a job array, several machines on PostgreSQL) stop together at the budget, give or
    take one trial each (a check and an ask are not atomic).

    Worker processes set ``OMP_NUM_THREADS`` (and MKL's and OpenBLAS's) to ``threads`` before
    the objective imports torch, so ``n_jobs`` trials share the machine's cores instead of each
    starting one thread per core (on 2 cores, two 1-thread workers finish AutoPEFT trials 1.3
    times as fast as one 2-thread process). The driver's own threads are left alone.

    Args:
        n_jobs: How many trials run at once.
        threads: CPU threads per worker process (``n_jobs > 1``); default
            :func:`default_threads`.
        poll_interval: Seconds between checks for Ctrl-C and the wall-time budget while waiting.
        max_consecutive_duplicates: Stop when the controller proposes this many already
            completed parameter sets in a row (a small discrete space is exhausted); each
            duplicate is recorded with the values of its twin, without evaluating it.
    """

    def __init__(
        self,
        *,
        n_jobs: int = 1,
        threads: int | None = None,
        poll_interval: float = 0.5,
        max_consecutive_duplicates: int = 100,
    ) -> None:
        if n_jobs < 1:
            raise ValueError(f"`n_jobs >= 1` must hold, but got n_jobs={n_jobs}.")
        if threads is not None and threads < 1:
            raise ValueError(f"`threads >= 1` must hold, but got threads={threads}.")
        if max_consecutive_duplicates < 1:
            raise ValueError(
                "`max_consecutive_duplicates >= 1` must hold, but got "
                f"max_consecutive_duplicates={max_consecutive_duplicates}."
            )
        self.n_jobs = n_jobs
        self.threads = default_threads(n_jobs) if threads is None else threads
        self.poll_interval = poll_interval
        self.max_consecutive_duplicates = max_consecutive_duplicates

    def run(self, store: TrialsStore, *, progress: Any = None) -> None:
        budget = store.spec.budget
        started = time.monotonic()
        duplicates_in_a_row = 0
        failures = FailureStreak(budget.max_failures_in_a_row)
        in_flight: dict[Any, PendingTrial] = {}
        pool = WorkerPool(self.n_jobs, self.threads)

        def more() -> bool:
            if duplicates_in_a_row >= self.max_consecutive_duplicates or failures.reached:
                return False
            if budget.wall_time is not None and time.monotonic() - started >= budget.wall_time:
                return False
            # Our own running trials are RUNNING in the study, so they are counted here.
            return budget.trials is None or store.n_finished(running=True) < budget.trials

        def record(pending: PendingTrial, outcome: Outcome) -> None:
            record_outcome(store, pending, outcome, progress)
            failures.update(pending.number, outcome)

        def collect(future: Any) -> None:
            record(in_flight[future], pool.outcome(future))
            del in_flight[future]  # only now: a trial whose record failed is re-queued below

        clear_stop_request()
        try:
            while True:
                while more() and len(in_flight) < self.n_jobs and not stop_requested():
                    pending = store.ask()
                    if pending.duplicate_of is not None:
                        record(pending, _copy_of(pending, store))
                        duplicates_in_a_row += 1
                        continue
                    duplicates_in_a_row = 0
                    job = _job(store, pending)
                    if self.n_jobs == 1:
                        in_flight[None] = pending
                        outcome = evaluate(job)
                        del in_flight[None]
                        record(pending, outcome)
                        continue
                    in_flight[pool.submit(job)] = pending
                if stop_requested():
                    raise KeyboardInterrupt
                if not in_flight:
                    if duplicates_in_a_row >= self.max_consecutive_duplicates:
                        _log.warning(
                            "stopping: the controller proposed %d already evaluated parameter "
                            "sets in a row; the space looks exhausted",
                            duplicates_in_a_row,
                        )
                    break
                done, _ = cf.wait(
                    list(in_flight), timeout=self.poll_interval, return_when=cf.FIRST_COMPLETED
                )
                for future in done:
                    collect(future)
        except BaseException as err:
            # Keep what finished, then fail and re-queue what was still running: a stop
            # (Ctrl-C, SIGTERM) or a failure of the driver itself (storage, tracking) loses no
            # completed result and leaves nothing RUNNING.
            for future in [f for f in in_flight if f is not None and f.done()]:
                with contextlib.suppress(BaseException):
                    collect(future)
            pool.kill()
            requeued = []
            reason = "stopped by the user" if isinstance(err, KeyboardInterrupt) else repr(err)
            for pending in in_flight.values():
                with contextlib.suppress(Exception):
                    store.fail_interrupted(pending, reason=reason)
                    requeued.append(pending.number)
            if isinstance(err, KeyboardInterrupt):
                raise SearchInterrupted(sorted(requeued)) from None
            raise
        finally:
            pool.close()
        if failures.reached:
            raise failures.error()


def _job(store: TrialsStore, pending: PendingTrial) -> Job:
    spec = store.spec
    return Job(
        objective_type=spec.objective.type,
        settings=spec.objective.settings,
        metric_names=tuple(m.name for m in spec.metrics),
        constraint_metrics=tuple(c.metric for c in spec.objective.constraints),
        trial_number=pending.number,
        trial_id=pending.trial_id,
        params=pending.params,
        seed=pending.seed,
        storage_url=store.storage_url,
        study_name=spec.study,
        pruner=(spec.pruner.name, spec.pruner.options),
        tracking_uri=store.tracking_uri if store.mlflow is not None else None,
        mlflow_run_id=pending.mlflow_run_id,
    )


def _copy_of(pending: PendingTrial, store: TrialsStore) -> Outcome:
    """A trial whose parameters already completed: its metrics are copied, not recomputed."""
    twin = pending.duplicate_of
    assert twin is not None  # only called for duplicates
    metrics = twin.user_attrs.get(METRICS_ATTR)
    if metrics is None:  # a trial added with values only (study.add_trial)
        names = [m.name for m in store.spec.metrics]
        metrics = dict(zip(names, twin.values or [], strict=False))
    return Outcome("COMPLETE", metrics=dict(metrics))
