"""Where trials live: the spec's Optuna study, its MLflow link, and crash recovery.

The Optuna study is the system of record. This module adds what Optuna lacks:

* opening the study a spec describes (SQLite file in the run directory by default, any
  SQLAlchemy URL otherwise) with directions checked against the spec;
* the MLflow link (parent run per study, child run per trial);
* recovery: a trial left RUNNING by a process that died is failed and its parameters are queued
  again, so a search continues from storage alone and no completed trial is evaluated twice.

Ownership of a RUNNING trial is decided two ways. A trial records the process that runs it
(``paretune.owner`` = host, pid, process start time) from the moment it becomes RUNNING (see
:class:`_OwningStorage`); on the same host a dead owner is detected at once. Other hosts are
covered by Optuna's heartbeat: a trial whose heartbeat is older than the grace period is stale.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import ConfigError, StudyError, retry_setup_race
from paretune.trials_store._mlflow import CHILD_RUN_ATTR, PARENT_RUN_ATTR, MlflowLink
from paretune.trials_store._pareto import pareto_mask

if TYPE_CHECKING:
    from paretune.spec import SearchSpec

__all__ = ["PendingTrial", "TrialsStore", "constraint_violations"]

_log = logging.getLogger(__name__)

METRICS_ATTR = "paretune.metrics"
OWNER_ATTR = "paretune.owner"
# Trial system attribute prefix: a process that tried to claim the WAITING trial (+ its token).
CLAIM_ATTR_PREFIX = "paretune.claim:"
SEED_ATTR = "paretune.seed"
ERROR_ATTR = "paretune.error"
INTERRUPTED_ATTR = "paretune.interrupted"
RETRY_OF_ATTR = "paretune.retry_of"
DUPLICATE_OF_ATTR = "paretune.duplicate_of"
ENQUEUED_ATTR = "paretune.enqueued"
BASELINE_ATTR = "paretune.baseline"  # trial attribute: enqueued by the spec
LABEL_ATTR = "paretune.label"  # trial attribute: the baseline's label

HEARTBEAT_INTERVAL_S = 30
# Study system attribute: the time the driver that created the study started setting up its
# MLflow parent run; other drivers wait up to _PARENT_WAIT_S for that run's id.
_PARENT_PENDING_ATTR = "paretune.mlflow_parent_pending"
_PARENT_WAIT_S = 120.0
HEARTBEAT_GRACE_S = 120


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's notices about features paretune uses on purpose.

    Heartbeats and metric names are "experimental" since Optuna 2.9/3.2, and Optuna warns that
    heartbeats are meant for ``Study.optimize``; paretune records them itself (:class:`_Heartbeat`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def _process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a recycled pid is not mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # Field 22 counts from after the parenthesised command name, which may hold spaces.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _pid_space() -> str:
    """Where a pid means the same process: this boot of this kernel and this pid namespace.

    Containers with host networking share the hostname but not their pids, so the hostname
    alone would let one container declare another's live trials dead.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"
    return f"{boot}/{namespace}".replace(":", "")


def owner_token(pid: int | None = None) -> str:
    """``host:pid-space:pid:start-time`` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{_pid_space()}:{pid}:{_process_start_time(pid)}"


def _owner_is_dead(token: str) -> bool:
    """Whether the owner of a RUNNING trial is a process of this host that no longer runs.

    Only a process in the same pid space can be checked; any other owner is left to the
    heartbeat.
    """
    try:
        host, space, pid_text, started = token.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or space == "?" or space != _pid_space():
        return False  # another machine, container or boot: the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return started != "?" and _process_start_time(pid) != started


def _is_orphaned(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's process is known to be gone (see :class:`_OwningStorage`).

    Its owner died, or it has none and every process that tried to claim it died (a driver
    killed between claiming a queued trial and recording itself). A trial with neither record
    was made RUNNING by something other than paretune and is left alone.
    """
    token = trial.user_attrs.get(OWNER_ATTR)
    if token is not None:
        return _owner_is_dead(token)
    claims = [v for k, v in trial.system_attrs.items() if k.startswith(CLAIM_ATTR_PREFIX)]
    return bool(claims) and all(_owner_is_dead(str(c)) for c in claims)


