"""The lines that tell a user where a study stands and where its results are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from paretune._secrets import redact_url
from paretune.dashboards._pareto_table import pareto_table

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric

__all__ = ["pareto_section", "run_summary", "status_summary", "where_lines"]


def where_lines(
    *, study: str, storage_url: str, tracking_uri: str | None = None, hints: bool = True
) -> str:
    """Where a study's results are: its storage, its MLflow store and how to browse them.

    Args:
        study: The study's name (also the MLflow experiment's).
        storage_url: The Optuna storage URL.
        tracking_uri: The MLflow tracking URI; ``None`` where the study is not tracked.
        hints: Add the commands that open the MLflow UI and optuna-dashboard on them.
    """
    storage_url = redact_url(storage_url)
    tracking_uri = None if tracking_uri is None else redact_url(tracking_uri)
    lines = [f"study:  {study} in {storage_url}"]
    if tracking_uri is not None and hints:
        lines.append(f"mlflow: {tracking_uri} (experiment {study!r})")
        if tracking_uri.startswith(("http://", "https://")):
            # A tracking server is its own UI; `mlflow ui` takes a store, not a server.
            lines.append(f"        browse: {tracking_uri}")
        else:
            lines.append(f"        browse: mlflow ui --backend-store-uri {tracking_uri}")
    elif tracking_uri is not None:
        lines.append(f"mlflow: {tracking_uri}")
    if hints:
        lines.append(f"        optuna-dashboard {storage_url}")
    return "\n".join(lines)


def _counted(counts: Mapping[str, int], fmt: str) -> str:
    return ", ".join(fmt.format(state=k.lower(), n=v) for k, v in counts.items() if v)


def run_summary(counts: Mapping[str, int], seconds: float, *, interrupted: bool) -> str:
    """``done in 12.3 s: 8 complete, 1 fail`` (``stopped`` when interrupted).

    Args:
        counts: Trial state name (``COMPLETE``) to the number of trials of this run; states
            with none are left out.
        seconds: How long the run took.
        interrupted: Whether the run was stopped before its budget.
    """
    head = f"{'stopped' if interrupted else 'done'} in {seconds:.1f} s: "
    return head + _counted(counts, "{n} {state}")


def status_summary(
    study: str, *, finished: int, total: int | None, counts: Mapping[str, int]
) -> str:
    """``study 'x': 5 / 8 trials finished`` and the count of trials in each state."""
    budget = f" / {total}" if total else ""
    return (
        f"study {study!r}: {finished}{budget} trials finished\n  {_counted(counts, '{state}={n}')}"
    )


def pareto_section(trials: Sequence[FrozenTrial], metrics: Sequence[Metric]) -> str:
    """``Pareto front (N trial(s)):`` and the :func:`pareto_table` of ``trials``."""
    return f"Pareto front ({len(trials)} trial(s)):\n{pareto_table(trials, metrics)}"
