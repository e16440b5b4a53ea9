"""Where trials live: a study's Optuna record, its MLflow link, and crash recovery.

The Optuna study is the system of record. :class:`TrialsStore` adds what Optuna lacks:

* opening the study a :class:`~paretune.trials_store.StudyConfig` describes, after checking that
  what it writes to is there (a writable run directory, a tracking server that answers);
* the MLflow link: one parent run per study, exactly one child run per trial (repaired after a
  kill: :mod:`paretune.trials_store._reconcile`);
* recovery: a trial left RUNNING by a process that died is failed and its parameters are queued
  again, so a search continues from storage alone and no completed trial is evaluated twice
  (who owns a RUNNING trial: :mod:`paretune.trials_store._ownership`; what is queued:
  :mod:`paretune.trials_store._queue`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import StudyError, StudyNotFound
from paretune._secrets import redact, redact_url, remember_secrets_of
from paretune.objectives import Metric, pareto_mask
from paretune.trials_store._attrs import (
    DUPLICATE_OF_ATTR,
    ERROR_ATTR,
    INTERRUPTED_ATTR,
    INTERRUPTED_BY_ATTR,
    LABEL_ATTR,
    METRICS_ATTR,
    NOT_REQUEUED_ATTR,
    RETRY_OF_ATTR,
    SEED_ATTR,
    TRAJECTORY_ATTR,
)
from paretune.trials_store._config import StudyConfig, constraint_violations
from paretune.trials_store._ledger import TrialLedger
from paretune.trials_store._mlflow import MlflowLink
from paretune.trials_store._ownership import (
    _Heartbeat,
    is_orphaned,
    make_storage,
    owner_is_dead,
    owner_token,
    quiet,
)
from paretune.trials_store._preflight import (
    check_writable_dir,
    missing_sqlite_file,
    probe_tracking_server,
)
from paretune.trials_store._queue import enqueue_baselines, queue_retry
from paretune.trials_store._store_runs import MlflowRuns

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace

__all__ = ["PendingTrial", "TrialsStore"]

_log = logging.getLogger(__name__)


@dataclass
class PendingTrial:
    """A trial handed out by :meth:`TrialsStore.ask`: what a runner needs to evaluate it."""

    trial: optuna.Trial
    params: dict[str, Any]
    seed: int
    mlflow_run_id: str | None
    duplicate_of: FrozenTrial | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def trial_id(self) -> int:
        return self.trial._trial_id


class TrialsStore(MlflowRuns):
    """A study with its MLflow link: where a search's trials live (the MLflow side in
    :class:`~paretune.trials_store._store_runs.MlflowRuns`).

    Opening a store checks what it writes to before anything is created: the run directory
    must be writable and the MLflow tracking server must answer (within
    :data:`PROBE_TIMEOUT_S` seconds), so a broken setup fails at once with one line instead of
    leaving a study behind.

    Args:
        config: The study (storage, tracking, metrics, space, constraints, baselines, seed).
        sampler: The controller that proposes candidates (an Optuna sampler).
        create: Create the study if it does not exist (``False``: it must exist).
        mlflow: Link trials to MLflow (``config.tracking_uri``); ignored without one.

    Raises:
        StudyError: The run directory is not writable, the tracking server or the storage
            cannot be reached, the study does not exist (``create=False``), or it optimises
            other directions than ``config``'s.
    """

    def __init__(
        self,
        config: StudyConfig,
        *,
        sampler: optuna.samplers.BaseSampler | None = None,
        create: bool = True,
        mlflow: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.storage_url = config.storage_url
        self.tracking_uri = config.tracking_uri
        remember_secrets_of(config.storage_url, config.tracking_uri)
        mlflow = mlflow and config.tracking_uri is not None
        if self.run_dir is not None and (create or mlflow):
            check_writable_dir(self.run_dir)
        if mlflow:
            assert config.tracking_uri is not None  # checked above
            probe_tracking_server(config.tracking_uri)
        name = config.name
        absent = None if create else missing_sqlite_file(self.storage_url)
        if absent is not None:  # opening it would create it
            raise StudyNotFound(
                f"no study named {name!r} in {redact_url(self.storage_url)} (there is no file "
                f"{absent}); start it with `paretune run SPEC`"
            )
        self.storage = make_storage(
            self.storage_url, heartbeat_stale_trial_callback=self._on_heartbeat_stale
        )
        exists = name in {s.study_name for s in self.storage.get_all_studies()}
        if not exists and not create:
            raise StudyNotFound(
                f"no study named {name!r} in {redact_url(self.storage_url)}; start it with "
                "`paretune run SPEC`"
            )
        if not exists and not config.metrics:
            raise StudyError(
                f"study {name!r} does not exist, and no metrics were given to create it"
            )
        # MLflow before the study: a tracking store that cannot be opened leaves no study.
        self.mlflow: MlflowLink | None = None
        if mlflow:
            assert config.tracking_uri is not None
            self.mlflow = MlflowLink(
                tracking_uri=config.tracking_uri,
                experiment=name,
                artifact_location=config.artifact_location,
            )
        # Exactly one of several drivers opening a new study at once creates it (the storage's
        # unique study name decides); the MLflow parent run is agreed on in ``start``.
        if exists:
            self.study = optuna.load_study(study_name=name, storage=self.storage, sampler=sampler)
        else:
            try:
                self.study = optuna.create_study(
                    storage=self.storage,
                    study_name=name,
                    directions=config.directions,
                    sampler=sampler,
                )
            except optuna.exceptions.DuplicatedStudyError:
                self.study = optuna.load_study(
                    study_name=name, storage=self.storage, sampler=sampler
                )
        stored = [d.name.lower() for d in self.study.directions]
        if not config.metrics:
            # A read-only look: the study says what it optimises.
            names = self.study.metric_names or [f"value{i}" for i in range(len(stored))]
            self.config = config = dataclasses.replace(
                config,
                metrics=tuple(Metric(n, d) for n, d in zip(names, stored, strict=True)),  # type: ignore[arg-type]
            )
        elif stored != config.directions:
            raise StudyError(
                f"study {name!r} in {redact_url(self.storage_url)} optimises {stored}, but the "
                f"spec says {config.directions}; use another study name or run directory"
            )
        else:
            with quiet():
                self.study.set_metric_names(config.metric_names)
        self.parent_run_id: str | None = None
        self._heartbeat: _Heartbeat | None = None
        self._recovered: list[int] = []
        self._ledger = TrialLedger(self.study)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def space(self) -> SearchSpace:
        if self.config.space is None:
            raise StudyError(
                f"study {self.config.name!r} was opened to read it (no space): it cannot "
                "prepare trials"
            )
        return self.config.space

    def start(self) -> list[int]:
        """Open the MLflow parent run, recover stale trials, queue baselines.

        Also repairs what a driver killed at the wrong moment left in MLflow: a trial without
        its child run gets one (the run it started before its record, found by tag, or a new
        one), and a finished trial whose run still says RUNNING is closed with its outcome.

        Returns:
            The numbers of the trials that were found stale and queued again.
        """
        if self.mlflow is not None:
            self.parent_run_id = self.open_parent_run(
                tags={"paretune.storage": redact_url(self.storage_url)}
            )
        recovered = self.recover()
        self.catch_up()
        enqueue_baselines(self.study, self.config.baselines)
        self._heartbeat = _Heartbeat(self.storage)
        return recovered

    def close(self, *, status: str = "FINISHED") -> None:
        """Stop the heartbeat, tag the Pareto front and end the parent run."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self.mlflow is not None and self.parent_run_id is not None:
            if self._tracking_behind and self._tracking_retry_at is not None:
                self._tracking_retry_at = 0.0  # one more try to catch up before leaving
            try:
                self.tag_pareto()
                if self.tracking_available() and self.counts()["RUNNING"] == 0:
                    # (else another driver still works on the study)
                    self.mlflow.end_parent(self.parent_run_id, status=status)
            except Exception as err:  # tracking is best-effort; the study is the record
                self.tracking_failed(err, "the study's runs were not closed")
            if self._tracking_behind:
                _log.warning(
                    "MLflow: some trials of study %r are not logged yet (`paretune status` "
                    "lists them); `paretune resume` logs them once the tracking store answers",
                    self.config.name,
                )

    def recover(self) -> list[int]:
        """Fail RUNNING trials whose process is gone and queue their parameters again.

        Also queues again the interrupted trials whose interrupter died before it could
        (between failing the trial and queueing its retry).

        Returns:
            The numbers of the failed trials.
        """
        self._recovered = []
        # Trials of other hosts: Optuna fails those whose heartbeat stopped and calls
        # _on_heartbeat_stale for each.
        with quiet():
            optuna.storages.fail_stale_trials(self.study)
        ledger = self._ledger
        ledger.refresh()
        running = [(t, True) for t in ledger.running()]
        interrupted = [(t, False) for t in ledger.interrupted_not_retried()]
        # In trial order, as the retries are asked in the order they are queued.
        for t, is_running in sorted(running + interrupted, key=lambda pair: pair[0].number):
            if is_running and is_orphaned(t):
                self.fail_interrupted(t, reason="its process died", requeue=self.config.requeue)
                self._recovered.append(t.number)
            elif not is_running and owner_is_dead(str(t.user_attrs.get(INTERRUPTED_BY_ATTR, ""))):
                queue_retry(self.study, t)
                self._recovered.append(t.number)
        return sorted(self._recovered)

    def _on_heartbeat_stale(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        if self.config.requeue:
            queue_retry(self.study, frozen)
        self._finish_mlflow_of(frozen, "FAIL", {"paretune.fail_reason": "heartbeat lost"})
        self._recovered.append(frozen.number)

    # -- trials ---------------------------------------------------------------------------

    def ask(self) -> PendingTrial:
        """A new trial with its parameters drawn from the study's space.

        Stale trials (dead processes, lost heartbeats) are recovered first, as Optuna's
        ``Study.optimize`` does, so a driver that runs on notices another that died.
        """
        self.recover()
        with quiet():
            trial = self.study.ask()
        # recover() has just looked at the study: the duplicate check needs no second look.
        return self._prepare(trial, look=False)

    def prepare(self, trial: optuna.Trial) -> PendingTrial:
        """Make a freshly asked trial of this study ready to evaluate.

        Records its seed, draws its parameters from the space, starts its heartbeat and its
        MLflow child run (tagged with the trial's id, so that a kill before the run is recorded
        in the trial is repaired by :meth:`reconcile_mlflow`), and looks for a completed twin
        (its owner is this process since the store's storage made it RUNNING). :meth:`ask`
        calls it; a runner whose trials are asked by someone else on this store's storage (Ray
        Tune's ``OptunaSearch``) calls it on theirs.
        """
        return self._prepare(trial, look=True)

    def _prepare(self, trial: optuna.Trial, *, look: bool) -> PendingTrial:
        # A retried trial keeps the seed of the attempt it repeats.
        seed = trial.user_attrs.get(SEED_ATTR, self.config.trial_seed(trial.number))
        trial.set_user_attr(SEED_ATTR, seed)
        params = self.space.suggest(trial)
        if self._heartbeat is not None:
            self._heartbeat.add(trial._trial_id)
        duplicate = self._completed_twin(params, look=look)
        label = trial.user_attrs.get(LABEL_ATTR)
        run_id = self.start_run(
            trial,
            params,
            {
                "paretune.seed": str(seed),
                "paretune.worker": owner_token(),
                **({LABEL_ATTR: str(label)} if label is not None else {}),
            },
            run_name=self.run_name(trial.number, params, label=label),
        )
        return PendingTrial(trial, params, seed, run_id, duplicate_of=duplicate)

    def _completed_twin(
        self, params: Mapping[str, Any], *, look: bool = True
    ) -> FrozenTrial | None:
        """The first COMPLETE trial with ``params``, also of other drivers: as of now
        (``look``), or as of the store's last look at the study."""
        if look:
            self._ledger.refresh()
        return self._ledger.completed_twin(params)

    def tell(
        self,
        pending: PendingTrial,
        *,
        state: TrialState,
        metrics: Mapping[str, float] | None = None,
        error: str | None = None,
        final_step: int = 0,
        tags: Mapping[str, str] | None = None,
        trajectory: Sequence[Mapping[str, Any]] | None = None,
    ) -> FrozenTrial:
        """Record the outcome of a trial in the study, then in MLflow.

        Args:
            pending: The trial from :meth:`ask`.
            state: COMPLETE, PRUNED or FAIL.
            metrics: Everything the objective returned (COMPLETE) or last reported (PRUNED).
            error: Why the trial failed.
            final_step: The MLflow step of the final metrics: after the last reported step, so
                MLflow's latest value of a metric is the one the objective returned.
            tags: More tags of the trial's MLflow run.
            trajectory: The decisions of ``ctx.decide`` (DAC) as plain data: kept in the
                trial (``paretune.trajectory``) and logged to its MLflow run.
        """
        trial = pending.trial
        if trajectory:
            trial.set_user_attr(TRAJECTORY_ATTR, [dict(d) for d in trajectory])
        if metrics is not None:
            trial.set_user_attr(METRICS_ATTR, {k: float(v) for k, v in metrics.items()})
        if error is not None:
            error = redact(error)
            trial.set_user_attr(ERROR_ATTR, error[-2000:])
        if pending.duplicate_of is not None:
            trial.set_user_attr(DUPLICATE_OF_ATTR, pending.duplicate_of.number)
        values = None
        if state == TrialState.COMPLETE:
            assert metrics is not None  # runner contract
            values = [float(metrics[name]) for name in self.config.metric_names]
        with quiet():
            frozen = self.study.tell(trial, values=values, state=state)
        if self._heartbeat is not None:
            self._heartbeat.remove(pending.trial_id)
        if self.mlflow is None or self.parent_run_id is None:
            return frozen
        if pending.mlflow_run_id is None or not self.tracking_available():
            self.note_unlogged(frozen.number)  # its run is made or finished by the catch-up
        else:
            run_tags = dict(tags or {})
            if error is not None and error.strip():
                run_tags["paretune.error"] = error.strip().splitlines()[-1][:500]
            if pending.duplicate_of is not None:
                run_tags["paretune.duplicate_of"] = str(pending.duplicate_of.number)
            try:
                self.mlflow.finish_child(
                    pending.mlflow_run_id,
                    state=frozen.state.name,
                    metrics=metrics,
                    tags=run_tags,
                    step=final_step,
                    trajectory=trajectory,
                )
            except Exception as err:  # tracking is best-effort; the study is the record
                self.tracking_failed(err, f"trial {frozen.number} not finished in its run")
                self.note_unlogged(frozen.number)
        return frozen

    def fail_interrupted(
        self, trial: FrozenTrial | PendingTrial, *, reason: str, requeue: bool = True
    ) -> bool:
        """Fail a RUNNING trial that did not finish (crash, Ctrl-C) and queue it again.

        Only the process whose state change wins queues the retry, so a trial is queued again
        once however many processes find it stale; one that dies in between is found by the
        next :meth:`recover` (the trial records who interrupted it).

        Args:
            trial: The RUNNING trial.
            reason: Why it did not finish (recorded in the trial and its MLflow run).
            requeue: Queue its parameters again (``False``: the caller redoes it its own way).

        Returns:
            Whether this call failed it (``False``: another process finished it first).
        """
        trial_id = trial.trial_id if isinstance(trial, PendingTrial) else trial._trial_id
        try:
            self.storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, reason)
            if requeue:
                self.storage.set_trial_user_attr(trial_id, INTERRUPTED_BY_ATTR, owner_token())
            else:
                self.storage.set_trial_user_attr(trial_id, NOT_REQUEUED_ATTR, True)
            if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return False
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # another process finished or failed it first
        if self._heartbeat is not None:
            self._heartbeat.remove(trial_id)
        frozen = self.storage.get_trial(trial_id)
        if requeue:
            queue_retry(self.study, frozen)
        self._finish_mlflow_of(frozen, "FAIL", {"paretune.fail_reason": f"interrupted: {reason}"})
        return True

    # -- views ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        self._ledger.refresh()
        return self._ledger.counts()

    def n_finished(
        self, *, running: bool = False, where: Callable[[FrozenTrial], bool] | None = None
    ) -> int:
        """Trials that count against the budget.

        COMPLETE and PRUNED trials, and FAIL trials unless their parameters were queued again
        (a crash or Ctrl-C interrupted them: the retry counts instead).

        Args:
            running: Count RUNNING trials of every process too: what a budget must leave room
                for when several drivers share the study.
            where: Count only the trials it accepts (a DAC run counts its training episodes,
                not its evaluations).
        """
        if where is None:
            self._ledger.refresh()
            return self._ledger.n_finished(running=running)
        counted = {TrialState.COMPLETE, TrialState.PRUNED}
        if running:
            counted.add(TrialState.RUNNING)
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs}
        return sum(
            where(t)
            and (
                t.state in counted
                or (
                    t.state == TrialState.FAIL
                    and t.number not in retried
                    and INTERRUPTED_BY_ATTR not in t.user_attrs  # its retry counts, once queued
                )
            )
            for t in trials
        )

    def feasible(self, t: FrozenTrial) -> bool:
        metrics = t.user_attrs.get(METRICS_ATTR)
        return all(v <= 0 for v in constraint_violations(self.config.constraints, metrics))

    def pareto_trials(self, tolerance: Mapping[str, float] | None = None) -> list[FrozenTrial]:
        """The feasible COMPLETE trials that no other feasible COMPLETE trial dominates.

        Args:
            tolerance: Metric name to a margin in the metric's units (unnamed metrics: 0).
                A trial is then left out only when another is better by at least the margins
                in every metric: the near-front trials a noisy metric cannot tell from the
                front (:func:`~paretune.trials_store.pareto_mask`).

        Raises:
            ConfigError: ``tolerance`` names a metric the spec does not optimise, or a margin
                is negative or not finite.
        """
        import numpy as np

        margins = self.config.check_tolerance(tolerance)
        done = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if self.feasible(t)
        ]
        if not done:
            return []
        values = np.array([t.values for t in done], dtype=float)
        mask = pareto_mask(values, self.config.directions, tolerance=margins)
        front = [t for t, keep in zip(done, mask, strict=True) if keep]
        return sorted(front, key=lambda t: tuple(t.values))