def constraint_violations(spec: SearchSpec, metrics: Mapping[str, float] | None) -> list[float]:
    """Optuna-style constraint values for ``metrics``: feasible iff every value is ``<= 0``.

    A missing metric (a failed or pruned trial) counts as violated.
    """
    out: list[float] = []
    for c in spec.objective.constraints:
        value = None if metrics is None else metrics.get(c.metric)
        if value is None or not math.isfinite(value):
            out.extend([1.0] * ((c.max is not None) + (c.min is not None)))
            continue
        if c.max is not None:
            out.append(float(value) - c.max)
        if c.min is not None:
            out.append(c.min - float(value))
    return out


class MetricConstraints:
    """``constraints_func`` for Optuna samplers; a class so samplers stay picklable (Ray)."""

    def __init__(self, spec: SearchSpec) -> None:
        self._spec = spec

    def __call__(self, trial: FrozenTrial) -> list[float]:
        return constraint_violations(self._spec, trial.user_attrs.get(METRICS_ATTR))


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


def _storage_url(spec: SearchSpec) -> str:
    if spec.storage is not None:
        return spec.storage
    return f"sqlite:///{spec.resolved_run_dir / 'study.db'}"


def _tracking_uri(spec: SearchSpec) -> str:
    if spec.tracking_uri is not None:
        return spec.tracking_uri
    return f"sqlite:///{spec.resolved_run_dir / 'mlflow.db'}"


class _OwningStorage(optuna.storages.RDBStorage):
    """An RDB storage whose trials are owned by the process that made them RUNNING.

    ``Study.ask`` creates a trial (or claims a WAITING one) and only then hands it to paretune,
    which records its owner. A driver killed in between would leave a RUNNING trial that no
    recovery could ever attribute to a dead process: it would stay RUNNING and take a place in
    the budget for good. Here the owner is written in the transaction that creates the trial.
    A WAITING trial is claimed by a state change that several drivers may attempt at once, so
    each first records its claim under a key of its own (a system attribute; no claimant can
    overwrite another's), and the winner records itself as the owner after the claim. A RUNNING
    trial without an owner whose claimants are all dead was orphaned in between. With
    heartbeats on, a new RUNNING trial's first beat follows at once, so a driver on another
    host that dies then is found stale too.
    """

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # Optuna's _CachedStorage calls this, RDBStorage.create_new_trial too.
        if template_trial is None:  # a trial asked for now (enqueued trials bring a template)
            template_trial = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={OWNER_ATTR: owner_token()},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
        frozen = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            self._first_beat(frozen._trial_id)
        return frozen

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state=state, values=values)
        # Claiming a WAITING trial (Study.ask pops the queue this way).
        token = owner_token()
        self.set_trial_system_attr(trial_id, CLAIM_ATTR_PREFIX + token, token)
        if not super().set_trial_state_values(trial_id, state=state, values=values):
            return False  # another process claimed it first
        self.set_trial_user_attr(trial_id, OWNER_ATTR, token)
        self._first_beat(trial_id)
        return True

    def _first_beat(self, trial_id: int) -> None:
        if self.heartbeat_interval is not None:
            with contextlib.suppress(Exception):  # the heartbeat thread beats it again
                self.record_heartbeat(trial_id)


