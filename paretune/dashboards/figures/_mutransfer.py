"""The muTransfer figure: loss against log2 learning rate, one line per width (Tensor Programs
V, figure 1); SP and muP side by side when the study ran both. Under SP the optimum drifts with
width, under muP it stays.

A point is the mean loss over the seeds of one (parametrization, width, learning rate); a
point where a seed diverged is drawn as diverged (an x at the top edge), as the workflow counts
it (``inf``). Where a width ran several settings of its other hyperparameters (the workflow's
multiplier sweeps, at one learning rate each), its curve is the setting run at the most
learning rates.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._theme import COLORS, WIDTH_PALETTE, apply_theme
from paretune.objectives.lm import Diverged
from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["MuTransfer", "TransferData", "TransferPanel", "TransferPoint"]

# The lm objective's divergence, as it reads in a failed trial's traceback.
_DIVERGED = re.compile(rf"\b{Diverged.__name__}: ")
# What a run sweeps; every other parameter is a setting a curve holds fixed.
_SWEPT = ("width", "learning_rate", "seed", "parametrization")
_PANEL_ORDER = {"sp": 0, "mup": 1}
_PANEL_TITLES = {"sp": "SP (standard parametrization)", "mup": "muP"}


@dataclass(frozen=True)
class TransferPoint:
    """One learning rate at one width.

    Attributes:
        log2_lr: The log2 learning rate.
        loss: The mean loss over seeds; ``inf`` where a seed diverged.
        seeds: How many runs the mean is of (``None``: not known).
    """

    log2_lr: float
    loss: float
    seeds: int | None = None

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.loss)


@dataclass(frozen=True)
class TransferPanel:
    """The curves of one parametrization.

    Attributes:
        parametrization: ``"sp"``, ``"mup"``, or ``None`` where the study does not say (the
            workflow's study keeps it in the objective's settings, not in the trials).
        curves: Width -> its points, by learning rate.
    """

    parametrization: str | None
    curves: Mapping[int, Sequence[TransferPoint]]

    def optimum(self, width: int) -> TransferPoint | None:
        """The point of least finite loss at ``width`` (ties: the smaller rate); ``None`` when
        every point diverged."""
        finite = [p for p in self.curves[width] if not p.diverged]
        return min(finite, key=lambda p: (p.loss, p.log2_lr)) if finite else None


@dataclass(frozen=True)
class TransferData:
    """What the muTransfer figure shows.

    Attributes:
        metric: The loss's name (the axis title).
        panels: One per parametrization: SP first, then muP.
        chosen: A log2 learning rate to mark in every panel (the one carried to the targets),
            or ``None``.
    """

    metric: str
    panels: Sequence[TransferPanel]
    chosen: float | None = None

    @property
    def widths(self) -> list[int]:
        """Every width of every panel, ascending (a width has one colour in all panels)."""
        return sorted({w for panel in self.panels for w in panel.curves})


class MuTransfer(FigureFamily):
    """Loss against log2 learning rate per width (light to dark), a panel per
    parametrization; each width's optimum starred, diverged points as an x at the top edge."""

    name = "mutransfer"
    title = "Learning rate across widths (muTransfer)"
    order = 60
    description = (
        "Loss against learning rate, one line per width (darker: wider), the mean over seeds. "
        "A star marks each width's optimum; under muP it should stay put as the width grows, "
        "under SP it drifts. An x at the top edge is a learning rate that diverged."
    )

    def applies(self, study: StudyData) -> bool:
        """Whether the study is a muTransfer study: its metric is minimised and it finished
        runs with a ``width`` and a ``learning_rate`` parameter (the muTransfer workflow's
        study, or any sweep of the ``lm`` objective over width and learning rate)."""
        if not study.metrics or study.metrics[0].direction != "minimize":
            return False
        return any(_loss(t) is not None for t in study.trials if _swept(t))

    def extract(self, study: StudyData) -> TransferData:
        runs: dict[Any, dict[Any, dict[float, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        for params, loss in _runs(study.trials):
            setting = tuple(sorted((k, v) for k, v in params.items() if k not in _SWEPT))
            curve = (params.get("parametrization"), int(params["width"]))
            runs[curve][setting][float(params["learning_rate"])].append(loss)
        panels: dict[str | None, dict[int, tuple[TransferPoint, ...]]] = defaultdict(dict)
        for (parametrization, width), settings in runs.items():
            losses = _curve_of(settings)
            panels[parametrization][width] = tuple(
                TransferPoint(math.log2(lr), _mean(losses[lr]), len(losses[lr]))
                for lr in sorted(losses)
            )
        order = sorted(panels, key=lambda p: (_PANEL_ORDER.get(str(p), 2), str(p)))
        return TransferData(
            metric=study.metrics[0].name,
            panels=tuple(
                TransferPanel(p, {w: panels[p][w] for w in sorted(panels[p])}) for p in order
            ),
        )

    def draw(self, data: TransferData) -> Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        named = any(p.parametrization is not None for p in data.panels)
        fig = make_subplots(
            rows=1,
            cols=max(len(data.panels), 1),
            shared_yaxes=True,
            horizontal_spacing=0.05,
            subplot_titles=[_panel_title(p) for p in data.panels] if named else None,
        )
        # Light to dark, spread over the palette: two widths get its ends.
        widths, last = data.widths, len(WIDTH_PALETTE) - 1
        color = {
            w: WIDTH_PALETTE[round(i * last / max(len(widths) - 1, 1))]
            for i, w in enumerate(widths)
        }
        finite = [p.loss for panel in data.panels for c in panel.curves.values() for p in c]
        finite = [x for x in finite if math.isfinite(x)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        top = high + margin  # where diverged points sit: the top edge
        in_legend: set[str] = set()

        def legend(name: str) -> bool:
            shown = name not in in_legend
            in_legend.add(name)
            return shown

        for col, panel in enumerate(data.panels, start=1):
            optima: list[tuple[int, TransferPoint]] = []
            diverged: list[tuple[int, TransferPoint]] = []
            for width, points in panel.curves.items():
                name = f"width {width}"
                fig.add_trace(
                    go.Scatter(
                        x=[p.log2_lr for p in points],
                        y=[None if p.diverged else p.loss for p in points],
                        customdata=[_seeds(p) for p in points],
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=legend(name),
                        line={"color": color[width]},
                        hovertemplate=f"{name}<br>log2 LR %{{x:g}}<br>{data.metric} "
                        "%{y:.4f}%{customdata}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
                best = panel.optimum(width)
                if best is not None:
                    optima.append((width, best))
                diverged += [(width, p) for p in points if p.diverged]
            if optima:
                fig.add_trace(
                    go.Scatter(
                        x=[p.log2_lr for _, p in optima],
                        y=[p.loss for _, p in optima],
                        customdata=[f"width {w}" for w, _ in optima],
                        mode="markers",
                        name="optimum per width",
                        legendgroup="optimum",
                        showlegend=legend("optimum"),
                        marker={
                            "symbol": "star",
                            "size": 14,
                            "color": [color[w] for w, _ in optima],
                            "line": {"color": "black", "width": 1},
                        },
                        hovertemplate="%{customdata}: optimum at log2 LR %{x:g}<br>"
                        f"{data.metric} %{{y:.4f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
            if diverged:
                fig.add_trace(
                    go.Scatter(
                        x=[p.log2_lr for _, p in diverged],
                        y=[top] * len(diverged),
                        customdata=[f"width {w}" for w, _ in diverged],
                        mode="markers",
                        name="diverged",
                        legendgroup="diverged",
                        showlegend=legend("diverged"),
                        marker={
                            "symbol": "x",
                            "size": 10,
                            "color": [color[w] for w, _ in diverged],
                            "line": {"color": COLORS["infeasible"], "width": 1},
                        },
                        cliponaxis=False,
                        hovertemplate="%{customdata}: diverged at log2 LR %{x:g}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
            if data.chosen is not None:
                fig.add_vline(
                    x=data.chosen,
                    line_dash="dot",
                    line_color=COLORS["accent"],
                    annotation_text="transferred LR" if col == 1 else None,
                    row=1,
                    col=col,
                )
            fig.update_xaxes(title_text="log2 learning rate", row=1, col=col)
        fig.update_yaxes(range=[low - margin, top + margin / 2])
        fig.update_yaxes(title_text=data.metric, row=1, col=1)
        if named:  # the legend goes above the panels' titles
            return apply_theme(fig, legend={"y": 1.12}, margin={"t": 90})
        return apply_theme(fig)


def _panel_title(panel: TransferPanel) -> str:
    if panel.parametrization is None:
        return "parametrization not recorded"
    return _PANEL_TITLES.get(panel.parametrization, panel.parametrization)


def _swept(trial: FrozenTrial) -> bool:
    return "width" in trial.params and "learning_rate" in trial.params


def _loss(trial: FrozenTrial) -> float | None:
    """The run's loss: its first value, ``inf`` where it diverged, ``None`` where it has no
    result (running, waiting, pruned, or failed otherwise)."""
    state = trial.state.name
    if state == "COMPLETE" and trial.values:
        value = float(trial.values[0])
        return value if math.isfinite(value) else math.inf
    if state == "FAIL" and _DIVERGED.search(str(trial.user_attrs.get(ERROR_ATTR) or "")):
        return math.inf
    return None


def _runs(trials: Sequence[FrozenTrial]) -> list[tuple[Mapping[str, Any], float]]:
    """Every run's params and loss. A labelled run (one cell of the workflow) counts once: its
    completed trial, else its diverged one."""
    unlabelled: list[tuple[Mapping[str, Any], float]] = []
    labelled: dict[str, tuple[Mapping[str, Any], float]] = {}
    for t in trials:
        loss = _loss(t) if _swept(t) else None
        if loss is None:
            continue
        label = t.user_attrs.get(LABEL_ATTR)
        if label is None:
            unlabelled.append((t.params, loss))
        elif label not in labelled or not math.isfinite(labelled[label][1]):
            labelled[label] = (t.params, loss)
    return [*unlabelled, *labelled.values()]


def _curve_of(settings: Mapping[Any, Mapping[float, list[float]]]) -> Mapping[float, list[float]]:
    """Learning rate -> losses of one width's curve: the setting of the other hyperparameters
    run at the most learning rates (ties: the most runs). Where no setting ran at two rates
    (a controller's proposals), every run is a point of the curve."""

    def size(setting: Any) -> tuple[int, int]:
        runs = settings[setting]
        return len(runs), sum(len(x) for x in runs.values())

    best = max(settings, key=size)
    if size(best)[0] > 1:
        return settings[best]
    merged: dict[float, list[float]] = defaultdict(list)
    for runs in settings.values():
        for lr, losses in runs.items():
            merged[lr] += losses
    return merged


def _mean(losses: Sequence[float]) -> float:
    """The mean over seeds; ``inf`` when a seed diverged (as the workflow decides)."""
    if any(not math.isfinite(x) for x in losses):
        return math.inf
    return sum(losses) / len(losses)


def _seeds(point: TransferPoint) -> str:
    if point.seeds is None:
        return ""
    return f" ({point.seeds} seed{'s' if point.seeds != 1 else ''})"


register_figure(MuTransfer)
