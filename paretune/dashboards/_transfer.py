"""The muTransfer figure: validation loss against log2 learning rate, one line per width
(Tensor Programs V, figure 1), as self-contained HTML."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["lr_transfer_figure"]

# Light to dark with width, as the papers draw it.
_PALETTE = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b", "#041a3a")


def lr_transfer_figure(
    curves: Mapping[int, Sequence[tuple[float, float]]],
    *,
    title: str = "Validation loss against learning rate",
    chosen: float | None = None,
) -> str:
    """The HTML of the figure (plotly.js inlined: it opens without a network).

    Args:
        curves: Per width, ``(log2 learning rate, loss)`` points; non-finite losses (diverged
            runs) are left out of the line.
        title: The figure's title.
        chosen: A log2 learning rate to mark (the one carried to the target).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, width in enumerate(sorted(curves)):
        points = sorted(curves[width])
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in points],
                y=[y if math.isfinite(y) else None for _, y in points],
                mode="lines+markers",
                name=f"width {width}",
                line={"color": _PALETTE[min(i, len(_PALETTE) - 1)]},
            )
        )
    if chosen is not None:
        fig.add_vline(x=chosen, line_dash="dot", annotation_text="transferred LR")
    fig.update_layout(
        title=title,
        xaxis_title="log2 learning rate",
        yaxis_title="validation loss",
        template="plotly_white",
    )
    return str(fig.to_html(include_plotlyjs=True, full_html=True))
