"""The pieces of the Ray runner that subclass Ray Tune's (imported only when Ray runs trials).

Tune pickles its configuration (searcher, callbacks, stopper) into the experiment directory for
``Tuner.restore``. paretune restores from the Optuna study instead (``paretune resume``), so these
objects pickle to an inert state: the store they hold (storage engines, threads) does not
travel, and a restored copy refuses to run rather than record into the wrong place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from paretune.search._local import _copy_of, _job
from paretune.search._runner import (
    FailureStreak,
    Job,
    Outcome,
    evaluate,
    record_outcome,
    stop_requested,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from paretune.trials_store import PendingTrial, TrialsStore

_log = logging.getLogger(__name__)

JOB_KEY = "_paretune_job"  # the trial's Job in Tune's config
CWD_KEY = "_paretune_cwd"  # the driver's working directory
COPY_KEY = "_paretune_copy"  # metrics of a completed twin: returned, not recomputed
RESULT_KEY = "paretune"  # bookkeeping in every result a trial reports to Tune
METRICS_PREFIX = f"{RESULT_KEY}/metrics/"
RETRIES_ATTR = "paretune.retries"
NODE_TAG = "paretune.node"

_NOT_RESTORABLE = (
    "this object was restored from Tune's experiment state; paretune continues a search from "
    "its Optuna study instead: run `paretune resume SPEC`"
)


class JobRef:
    """A trial's :class:`Job` in Tune's config, named by its trial number in Tune's tables."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __repr__(self) -> str:
        return f"trial{self.job.trial_number}"


def _final(outcome: Outcome) -> dict[str, Any]:
    # Tune flattens nested results with "/"; the keys are written flat so they read back as
    # written.
    out: dict[str, Any] = {
        **(outcome.metrics or {}),
        f"{RESULT_KEY}/final": True,
        f"{RESULT_KEY}/state": outcome.state,
        f"{RESULT_KEY}/error": outcome.error,
        f"{RESULT_KEY}/last_step": outcome.last_step,
    }
    for name, value in (outcome.metrics or {}).items():
        out[f"{METRICS_PREFIX}{name}"] = value
    return out


def trainable(config: dict[str, Any]) -> None:
    """Tune's function trainable: evaluate one trial's :class:`Job` in a Ray worker."""
    job = config[JOB_KEY].job
    _enter(config.get(CWD_KEY))
    copy = config.get(COPY_KEY)
    if copy is not None:
        tune.report(_final(Outcome("COMPLETE", metrics=copy)))
        return
    _tag_node(job)

    def to_tune(step: int, metrics: dict[str, float]) -> None:
        prefixed = {f"{METRICS_PREFIX}{k}": v for k, v in metrics.items()}
        tune.report({**metrics, **prefixed, f"{RESULT_KEY}/step": step})

    tune.report(_final(evaluate(job, sinks=[to_tune])))


def _enter(directory: str | None) -> None:
    """Work where the driver works, when this node has that directory (always on one
    machine): relative paths in a spec (objective files, data) then mean the same in a trial
    as in the driver, and modules beside it import. Tune would otherwise run the trial in its
    own trial directory."""
    if directory is None or not os.path.isdir(directory):
        return
    if os.getcwd() != directory:
        os.chdir(directory)
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _tag_node(job: Job) -> None:
    """The trial's MLflow run names the node and the process that evaluate it."""
    if not (job.tracking_uri and job.mlflow_run_id):
        return
    try:
        import ray
        from mlflow import MlflowClient

        node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()}) pid {os.getpid()}"
        MlflowClient(tracking_uri=job.tracking_uri).set_tag(job.mlflow_run_id, NODE_TAG, node)
    except Exception as err:  # tracking is best-effort: it must never fail a trial
        _log.warning("could not tag trial %d's MLflow run: %s", job.trial_number, err)


def _metrics_of(result: dict[str, Any]) -> dict[str, float] | None:
    metrics = {
        k[len(METRICS_PREFIX) :]: v
        for k, v in result.items()
        if k.startswith(METRICS_PREFIX) and v is not None
    }
    return metrics or None


