"""Export every trial of a study as CSV or JSON (one row / object per trial)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError
from paretune.trials_store._attrs import (
    CHILD_RUN_ATTR,
    DUPLICATE_OF_ATTR,
    ERROR_ATTR,
    METRICS_ATTR,
    RETRY_OF_ATTR,
    SEED_ATTR,
)

if TYPE_CHECKING:
    from paretune.trials_store._store import TrialsStore

__all__ = ["export_trials", "trial_records"]

FORMATS = ("csv", "json")


def trial_records(store: TrialsStore, *, pareto_only: bool = False) -> list[dict[str, Any]]:
    """One plain dict per trial, in trial order: what :func:`export_trials` writes."""
    front = {t.number for t in store.pareto_trials()}
    names = [m.name for m in store.config.metrics]
    records = []
    for t in store.study.get_trials(deepcopy=False):
        if pareto_only and t.number not in front:
            continue
        duration = t.duration.total_seconds() if t.duration is not None else None
        records.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": dict(zip(names, t.values, strict=True)) if t.values else None,
                "params": dict(t.params),
                "metrics": t.user_attrs.get(METRICS_ATTR),
                "pareto": t.number in front,
                "feasible": store.feasible(t) if t.state.name == "COMPLETE" else None,
                "seed": t.user_attrs.get(SEED_ATTR),
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "duration_s": duration,
                "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
                "duplicate_of": t.user_attrs.get(DUPLICATE_OF_ATTR),
                "mlflow_run_id": t.user_attrs.get(CHILD_RUN_ATTR),
                "error": t.user_attrs.get(ERROR_ATTR),
            }
        )
    return records


def _flatten(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    param_names: list[str] = []
    metric_names: list[str] = []
    for r in records:
        param_names += [k for k in r["params"] if k not in param_names]
        metric_names += [k for k in (r["metrics"] or {}) if k not in metric_names]
    head = ["number", "state"]
    tail = [
        "pareto", "feasible", "seed", "datetime_start", "duration_s", "retry_of",
        "duplicate_of", "mlflow_run_id", "error",
    ]  # fmt: skip
    columns = (
        head + [f"metric_{m}" for m in metric_names] + [f"param_{p}" for p in param_names] + tail
    )
    rows = []
    for r in records:
        row = {k: r[k] for k in head + tail}
        row.update({f"metric_{m}": (r["metrics"] or {}).get(m) for m in metric_names})
        row.update({f"param_{p}": r["params"].get(p) for p in param_names})
        rows.append(row)
    return columns, rows


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def export_trials(
    store: TrialsStore, fmt: str, path: str | Path | None = None, *, pareto_only: bool = False
) -> str:
    """Write all trials as ``csv`` or ``json``.

    Args:
        store: The study to export.
        fmt: ``"csv"`` (one column per metric and parameter) or ``"json"`` (nested objects).
        path: Where to write; ``None`` returns the text only.
        pareto_only: Only the trials on the Pareto front.

    Returns:
        The exported text.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    records = trial_records(store, pareto_only=pareto_only)
    if fmt == "json":
        text = json.dumps(_json_safe(records), indent=2) + "\n"
    else:
        columns, rows = _flatten(records)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
