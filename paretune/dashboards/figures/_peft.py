"""The PEFT map: which layers of the model the Pareto-optimal configurations give which
modules, at which size.

One row per Pareto-optimal trial, the cheapest first; one column per layer; one panel per
module kind (serial adapter, parallel adapter, prefix, LoRA); the colour is the module's size
there (bottleneck, prefix length or LoRA rank; blank: absent). Reading down a column shows how
the front spends its budget on that layer. The params are read by the space's own decoder,
:func:`paretune.spaces.peft.decode_params`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from paretune._errors import ConfigError
from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._theme import WIDTH_PALETTE, apply_theme
from paretune.spaces.peft import MODULE_SWITCHES, MODULES, PeftPlan, decode_params, layer_count

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData
    from paretune.objectives import Metric

__all__ = ["PeftMap", "PeftMapData", "PeftRow", "cost_metric"]

_MODULE_TITLES = {
    "serial": "serial adapter",
    "parallel": "parallel adapter",
    "prefix": "prefix",
    "lora": "LoRA",
}
_SIZE_TITLES = {"serial": "bottleneck", "parallel": "bottleneck", "prefix": "length"}


@dataclass(frozen=True)
class PeftRow:
    """One Pareto-optimal trial.

    Attributes:
        number: The trial's number.
        values: Its value of each metric, by name.
        plan: What its params put into which layer.
    """

    number: int
    values: Mapping[str, float]
    plan: PeftPlan


@dataclass(frozen=True)
class PeftMapData:
    """What the PEFT map shows.

    Attributes:
        cost: The metric the rows are sorted by, ascending (:func:`cost_metric`).
        layers: The model's layers as the study's switches tell them; ``None`` when the space
            selects no layers (every module goes into every layer: one column).
        modules: The panels: the modules some row has, in :data:`~paretune.spaces.peft.MODULES`
            order.
        rows: The PEFT trials of the front, by cost (ties: by number).
        full: The front's full fine-tuning trials (no module to map), by cost.
    """

    cost: str
    layers: int | None
    modules: tuple[str, ...]
    rows: tuple[PeftRow, ...]
    full: tuple[PeftRow, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The column labels: the layer indices, or ``"all layers"``."""
        return ["all layers"] if self.layers is None else [str(i) for i in range(self.layers)]

    def sizes(self, module: str) -> np.ndarray:
        """The size of ``module`` per row and layer, 0 where absent, ``(rows, columns)``."""
        out = np.zeros((len(self.rows), len(self.columns)), dtype=int)
        for i, row in enumerate(self.rows):
            for layer, size in row.plan.layer_sizes(module).items():
                out[i, layer] = size
        return out


def cost_metric(metrics: Sequence[Metric]) -> Metric:
    """The metric that says what a configuration costs: the finetune objective's trainable
    parameters (or percentage) where the study has it, else the last minimised metric, else
    the last metric."""
    from paretune.objectives import Finetune

    known = [m for m in metrics if m.name in Finetune.known_metrics]
    minimised = [m for m in metrics if m.direction == "minimize"]
    return (known[:1] or minimised or list(metrics))[-1]