def make_storage(
    url: str, *, heartbeat_stale_trial_callback: Any = None
) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url``; SQLite gets a lock timeout so worker processes can share it.

    With ``heartbeat_stale_trial_callback`` the storage keeps heartbeats (see :class:`_Heartbeat`)
    and calls it for every trial found stale.
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    kwargs: dict[str, Any] = {}
    if heartbeat_stale_trial_callback is not None:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": HEARTBEAT_GRACE_S,
            "heartbeat_stale_trial_callback": heartbeat_stale_trial_callback,
        }

    def open_rdb() -> optuna.storages.RDBStorage:
        with _quiet():
            return _OwningStorage(url, engine_kwargs=engine_kwargs, **kwargs)

    try:
        # Another driver may be creating the same tables right now: they exist next time.
        return retry_setup_race(open_rdb)
    except Exception as err:  # SQLAlchemy raises many types for bad URLs and dead servers
        raise StudyError(
            f"cannot open the study storage {url!r}: {err}. Check `storage` in the spec "
            "(an SQLAlchemy URL such as sqlite:///path/study.db or postgresql://user@host/db)."
        ) from err


class TrialsStore:
    """The study of a spec with its MLflow link.

    Args:
        spec: The validated spec.
        sampler: The controller that proposes candidates (an Optuna sampler).
        create: Create the study if it does not exist (``False``: it must exist).
        mlflow: Link trials to MLflow (the spec's tracking URI).
    """

    def __init__(
        self,
        spec: SearchSpec,
        *,
        sampler: optuna.samplers.BaseSampler | None = None,
        create: bool = True,
        mlflow: bool = True,
    ) -> None:
        self.spec = spec
        self.run_dir = spec.resolved_run_dir
        if spec.storage is None or spec.tracking_uri is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.storage_url = _storage_url(spec)
        self.tracking_uri = _tracking_uri(spec)
        self.storage = make_storage(
            self.storage_url, heartbeat_stale_trial_callback=self._on_heartbeat_stale
        )
        exists = spec.study in {s.study_name for s in self.storage.get_all_studies()}
        if not exists and not create:
            raise StudyError(
                f"no study named {spec.study!r} in {self.storage_url}; start it with "
                "`paretune run SPEC`"
            )
        # Exactly one of several drivers opening a new study at once creates it (the storage's
        # unique study name decides); only that one creates the MLflow parent run (``start``).
        self._created = False
        try:
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=spec.study,
                directions=spec.directions,
                sampler=sampler,
            )
            self._created = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(
                study_name=spec.study, storage=self.storage, sampler=sampler
            )
        if self._created and mlflow:
            self.storage.set_study_system_attr(
                self.storage.get_study_id_from_name(spec.study), _PARENT_PENDING_ATTR, time.time()
            )
        stored = [d.name.lower() for d in self.study.directions]
        if stored != spec.directions:
            raise StudyError(
                f"study {spec.study!r} in {self.storage_url} optimises {stored}, but the spec "
                f"says {spec.directions}; use another study name or run directory"
            )
        with _quiet():
            self.study.set_metric_names([m.name for m in spec.metrics])
        self.mlflow: MlflowLink | None = None
        if mlflow:
            # An embedded store keeps its artifacts beside it, not in the working directory.
            local = spec.tracking_uri is None
            self.mlflow = MlflowLink(
                tracking_uri=self.tracking_uri,
                experiment=spec.study,
                artifact_location=(self.run_dir / "mlartifacts").as_uri() if local else None,
            )
        self.parent_run_id: str | None = None
        self._heartbeat: _Heartbeat | None = None
        self._recovered: list[int] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> list[int]:
        """Open the MLflow parent run, recover stale trials, queue baselines.

        Returns:
            The numbers of the trials that were found stale and queued again.
        """
        if self.mlflow is not None:
            known = self.study.user_attrs.get(PARENT_RUN_ATTR)
            if known is None and not self._created:
                known = self._await_parent_run()
            self.parent_run_id = self.mlflow.start_parent(
                study_name=self.spec.study,
                run_id=known,
                tags={"paretune.storage": self.storage_url},
            )
            if known is None:
                self.study.set_user_attr(PARENT_RUN_ATTR, self.parent_run_id)
        recovered = self.recover()
        self._enqueue_baselines()
        self._heartbeat = _Heartbeat(self.storage)
        return recovered

    def _await_parent_run(self) -> str | None:
        """The parent run id that the driver which created this study is about to record.

        Another driver created the study moments ago and marked it; it records its MLflow
        parent run within seconds. Waiting for that id (rather than creating a second parent
        run) keeps one parent run per study. ``None`` where no creator is at work: an
        unmarked study, or a mark older than ``_PARENT_WAIT_S`` (that driver died).
        """
        study_id = self.storage.get_study_id_from_name(self.spec.study)
        while True:
            marked = self.storage.get_study_system_attrs(study_id).get(_PARENT_PENDING_ATTR)
            if marked is None or time.time() - float(marked) > _PARENT_WAIT_S:
                return None
            known = self.storage.get_study_user_attrs(study_id).get(PARENT_RUN_ATTR)
            if known is not None:
                return str(known)
            time.sleep(0.2)

    def close(self, *, status: str = "FINISHED") -> None:
        """Stop the heartbeat, tag the Pareto front and end the parent run."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self.mlflow is not None and self.parent_run_id is not None:
            self.tag_pareto()
            self._log_tables()
            if self.counts()["RUNNING"] == 0:  # else another driver still works on the study
                self.mlflow.end_parent(self.parent_run_id, status=status)

    def _log_tables(self) -> None:
        """``trials.csv`` and ``pareto.csv`` as artifacts of the parent run."""
        import tempfile

        from paretune.trials_store._export import export_trials

        assert self.mlflow is not None and self.parent_run_id is not None
        with tempfile.TemporaryDirectory() as tmp:
            trials = Path(tmp) / "trials.csv"
            export_trials(self, "csv", trials)
            pareto = Path(tmp) / "pareto.csv"
            export_trials(self, "csv", pareto, pareto_only=True)
            self.mlflow.log_artifact(self.parent_run_id, str(trials))
            self.mlflow.log_artifact(self.parent_run_id, str(pareto))

    def recover(self) -> list[int]:
        """Fail RUNNING trials whose process is gone and queue their parameters again.

        Returns:
            The numbers of the failed trials.
        """
        self._recovered = []
        # Trials of other hosts: Optuna fails those whose heartbeat stopped and calls
        # _on_heartbeat_stale for each.
        with _quiet():
            optuna.storages.fail_stale_trials(self.study)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _is_orphaned(t):
                self.fail_interrupted(t, reason="its process died")
                self._recovered.append(t.number)
        return sorted(self._recovered)

    def _on_heartbeat_stale(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        self._requeue(frozen)
        self._finish_mlflow_of(frozen, "FAIL", {"paretune.fail_reason": "heartbeat lost"})
        self._recovered.append(frozen.number)

    def _enqueue_baselines(self) -> None:
        if not self.spec.enqueue or self.study.user_attrs.get(ENQUEUED_ATTR):
            return
        for entry in self.spec.enqueue:
            attrs: dict[str, Any] = {BASELINE_ATTR: True}
            if entry.label is not None:
                attrs[LABEL_ATTR] = entry.label
            self.study.enqueue_trial(dict(entry.params), user_attrs=attrs)
        self.study.set_user_attr(ENQUEUED_ATTR, True)

    # -- trials ---------------------------------------------------------------------------

    def ask(self) -> PendingTrial:
        """A new trial with its parameters drawn from the spec's space.

        Stale trials (dead processes, lost heartbeats) are recovered first, as Optuna's
        ``Study.optimize`` does, so a driver that runs on notices another that died.
        """
        self.recover()
        with _quiet():
            trial = self.study.ask()
        return self.prepare(trial)

    def prepare(self, trial: optuna.Trial) -> PendingTrial:
        """Make a freshly asked trial of this study ready to evaluate.

        Records its seed, draws its parameters from the spec's space, starts its heartbeat and
        its MLflow child run, and looks for a completed twin (its owner is this process since
        the store's storage made it RUNNING). :meth:`ask` calls it; a runner whose trials are
        asked by someone else on this store's storage (Ray Tune's ``OptunaSearch``) calls it
        on theirs.
        """
        # A retried trial keeps the seed of the attempt it repeats.
        seed = trial.user_attrs.get(SEED_ATTR, self.spec.trial_seed(trial.number))
        trial.set_user_attr(SEED_ATTR, seed)
        params = self.spec.search_space.suggest(trial)
        if self._heartbeat is not None:
            self._heartbeat.add(trial._trial_id)
        duplicate = self._completed_twin(params)
        label = trial.user_attrs.get(LABEL_ATTR)
        run_id = None
        if self.mlflow is not None and self.parent_run_id is not None:
            try:
                run_id = self.mlflow.start_child(
                    parent_run_id=self.parent_run_id,
                    trial_number=trial.number,
                    params=params,
                    tags={
                        "paretune.seed": str(seed),
                        "paretune.worker": owner_token(),
                        **({LABEL_ATTR: str(label)} if label is not None else {}),
                    },
                )
            except Exception as err:  # tracking is best-effort; the study is the record
                _log.warning("MLflow: no run for trial %d: %s", trial.number, err)
                run_id = None
            else:
                trial.set_user_attr(CHILD_RUN_ATTR, run_id)
        return PendingTrial(trial, params, seed, run_id, duplicate_of=duplicate)

    def _completed_twin(self, params: Mapping[str, Any]) -> FrozenTrial | None:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == params:
                return t
        return None

    def tell(
        self,
        pending: PendingTrial,
        *,
        state: TrialState,
        metrics: Mapping[str, float] | None = None,
        error: str | None = None,
        final_step: int = 0,
    ) -> FrozenTrial:
        """Record the outcome of a trial in the study, then in MLflow.

        Args:
            pending: The trial from :meth:`ask`.
            state: COMPLETE, PRUNED or FAIL.
            metrics: Everything the objective returned (COMPLETE) or last reported (PRUNED).
            error: Why the trial failed.
            final_step: The MLflow step of the final metrics: after the last reported step, so
                MLflow's latest value of a metric is the one the objective returned.
        """
        trial = pending.trial
        if metrics is not None:
            trial.set_user_attr(METRICS_ATTR, {k: float(v) for k, v in metrics.items()})
        if error is not None:
            trial.set_user_attr(ERROR_ATTR, error[-2000:])
        if pending.duplicate_of is not None:
            trial.set_user_attr(DUPLICATE_OF_ATTR, pending.duplicate_of.number)
        values = None
        if state == TrialState.COMPLETE:
            assert metrics is not None  # runner contract
            values = [float(metrics[m.name]) for m in self.spec.metrics]
        frozen = self.study.tell(trial, values=values, state=state)
        if self._heartbeat is not None:
            self._heartbeat.remove(pending.trial_id)
        if self.mlflow is not None and pending.mlflow_run_id is not None:
            tags = {}
            if error is not None and error.strip():
                tags["paretune.error"] = error.strip().splitlines()[-1][:500]
            if pending.duplicate_of is not None:
                tags["paretune.duplicate_of"] = str(pending.duplicate_of.number)
            try:
                self.mlflow.finish_child(
                    pending.mlflow_run_id,
                    state=frozen.state.name,
                    metrics=metrics,
                    tags=tags,
                    step=final_step,
                )
            except Exception as err:  # tracking is best-effort; the study is the record
                _log.warning("MLflow: trial %d not finished in its run: %s", frozen.number, err)
        return frozen

    def fail_interrupted(self, trial: FrozenTrial | PendingTrial, *, reason: str) -> None:
        """Fail a RUNNING trial that did not finish (crash, Ctrl-C) and queue it again."""
        trial_id = trial.trial_id if isinstance(trial, PendingTrial) else trial._trial_id
        try:
            self.storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, reason)
            if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another process finished or failed it first
        if self._heartbeat is not None:
            self._heartbeat.remove(trial_id)
        frozen = self.storage.get_trial(trial_id)
        self._requeue(frozen)
        self._finish_mlflow_of(frozen, "FAIL", {"paretune.fail_reason": f"interrupted: {reason}"})

    def _requeue(self, frozen: FrozenTrial) -> None:
        kept = (BASELINE_ATTR, LABEL_ATTR, SEED_ATTR)
        keep = {k: v for k, v in frozen.user_attrs.items() if k in kept}
        fixed = frozen.system_attrs.get("fixed_params")  # Optuna's record of a queued trial
        if fixed is not None:
            # Taken from the queue; perhaps never prepared, so its params may still be empty.
            self.study.enqueue_trial(
                {**fixed, **frozen.params}, user_attrs={**keep, RETRY_OF_ATTR: frozen.number}
            )
            return
        self.study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs={**keep, RETRY_OF_ATTR: frozen.number},
            )
        )

    def _finish_mlflow_of(self, frozen: FrozenTrial, state: str, tags: Mapping[str, str]) -> None:
        run_id = frozen.user_attrs.get(CHILD_RUN_ATTR)
        if self.mlflow is None or run_id is None:
            return
        try:
            self.mlflow.finish_child(run_id, state=state, tags=tags)
        except Exception as err:  # a lost MLflow run must not stop recovery
            _log.warning(
                "could not close MLflow run %s of trial %d: %s", run_id, frozen.number, err
            )

    # -- views ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {s.name: 0 for s in TrialState}
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name] += 1
        return out

    def n_finished(self, *, running: bool = False) -> int:
        """Trials that count against the budget.

        COMPLETE and PRUNED trials, and FAIL trials unless their parameters were queued again
        (a crash or Ctrl-C interrupted them: the retry counts instead).

        Args:
            running: Count RUNNING trials of every process too: what a budget must leave room
                for when several drivers share the study.
        """
        counted = {TrialState.COMPLETE, TrialState.PRUNED}
        if running:
            counted.add(TrialState.RUNNING)
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs}
        return sum(
            t.state in counted or (t.state == TrialState.FAIL and t.number not in retried)
            for t in trials
        )

    def feasible(self, t: FrozenTrial) -> bool:
        return all(v <= 0 for v in constraint_violations(self.spec, t.user_attrs.get(METRICS_ATTR)))

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

        names = [m.name for m in self.spec.metrics]
        unknown = sorted(set(tolerance or {}) - set(names))
        if unknown:
            raise ConfigError(
                f"a Pareto tolerance is given for {unknown}, which the study does not optimise; "
                f"its metrics are {names}."
            )
        margins = [float((tolerance or {}).get(n, 0.0)) for n in names]
        done = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if self.feasible(t)
        ]
        if not done:
            return []
        values = np.array([t.values for t in done], dtype=float)
        mask = pareto_mask(values, self.spec.directions, tolerance=margins)
        front = [t for t, keep in zip(done, mask, strict=True) if keep]
        return sorted(front, key=lambda t: tuple(t.values))

    def tag_pareto(self) -> None:
        """Tag every child run with whether its trial is on the Pareto front."""
        if self.mlflow is None:
            return
        front = {t.number for t in self.pareto_trials()}
        pairs = [
            (t.user_attrs[CHILD_RUN_ATTR], t.number in front)
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if CHILD_RUN_ATTR in t.user_attrs
        ]
        self.mlflow.mark_pareto(pairs)


class _Heartbeat:
    """Records Optuna heartbeats for the trials this process runs, so other hosts can tell a
    live trial from a dead one."""

    def __init__(self, storage: optuna.storages.RDBStorage) -> None:
        self._storage = storage
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paretune-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._ids.add(trial_id)
        self._beat([trial_id])

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _beat(self, ids: Sequence[int]) -> None:
        for trial_id in ids:
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as err:  # a missed beat is retried at the next interval
                _log.debug("heartbeat of trial %d failed: %s", trial_id, err)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            with self._lock:
                ids = list(self._ids)
            self._beat(ids)

    def stop(self) -> None:
        self._stop.set()
