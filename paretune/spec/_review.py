"""The report of a spec's study: the ``report:`` section, its refresh while a search runs, and
what ``paretune report`` writes and logs."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from paretune.dashboards import Report
    from paretune.trials_store import TrialsStore

__all__ = ["ReportRefresh", "ReportSpec", "write_study_report"]

_log = logging.getLogger(__name__)


class ReportSpec(BaseModel):
    """The HTML report of a search (``paretune report`` writes it on demand too).

    Attributes:
        every: Rewrite it (and log it to the study's MLflow parent run) after every ``every``
            finished trials of a run, and when the run ends; ``0``: only when it ends.
        min_interval: Seconds between two refreshes during a run at least (a refresh that
            falls due sooner is skipped): fast trials do not wait for their report.
        figures: The figure families to draw (default: every registered one that applies).
        path: Where to write it; default ``report.html`` in the run directory.
    """

    model_config = ConfigDict(extra="forbid")

    every: int = Field(default=10, ge=0)
    min_interval: float = Field(default=30.0, ge=0)
    figures: list[str] | None = None
    path: Path | None = None


def write_study_report(
    store: TrialsStore,
    path: Path,
    *,
    reference_point: dict[str, float] | None,
    figures: list[str] | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Read the study, write its report to ``path`` and, where the study is tracked, log it
    as ``report.html`` on the MLflow parent run (replacing the previous one)."""
    from paretune.dashboards import StudyData, write_report

    data = StudyData.from_store(store, reference_point=reference_point)
    report = write_report(data, path, figures=figures)
    parent = store.parent_run_id or store.study.user_attrs.get("paretune.mlflow_parent_run_id")
    if log_to_mlflow and parent is not None:
        link = store.mlflow
        if link is None and store.tracking_uri is not None:
            from paretune.trials_store import MlflowLink

            link = MlflowLink(tracking_uri=store.tracking_uri, experiment=store.config.name)
        # A search's own link is skipped while its tracking store is down (the next refresh
        # or run logs the report).
        if link is not None and (link is not store.mlflow or store.tracking_available()):
            if path.name == "report.html":
                link.log_artifact(parent, str(path))
            else:  # the artifact keeps its name: copy it under the name the UI expects
                import shutil
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / "report.html"
                    shutil.copyfile(path, copy)
                    link.log_artifact(parent, str(copy))
    return report


class ReportRefresh:
    """Rewrites a running search's report every ``every`` finished trials and at its end.

    It wraps the run's progress observer (``update(store, trial)``), so it runs in the
    driver after a trial is recorded; a failure to draw or log is a warning, never a stop.
    A refresh that falls due less than ``min_interval`` seconds after the last one is
    skipped.
    """

    def __init__(
        self,
        settings: ReportSpec,
        path: Path,
        *,
        reference_point: dict[str, float] | None,
        progress: Any = None,
    ) -> None:
        self.settings, self.path = settings, path
        self.reference_point = reference_point
        self.progress = progress
        self.finished = 0
        self._last = -math.inf

    def update(self, store: TrialsStore, trial: Any) -> None:
        if self.progress is not None:
            self.progress.update(store, trial)
        self.finished += 1
        due = bool(self.settings.every) and self.finished % self.settings.every == 0
        if due and time.monotonic() - self._last >= self.settings.min_interval:
            self.refresh(store)

    def refresh(self, store: TrialsStore) -> None:
        """Write and log the report now."""
        self._last = time.monotonic()
        try:
            write_study_report(
                store,
                self.path,
                reference_point=self.reference_point,
                figures=self.settings.figures,
            )
        except Exception as err:  # the study is the record; its report is a view of it
            _log.warning("could not refresh the report %s: %s", self.path, err)
