"""The Pareto front as a table: trial, baseline label, one column per metric, params."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from paretune.dashboards._text import format_table, metric_title, params_cell
from paretune.trials_store import LABEL_ATTR

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric

__all__ = ["pareto_table"]


def pareto_table(
    trials: Sequence[FrozenTrial], metrics: Sequence[Metric], *, max_params: int = 6
) -> str:
    """Completed trials (usually the Pareto front) as a plain-text table.

    Columns: ``trial``, ``baseline`` (only when a trial carries a baseline label), one column
    per metric titled with its direction (``f0 ↓``, ``accuracy ↑``) and ``params``.

    Args:
        trials: Trials with one value per metric, in the order shown.
        metrics: The study's metrics, in the order of the trials' values.
        max_params: Parameters shown per trial; the rest are counted (``... (+3)``).

    Returns:
        The table's text.
    """
    labels = [t.user_attrs.get(LABEL_ATTR) for t in trials]
    labelled = any(labels)
    header = ["trial", *(metric_title(m) for m in metrics), "params"]
    if labelled:
        header.insert(1, "baseline")
    rows = []
    for t, label in zip(trials, labels, strict=True):
        row: list[Any] = [t.number, *t.values, params_cell(t.params, max_params)]
        if labelled:
            row.insert(1, label or "")
        rows.append(row)
    return format_table(header, rows)
