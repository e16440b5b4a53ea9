"""How re-evaluations read: a line per evaluation, the mean ± std table, the verdicts on the
baselines and the CSV of every run."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune.dashboards._text import format_table, format_value, metric_title, params_cell
from paretune.objectives import dominates

if TYPE_CHECKING:
    from paretune.objectives import Metric
    from paretune.search import Outcome, Reevaluation

__all__ = [
    "dominance_lines",
    "reevaluation_line",
    "reevaluation_table",
    "write_reevaluation_csv",
]


def reevaluation_line(
    done: int,
    total: int,
    result: Reevaluation,
    seed: int,
    outcome: Outcome,
    seconds: float,
    *,
    metrics: Sequence[Metric],
) -> str:
    """One finished evaluation: ``[3/8] trial 12 seed 1: f0=0.25, f1=3 (41 s)``.

    A failed or pruned evaluation shows its state and the last line of its error instead.
    """
    if outcome.state == "COMPLETE" and outcome.metrics is not None:
        values = outcome.metrics
        shown = ", ".join(f"{m.name}={format_value(values[m.name])}" for m in metrics)
    else:
        last = (outcome.error or "").strip().splitlines()
        shown = f"{outcome.state}: {last[-1] if last else ''}"
    return f"[{done}/{total}] {result.name} seed {seed}: {shown} ({seconds:.0f} s)"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"  # no seed completed
    if math.isnan(std):
        return f"{mean:.4g}"  # one seed: no spread
    return f"{mean:.4g} ± {std:.2g}"


def reevaluation_table(
    results: Sequence[Reevaluation], metrics: Sequence[Metric], *, max_params: int = 4
) -> str:
    """Per re-evaluated trial: its search-time values and the mean ± std over seeds.

    Columns: ``trial``, ``baseline`` (its label, ``yes`` for an unlabelled baseline), ``seeds``
    (the evaluations that completed), then per metric ``f0 ↓ (search)`` and ``f0 mean ± std``
    (``-`` when no seed completed, the mean alone with one seed), and ``params``.

    Args:
        results: The re-evaluations, in the order shown.
        metrics: The study's metrics, in the order of the source trials' values.
        max_params: Parameters shown per trial; the rest are counted.

    Returns:
        The table's text.
    """
    header = ["trial", "baseline", "seeds"]
    for m in metrics:
        header += [f"{metric_title(m)} (search)", f"{m.name} mean ± std"]
    header.append("params")
    rows = []
    for r in results:
        row: list[Any] = [r.source.number, r.label or ("yes" if r.baseline else ""), len(r.runs)]
        for i, m in enumerate(metrics):
            row += [r.source.values[i], _mean_std(r.mean(m.name), r.std(m.name))]
        row.append(params_cell(r.source.params, max_params))
        rows.append(row)
    return format_table(header, rows)


def dominance_lines(results: Sequence[Reevaluation], metrics: Sequence[Metric]) -> list[str]:
    """For each re-evaluated baseline, the re-evaluated search trials whose means dominate it.

    Dominance is :func:`~paretune.objectives.dominates` on the means over seeds; a
    mean that no seed produced (NaN) decides nothing.

    Returns:
        One line per baseline, in the order of ``results``: ``<name>: dominated (mean over
        seeds) by trial(s) 3, 7`` or ``<name>: not dominated by any re-evaluated search trial``.
    """
    directions = [m.direction for m in metrics]

    def means(r: Reevaluation) -> list[float]:
        return [r.mean(m.name) for m in metrics]

    found = [(r.source.number, means(r)) for r in results if not r.baseline]
    lines = []
    for b in (r for r in results if r.baseline):
        target = means(b)
        winners = [n for n, row in found if dominates(row, target, directions)]
        lines.append(
            f"{b.name}: "
            + (
                f"dominated (mean over seeds) by trial(s) {', '.join(map(str, winners))}"
                if winners
                else "not dominated by any re-evaluated search trial"
            )
        )
    return lines


def write_reevaluation_csv(
    results: Sequence[Reevaluation], metrics: Sequence[Metric], path: str | Path
) -> None:
    """Every completed evaluation as a CSV row.

    Columns: ``trial``, ``label``, ``baseline``, ``seed``, the metrics, any further metrics the
    objective returned (sorted by name; empty where a run lacks one) and ``params`` (JSON).
    """
    names = [m.name for m in metrics]
    extra = sorted({k for r in results for run in r.runs.values() for k in run} - set(names))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "label", "baseline", "seed", *names, *extra, "params"])
        for r in results:
            for seed, values in sorted(r.runs.items()):
                w.writerow(
                    [r.source.number, r.label or "", r.baseline, seed]
                    + [values.get(n, "") for n in [*names, *extra]]
                    + [json.dumps(r.source.params, default=str)]
                )
