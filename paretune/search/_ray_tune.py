"""The pieces of the Ray runner that subclass Ray Tune's (imported only when Ray runs trials).

Tune pickles its configuration (searcher, callbacks, stopper) into the experiment directory for
``Tuner.restore``. paretune restores from the Optuna study instead (``paretune resume``), so these
objects pickle to an inert state: the store they hold (storage engines, threads) does not
travel, and a restored copy refuses to run rather than record into the wrong place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from paretune._errors import StudyError
from paretune.search._jobs import Job, Outcome, evaluate
from paretune.search._signals import stop_requested

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from paretune.search._loop import Started, StopPolicy, StudyTrials
    from paretune.trials_store import TrialsStore

_log = logging.getLogger(__name__)

JOB_KEY = "_paretune_job"  # the trial's Job in Tune's config
CWD_KEY = "_paretune_cwd"  # the driver's working directory
COPY_KEY = "_paretune_copy"  # metrics of a completed twin: returned, not recomputed
RESULT_KEY = "paretune"  # bookkeeping in every result a trial reports to Tune
METRICS_PREFIX = f"{RESULT_KEY}/metrics/"
RETRIES_ATTR = "paretune.retries"
NODE_TAG = "paretune.node"
NODE_ID_TAG = "paretune.node_id"

_NOT_RESTORABLE = (
    "this object was restored from Tune's experiment state; paretune continues a search from "
    "its Optuna study instead: run `paretune resume SPEC`"
)


class JobRef:
    """A trial's :class:`Job` in Tune's config, named by its trial number in Tune's tables.

    The job travels by reference: it sits in Ray's object store, and what Tune writes into the
    run directory (each trial's ``params.pkl`` and ``params.json``, the experiment's state)
    holds only the reference. The job carries the storage and tracking URLs, whose passwords
    must not land on disk.
    """

    def __init__(self, job: Job) -> None:
        import ray

        self.trial_number = job.trial_number
        self._job: Job | None = job
        self._ref = ray.put(job)

    @property
    def job(self) -> Job:
        if self._job is None:  # in a worker, or a copy Tune made
            import ray

            self._job = ray.get(self._ref)
        return self._job

    def __getstate__(self) -> dict[str, Any]:
        return {"trial_number": self.trial_number, "_job": None, "_ref": self._ref}

    def __repr__(self) -> str:
        return f"trial{self.trial_number}"


def _final(outcome: Outcome) -> dict[str, Any]:
    # Tune flattens nested results with "/"; the keys are written flat so they read back as
    # written.
    out: dict[str, Any] = {
        **(outcome.metrics or {}),
        f"{RESULT_KEY}/final": True,
        f"{RESULT_KEY}/state": outcome.state,
        f"{RESULT_KEY}/error": outcome.error,
        f"{RESULT_KEY}/last_step": outcome.last_step,
        # The DAC trajectory as one JSON string: Tune would flatten a nested list.
        f"{RESULT_KEY}/trajectory": None
        if outcome.trajectory is None
        else json.dumps(outcome.trajectory),
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
    """The trial's MLflow run names the Ray node and the process that evaluate it.

    Host name and IP address alone cannot tell apart two nodes of one machine (or two
    containers sharing a host name), so the tag also holds the node's name (``ray start
    --node-name``; Ray's default is the IP address), and ``paretune.node_id`` holds Ray's node id.
    A retried trial is tagged again by the node that runs the retry.
    """
    if not (job.link.tracking_uri and job.link.mlflow_run_id):
        return
    try:
        import ray
        from mlflow import MlflowClient

        node_id = ray.get_runtime_context().get_node_id()
        label = node_label(
            host=socket.gethostname(),
            ip=ray.util.get_node_ip_address(),
            name=_node_name(node_id),
            pid=os.getpid(),
        )
        client = MlflowClient(tracking_uri=job.link.tracking_uri)
        client.set_tag(job.link.mlflow_run_id, NODE_TAG, label)
        client.set_tag(job.link.mlflow_run_id, NODE_ID_TAG, node_id)
    except Exception as err:  # tracking is best-effort: it must never fail a trial
        _log.warning("could not tag trial %d's MLflow run: %s", job.trial_number, err)


def node_label(*, host: str, ip: str, name: str | None, pid: int) -> str:
    """``paretune.node``: ``host (ip) pid N``, with ``node NAME`` where the node's name says
    more than its IP address."""
    where = f"{host} ({ip})"
    if name and name != ip:
        where = f"{where} node {name}"
    return f"{where} pid {pid}"


@functools.cache
def _node_name(node_id: str) -> str | None:
    """The name of this worker's node (one GCS query per worker process and node)."""
    import ray

    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return node.get("NodeName") or None
    return None


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
    trajectory = result.get(f"{RESULT_KEY}/trajectory")
    return Outcome(
        result[f"{RESULT_KEY}/state"],
        metrics=_metrics_of(result),
        error=result.get(f"{RESULT_KEY}/error"),
        last_step=result.get(f"{RESULT_KEY}/last_step"),
        trajectory=json.loads(trajectory) if trajectory else None,
    )


