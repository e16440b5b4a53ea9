"""Learning curves: every trial's intermediate values over its steps, the Pareto front's drawn
over the faded rest, pruned trials marked where they stopped.

What the study holds: ``ctx.report(step, metrics)`` sends every metric to the trial's MLflow
run, and the value of the one optimised metric of a single-objective study to the Optuna trial
(the pruner judges it; :mod:`paretune.trials_store`). So a paretune study has at most one
intermediate value per step, of its metric; multi-objective studies have none unless someone
recorded them with Optuna directly (then they are drawn as they are, unnamed).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._theme import COLORS, apply_theme

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.trial import FrozenTrial
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["CurveSet", "CurvesData", "LearningCurves"]

# Past this many points the faded curves are drawn with WebGL: an SVG path of a million points
# takes the browser seconds to lay out (10,000 trials x 100 steps is such a study).
_WEBGL_POINTS = 50_000
_PRUNED = "rgb(80, 80, 80)"


@dataclass(frozen=True, eq=False)
class CurveSet:
    """The curves of several trials end to end: numpy arrays, not one list per trial, so that
    10,000 trials of 100 steps each stay cheap to build and to draw.

    Attributes:
        numbers: The trials' numbers, ``(k,)``.
        starts: Where each trial's points begin in ``steps`` and ``values``, ``(k + 1,)``; the
            last entry is ``n``.
        steps: The steps, ascending within each trial, ``(n,)``.
        values: The intermediate value at each step, ``(n,)`` (finite: a NaN or infinite
            report is left out).
    """

    numbers: np.ndarray
    starts: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> CurveSet:
        """The curves of ``trials`` (each must have intermediate values)."""
        lengths = np.fromiter((len(t.intermediate_values) for t in trials), int, len(trials))
        total = int(lengths.sum())
        steps = np.fromiter(
            itertools.chain.from_iterable(t.intermediate_values for t in trials), float, total
        )
        values = np.fromiter(
            itertools.chain.from_iterable(t.intermediate_values.values() for t in trials),
            float,
            total,
        )
        owner = np.repeat(np.arange(len(trials)), lengths)
        keep = np.isfinite(values)
        steps, values, owner = steps[keep], values[keep], owner[keep]
        # Storages return the steps in order; a study built by hand may not.
        if np.any((np.diff(steps) < 0) & (np.diff(owner) == 0)):
            order = np.lexsort((steps, owner))
            steps, values, owner = steps[order], values[order], owner[order]
        counts = np.bincount(owner, minlength=len(trials))
        present = counts > 0  # a trial whose every report was NaN has no curve
        return cls(
            numbers=np.array([t.number for t in trials], dtype=int)[present],
            starts=np.concatenate(([0], np.cumsum(counts[present]))),
            steps=steps,
            values=values,
        )

    def curve(self, number: int) -> tuple[list[float], list[float]]:
        """The steps and values of trial ``number``."""
        (where,) = np.flatnonzero(self.numbers == number)
        span = slice(self.starts[where], self.starts[where + 1])
        return self.steps[span].tolist(), self.values[span].tolist()

    def last(self) -> tuple[np.ndarray, np.ndarray]:
        """Each trial's last step and its value, ``(k,)`` each."""
        ends = self.starts[1:] - 1
        return self.steps[ends], self.values[ends]

    def joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, values, trial numbers)`` of one polyline through every curve, a NaN (a
        gap for plotly) after each trial, ``(n + k,)`` each; the number is -1 at the gaps."""
        lengths = np.diff(self.starts)
        where = np.arange(len(self.steps)) + np.repeat(np.arange(len(self)), lengths)
        x = np.full(len(self.steps) + len(self), np.nan)
        y = np.full_like(x, np.nan)
        trial = np.full(len(x), -1, dtype=int)
        x[where], y[where], trial[where] = self.steps, self.values, np.repeat(self.numbers, lengths)
        return x, y, trial


@dataclass(frozen=True, eq=False)
class CurvesData:
    """What the learning-curve figure shows.

    Attributes:
        metric: What the intermediate values are: the study's metric, or ``"intermediate
            value"`` in a multi-objective study.
        front_name: What the highlighted trials are: ``"best trial"`` with one metric,
            ``"Pareto front"`` with several.
        front: The curves of the Pareto-optimal trials (:attr:`StudyData.on_front`).
        rest: The curves of every other trial with intermediate values: dominated,
            infeasible, pruned, failed or running.
        pruned: Per trial of ``rest``, whether it was pruned, ``(len(rest),)``.
    """

    metric: str
    front_name: str
    front: CurveSet
    rest: CurveSet
    pruned: np.ndarray

    def pruned_at(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pruned trials' numbers, last steps and last values, ``(p,)`` each."""
        steps, values = self.rest.last()
        return self.rest.numbers[self.pruned], steps[self.pruned], values[self.pruned]


