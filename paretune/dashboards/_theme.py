"""The one look of paretune's figures: a plotly template and the colours with a meaning."""

from __future__ import annotations

from typing import Any

__all__ = ["COLORS", "WIDTH_PALETTE", "apply_theme", "theme"]

# Colours that mean something in every figure.
COLORS = {
    "front": "#1f77b4",  # Pareto-optimal trials
    "dominated": "rgba(120, 120, 120, 0.35)",  # faded: dominated trials
    "infeasible": "#d62728",  # marked x: trials that break an outcome constraint
    "baseline": "#ff7f0e",  # enqueued baselines (diamonds)
    "accent": "#2ca02c",  # a chosen value, a reference
}
# Light to dark with width, as the muTransfer papers draw it.
WIDTH_PALETTE = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b", "#041a3a")

_NAME = "paretune"
_COLORWAY = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
_COLORWAY += ["#7f7f7f", "#bcbd22", "#17becf"]


def theme() -> str:
    """The plotly template's name, registered on first use (``fig.update_layout(template=
    theme())``); plotly is imported here, not when paretune is."""
    import plotly.graph_objects as go
    import plotly.io as pio

    if _NAME not in pio.templates:
        base = pio.templates["plotly_white"]
        template = go.layout.Template(base)
        template.layout.update(
            font={"family": "Inter, Helvetica, Arial, sans-serif", "size": 13},
            colorway=_COLORWAY,
            margin={"l": 60, "r": 30, "t": 50, "b": 50},
            hoverlabel={"align": "left"},
            legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        )
        pio.templates[_NAME] = template
    return _NAME


def apply_theme(fig: Any, **layout: Any) -> Any:
    """``fig`` in paretune's template, with ``layout`` on top; returns it."""
    fig.update_layout(template=theme(), **layout)
    return fig
