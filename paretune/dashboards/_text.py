"""Plain-text tables: aligned columns, one way to print a value, a metric and a parameter set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paretune.objectives import Metric

__all__ = ["format_table"]


def format_value(value: Any) -> str:
    """A cell: floats with six significant digits, everything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns.

    Args:
        header: The column titles.
        rows: One sequence of cells per row, as long as ``header``; floats are shown with six
            significant digits.

    Returns:
        The header, a rule of dashes and the rows, one line each, without trailing blanks.
    """
    cells = [[format_value(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def metric_title(metric: Metric) -> str:
    """``"name ↓"`` for a minimised metric, ``"name ↑"`` for a maximised one."""
    return f"{metric.name} {'↓' if metric.direction == 'minimize' else '↑'}"


def params_cell(params: Mapping[str, Any], max_params: int) -> str:
    """``k=v, ...`` for the first ``max_params`` parameters and how many more there are."""
    items = list(params.items())
    shown = ", ".join(f"{k}={format_value(v)}" for k, v in items[:max_params])
    if len(items) > max_params:
        shown += f", ... (+{len(items) - max_params})"
    return shown
