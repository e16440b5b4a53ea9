"""The Pareto front: 2-D, 3-D, or a scatter matrix for four or more objectives.

Dominated trials are faded, infeasible ones marked x, baselines drawn as labelled diamonds,
and where ``paretune reevaluate`` ran a trial on several seeds its mean is drawn with one
standard deviation as error bars.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._text import format_value, metric_title
from paretune.dashboards._theme import COLORS, apply_theme

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["ParetoData", "ParetoFront", "hover_text"]

_INTERNAL = "paretune."


@dataclass
class ParetoData:
    """What the front's figure shows, one entry per completed trial (number order).

    Attributes:
        titles: Per metric, ``name ↓`` or ``name ↑``.
        directions: Per metric, ``minimize`` or ``maximize``.
        numbers: The trials' numbers.
        values: ``(n, m)`` values as the search recorded them.
        on_front: Feasible and not dominated by a feasible trial.
        feasible: Meets every outcome constraint.
        labels: A baseline's label, else ``None``.
        hover: The hover text of each trial (its metrics, configuration and attributes).
        reevaluated: Trial number -> (per metric mean, per metric standard deviation, seeds),
            for trials re-evaluated on two or more seeds.
        staircase: For two metrics, the front's attainment line (x, y), else empty.
    """

    titles: list[str]
    directions: list[str]
    numbers: list[int]
    values: np.ndarray
    on_front: np.ndarray
    feasible: np.ndarray
    labels: list[str | None]
    hover: list[str]
    reevaluated: dict[int, tuple[list[float], list[float], int]] = field(default_factory=dict)
    staircase: tuple[list[float], list[float]] = ([], [])


def hover_text(study: StudyData, trial: FrozenTrial, *, max_items: int = 24) -> str:
    """A trial's hover box: number and label, every metric it returned, its parameters and
    its user attributes (paretune's own bookkeeping left out), HTML-escaped."""
    from paretune.trials_store import METRICS_ATTR

    label = study.label(trial)
    lines = [f"<b>trial {trial.number}</b>" + (f" ({html.escape(label)})" if label else "")]
    metrics = trial.user_attrs.get(METRICS_ATTR) or dict(
        zip(study.metric_names, trial.values or (), strict=False)
    )
    lines += [f"{html.escape(str(k))} = {format_value(v)}" for k, v in metrics.items()]
    items = [(k, v) for k, v in trial.params.items()]
    items += [(k, v) for k, v in trial.user_attrs.items() if not str(k).startswith(_INTERNAL)]
    shown = items[:max_items]
    lines += [f"{html.escape(str(k))}: {html.escape(format_value(v))[:80]}" for k, v in shown]
    if len(items) > len(shown):
        lines.append(f"... (+{len(items) - len(shown)})")
    return "<br>".join(lines)


def _staircase(xy: np.ndarray, directions: list[str]) -> tuple[list[float], list[float]]:
    """The 2-D front's attainment line: sorted along the first metric, steps between."""
    if not len(xy):
        return [], []
    order = np.argsort(xy[:, 0] * (1 if directions[0] == "minimize" else -1), kind="stable")
    pts = xy[order]
    xs, ys = [float(pts[0, 0])], [float(pts[0, 1])]
    for x, y in pts[1:]:
        xs += [float(x), float(x)]
        ys += [ys[-1], float(y)]
    return xs, ys


@register_figure
class ParetoFront(FigureFamily):
    name = "pareto"
    title = "Pareto front"
    order = 10
    description = (
        "Every completed trial; the Pareto-optimal ones in colour, dominated ones faded, "
        "infeasible ones (outcome constraints) marked x, baselines as labelled diamonds, "
        "re-evaluated trials as their mean over seeds with one standard deviation."
    )

    def applies(self, study: StudyData) -> bool:
        return len(study.metrics) >= 2 and bool(study.complete)

    def extract(self, study: StudyData) -> ParetoData:
        values = study.values
        reevaluated: dict[int, tuple[list[float], list[float], int]] = {}
        numbers = {t.number for t in study.complete}
        for number, runs in study.reevaluations.items():
            if number not in numbers or len(runs) < 2:
                continue
            per_metric = [
                [float(m[n]) for m in runs.values() if n in m] for n in study.metric_names
            ]
            if any(len(v) < 2 for v in per_metric):
                continue
            reevaluated[number] = (
                [statistics.fmean(v) for v in per_metric],
                [statistics.stdev(v) for v in per_metric],
                len(runs),
            )
        front = values[study.on_front]
        return ParetoData(
            titles=[metric_title(m) for m in study.metrics],
            directions=study.directions,
            numbers=[t.number for t in study.complete],
            values=values,
            on_front=study.on_front,
            feasible=study.feasible,
            labels=[study.label(t) for t in study.complete],
            hover=[hover_text(study, t) for t in study.complete],
            reevaluated=reevaluated,
            staircase=_staircase(front, study.directions) if len(study.metrics) == 2 else ([], []),
        )

    def draw(self, data: ParetoData) -> Figure:
        m = len(data.titles)
        if m == 2:
            return self._draw_2d(data)
        if m == 3:
            return self._draw_3d(data)
        return self._draw_matrix(data)

    # -- the groups every drawing shares -------------------------------------------------

    @staticmethod
    def _groups(data: ParetoData) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        baseline = np.array([label is not None for label in data.labels], dtype=bool)
        plain = ~baseline
        return [
            (
                "dominated",
                plain & data.feasible & ~data.on_front,
                {"color": COLORS["dominated"], "size": 6},
            ),
            ("Pareto-optimal", plain & data.on_front, {"color": COLORS["front"], "size": 8}),
            (
                "infeasible",
                plain & ~data.feasible,
                {"color": COLORS["infeasible"], "size": 7, "symbol": "x"},
            ),
            (
                "baseline",
                baseline,
                {"color": COLORS["baseline"], "size": 11, "symbol": "diamond"},
            ),
        ]

    def _draw_2d(self, data: ParetoData) -> Figure:
        import plotly.graph_objects as go

        fig = go.Figure()
        if data.staircase[0]:
            fig.add_trace(
                go.Scatter(
                    x=data.staircase[0],
                    y=data.staircase[1],
                    mode="lines",
                    line={"color": COLORS["front"], "width": 1, "shape": "linear"},
                    name="front",
                    hoverinfo="skip",
                )
            )
        for name, mask, marker in self._groups(data):
            if not mask.any():
                continue
            idx = np.flatnonzero(mask)
            text = [data.labels[i] or "" for i in idx] if name == "baseline" else None
            fig.add_trace(
                go.Scatter(
                    x=data.values[idx, 0],
                    y=data.values[idx, 1],
                    mode="markers+text" if text else "markers",
                    text=text,
                    textposition="top center",
                    marker=marker,
                    name=name,
                    hovertext=[data.hover[i] for i in idx],
                    hoverinfo="text",
                )
            )
        if data.reevaluated:
            rows = sorted(data.reevaluated.items())
            fig.add_trace(
                go.Scatter(
                    x=[mean[0] for _, (mean, _, _) in rows],
                    y=[mean[1] for _, (mean, _, _) in rows],
                    error_x={"type": "data", "array": [sd[0] for _, (_, sd, _) in rows]},
                    error_y={"type": "data", "array": [sd[1] for _, (_, sd, _) in rows]},
                    mode="markers",
                    marker={"color": "black", "size": 7, "symbol": "circle-open"},
                    name="re-evaluated (mean ± sd)",
                    hovertext=[
                        f"trial {n}: mean of {k} seeds<br>"
                        + "<br>".join(
                            f"{t} = {mu:.6g} ± {s:.3g}"
                            for t, mu, s in zip(data.titles, mean, sd, strict=True)
                        )
                        for n, (mean, sd, k) in rows
                    ],
                    hoverinfo="text",
                )
            )
        return apply_theme(fig, xaxis_title=data.titles[0], yaxis_title=data.titles[1])

    def _draw_3d(self, data: ParetoData) -> Figure:
        import plotly.graph_objects as go

        fig = go.Figure()
        for name, mask, marker in self._groups(data):
            if not mask.any():
                continue
            idx = np.flatnonzero(mask)
            fig.add_trace(
                go.Scatter3d(
                    x=data.values[idx, 0],
                    y=data.values[idx, 1],
                    z=data.values[idx, 2],
                    mode="markers",
                    marker={**marker, "size": max(3, marker["size"] - 3)},
                    name=name,
                    hovertext=[data.hover[i] for i in idx],
                    hoverinfo="text",
                )
            )
        return apply_theme(
            fig,
            scene={
                "xaxis_title": data.titles[0],
                "yaxis_title": data.titles[1],
                "zaxis_title": data.titles[2],
            },
            height=600,
        )

    def _draw_matrix(self, data: ParetoData) -> Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        m = len(data.titles)
        fig = make_subplots(rows=m, cols=m, horizontal_spacing=0.02, vertical_spacing=0.02)
        groups = self._groups(data)
        for r in range(m):
            for c in range(m):
                if r == c:
                    continue
                for name, mask, marker in groups:
                    if not mask.any():
                        continue
                    idx = np.flatnonzero(mask)
                    fig.add_trace(
                        go.Scatter(
                            x=data.values[idx, c],
                            y=data.values[idx, r],
                            mode="markers",
                            marker={**marker, "size": max(3, marker["size"] - 3)},
                            name=name,
                            legendgroup=name,
                            showlegend=(r, c) == (0, 1),
                            hovertext=[data.hover[i] for i in idx],
                            hoverinfo="text",
                        ),
                        row=r + 1,
                        col=c + 1,
                    )
        for i, title in enumerate(data.titles):
            fig.update_xaxes(title_text=title, row=m, col=i + 1)
            fig.update_yaxes(title_text=title, row=i + 1, col=1)
        return apply_theme(fig, height=220 * m, width=None)
