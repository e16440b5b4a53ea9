"""Who owns a RUNNING trial: owner tokens, the storage that records them atomically, heartbeats.

A trial records the process that runs it (``paretune.owner`` = host, pid namespace, pid,
process start time) from the moment it becomes RUNNING (:class:`_OwningStorage`); on the same
host a dead owner is detected at once. Other hosts are covered by Optuna's heartbeat: a trial
whose heartbeat is older than the grace period is stale.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import StudyError, retry_setup_race
from paretune._secrets import redact, redact_url, remember_secrets_of
from paretune.trials_store._attrs import CLAIM_ATTR_PREFIX, OWNER_ATTR

__all__ = ["is_orphaned", "make_storage", "owner_is_dead", "owner_token", "quiet"]

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_GRACE_S = 120


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def owner_is_dead(token: str) -> bool:
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
    if _is_zombie(pid):  # exited, not yet reaped by its parent: it runs nothing
        return True
    return started != "?" and _process_start_time(pid) != started


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_orphaned(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's process is known to be gone (see :class:`_OwningStorage`).

    Its owner died, or it has none and every process that tried to claim it died (a driver
    killed between claiming a queued trial and recording itself). A trial with neither record
    was made RUNNING by something other than paretune and is left alone.
    """
    token = trial.user_attrs.get(OWNER_ATTR)
    if token is not None:
        return owner_is_dead(token)
    claims = [v for k, v in trial.system_attrs.items() if k.startswith(CLAIM_ATTR_PREFIX)]
    return bool(claims) and all(owner_is_dead(str(c)) for c in claims)


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

    def set_study_system_attr_once(self, study_id: int, key: str, value: Any) -> Any:
        """Set a study system attribute unless it is set; return the value it holds.

        A compare-and-set: of several processes that call this at once, with any storage
        server, exactly one value is stored and every caller gets that one. The row is inserted
        under the storage's own unique (study, key) constraint, which the database enforces;
        Optuna's ``set_study_system_attr`` overwrites instead, so it cannot decide a race.
        """
        from optuna.storages._rdb import models
        from sqlalchemy.exc import IntegrityError

        session = self.scoped_session()
        try:
            session.add(
                models.StudySystemAttributeModel(
                    study_id=study_id, key=key, value_json=json.dumps(value)
                )
            )
            session.commit()
        except IntegrityError:  # another process stored it first
            session.rollback()
        finally:
            session.close()
        return self.get_study_system_attrs(study_id)[key]

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
    remember_secrets_of(url)
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
        with quiet():
            return _OwningStorage(url, engine_kwargs=engine_kwargs, **kwargs)

    try:
        # Another driver may be creating the same tables right now: they exist next time.
        return retry_setup_race(open_rdb)
    except Exception as err:  # SQLAlchemy raises many types for bad URLs and dead servers
        raise StudyError(
            f"cannot open the study storage {redact_url(url)!r}: {redact(str(err))}. Check "
            "`storage` in the spec "
            "(an SQLAlchemy URL such as sqlite:///path/study.db or postgresql://user@host/db)."
        ) from err


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