def outcome_of(result: dict[str, Any] | None) -> Outcome | None:
    """The outcome a trial's last result carries, or ``None`` if it did not finish."""
    result = result or {}
    if not result.get(f"{RESULT_KEY}/final"):
        return None
    return Outcome(
        result[f"{RESULT_KEY}/state"],
        metrics=_metrics_of(result),
        error=result.get(f"{RESULT_KEY}/error"),
        last_step=result.get(f"{RESULT_KEY}/last_step"),
    )


def last_report(result: dict[str, Any] | None) -> Outcome:
    """A trial Tune's scheduler stopped early: pruned at its last report."""
    result = result or {}
    return Outcome(
        "PRUNED", metrics=_metrics_of(result), last_step=result.get(f"{RESULT_KEY}/step")
    )


class StudySearch(OptunaSearch):
    """Ray's ``OptunaSearch`` on a paretune study, with the store's bookkeeping.

    Every trial Tune asks for is asked from the study by ``OptunaSearch`` (the spec's
    controller proposes it, RUNNING trials are its pending points) and prepared by the store
    (owner, seed, parameters through the space, MLflow child run, completed twin). Every
    outcome is told through the store. Intermediate results are not reported here: workers
    report to the study at the objective's own steps.

    Args:
        store: The open store of the search.
        progress: Called as ``progress.update(store, frozen_trial)`` after each outcome.
        max_consecutive_duplicates: Stop after this many completed twins in a row.
        deadline: ``time.monotonic()`` after which no trial starts (the wall-time budget).
        failures: Counts the trials that failed in a row; none starts once it is reached.
        early_stopping: Tune's scheduler stops trials early (ASHA): a trial that ends without
            its final result is pruned at its last report. Otherwise such a trial was stopped
            with the search and is queued again.
    """

    def __init__(
        self,
        store: TrialsStore,
        *,
        progress: Any = None,
        max_consecutive_duplicates: int = 100,
        deadline: float | None = None,
        early_stopping: bool = False,
        failures: FailureStreak | None = None,
    ) -> None:
        spec = store.spec
        names = [m.name for m in spec.metrics]
        modes = ["min" if d == "minimize" else "max" for d in spec.directions]
        super().__init__(
            space=self._define,
            metric=names if len(names) > 1 else names[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=store.study.sampler,
            study_name=spec.study,
            storage=store.storage,
        )
        self.store: TrialsStore | None = store
        self.progress = progress
        self.max_consecutive_duplicates = max_consecutive_duplicates
        self.deadline = deadline
        self.early_stopping = early_stopping
        self.failures = failures or FailureStreak(None)
        self.pending: dict[str, PendingTrial] = {}
        self.errored: dict[str, PendingTrial] = {}
        self._asked: dict[int, PendingTrial] = {}
        self.duplicates_in_a_row = 0

    def _live_store(self) -> TrialsStore:
        if self.store is None:
            raise RuntimeError(_NOT_RESTORABLE)
        return self.store

    def __getstate__(self) -> dict[str, Any]:
        return {"store": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _define(self, captor: Any) -> dict[str, Any]:
        # Ray passes a wrapper that records suggest_* calls; the store suggests the space's
        # parameters (conditions and rules included) on the trial inside it.
        store = self._live_store()
        trial = getattr(captor, "ot_trial", captor)
        pending = store.prepare(trial)
        self._asked[trial.number] = pending
        config: dict[str, Any] = {JOB_KEY: JobRef(_job(store, pending)), CWD_KEY: os.getcwd()}
        if pending.duplicate_of is not None:
            config[COPY_KEY] = _copy_of(pending, store).metrics
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.duplicates_in_a_row >= self.max_consecutive_duplicates:
            _log.warning(
                "stopping: the controller proposed %d already evaluated parameter sets in a "
                "row; the space looks exhausted",
                self.duplicates_in_a_row,
            )
            return Searcher.FINISHED  # type: ignore[return-value]  # a str; Ray annotates dict
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return Searcher.FINISHED  # type: ignore[return-value]  # the wall-time budget
        if self.failures.reached:
            return Searcher.FINISHED  # type: ignore[return-value]  # RayRunner raises
        config = super().suggest(trial_id)
        pending = self._asked.pop(self._ot_trials[trial_id].number)
        self.pending[trial_id] = pending
        self.duplicates_in_a_row = self.duplicates_in_a_row + 1 if pending.duplicate_of else 0
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return  # workers report intermediate values to the study at their own steps

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        pending = self.pending.get(trial_id)
        if pending is None:
            return
        self._ot_trials.pop(trial_id, None)
        if error:
            # Tune tells the searcher first and its callbacks after; the callback brings the
            # error's text (Bookkeeping.on_trial_error).
            self.errored[trial_id] = self.pending.pop(trial_id)
            return
        outcome = outcome_of(result)
        if outcome is None:
            if stop_requested() or not self.early_stopping:
                return  # stopped with the search: re-queued once Tune has returned
            outcome = last_report(result)  # stopped early by Tune's scheduler (ASHA)
        del self.pending[trial_id]
        self.record(pending, outcome)

    def record(self, pending: PendingTrial, outcome: Outcome) -> None:
        record_outcome(self._live_store(), pending, outcome, self.progress)
        self.failures.update(pending.number, outcome)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return  # the study is the record; Tune's restore is not used


class Bookkeeping(tune.Callback):
    """Counts retries on the trial, and records trials that failed for good with Tune's error."""

    def __init__(self, search: StudySearch, max_failures: int) -> None:
        self.search: StudySearch | None = search
        self.max_failures = max_failures

    def __getstate__(self) -> dict[str, Any]:
        return {"search": None, "max_failures": self.max_failures}

    def on_trial_recover(self, iteration: int, trials: Any, trial: Trial, **info: Any) -> None:
        pending = self.search.pending.get(trial.trial_id) if self.search else None
        if pending is None:
            return
        retries = int(pending.trial.user_attrs.get(RETRIES_ATTR, 0)) + 1
        with contextlib.suppress(Exception):
            pending.trial.set_user_attr(RETRIES_ATTR, retries)
        _log.warning(
            "trial %d: its worker failed (%s); retry %d of %d",
            pending.number,
            first_line(trial.get_error()),
            retries,
            self.max_failures,
        )

    def on_trial_error(self, iteration: int, trials: Any, trial: Trial, **info: Any) -> None:
        if self.search is None:
            return
        pending = self.search.errored.pop(trial.trial_id, None)
        if pending is not None:
            detail = str(trial.get_error() or "").strip()[-1500:]
            error = (
                f"the Ray trial failed after {self.max_failures} retries (its worker process "
                f"died, or Ray could not run it):\n{detail}"
            )
            self.search.record(pending, Outcome("FAIL", error=error))


class StopOnRequest(tune.Stopper):
    """Ends Tune's loop when paretune's stop handler saw Ctrl-C or SIGTERM."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return stop_requested()


def first_line(error: Any) -> str:
    text = str(error or "").strip()
    return text.splitlines()[0][:300] if text else "no error message"


class PerCandidate:
    """Tune's resource request for a trial, from the spec's rules and the candidate."""

    def __init__(self, resources: Any) -> None:
        self.resources = resources

    def __call__(self, config: dict[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory

        job: Job = config[JOB_KEY].job
        wanted = self.resources.for_params(job.params)
        return PlacementGroupFactory([{"CPU": wanted["cpu"], "GPU": wanted["gpu"]}])


def trial_name(trial: Any) -> str:
    ref = trial.config.get(JOB_KEY)
    return f"trial_{ref.job.trial_number:05d}" if ref is not None else str(trial.trial_id)


__all__ = [
    "Bookkeeping",
    "PerCandidate",
    "StopOnRequest",
    "StudySearch",
    "outcome_of",
    "trainable",
    "trial_name",
]
