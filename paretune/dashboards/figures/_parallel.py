"""Parallel coordinates: every completed trial as one line through its parameters and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._text import metric_title
from paretune.dashboards._theme import apply_theme

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["Axis", "ParallelCoordinates", "ParallelData"]

# More categories than this on one axis are unreadable; such a parameter is left out.
_MAX_CATEGORIES = 30


@dataclass
class Axis:
    """One vertical axis: its label, a value per trial, and tick labels for categories/logs."""

    label: str
    values: list[float]
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None


@dataclass
class ParallelData:
    """Attributes:
    axes: The parameters (present in every completed trial) then the metrics.
    color: The first metric, per trial (the lines' colour).
    color_title: Its title.
    reverse: Whether to reverse the colour scale (a maximised first metric), so that darker
        is better either way.
    left_out: Parameters not drawn, with the reason.
    """

    axes: list[Axis]
    color: list[float]
    color_title: str
    reverse: bool
    left_out: dict[str, str]


def _param_axis(name: str, trials: list[Any]) -> Axis | str:
    """The axis of one parameter, or why it is left out."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dist = trials[0].distributions[name]
    raw = [t.params[name] for t in trials]
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        if len(choices) > _MAX_CATEGORIES:
            return f"{len(choices)} categories"
        index = {repr(c): i for i, c in enumerate(choices)}
        return Axis(
            label=name,
            values=[float(index[repr(v)]) for v in raw],
            tickvals=[float(i) for i in range(len(choices))],
            ticktext=[str(c) for c in choices],
        )
    if isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
        low, high = math.log10(dist.low), math.log10(dist.high)
        ticks: list[float] = [float(t) for t in range(math.ceil(low), math.floor(high) + 1)]
        ticks = ticks or [low, high]
        return Axis(
            label=f"{name} (log)",
            values=[math.log10(v) for v in raw],
            tickvals=[float(t) for t in ticks],
            ticktext=[f"{10.0**t:.3g}" for t in ticks],
        )
    return Axis(label=name, values=[float(v) for v in raw])


@register_figure
class ParallelCoordinates(FigureFamily):
    name = "parallel"
    title = "Parallel coordinates"
    order = 30
    description = (
        "One line per completed trial through its parameters and metrics, coloured by the "
        "first metric (darker is better). Drag along an axis to filter."
    )

    def applies(self, study: StudyData) -> bool:
        return len(study.complete) >= 2 and bool(study.params_of(study.complete))

    def extract(self, study: StudyData) -> ParallelData:
        trials = study.complete
        axes: list[Axis] = []
        left_out: dict[str, str] = {}
        for name in study.params_of(trials):
            if not all(name in t.params for t in trials):
                left_out[name] = "not in every trial (conditional)"
                continue
            axis = _param_axis(name, trials)
            if isinstance(axis, str):
                left_out[name] = axis
            else:
                axes.append(axis)
        values = study.values
        for i, metric in enumerate(study.metrics):
            axes.append(Axis(label=metric_title(metric), values=values[:, i].tolist()))
        return ParallelData(
            axes=axes,
            color=values[:, 0].tolist(),
            color_title=metric_title(study.metrics[0]),
            reverse=study.metrics[0].direction == "maximize",
            left_out=left_out,
        )

    def draw(self, data: ParallelData) -> Figure:
        import plotly.graph_objects as go

        dims = []
        for axis in data.axes:
            dim: dict[str, Any] = {"label": axis.label, "values": axis.values}
            if axis.tickvals is not None:
                dim.update(tickvals=axis.tickvals, ticktext=axis.ticktext)
            finite = [v for v in axis.values if np.isfinite(v)]
            if finite and min(finite) == max(finite):  # one value: give the axis some range
                dim["range"] = [min(finite) - 1, max(finite) + 1]
            dims.append(dim)
        fig = go.Figure(
            go.Parcoords(
                dimensions=dims,
                line={
                    "color": data.color,
                    "colorscale": "Viridis",
                    "reversescale": data.reverse,
                    "showscale": True,
                    "colorbar": {"title": {"text": data.color_title}},
                },
            )
        )
        note = ""
        if data.left_out:
            note = "left out: " + ", ".join(f"{k} ({v})" for k, v in data.left_out.items())
        return apply_theme(
            fig,
            margin={"l": 80, "r": 80, "t": 80, "b": 40},
            title={"text": note, "font": {"size": 11}},
        )
