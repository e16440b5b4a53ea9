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
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from optuna.trial import TrialState
from pydantic import Field, model_validator

from paretune._errors import ConfigError
from paretune._validation import StrictModel
from paretune.search._jobs import Outcome
from paretune.search._runner import Runner, RunnerSettings
from paretune.search._signals import (
    SearchInterrupted,
    clear_stop_request,
    handle_stop_signal,
    stop_reason,
    stop_requested,
)

if TYPE_CHECKING:
    from paretune.search._loop import Budget, StudyTrials
    from paretune.trials_store import TrialsStore

__all__ = ["RayRunner", "RayRunnerSettings", "ResourcesSettings"]


class ResourceRule(StrictModel):
    """Resources for the candidates whose ``params`` match (each value, or any of a list)."""

    params: dict[str, Any] = Field(min_length=1)
    cpu: float | None = Field(default=None, ge=0)
    gpu: float | None = Field(default=None, ge=0)

    def matches(self, params: Mapping[str, Any]) -> bool:
        for name, wanted in self.params.items():
            if name not in params:
                return False
            options = wanted if isinstance(wanted, list) else [wanted]
            if params[name] not in options:
                return False
        return True


class ResourcesSettings(StrictModel):
    """What one trial holds on a Ray worker: CPUs and a (fractional) share of GPUs.

    ``when`` computes the request from the candidate: the first rule whose ``params`` match
    overrides ``cpu``/``gpu`` (a proxy model gets a quarter GPU, the wide target a whole one)::

        resources:
          cpu: 1
          gpu: 0.25
          when:
            - {params: {width: [1024, 2048]}, gpu: 1}
    """

    cpu: float = Field(default=1.0, ge=0)
    gpu: float = Field(default=0.0, ge=0)
    when: list[ResourceRule] = Field(default_factory=list)

    def for_params(self, params: Mapping[str, Any]) -> dict[str, float]:
        cpu, gpu = self.cpu, self.gpu
        for rule in self.when:
            if rule.matches(params):
                cpu = rule.cpu if rule.cpu is not None else cpu
                gpu = rule.gpu if rule.gpu is not None else gpu
                break
        return {"cpu": cpu, "gpu": gpu}

    @model_validator(mode="after")
    def _whole_or_fraction(self) -> ResourcesSettings:
        gpus = [self.gpu] + [r.gpu for r in self.when if r.gpu is not None]
        for gpu in gpus:
            if gpu > 1 and gpu != int(gpu):
                raise ValueError(
                    f"a trial asks for a fraction of one GPU or for whole GPUs, but gpu={gpu}"
                )
        return self