def last_report(result: dict[str, Any] | None) -> Outcome:
    """A trial Tune's scheduler stopped early: pruned at its last report."""
    result = result or {}
    return Outcome(
        "PRUNED", metrics=_metrics_of(result), last_step=result.get(f"{RESULT_KEY}/step")
    )


class StudySearch(OptunaSearch):
    """Ray's ``OptunaSearch`` on a paretune study, with the trial loop's bookkeeping.

    Every trial Tune asks for is asked from the study by ``OptunaSearch`` (the spec's
    controller proposes it, RUNNING trials are its pending points) and prepared by the store
    (owner, seed, parameters through the space, MLflow child run, completed twin). Every
    outcome is recorded through :class:`~paretune.search.StudyTrials` and counted by the
    :class:`~paretune.search.StopPolicy`, which also decides when no trial starts any more.
    Intermediate results are not reported here: workers report to the study at the
    objective's own steps.

    Args:
        trials: The study's trials (bookkeeping).
        policy: The stop rules (wall time, failure and duplicate streaks, signals).
        early_stopping: Tune's scheduler stops trials early (ASHA): a trial that ends without
            its final result is pruned at its last report. Otherwise such a trial was stopped
            with the search and is queued again.
    """

    def __init__(
        self, trials: StudyTrials, policy: StopPolicy, *, early_stopping: bool = False
    ) -> None:
        store = trials.store
        names = store.config.metric_names
        modes = ["min" if d == "minimize" else "max" for d in store.config.directions]
        super().__init__(
            space=self._define,
            metric=names if len(names) > 1 else names[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=store.study.sampler,
            study_name=store.config.name,
            storage=store.storage,
        )
        self.trials: StudyTrials | None = trials
        self.policy = policy
        self.early_stopping = early_stopping
        self.pending: dict[str, Started] = {}
        self.errored: dict[str, Started] = {}
        self._asked: dict[int, Started] = {}

    def _live(self) -> StudyTrials:
        if self.trials is None:
            raise StudyError(_NOT_RESTORABLE)
        return self.trials

    @property
    def store(self) -> TrialsStore:
        return self._live().store

    def __getstate__(self) -> dict[str, Any]:
        return {"trials": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _define(self, captor: Any) -> dict[str, Any]:
        # Ray passes a wrapper that records suggest_* calls; the store suggests the space's
        # parameters (conditions and rules included) on the trial inside it.
        trials = self._live()
        trial = getattr(captor, "ot_trial", captor)
        started = trials.started(trials.store.prepare(trial))
        self._asked[trial.number] = started
        config: dict[str, Any] = {JOB_KEY: JobRef(started.job), CWD_KEY: os.getcwd()}
        if started.copy is not None:
            config[COPY_KEY] = started.copy.metrics
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.policy.may_start() or not self._live().prepare_queue():
            return Searcher.FINISHED  # type: ignore[return-value]  # a str; Ray annotates dict
        config = super().suggest(trial_id)
        started = self._asked.pop(self._ot_trials[trial_id].number)
        self.pending[trial_id] = started
        self.policy.started(duplicate=started.copy is not None)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return  # workers report intermediate values to the study at their own steps

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        started = self.pending.get(trial_id)
        if started is None:
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
        self.record(started, outcome)

    def record(self, started: Started, outcome: Outcome) -> None:
        self._live().finish(started, outcome)
        self.policy.observe(started.number, outcome)

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
        started = self.search.pending.get(trial.trial_id) if self.search else None
        if started is None:
            return
        pending = started.token
        retries = int(pending.trial.user_attrs.get(RETRIES_ATTR, 0)) + 1
        with contextlib.suppress(Exception):
            pending.trial.set_user_attr(RETRIES_ATTR, retries)
        _log.warning(
            "trial %d: its worker failed (%s); retry %d of %d",
            started.number,
            first_line(trial.get_error()),
            retries,
            self.max_failures,
        )

    def on_trial_error(self, iteration: int, trials: Any, trial: Trial, **info: Any) -> None:
        if self.search is None:
            return
        started = self.search.errored.pop(trial.trial_id, None)
        if started is not None:
            detail = str(trial.get_error() or "").strip()[-1500:]
            error = (
                f"the Ray trial failed after {self.max_failures} retries (its worker process "
                f"died, or Ray could not run it):\n{detail}"
            )
            self.search.record(started, Outcome("FAIL", error=error))


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
    return f"trial_{ref.trial_number:05d}" if ref is not None else str(trial.trial_id)


__all__ = [
    "Bookkeeping",
    "PerCandidate",
    "StopOnRequest",
    "StudySearch",
    "outcome_of",
    "trainable",
    "trial_name",
]
