"""Tables attached to the study's MLflow parent run, where the MLflow UI shows them."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paretune.trials_store import MlflowLink

__all__ = ["log_study_tables"]


def log_study_tables(link: MlflowLink, run_id: str, *, trials_csv: str, pareto_csv: str) -> None:
    """Attach ``trials.csv`` (every trial) and ``pareto.csv`` (the front) to a run.

    The texts are what :func:`paretune.trials_store.export_trials` writes: ``export_trials(
    store, "csv")`` and ``export_trials(store, "csv", pareto_only=True)``. Logging again (a
    resumed study) replaces the earlier tables; a run that has ended takes them too.

    Args:
        link: The study's MLflow link.
        run_id: The study's parent run.
        trials_csv: The CSV of every trial.
        pareto_csv: The CSV of the Pareto-optimal trials.
    """
    _log_texts(link, run_id, {"trials.csv": trials_csv, "pareto.csv": pareto_csv})


def _log_texts(link: MlflowLink, run_id: str, files: Mapping[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            link.log_artifact(run_id, str(path))
