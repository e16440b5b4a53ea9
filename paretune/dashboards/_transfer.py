"""The muTransfer figure: validation loss against log2 learning rate, one line per width
(Tensor Programs V, figure 1), as self-contained HTML."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paretune.dashboards._text import format_table

__all__ = [
    "fitted_law_line",
    "lr_transfer_figure",
    "proxy_best_table",
    "transfer_table",
    "transfer_verdicts",
    "write_transfer_csv",
]


def lr_transfer_figure(
    curves: Mapping[int, Sequence[tuple[float, float]]],
    *,
    title: str = "Validation loss against learning rate",
    chosen: float | None = None,
) -> str:
    """The HTML of the figure (plotly.js inlined: it opens without a network), drawn by the
    report's ``mutransfer`` figure family.

    Args:
        curves: Per width, ``(log2 learning rate, loss)`` points; non-finite losses (diverged
            runs) are left out of the line and marked at the top edge.
        title: The figure's title.
        chosen: A log2 learning rate to mark (the one carried to the target).
    """
    from paretune.dashboards.figures._mutransfer import (
        MuTransfer,
        TransferData,
        TransferPanel,
        TransferPoint,
    )

    panel = TransferPanel(
        parametrization=None,
        curves={
            w: tuple(TransferPoint(x, y if math.isfinite(y) else math.inf) for x, y in sorted(c))
            for w, c in sorted(curves.items())
        },
    )
    data = TransferData(metric="validation loss", panels=(panel,), chosen=chosen)
    fig = MuTransfer().draw(data)
    fig.update_layout(title=title)
    return str(fig.to_html(include_plotlyjs=True, full_html=True))


def proxy_best_table(best: Mapping[int, Mapping[str, float]], step_law: Mapping[int, float]) -> str:
    """The transfer check: per proxy width, its best learning rate, multipliers and loss,
    beside Step Law's (standard-parametrization) learning rate for that width."""
    rows = [
        [
            str(w),
            f"{math.log2(b['learning_rate']):g}",
            ", ".join(f"{k}={v:g}" for k, v in b.items() if k not in ("learning_rate", "val_loss"))
            or "-",
            f"{b['val_loss']:.4f}",
            f"{math.log2(step_law[w]):.2f}",
        ]
        for w, b in sorted(best.items())
    ]
    header = ["width", "best log2 LR", "multipliers", "val_loss", "Step Law (SP) log2 LR"]
    return format_table(header, rows)


def fitted_law_line(
    n_params: Sequence[int],
    learning_rates: Sequence[float],
    *,
    tokens: int,
    targets: Mapping[int, int],
    mup: bool,
) -> str:
    """Step Law's form fitted to the proxies' best learning rates (one token count, so only
    ``lr = c N^alpha`` is identifiable) with its error, and what it predicts at each target
    width (``targets``: width to its non-embedding parameters)."""
    from paretune._errors import ConfigError
    from paretune.search.steplaw import fit_step_law

    try:
        fit = fit_step_law(n_params, [tokens] * len(n_params), learning_rates)
    except ConfigError as err:
        return f"Step Law's form does not fit these proxies: {err.message}"
    error = fit.stderr[1]
    spread = f" +- {error:.2f}" if math.isfinite(error) else " (exact: as many runs as unknowns)"
    predictions = ", ".join(
        f"width {w}: log2 LR {math.log2(float(fit.predict(n, tokens))):.2f}"
        for w, n in targets.items()
    )
    expected = "muP predicts the proxies' rate" if mup else "under SP the rate should fall with N"
    return (
        f"Step Law's form fitted to the proxies' best rates: lr = {fit.c:.3g} N^{fit.alpha:.3f}"
        f"{spread} (Step Law: N^-0.713 at this token count); it predicts {predictions} "
        f"({expected})"
    )


def transfer_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    multipliers: Sequence[str],
    chosen: float,
    proxies: Sequence[int],
) -> str:
    """The decision table of ``paretune mutransfer``: the chosen learning rate at each proxy
    width, then every target and verification run (mean loss over seeds, its standard error).

    Args:
        rows: One per (stage, width, hyperparameters): ``stage``, ``width``, the
            hyperparameters, ``val_loss`` (``inf``: diverged), ``stderr``, ``seeds``.
        multipliers: The searched multipliers shown.
        chosen: The learning rate carried to the targets.
        proxies: The proxy widths whose chosen-rate row is shown.
    """
    header = ["stage", "width", "log2 LR", "multipliers", "val_loss", "+-", "seeds"]
    shown = [
        [
            r["stage"],
            str(r["width"]),
            f"{math.log2(r['learning_rate']):g}" if "learning_rate" in r else "-",
            ", ".join(f"{k}={r[k]:g}" for k in multipliers if k in r) or "-",
            "diverged" if not math.isfinite(r["val_loss"]) else f"{r['val_loss']:.4f}",
            "" if not math.isfinite(r["stderr"]) else f"{r['stderr']:.4f}",
            str(r["seeds"]),
        ]
        for r in rows
        if r["stage"] in ("target", "verify")
        or (r["width"] in proxies and math.isclose(r.get("learning_rate", 0.0), chosen))
    ]
    return format_table(header, shown)


def transfer_verdicts(
    rows: Sequence[Mapping[str, Any]],
    *,
    targets: Sequence[int],
    chosen: float,
    step_law: Mapping[int, float],
) -> list[str]:
    """Per target width: its loss at the transferred rate, whether a verification rate did
    better, and Step Law's rate for comparison."""
    lines = []
    for width in targets:
        at: dict[float, float] = {
            float(r["learning_rate"]): float(r["val_loss"])
            for r in rows
            if r["width"] == width and r["stage"] in ("target", "verify") and "learning_rate" in r
        }
        own = at.get(chosen)
        if own is None:
            continue
        best = min(at, key=lambda k: at[k])
        verdict = (
            "the transferred LR is the best of the verification"
            if math.isclose(best, chosen)
            else f"log2 LR {math.log2(best):g} did better by {100 * (own / at[best] - 1):.2f} %"
        )
        lines.append(
            f"width {width}: val_loss {own:.4f} at the transferred LR; {verdict}; Step Law's "
            f"log2 LR for this width would be {math.log2(step_law[width]):.2f}"
        )
    return lines


def write_transfer_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The decision rows as CSV, ``stage`` first, then the other columns by name."""
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "stage", k))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
