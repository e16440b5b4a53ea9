"""What the study's MLflow parent run carries, where the MLflow UI shows it: the spec, the
tables of the trials and of the front, and summary metrics."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from paretune._secrets import redact
from paretune.objectives import hypervolume

if TYPE_CHECKING:
    from paretune.dashboards._study_data import StudyData
    from paretune.trials_store import MlflowLink

__all__ = ["log_spec", "log_study_summary", "log_study_tables", "study_summary"]

#: The tag of the parent run that records the reference point of its ``hypervolume`` metric.
REFERENCE_TAG = "paretune.hypervolume_reference"
_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


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


def log_spec(link: MlflowLink, run_id: str, spec_yaml: str) -> None:
    """Attach the spec a search runs, ``spec.yaml``, to its parent run (replacing an earlier
    one: a resumed search may have changed its budget)."""
    _log_texts(link, run_id, {"spec.yaml": redact(spec_yaml)})


def study_summary(study: StudyData) -> dict[str, float]:
    """The parent run's summary metrics of ``study``.

    - ``trials``, and ``trials_complete``, ``trials_pruned``, ``trials_fail``,
      ``trials_running``, ``trials_waiting``: how many trials are in each state;
    - ``pareto_trials``: the feasible complete trials on the front;
    - ``best_<metric>``: the best feasible value of each optimised metric (its own direction);
    - ``hypervolume`` (two or more metrics): of the feasible complete trials from
      :meth:`~paretune.dashboards.StudyData.hypervolume_reference`, the spec's reference point
      where it gives one (else one taken from the trials, which moves as they come in).

    Metrics without a feasible complete trial are left out.
    """
    counts = {state: 0 for state in _STATES}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    out = {"trials": float(len(study.trials))}
    out.update({f"trials_{state.lower()}": float(n) for state, n in counts.items()})
    out["pareto_trials"] = float(len(study.pareto))
    values = study.values[study.feasible]
    if not len(values):
        return out
    for i, m in enumerate(study.metrics):
        column = values[:, i]
        out[f"best_{m.name}"] = float(column.min() if m.direction == "minimize" else column.max())
    if len(study.metrics) > 1:
        signs = _signs(study)
        out["hypervolume"] = hypervolume(values * signs, study.hypervolume_reference() * signs)
    return out


def log_study_summary(link: MlflowLink, run_id: str, study: StudyData) -> dict[str, float]:
    """Log :func:`study_summary` on the parent run, at the step of the study's number of
    trials (a resumed study adds points to each metric's history), and its hypervolume
    reference as the tag ``paretune.hypervolume_reference`` (``f0=1.2, f1=3``).

    Returns:
        The metrics logged.
    """
    summary = study_summary(study)
    link.log_metrics(run_id, summary, step=len(study.trials))
    if "hypervolume" in summary:
        reference = study.hypervolume_reference()
        text = ", ".join(f"{n}={v:.6g}" for n, v in zip(study.metric_names, reference, strict=True))
        link.set_tags(run_id, {REFERENCE_TAG: text})
    return summary


def _signs(study: StudyData) -> np.ndarray:
    """Per metric, ``1`` (minimised) or ``-1`` (maximised): the values times it are minimised."""
    return np.array([1.0 if d == "minimize" else -1.0 for d in study.directions])


def _log_texts(link: MlflowLink, run_id: str, files: Mapping[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            link.log_artifact(run_id, str(path))