class LearningCurves(FigureFamily):
    """One line per trial over its steps; the Pareto front's (or the best trial's) highlighted,
    every other trial faded into a single trace, pruned trials marked with an x."""

    name = "curves"
    title = "Learning curves"
    order = 40
    description = (
        "Each trial's reported metric over its steps (the intermediate values the pruner "
        "judges). The Pareto-optimal trials are highlighted, the others faded; an x marks "
        "where a trial was pruned."
    )

    def applies(self, study: StudyData) -> bool:
        return any(t.intermediate_values for t in study.trials)

    def extract(self, study: StudyData) -> CurvesData:
        front = {t.number for t in study.pareto}
        with_curves = [t for t in study.trials if t.intermediate_values]
        rest = [t for t in with_curves if t.number not in front]
        curves_rest = CurveSet.of(rest)
        pruned_numbers = {t.number for t in rest if t.state.name == "PRUNED"}
        one = len(study.metrics) == 1
        return CurvesData(
            metric=study.metrics[0].name if one else "intermediate value",
            front_name="best trial" if one else "Pareto front",
            front=CurveSet.of([t for t in with_curves if t.number in front]),
            rest=curves_rest,
            pruned=np.isin(curves_rest.numbers, list(pruned_numbers)),
        )

    def draw(self, data: CurvesData) -> Figure:
        import plotly.graph_objects as go

        fig = go.Figure()
        n_points = len(data.rest.steps) + len(data.front.steps)
        # WebGL traces are drawn above every SVG trace: the front and the pruned marks must be
        # WebGL too, or the faded curves would hide them.
        trace = go.Scattergl if n_points > _WEBGL_POINTS else go.Scatter
        if len(data.rest):
            x, y, _ = data.rest.joined()
            fig.add_trace(
                trace(
                    # float32 halves what the report embeds; a drawing needs no more digits.
                    x=x.astype(np.float32),
                    y=y.astype(np.float32),
                    mode="lines",
                    name=f"other trials ({len(data.rest)})",
                    line={"color": COLORS["dominated"], "width": 1},
                    # Fainter the more curves overlap, so that thousands do not merge into a
                    # solid grey band (1 up to 100 trials, 0.1 at 10,000).
                    opacity=min(1.0, 10 / math.sqrt(len(data.rest))),
                    hoverinfo="skip",
                )
            )
        if len(data.front):
            x, y, trial = data.front.joined()
            fig.add_trace(
                trace(
                    x=x,
                    y=y,
                    customdata=trial,
                    mode="lines",
                    name=f"{data.front_name} ({len(data.front)})",
                    line={"color": COLORS["front"], "width": 2},
                    hovertemplate="trial %{customdata}<br>step %{x}<br>%{y:.4g}<extra></extra>",
                )
            )
        numbers, steps, values = data.pruned_at()
        if len(numbers):
            fig.add_trace(
                trace(
                    x=steps,
                    y=values,
                    customdata=numbers,
                    mode="markers",
                    name=f"pruned ({len(numbers)})",
                    marker={"symbol": "x", "size": 7, "color": _PRUNED},
                    hovertemplate="trial %{customdata} pruned<br>step %{x}<br>%{y:.4g}"
                    "<extra></extra>",
                )
            )
        return apply_theme(fig, xaxis_title="step", yaxis_title=data.metric)


register_figure(LearningCurves)
