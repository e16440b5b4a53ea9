"""The MLflow link: one parent run per study, one nested child run per trial.

The Optuna study is the record; MLflow is where people browse it. The link therefore only writes
(it never decides anything from what MLflow holds) and every id it needs is kept in the study:
the parent run id in the study's user attributes, each child run id in its trial's user
attributes. A resumed search finds both again from storage alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from paretune._errors import StudyError, retry_setup_race
from paretune._secrets import redact, redact_url, remember_secrets_of

STUDY_UID_TAG = "paretune.study_uid"  # a study's parent run, found without its id

__all__ = ["MlflowLink", "trial_run_name"]

# MLflow rejects param values longer than this.
_MAX_PARAM_CHARS = 6000
# A run name is read in a table column; MLflow itself takes 250 characters.
_MAX_RUN_NAME_CHARS = 120
# MLflow's HTTP client retries a failed request 7 times with a doubling back-off, about four
# minutes of a stalled search per call while a tracking server is down. paretune catches up
# after an outage instead (TrialsStore.tracking_available), so a request gives up after about
# 3 s; an explicit MLFLOW_HTTP_REQUEST_* setting in the environment wins.
# MLflow also prints two lines with links to every run it ends on a server (the tracking
# URL with its credentials, if any): the runs are found in the parent run.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def trial_run_name(number: int, text: str = "") -> str:
    """A trial's run name: ``t012`` (the trial number, three digits at least, so names sort
    as numbers) and ``text`` (``t012 lora r4 qv sa48 L3-5``), cut to 120 characters."""
    name = f"t{number:03d} {' '.join(text.split())}".strip()
    return name if len(name) <= _MAX_RUN_NAME_CHARS else name[: _MAX_RUN_NAME_CHARS - 1] + "~"


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _quiet_mlflow_logs() -> None:
    # Creating a SQLite store logs alembic migrations at INFO on every new run directory.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (``None``: another store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    return path if path.is_absolute() else Path.cwd() / path


@contextlib.contextmanager
def _setup_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise opening an SQLite tracking store among this machine's processes, and create a
    new one whole.

    MLflow migrates a new SQLite database on first use, and two processes migrating one file
    at once can leave it half-migrated (a stray ``_alembic_tmp_*`` table) for good. A lock file
    beside the database makes the second wait for the first. Other stores need none.
    """
    path = _sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _create_sqlite_store(path)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_sqlite_store(path: Path) -> None:
    """Create and migrate the tracking database ``path`` if it does not exist, atomically.

    MLflow's migration of a new database runs for seconds in many steps, and a process killed
    in between (``kill -9``, a second Ctrl-C) leaves a database that no later process can open
    ("index ... already exists"). Migrated under another name and renamed into place, the
    database is either absent or whole. Called under :func:`_setup_lock`: leftovers of killed
    creations are removed first.
    """
    for leftover in path.parent.glob(f".{path.name}.new-*"):
        leftover.unlink(missing_ok=True)
    if path.exists() and path.stat().st_size > 0:
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    fresh = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        # Migrates it; MLflow's Default experiment keeps artifacts beside the store too.
        store = SqlAlchemyStore(f"sqlite:///{fresh}", (path.parent / "mlartifacts").as_uri())
        store.engine.dispose()  # no connection is left on the file that is renamed
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)


