"""The MLflow side of a :class:`~paretune.trials_store.TrialsStore`: the child run of each
trial (started, named, finished when its trial was failed elsewhere), the parent run another
driver is about to record, and the Pareto tags.

The study stays the record: every call here is best effort where tracking is concerned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from paretune.trials_store._attrs import CHILD_RUN_ATTR, LABEL_ATTR, PARENT_RUN_ATTR
from paretune.trials_store._mlflow import MlflowLink, trial_run_name
from paretune.trials_store._ownership import owner_is_dead, owner_token
from paretune.trials_store._reconcile import (
    TRIAL_ID_TAG,
    finish_run_of,
    missing_runs,
    reconcile_runs,
)

if TYPE_CHECKING:
    import optuna

    from paretune.trials_store._config import StudyConfig

__all__ = ["MlflowRuns"]

_log = logging.getLogger(__name__)

# Study system attributes, each set once (``set_study_system_attr_once``): an id of the study
# that its MLflow parent run carries as a tag (so a run started by a driver killed before
# recording it is found again); the driver that sets up the parent run (one claim per attempt,
# ``...claim.0``, ``...claim.1``: a later attempt when the claimant died or took too long); and
# the parent run itself, whichever driver records it first.
_UID_ATTR = "paretune.uid"
_PARENT_CLAIM_ATTR = "paretune.mlflow_parent_claim"
_PARENT_RECORD_ATTR = "paretune.mlflow_parent_run"
_PARENT_WAIT_S = 120.0
# After a tracking call fails, MLflow is left alone this long before it is asked again.
_TRACKING_RETRY_S = 15.0
# Study system attribute prefix (+ the driver's owner token): the finished trials that driver
# could not log to MLflow yet, kept until a catch-up logs them, for `paretune status`.
_UNLOGGED_ATTR_PREFIX = "paretune.mlflow_unlogged:"
# Study system attribute: the trials whose runs were last tagged Pareto-optimal.
_PARETO_TAGGED_ATTR = "paretune.mlflow_pareto_tagged"


class MlflowRuns:
    """The MLflow half of :class:`~paretune.trials_store.TrialsStore` (a base it inherits)."""

    config: StudyConfig
    study: optuna.Study
    storage: Any
    mlflow: MlflowLink | None
    parent_run_id: str | None
    # Tracking outages: when to ask MLflow again (None: it answers), and whether finished
    # trials may lack their run (set on a failure or a skipped write; cleared by a catch-up).
    _tracking_retry_at: float | None = None
    _tracking_behind: bool = False
    _unlogged: set[int] | None = None  # this driver's trials not logged yet

    def pareto_trials(self, tolerance: Mapping[str, float] | None = None) -> list[FrozenTrial]:
        raise NotImplementedError  # the store's

    def open_parent_run(self, *, tags: Mapping[str, str]) -> str:
        """The study's one MLflow parent run, reopened, or created by exactly one driver.

        Drivers that open a new study at the same instant agree through the study storage:
        each tries to claim the set-up (a compare-and-set); the winner finds the parent run by
        the study's id tag or creates it, and records it, also with a compare-and-set, so a run
        that lost (made by a claimant thought dead) is deleted and everyone uses the recorded
        one. The others wait for that record; when the claimant dies or takes more than
        ``_PARENT_WAIT_S`` seconds, the next claim decides.
        """
        assert self.mlflow is not None
        study_id = self.storage.get_study_id_from_name(self.config.name)
        uid = str(self.storage.set_study_system_attr_once(study_id, _UID_ATTR, uuid.uuid4().hex))
        known = self._recorded_parent_run(study_id)
        attempt = 0
        while known is None:
            me = owner_token()
            claim = self.storage.set_study_system_attr_once(
                study_id, f"{_PARENT_CLAIM_ATTR}.{attempt}", me
            )
            if claim == me:
                mine = self.mlflow.start_parent(
                    study_name=self.config.name, run_id=None, study_uid=uid, tags=tags
                )
                known = str(
                    self.storage.set_study_system_attr_once(study_id, _PARENT_RECORD_ATTR, mine)
                )
                if known != mine:  # a driver thought dead recorded its run after all
                    self.mlflow.delete_run(mine)
            else:
                known = self._await_parent_run(study_id, str(claim))
                attempt += 1
        run_id = self.mlflow.start_parent(
            study_name=self.config.name, run_id=known, study_uid=uid, tags=tags
        )
        if self.study.user_attrs.get(PARENT_RUN_ATTR) != run_id:
            self.study.set_user_attr(PARENT_RUN_ATTR, run_id)
        return run_id

    def _recorded_parent_run(self, study_id: int) -> str | None:
        # Studies made before the compare-and-set record it only in the user attributes.
        known = self.storage.get_study_system_attrs(study_id).get(_PARENT_RECORD_ATTR)
        if known is None:
            known = self.storage.get_study_user_attrs(study_id).get(PARENT_RUN_ATTR)
        return None if known is None else str(known)

    def _await_parent_run(self, study_id: int, claimant: str) -> str | None:
        """The parent run that ``claimant`` is setting up, once it records it; ``None`` when
        it dies or ``_PARENT_WAIT_S`` seconds pass first (the next claim decides then)."""
        deadline = time.monotonic() + _PARENT_WAIT_S
        while time.monotonic() < deadline and not owner_is_dead(claimant):
            known = self._recorded_parent_run(study_id)
            if known is not None:
                return known
            time.sleep(0.2)
        _log.warning(
            "MLflow: the driver setting up the study's parent run (%s) %s; taking over",
            claimant,
            "died" if owner_is_dead(claimant) else f"took more than {_PARENT_WAIT_S:.0f} s",
        )
        return self._recorded_parent_run(study_id)

    def log_under(self, other: MlflowRuns) -> None:
        """Log this study's trials as MLflow child runs of ``other``'s parent run (a companion
        study, such as re-evaluations, shows under the study it belongs to)."""
        self.mlflow = other.mlflow
        self.parent_run_id = other.study.user_attrs.get(PARENT_RUN_ATTR)

    def reconcile_mlflow(self) -> bool:
        """Give every finished trial of the study exactly one finished child run
        (:func:`~paretune.trials_store._reconcile.reconcile_runs`); whether that worked."""
        if self.mlflow is None or self.parent_run_id is None:
            return True
        return reconcile_runs(
            self.mlflow,
            self.parent_run_id,
            self.study.get_trials(deepcopy=False),
            run_name=self._run_name_of,
        )

    def tracking_available(self) -> bool:
        """Whether to write to MLflow now; after an outage, catches up first.

        A failed tracking call (:meth:`tracking_failed`) leaves MLflow alone for
        ``_TRACKING_RETRY_S`` seconds, so a search goes on at full speed while the tracking
        server is down. Once it answers again, every finished trial that lacks its run, or
        whose run was left RUNNING, gets it with its final metrics (:meth:`reconcile_mlflow`)
        before anything else is logged.
        """
        if self.mlflow is None or self.parent_run_id is None:
            return False
        if self._tracking_retry_at is not None:
            if time.monotonic() < self._tracking_retry_at:
                return False
            if not self.mlflow.answers():
                self._tracking_retry_at = time.monotonic() + _TRACKING_RETRY_S
                return False
            self._tracking_retry_at = None
            _log.warning("MLflow: the tracking store answers again; logging what it missed")
        if self._tracking_behind:
            self._tracking_behind = False
            if not self.catch_up():
                self.tracking_failed(None, "the catch-up after an outage did not finish")
                return False
        return True

    def catch_up(self) -> bool:
        """Log what MLflow missed (:meth:`reconcile_mlflow`) and, once it is all there, clear
        every driver's list of unlogged trials; whether it is all there."""
        if self.mlflow is None or self.parent_run_id is None:
            return True  # not tracked here: another driver's lists stay
        if not self.reconcile_mlflow():
            return False
        study_id = self.storage.get_study_id_from_name(self.config.name)
        for key, value in self.storage.get_study_system_attrs(study_id).items():
            if key.startswith(_UNLOGGED_ATTR_PREFIX) and value:
                self.storage.set_study_system_attr(study_id, key, [])
        self._unlogged = set()
        return True

    def note_unlogged(self, number: int) -> None:
        """Record in the study that trial ``number`` finished without its MLflow run (listed by
        :meth:`unlogged_trials` until a catch-up logs it)."""
        self._tracking_behind = True
        if self._unlogged is None:
            self._unlogged = set()
        self._unlogged.add(number)
        study_id = self.storage.get_study_id_from_name(self.config.name)
        self.storage.set_study_system_attr(
            study_id, _UNLOGGED_ATTR_PREFIX + owner_token(), sorted(self._unlogged)
        )

    def unlogged_trials(self) -> list[int]:
        """The finished trials that a driver could not log to MLflow and no catch-up has
        logged since (read from the study: no tracking store is asked)."""
        study_id = self.storage.get_study_id_from_name(self.config.name)
        found: set[int] = set()
        for key, value in self.storage.get_study_system_attrs(study_id).items():
            if key.startswith(_UNLOGGED_ATTR_PREFIX):
                found.update(int(n) for n in value or ())
        return sorted(found)

    def tracking_failed(self, err: BaseException | None, what: str) -> None:
        """Record that a tracking write failed (``what``, ``err``): MLflow is asked again in
        ``_TRACKING_RETRY_S`` seconds and then caught up (:meth:`tracking_available`)."""
        if self._tracking_retry_at is None:
            _log.warning(
                "MLflow: %s%s. The search goes on; what is not logged now is logged once the "
                "tracking store answers (until then `paretune status` lists it)",
                what,
                "" if err is None else f": {err}",
            )
        self._tracking_retry_at = time.monotonic() + _TRACKING_RETRY_S
        self._tracking_behind = True

    def mlflow_backlog(self) -> list[int]:
        """The numbers of the finished trials whose MLflow run is missing or unfinished.

        Raises:
            Exception: MLflow's, when the tracking store cannot be read.
        """
        parent = self.study.user_attrs.get(PARENT_RUN_ATTR)
        if self.mlflow is None or parent is None:
            return []
        return missing_runs(self.mlflow, str(parent), self.study.get_trials(deepcopy=False))

    def start_run(
        self,
        trial: optuna.Trial,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        *,
        run_name: str | None = None,
        trial_number: int | None = None,
    ) -> str | None:
        """Start the MLflow child run of ``trial`` and record it in the trial (best effort)."""
        if not self.tracking_available():
            self._tracking_behind = self.mlflow is not None and self.parent_run_id is not None
            return None
        assert self.mlflow is not None and self.parent_run_id is not None
        try:
            run_id = self.mlflow.start_child(
                parent_run_id=self.parent_run_id,
                trial_number=trial.number if trial_number is None else trial_number,
                params=params,
                tags={**tags, TRIAL_ID_TAG: str(trial._trial_id)},
                run_name=run_name,
            )
        except Exception as err:  # tracking is best-effort; the study is the record
            self.tracking_failed(err, f"no run for trial {trial.number}")
            return None
        trial.set_user_attr(CHILD_RUN_ATTR, run_id)
        return run_id

    def run_name(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        label: Any = None,
        prefix: str | None = None,
    ) -> str:
        """The MLflow run name of trial ``number``: ``t012 lora r4 qv sa48 L3-5``.

        After the trial number come ``prefix`` (``reeval s1`` for a re-evaluation) and the
        trial's label where it has one (a baseline's, a muTransfer cell's), else the
        candidate's description: the config's :attr:`~StudyConfig.describe`, else the
        space's :meth:`~paretune.spaces.SearchSpace.describe`, else nothing. Best effort, as
        tracking is: a describer that fails leaves the number alone.
        """
        text = str(label) if label is not None else ""
        if not text:
            try:
                if self.config.describe is not None:
                    text = self.config.describe(params)
                elif self.config.space is not None:
                    text = self.config.space.describe(params)
            except Exception as err:
                _log.warning("trial %d: no description for its run name: %s", number, err)
        return trial_run_name(number, " ".join(p for p in (prefix, text) if p))

    def _run_name_of(self, trial: FrozenTrial) -> str:
        return self.run_name(trial.number, trial.params, label=trial.user_attrs.get(LABEL_ATTR))

    def _finish_mlflow_of(self, frozen: FrozenTrial, state: str, tags: Mapping[str, str]) -> None:
        if not self.tracking_available():
            if self.mlflow is not None and self.parent_run_id is not None:
                self.note_unlogged(frozen.number)
            return
        assert self.mlflow is not None and self.parent_run_id is not None
        if not finish_run_of(self.mlflow, frozen, state, tags):
            # Killed before it recorded its run: the run is found by its tag, or made.
            reconcile_runs(self.mlflow, self.parent_run_id, [frozen], run_name=self._run_name_of)

    def tag_pareto(self) -> None:
        """Tag every child run with whether its trial is on the Pareto front.

        Runs start tagged ``false``, and the study records the front it last tagged, so only
        the trials that joined or left the front since are written (a 10,000-trial study is
        not rewritten at every close); a study without that record is tagged in full once.
        """
        if self.mlflow is None or not self.tracking_available():
            return
        front = {t.number for t in self.pareto_trials()}
        study_id = self.storage.get_study_id_from_name(self.config.name)
        tagged = self.storage.get_study_system_attrs(study_id).get(_PARETO_TAGGED_ATTR)
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if tagged is not None:
            changed = front.symmetric_difference(int(n) for n in tagged)
            trials = [t for t in trials if t.number in changed]
        pairs = []
        for t in trials:
            run_id = t.user_attrs.get(CHILD_RUN_ATTR)
            if run_id is None:  # a run made by a catch-up: the trial cannot record it
                runs = self.mlflow.child_runs(self.parent_run_id or "", trial_id=t._trial_id)
                run_id = next(iter(runs.get(str(t._trial_id), [])), (None, ""))[0]
            if run_id is not None:
                pairs.append((run_id, t.number in front))
        self.mlflow.mark_pareto(pairs)
        self.storage.set_study_system_attr(study_id, _PARETO_TAGGED_ATTR, sorted(front))
