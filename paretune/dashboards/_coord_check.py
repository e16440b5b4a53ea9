"""The coordinate check's table and verdict, as ``paretune coord-check`` prints them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paretune.dashboards._text import format_table

if TYPE_CHECKING:
    from paretune.objectives.lm import CoordCheck

__all__ = ["coord_check_table", "coord_check_verdict"]


def coord_check_table(check: CoordCheck) -> str:
    """Mean ``|activation|`` per module (rows) and width (columns), then the log-log slope
    and whether it is within the tolerance."""
    header = ["module", *(str(w) for w in check.widths), "slope", ""]
    rows = [
        [
            name,
            *(f"{v:.4g}" for v in values),
            f"{check.slopes[name]:+.3f}",
            "ok" if abs(check.slopes[name]) <= check.tolerance else "DRIFTS",
        ]
        for name, values in check.values.items()
    ]
    return format_table(header, rows)


def coord_check_verdict(check: CoordCheck) -> str:
    """One line: every slope within the tolerance, or the worst module and its slope."""
    kind = check.parametrization.upper()
    if check.ok:
        return (
            f"{kind}: every module's activation size is width-independent (|slope| <= "
            f"{check.tolerance:g} from width {check.widths[0]} to {check.widths[-1]})."
        )
    name, slope = check.worst
    return (
        f"{kind}: {name} drifts with width: slope {slope:+.3f} of log|activation| against "
        f"log(width), beyond +-{check.tolerance:g} (worst of "
        f"{sum(abs(s) > check.tolerance for s in check.slopes.values())} module(s) that drift)."
    )