class MlflowLink:
    """Writes a study's trials to MLflow.

    Args:
        tracking_uri: Any MLflow tracking URI (``sqlite:///...``, ``http://host:5000``, a path).
        experiment: The experiment's name (the study's name).
        artifact_location: Where a new experiment keeps artifacts (``None``: the tracking
            server's default). Used only when the experiment is created.
    """

    def __init__(
        self, *, tracking_uri: str, experiment: str, artifact_location: str | None = None
    ) -> None:
        from mlflow import MlflowClient

        _quiet_mlflow_logs()  # after the import: importing mlflow sets its loggers to INFO

        self.tracking_uri = tracking_uri
        remember_secrets_of(tracking_uri)
        if _is_http(tracking_uri):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)

        def open_link() -> tuple[Any, str]:
            # A new SQLite store is migrated on first use; two drivers starting at once race
            # on it, and on creating the experiment: the loser tries again.
            with _setup_lock(tracking_uri):
                client = MlflowClient(tracking_uri=tracking_uri)
                found = client.get_experiment_by_name(experiment)
                if found is not None:
                    return client, found.experiment_id
                return client, client.create_experiment(
                    experiment, artifact_location=artifact_location
                )

        try:
            self._client, self.experiment_id = retry_setup_race(open_link)
        except Exception as err:  # MLflow raises many types for an unreachable/broken store
            raise StudyError(
                f"cannot open the MLflow tracking store {redact_url(tracking_uri)!r}: "
                f"{redact(str(err))}. Check "
                "`tracking_uri` in the spec (a sqlite:/// URL, a directory or an http server)."
            ) from err

    @property
    def client(self) -> Any:
        return self._client

    def answers(self, *, timeout: float = 2.0) -> bool:
        """Whether the tracking store answers now (a server's ``/health`` within ``timeout``
        seconds, without MLflow's retries; a local store: reading the experiment)."""
        if _is_http(self.tracking_uri):
            from paretune.trials_store._preflight import probe_tracking_server

            try:
                probe_tracking_server(self.tracking_uri, timeout=timeout)
            except StudyError:
                return False
            return True
        try:
            self._client.get_experiment(self.experiment_id)
        except Exception:
            return False
        return True

    def start_parent(
        self,
        *,
        study_name: str,
        run_id: str | None,
        study_uid: str | None = None,
        tags: Mapping[str, str],
    ) -> str:
        """The study's parent run: the one recorded in the study, or else the one tagged with
        the same ``study_uid`` (started by a driver killed before it recorded it), or a new
        one (tagged with it).

        A parent run that ended (the search stopped) is reopened when the search resumes.
        """
        if run_id is None and study_uid is not None:
            found = self._client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{STUDY_UID_TAG}` = '{study_uid}'",
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            run_id = found[0].info.run_id if found else None
        if run_id is not None:
            run = self._client.get_run(run_id)
            if run.info.status != "RUNNING":
                self._client.update_run(run_id, status="RUNNING")
            return str(run_id)
        run = self._client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={
                "paretune.study": study_name,
                "paretune.role": "study",
                **({STUDY_UID_TAG: study_uid} if study_uid is not None else {}),
                **tags,
            },
        )
        return str(run.info.run_id)

    def end_parent(self, run_id: str, *, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status=status)

    def start_child(
        self,
        *,
        parent_run_id: str,
        trial_number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> str:
        """A nested run for one trial, with its parameters logged (named ``run_name``, by
        default :func:`trial_run_name` of the number alone: ``t012``)."""
        from mlflow.entities import Param

        run = self._client.create_run(
            self.experiment_id,
            run_name=run_name or trial_run_name(trial_number),
            tags={
                "mlflow.parentRunId": parent_run_id,
                "paretune.trial": str(trial_number),
                "paretune.state": "RUNNING",
                "paretune.pareto": "false",
                **(tags or {}),
            },
        )
        run_id = str(run.info.run_id)
        if params:
            self._client.log_batch(
                run_id,
                params=[Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()],
            )
        return run_id

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], *, step: int | None = None
    ) -> None:
        self.log_batch_to(self._client, run_id, metrics, step=step)

    @staticmethod
    def log_batch_to(
        client: Any, run_id: str, metrics: Mapping[str, float], *, step: int | None = None
    ) -> None:
        """Log ``metrics`` at ``step`` with any ``MlflowClient`` (workers hold their own)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        )

    def finish_child(
        self,
        run_id: str,
        *,
        state: str,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
        trajectory: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Final metrics (at ``step``), the trial's state as a tag, and the run's end status.

        A ``trajectory`` (the decisions of ``ctx.decide``) is logged as ``trajectory.json``
        and as the metrics ``dac.value`` (the parameter after each decision), ``dac.action``
        and ``dac.reward`` (where set) at each decision's step."""
        from mlflow.entities import RunTag

        if metrics:
            self.log_metrics(run_id, metrics, step=step)
        if trajectory:
            self.log_trajectory(run_id, trajectory)
        all_tags = {"paretune.state": state, **(tags or {})}
        self._client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}.get(
            state, "KILLED"
        )
        self._client.set_terminated(run_id, status=status)

    def log_trajectory(self, run_id: str, trajectory: Sequence[Mapping[str, Any]]) -> None:
        """``trajectory.json`` and the per-decision metrics (see :meth:`finish_child`)."""
        from mlflow.entities import Metric

        self._client.log_dict(run_id, list(trajectory), "trajectory.json")
        now = int(time.time() * 1000)
        points = []
        for d in trajectory:
            step = int(d["state"]["step"])
            points.append(Metric("dac.value", float(d["value"]), now, step))
            if isinstance(d.get("action"), (int, float)):
                points.append(Metric("dac.action", float(d["action"]), now, step))
            if isinstance(d.get("reward"), (int, float)):
                points.append(Metric("dac.reward", float(d["reward"]), now, step))
        for start in range(0, len(points), 900):  # MLflow takes 1000 metrics per batch
            self._client.log_batch(run_id, metrics=points[start : start + 900])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def mark_pareto(self, run_ids_and_flags: Iterable[tuple[str, bool]]) -> None:
        """Set the ``paretune.pareto`` tag of each child run."""
        for run_id, on_front in run_ids_and_flags:
            self.set_tags(run_id, {"paretune.pareto": "true" if on_front else "false"})

    def child_runs(
        self, parent_run_id: str, *, trial_id: int | None = None
    ) -> dict[str, list[tuple[str, str]]]:
        """The parent's child runs by their ``paretune.trial_id`` tag: ``[(run_id, status)]``,
        oldest first (deleted runs left out); only those of ``trial_id`` if given."""
        out: dict[str, list[tuple[str, str]]] = {}
        token = None
        query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
        if trial_id is not None:
            query += f" and tags.`paretune.trial_id` = '{trial_id}'"
        while True:
            page = self._client.search_runs(
                [self.experiment_id],
                filter_string=query,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            for run in page:
                tag = run.data.tags.get("paretune.trial_id")
                if tag is not None:
                    out.setdefault(str(tag), []).append((run.info.run_id, run.info.status))
            token = page.token
            if not token:
                return out

    def delete_run(self, run_id: str) -> None:
        self._client.delete_run(run_id)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(run_id, path, artifact_path)