class RayRunnerSettings(RunnerSettings):
    """Evaluate trials on a Ray Tune worker pool (a local Ray cluster, or one at ``address``).

    Attributes:
        address: A running cluster to join (``auto``, ``ray://host:10001`` or ``host:6379``);
            unset, the runner starts a local cluster for the search and stops it after.
        num_cpus: CPUs of the local cluster (default: all of this machine's).
        num_gpus: GPUs of the local cluster (default: those Ray detects).
        max_concurrent: Trials running at once (default: as many as the cluster's resources
            hold when the search starts, from ``resources``' cpu and gpu).
        resources: Per-trial resources, fixed or by candidate.
        max_failures: How often a trial whose worker died is retried before it fails.
        reuse_actors: Keep worker processes between trials (much less per-trial overhead);
            not with ASHA, whose stopped trials Tune cannot reset.
        scheduler: ``fifo``, or ``asha`` to stop poor trials early from what they report
            (one optimised metric); ``scheduler_options`` are ``ASHAScheduler``'s arguments.
    """

    type: Literal["ray"]
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    resources: ResourcesSettings = Field(default_factory=ResourcesSettings)
    max_failures: int = Field(default=2, ge=0)
    reuse_actors: bool = True
    scheduler: Literal["fifo", "asha"] = "fifo"
    scheduler_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _local_or_joined(self) -> RayRunnerSettings:
        if self.address is not None and (self.num_cpus is not None or self.num_gpus is not None):
            raise ValueError(
                "num_cpus/num_gpus size a local cluster; a joined cluster (address) has its own"
            )
        return self


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

    ``budget.trial_timeout`` is not supported on Ray yet (a spec with both is rejected).

    Args:
        spec: The runner's settings.
    """

    def __init__(self, spec: RayRunnerSettings) -> None:
        self.spec = spec

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> RayRunner:
        assert isinstance(settings, RayRunnerSettings)  # the registry pairs them
        return cls(settings)

    def check(self, *, metrics: Sequence[str], pruning: bool, budget: Budget) -> None:
        if budget.trial_timeout is not None:
            raise ConfigError(
                "budget.trial_timeout is not supported by the ray runner yet; use the local "
                "runner, or Tune's own stopping (scheduler: asha)",
                path=("budget", "trial_timeout"),
            )
        if self.spec.scheduler != "asha":
            return
        if len(metrics) > 1:
            raise ConfigError(
                f"ASHA stops trials on one metric, but the spec optimises {len(metrics)} "
                f"({', '.join(metrics)}); use `scheduler: fifo`",
                path=("runner", "scheduler"),
            )
        if pruning:
            raise ConfigError(
                "the spec has both an Optuna pruner and Ray's ASHA scheduler; choose one "
                "(`pruner: {name: none}` or `scheduler: fifo`)",
                path=("runner", "scheduler"),
            )

    def run(self, trials: StudyTrials, budget: Budget) -> None:
        import ray
        from ray import tune

        from paretune.search import _ray_tune as rt

        store = trials.store
        # RUNNING trials of other drivers on the same study count too.
        policy = trials.stop_policy(budget)
        remaining = policy.remaining()
        if remaining is not None and remaining <= 0:
            return
        # As with the local runner, the wall time stops new trials and lets running ones
        # finish (Tune's time_budget_s would cut them off).
        search = rt.StudySearch(trials, policy, early_stopping=self.spec.scheduler != "fifo")
        resources = self.spec.resources
        request = rt.PerCandidate(resources) if resources.when else resources.for_params({})
        started_here = self._start_ray(ray)
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
                    name=store.config.name,
                    storage_path=str(_ray_dir(store)),
                    failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
                    stop=rt.StopOnRequest(),
                    callbacks=[rt.Bookkeeping(search, self.spec.max_failures)],
                    verbose=0,
                ),
            )
            with _stop_signals(), _quiet_tune():
                tuner.fit()
        except BaseException as err:
            reason = stop_reason() if isinstance(err, KeyboardInterrupt) else repr(err)
            requeued = self._requeue_unfinished(store, search, reason)
            if isinstance(err, KeyboardInterrupt):
                clear_stop_request()
                raise SearchInterrupted(requeued) from None
            raise
        finally:
            if started_here:
                ray.shutdown()
        for started in list(search.errored.values()):  # errors whose callback never came
            search.record(started, Outcome("FAIL", error="the Ray trial failed"))
        search.errored.clear()
        reason = stop_reason() if stop_requested() else "Tune ended before the trial ran"
        requeued = self._requeue_unfinished(store, search, reason)
        if stop_requested():
            clear_stop_request()  # honoured (a stop during the start-up was kept until here)
            raise SearchInterrupted(requeued)
        if requeued:
            _log.warning(
                "trials %s were queued again: Tune ended before they ran; the same command "
                "evaluates them",
                requeued,
            )
        policy.finish()

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

        metric = store.config.metrics[0]
        options = {"time_attr": "training_iteration", **self.spec.scheduler_options}
        return ASHAScheduler(
            metric=metric.name, mode="min" if metric.direction == "minimize" else "max", **options
        )

    @staticmethod
    def _requeue_unfinished(store: TrialsStore, search: Any, reason: str) -> list[int]:
        """Fail and re-queue the trials Tune did not finish (a stop, a driver error)."""
        requeued = []
        for started in [*search.pending.values(), *search.errored.values()]:
            pending = started.token
            if pending.number in requeued:
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


def _ray_dir(store: TrialsStore) -> Any:
    import tempfile
    from pathlib import Path

    if store.run_dir is not None:
        return store.run_dir / "ray"
    return Path(tempfile.gettempdir()) / "paretune-ray" / store.config.name


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
    from paretune.trials_store import quiet

    settings = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    old = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        with quiet(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Define-by-run function passed")
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