class PeftMap(FigureFamily):
    """Rows: the Pareto-optimal trials by cost; columns: layers; a panel per module kind;
    colour: the module's size (blank: absent). Applies to studies of a PEFT space."""

    name = "peft"
    title = "PEFT modules of the Pareto front"
    order = 50
    description = (
        "Which layers each Pareto-optimal configuration gives which modules, and at which "
        "size (bottleneck, prefix length, LoRA rank; blank: absent). One row per trial, the "
        "cheapest at the top; hover a cell for the trial's metrics."
    )

    def applies(self, study: StudyData) -> bool:
        """Whether the study's params are a PEFT space's: some trial has a module switch
        (:data:`~paretune.spaces.peft.MODULE_SWITCHES`), and the space's decoder reads every
        Pareto-optimal trial, one of them a PEFT configuration (not full fine-tuning)."""
        if not set(MODULE_SWITCHES) & set(study.params_of(study.complete)):
            return False
        try:
            return bool(self.extract(study).rows)
        except ConfigError:  # a parameter of that name that is not the PEFT space's
            return False

    def extract(self, study: StudyData) -> PeftMapData:
        """The map of ``study``'s front.

        Raises:
            ConfigError: A Pareto-optimal trial's params are not a PEFT space's (the space's
                decoder refuses them).
        """
        layers = layer_count(study.params_of(study.trials))
        cost = cost_metric(study.metrics)
        rows = sorted(
            (
                PeftRow(
                    number=t.number,
                    values=dict(zip(study.metric_names, t.values, strict=True)),
                    plan=decode_params(t.params, layers or 1),
                )
                for t in study.pareto
            ),
            key=lambda r: (r.values[cost.name], r.number),
        )
        peft = tuple(r for r in rows if not r.plan.full)
        return PeftMapData(
            cost=cost.name,
            layers=layers,
            modules=tuple(m for m in MODULES if any(r.plan.layer_sizes(m) for r in peft)),
            rows=peft,
            full=tuple(r for r in rows if r.plan.full),
        )

    def draw(self, data: PeftMapData) -> Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=max(len(data.modules), 1),
            shared_yaxes=True,
            horizontal_spacing=0.03,
            subplot_titles=[_MODULE_TITLES[m] for m in data.modules],
        )
        labels = [f"trial {r.number}: {r.values[data.cost]:.3g}" for r in data.rows]
        cols = data.columns
        present: set[int] = set()
        for col, module in enumerate(data.modules, start=1):
            sizes = data.sizes(module)
            present.update(int(s) for s in sizes[sizes > 0])
            text = [
                [_hover(row, module, cols[j], int(size)) for j, size in enumerate(line)]
                for row, line in zip(data.rows, sizes, strict=True)
            ]
            fig.add_trace(
                go.Heatmap(
                    # log2: sizes span 1 to the hidden size; 0 (absent) is a gap.
                    z=np.where(sizes > 0, np.log2(np.maximum(sizes, 1)), np.nan),
                    x=cols,
                    y=labels,
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                    coloraxis="coloraxis",
                    xgap=1,
                    ygap=1,
                    name=_MODULE_TITLES[module],
                ),
                row=1,
                col=col,
            )
            fig.update_xaxes(title_text="layer", type="category", row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category")
        fig.update_yaxes(title_text=f"Pareto trials by {data.cost}", row=1, col=1)
        if data.full:
            shown = ", ".join(f"trial {r.number}" for r in data.full)
            # Below the layer axis's title, in pixels (a fraction of the plot would move with
            # the number of rows).
            fig.add_annotation(
                text=f"Full fine-tuning on the front (no module to map): {shown}",
                xref="paper", yref="paper", x=0, y=0, yshift=-50, xanchor="left", yanchor="top",
                showarrow=False,
            )  # fmt: skip
        ticks = sorted(present)
        return apply_theme(
            fig,
            height=max(280, 120 + 22 * len(data.rows)) + (30 if data.full else 0),
            margin={"b": 90 if data.full else 60},
            coloraxis={
                # Light to dark with size; the lightest is still visible against an absent cell.
                "colorscale": [
                    [i / (len(WIDTH_PALETTE) - 1), c] for i, c in enumerate(WIDTH_PALETTE)
                ],
                "cmin": 0,
                "cmax": max(math.log2(max(ticks, default=2)), 1.0),
                "colorbar": {
                    "title": {"text": "size"},
                    "tickvals": [math.log2(s) for s in ticks],
                    "ticktext": [str(s) for s in ticks],
                },
            },
        )


def _hover(row: PeftRow, module: str, layer: str, size: int) -> str:
    """A cell's hover text: what the module is there, then the trial's metrics."""
    what = _MODULE_TITLES[module]
    if not size:
        here = f"no {what}"
    elif module == "lora":
        alphas = ", ".join(f"{a:g}" for a in sorted(set(row.plan.lora_alphas)))
        here = f"{what} rank {size} ({row.plan.lora_targets}, alpha {alphas})"
    else:
        here = f"{what} {_SIZE_TITLES[module]} {size}"
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in row.values.items())
    return f"trial {row.number}, layer {layer}<br>{here}<br>{metrics}"


register_figure(PeftMap)
