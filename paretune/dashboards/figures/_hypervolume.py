"""The hypervolume of the feasible completed trials after each one, in trial-number order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._theme import COLORS, apply_theme
from paretune.objectives import hypervolume

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["HypervolumeData", "HypervolumeHistory", "hypervolume_history"]


@dataclass
class HypervolumeData:
    """Attributes:
    numbers: The completed trials' numbers, ascending.
    hypervolume: After each of them, the hypervolume of every feasible one so far.
    reference_point: The reference point, in the metrics' own directions.
    spec_reference: Whether the reference point came from the spec (else from the trials).
    """

    numbers: list[int]
    hypervolume: list[float]
    reference_point: list[float]
    spec_reference: bool


def hypervolume_history(
    values: np.ndarray, feasible: np.ndarray, directions: list[str], reference_point: np.ndarray
) -> list[float]:
    """After each row of ``values`` (in order), the hypervolume of the feasible rows so far.

    The front is kept as it grows; the volume is recomputed only when a row enters it (a row
    that a front member weakly dominates, or that is not better than the reference point in
    every metric, adds nothing), so a 10,000-trial study costs one volume per front change.
    Equal to ``optuna.visualization.plot_hypervolume_history``'s values.
    """
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    ref = signs * np.asarray(reference_point, dtype=float)
    points = values * signs
    front = np.empty((0, len(directions)))
    current = 0.0
    out: list[float] = []
    for p, ok in zip(points, feasible, strict=True):
        if ok and (p < ref).all() and not (front <= p).all(axis=1).any():
            front = np.vstack([front[~(p <= front).all(axis=1)], p])
            current = hypervolume(front, ref)
        out.append(current)
    return out


@register_figure
class HypervolumeHistory(FigureFamily):
    name = "hypervolume"
    title = "Hypervolume over trials"
    order = 20
    description = (
        "The volume of objective space that the feasible trials so far dominate, bounded by "
        "the reference point: it rises each time a trial extends the front."
    )

    def applies(self, study: StudyData) -> bool:
        return len(study.metrics) >= 2 and bool(study.complete)

    def extract(self, study: StudyData) -> HypervolumeData:
        ref = study.hypervolume_reference()
        return HypervolumeData(
            numbers=[t.number for t in study.complete],
            hypervolume=hypervolume_history(study.values, study.feasible, study.directions, ref),
            reference_point=[float(x) for x in ref],
            spec_reference=study.reference_point is not None,
        )

    def draw(self, data: HypervolumeData) -> Figure:
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Scatter(
                x=data.numbers,
                y=data.hypervolume,
                mode="lines",
                line={"shape": "hv", "color": COLORS["front"]},
                name="hypervolume",
                hovertemplate="trial %{x}<br>hypervolume %{y:.6g}<extra></extra>",
            )
        )
        where = "the spec's" if data.spec_reference else "from the trials (worst + 10 % of range)"
        ref = ", ".join(f"{x:.4g}" for x in data.reference_point)
        return apply_theme(
            fig,
            xaxis_title="trial",
            yaxis_title="hypervolume",
            title={"text": f"reference point ({ref}), {where}", "font": {"size": 12}},
        )
