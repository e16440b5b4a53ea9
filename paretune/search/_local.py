"""The local runner: trials in the driver process or in a pool of worker processes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from paretune._errors import ConfigError
from paretune.search._jobs import evaluate, failed, lost
from paretune.search._loop import InlineExecutor, run_trials
from paretune.search._runner import Runner, RunnerSettings

if TYPE_CHECKING:
    from paretune.search._loop import Budget, Executor, StudyTrials

__all__ = ["LocalRunner", "LocalRunnerSettings", "default_threads"]


class LocalRunnerSettings(RunnerSettings):
    """``runner: {type: local, n_jobs: 2}``: trials on this machine.

    Attributes:
        n_jobs: Trials at once: 1 in the driver, more in that many worker processes.
        threads: CPU threads of each worker process (default: the CPUs divided by ``n_jobs``).
        device: ``ctx.device`` of the trials: ``auto`` (a GPU where torch sees one, else the
            CPU), ``cpu``, ``cuda``, ``cuda:1``, ...
    """

    type: Literal["local"] = "local"
    n_jobs: int = Field(default=1, ge=1)
    threads: int | None = Field(default=None, ge=1)
    device: str = Field(default="auto", min_length=1)


def default_threads(n_jobs: int) -> int:
    """Threads per worker process when the spec sets none: this machine's CPUs shared evenly
    among ``n_jobs`` workers (at least 1), so concurrent trials do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // n_jobs)


def make_executor(n_jobs: int, threads: int, *, in_driver: bool) -> Executor:
    """This process (``in_driver``, one job at a time) or a pool of ``n_jobs`` workers."""
    if in_driver:
        return InlineExecutor()
    from paretune.search._workers import WorkerPool

    return WorkerPool(n_jobs=n_jobs, threads=threads, target=evaluate, lost=lost, error=failed)


class LocalRunner(Runner):
    """Evaluates trials on this machine.

    With ``n_jobs=1`` the objective runs in the driver (simple to debug, no pickling), unless
    the budget has a ``trial_timeout``: a trial can only be stopped in a process of its own,
    so it then runs in one worker process. With ``n_jobs > 1`` up to ``n_jobs`` trials run at
    once in worker processes started with ``spawn`` (safe with torch and threads); the
    controller sees the running trials as pending. A worker that dies (out of memory, a
    segfault) fails only its own trial, which is retried (``budget.max_retries``); the other
    workers go on.

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
        device: ``ctx.device`` of the trials (``"auto"``: a GPU where torch sees one).
        poll_interval: Seconds between checks of the stop request, the wall time and trial
            timeouts while trials run.
    """

    def __init__(
        self,
        *,
        n_jobs: int = 1,
        threads: int | None = None,
        device: str = "auto",
        poll_interval: float = 0.5,
    ) -> None:
        if n_jobs < 1:
            raise ConfigError(f"`n_jobs >= 1` must hold, but got n_jobs={n_jobs}.")
        if threads is not None and threads < 1:
            raise ConfigError(f"`threads >= 1` must hold, but got threads={threads}.")
        self.n_jobs = n_jobs
        self.threads = default_threads(n_jobs) if threads is None else threads
        self.device = device
        self.poll_interval = poll_interval

    def run(self, trials: StudyTrials, budget: Budget) -> None:
        trials.device = self.device
        in_driver = self.n_jobs == 1 and budget.trial_timeout is None
        executor = make_executor(self.n_jobs, self.threads, in_driver=in_driver)
        policy = trials.stop_policy(budget)
        run_trials(trials, executor, policy, poll_interval=self.poll_interval)
