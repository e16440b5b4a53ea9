"""The Ray runner: trials on a Ray Tune worker pool, recorded in the same Optuna study.

Ray Tune schedules the trials (resources per trial, fractional GPUs, concurrency, retries of
trials whose worker died, ASHA); Ray's ``OptunaSearch`` asks the spec's controller for candidates
on the study's own storage, so every trial is a trial of the same Optuna study as with the local
runner. What Optuna and Tune lack is added by subclassing ``OptunaSearch`` (``StudySearch``):
each asked trial is prepared by the :class:`~paretune.trials_store.TrialsStore` (owner, seed,
MLflow child run, duplicate check), and each outcome is told through it (metrics, errors, MLflow).

The study is the record, not Tune's experiment state: a search that stopped (Ctrl-C, a killed
driver) continues with ``paretune resume``, which re-queues the trials that did not finish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from paretune.search._runner import (
    FailureStreak,
    Outcome,
    Runner,
    SearchInterrupted,
    clear_stop_request,
    handle_stop_signal,
    stop_requested,
)

if TYPE_CHECKING:
    from paretune.spec import RayRunnerSpec
    from paretune.trials_store import TrialsStore

__all__ = ["RayRunner"]

_log = logging.getLogger(__name__)


class RayRunner(Runner):
    """Evaluates trials on a Ray Tune worker pool.

    On one machine it starts a local Ray cluster for the search (and stops it after); with
    ``address`` it joins a running cluster (``ray start --head`` on one machine,
    ``ray start --address=HEAD:6379`` on the others). Candidates come from the study's
    controller through Ray's ``OptunaSearch`` on the study's storage; each trial holds the
    resources the spec asks for it (``{cpu: 1, gpu: 0.25}``: four trials share a GPU); a trial
    whose worker process dies is retried up to ``max_failures`` times and recorded once.

    On a cluster, the objective must be importable on every node and the study storage and
    MLflow tracking URI reachable from them (PostgreSQL and an MLflow server, not SQLite files).

    Args:
        spec: The spec's ``runner`` section.
        max_consecutive_duplicates: Stop when the controller proposes this many already
            completed parameter sets in a row.
    """

    def __init__(self, spec: RayRunnerSpec, *, max_consecutive_duplicates: int = 100) -> None:
        self.spec = spec
        self.max_consecutive_duplicates = max_consecutive_duplicates

    def run(self, store: TrialsStore, *, progress: Any = None) -> None:
        import ray
        from ray import tune

        from paretune.search import _ray_tune as rt

        budget = store.spec.budget
        remaining = None
        if budget.trials is not None:
            # RUNNING trials of other drivers on the same study count too.
            remaining = budget.trials - store.n_finished(running=True)
            if remaining <= 0:
                return
        search = rt.StudySearch(
            store,
            progress=progress,
            max_consecutive_duplicates=self.max_consecutive_duplicates,
            # As with the local runner, the wall time stops new trials and lets running ones
            # finish (Tune's time_budget_s would cut them off).
            deadline=None if budget.wall_time is None else time.monotonic() + budget.wall_time,
            early_stopping=self.spec.scheduler != "fifo",
            failures=FailureStreak(budget.max_failures_in_a_row),
        )
        resources = self.spec.resources
        request = rt.PerCandidate(resources) if resources.when else resources.for_params({})
        started_here = self._start_ray(ray)
        clear_stop_request()
        try:
            tuner = tune.Tuner(
                tune.with_resources(rt.trainable, request),
                tune_config=tune.TuneConfig(
                    search_alg=search,
                    num_samples=-1 if remaining is None else remaining,
                    max_concurrent_trials=self._concurrency(ray.cluster_resources()),
                    # Tune cannot reset a function trainable that its scheduler stopped
                    # mid-run (ray 2.60: "Could not re-use actor", and the loop then waits
                    # forever), so with ASHA every trial gets a fresh worker.
                    reuse_actors=self.spec.reuse_actors and self.spec.scheduler == "fifo",
                    scheduler=self._scheduler(store),
                    trial_name_creator=rt.trial_name,
                    trial_dirname_creator=rt.trial_name,
                ),
                run_config=tune.RunConfig(
                    name=store.spec.study,
                    storage_path=str(store.run_dir / "ray"),
                    failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
                    stop=rt.StopOnRequest(),
                    callbacks=[rt.Bookkeeping(search, self.spec.max_failures)],
                    verbose=0,
                ),
            )
            with _stop_signals(), _quiet_tune():
                tuner.fit()
        except BaseException as err:
            reason = "stopped by the user" if isinstance(err, KeyboardInterrupt) else repr(err)
            requeued = self._requeue_unfinished(store, search, reason)
            if isinstance(err, KeyboardInterrupt):
                raise SearchInterrupted(requeued) from None
            raise
        finally:
            if started_here:
                ray.shutdown()
        for pending in list(search.errored.values()):  # errors whose callback never came
            search.record(pending, Outcome("FAIL", error="the Ray trial failed"))
        search.errored.clear()
        requeued = self._requeue_unfinished(store, search, "stopped by the user")
        if stop_requested() or requeued:
            raise SearchInterrupted(requeued)
        if search.failures.reached:
            raise search.failures.error()

    def _start_ray(self, ray: Any) -> bool:
        """Join ``address`` or start a local cluster, unless Ray is already initialised."""
        if ray.is_initialized():
            s = self.spec
            if s.address is not None or s.num_cpus is not None or s.num_gpus is not None:
                _log.warning(
                    "Ray is already initialised in this process: the search uses that cluster "
                    "(%s), not the spec's address/num_cpus/num_gpus",
                    ray.cluster_resources(),
                )
            return False
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": True,
        }
        if self.spec.address is not None:
            kwargs["address"] = self.spec.address
        else:
            kwargs["address"] = "local"
            kwargs["num_cpus"] = self.spec.num_cpus
            kwargs["num_gpus"] = self.spec.num_gpus
        t0 = time.monotonic()
        ray.init(**kwargs)
        _log.info("Ray started in %.1f s: %s", time.monotonic() - t0, ray.cluster_resources())
        return True

    def _concurrency(self, cluster: dict[str, float]) -> int:
        """Trials at once: the spec's ``max_concurrent``, else as many as the cluster holds.

        Bounded either way, so that Tune does not ask the study for candidates long before a
        worker is free: the controller would propose them all at once, each blind to the
        others' results.
        """
        if self.spec.max_concurrent is not None:
            return self.spec.max_concurrent
        wanted = self.spec.resources
        fits = []
        if wanted.cpu > 0:
            fits.append(int(cluster.get("CPU", 0) // wanted.cpu))
        if wanted.gpu > 0:
            fits.append(int(cluster.get("GPU", 0) // wanted.gpu))
        return max(1, min(fits)) if fits else 1

    def _scheduler(self, store: TrialsStore) -> Any:
        if self.spec.scheduler == "fifo":
            return None
        from ray.tune.schedulers import ASHAScheduler

        metric = store.spec.metrics[0]
        options = {"time_attr": "training_iteration", **self.spec.scheduler_options}
        return ASHAScheduler(
            metric=metric.name, mode="min" if metric.direction == "minimize" else "max", **options
        )

    @staticmethod
    def _requeue_unfinished(store: TrialsStore, search: Any, reason: str) -> list[int]:
        """Fail and re-queue the trials Tune did not finish (a stop, a driver error)."""
        requeued = []
        for pending in [*search.pending.values(), *search.errored.values()]:
            if pending.trial.number in requeued:
                continue
            frozen = store.storage.get_trial(pending.trial_id)
            if frozen.state != TrialState.RUNNING:
                continue
            with contextlib.suppress(Exception):
                store.fail_interrupted(pending, reason=reason)
                requeued.append(pending.number)
        search.pending.clear()
        search.errored.clear()
        return sorted(requeued)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the search through paretune's handler, not Tune's.

    Tune's own SIGINT handler ends its loop and asks for ``Tuner.restore``; paretune's
    records the request, Tune's loop ends at the next step (:class:`_StopOnRequest`), and the
    trials still running are re-queued in the study, where ``paretune resume`` finds them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for s in previous:
        signal.signal(s, handle_stop_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune configured for a search driven from a study.

    Its own tables and notices repeat what paretune's progress bar says. Its strict metric
    check wants the optimised metrics in every result, but a trial's reports carry what the
    objective chose to report, and a failed trial's final result carries none.
    """
    from paretune.trials_store._store import _quiet

    settings = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    old = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Define-by-run function passed")
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
