"""The HTML report: every figure family that applies to a study, and its Pareto table, in one
self-contained file (plotly.js embedded once, so it opens offline)."""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune.dashboards._figures import figure_family, registered_figures
from paretune.dashboards._text import format_value, metric_title

if TYPE_CHECKING:
    from paretune.dashboards._study_data import StudyData

__all__ = ["Report", "Section", "build_report", "write_report"]

_log = logging.getLogger(__name__)

# Each figure's div gets data-paretune-rendered="1" once plotly has drawn it, and the
# document a "paretune:rendered" event per figure: what a browser test waits for.
_RENDERED_JS = (
    "var d = document.getElementById('{plot_id}'); d.dataset.paretuneRendered = '1';"
    " document.dispatchEvent(new CustomEvent('paretune:rendered', {detail: '{plot_id}'}));"
)

_CSS = """
body { font-family: Inter, Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 24px 48px; color: #222; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin: 28px 0 4px; }
.meta { color: #666; font-size: 13px; margin: 0 0 10px; }
.desc { color: #444; font-size: 13px; margin: 2px 0 8px; }
nav a { margin-right: 14px; font-size: 13px; }
.error { background: #fdecea; border: 1px solid #f5c2c0; padding: 8px 12px; font-size: 13px; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
th, td { border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


@dataclass
class Section:
    """One figure family in the report: its figures' div ids, or the error that stopped it."""

    name: str
    title: str
    figure_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Report:
    """A built report: the HTML and what went into it."""

    html: str
    sections: list[Section]

    @property
    def figure_ids(self) -> list[str]:
        return [i for s in self.sections for i in s.figure_ids]

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if s.error is not None]


def build_report(
    study: StudyData,
    *,
    figures: Sequence[str] | None = None,
    title: str | None = None,
    max_table_rows: int = 200,
) -> Report:
    """The report of ``study``.

    Args:
        study: The study, read once (:meth:`StudyData.from_store`).
        figures: The families to draw, by name (default: every registered family; a family
            that does not apply to the study is left out either way).
        title: The page's title (default: ``paretune report: <study>``).
        max_table_rows: Rows of the Pareto table (the front's first ones, sorted by the
            first metric).

    Returns:
        The :class:`Report`. A family that raises is reported in its section (and in
        :attr:`Report.failed`) instead of failing the whole report.

    Raises:
        ConfigError: A name in ``figures`` is not registered.
    """
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    names = list(figures) if figures is not None else registered_figures()
    families = [figure_family(n) for n in names]  # unknown names fail before any work
    sections: list[Section] = []
    bodies: list[str] = []
    for family in families:
        section = Section(family.name, family.title)
        started = time.perf_counter()
        try:
            if not family.applies(study):
                continue
            drawn = family.draw(family.extract(study))
            figs = drawn if isinstance(drawn, list) else [drawn]
            parts = []
            for k, fig in enumerate(figs):
                div_id = f"fig-{family.name}-{k}"
                parts.append(
                    pio.to_html(
                        fig,
                        include_plotlyjs=False,
                        full_html=False,
                        div_id=div_id,
                        post_script=_RENDERED_JS,
                        config={"displaylogo": False, "responsive": True},
                    )
                )
                section.figure_ids.append(div_id)
            body = "\n".join(parts)
        except Exception as err:  # one broken figure must not cost the others
            _log.warning("figure %r failed: %s", family.name, err, exc_info=True)
            section.error = f"{type(err).__name__}: {err}"
            body = f'<div class="error">this figure failed: {html.escape(section.error)}</div>'
        section.seconds = time.perf_counter() - started
        sections.append(section)
        desc = (
            f'<p class="desc">{html.escape(family.description)}</p>' if family.description else ""
        )
        bodies.append(
            f'<section id="{family.name}"><h2>{html.escape(family.title)}</h2>{desc}{body}'
            "</section>"
        )
    page_title = title or f"paretune report: {study.name}"
    nav = " ".join(f'<a href="#{s.name}">{html.escape(s.title)}</a>' for s in sections)
    table = _pareto_table_html(study, max_table_rows)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(page_title)}</title><style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><header><h1>{html.escape(page_title)}</h1>
<p class="meta">{html.escape(_summary_line(study))}</p><nav>{nav}
<a href="#pareto-table">Pareto table</a></nav></header>
{"".join(bodies)}
<section id="pareto-table"><h2>Pareto table</h2>{table}</section>
</body></html>
"""
    return Report(html=doc, sections=sections)


def write_report(study: StudyData, path: str | os.PathLike[str], **options: Any) -> Report:
    """:func:`build_report`, written to ``path`` atomically (a reader never sees half a
    file: the report is refreshed while a search runs)."""
    report = build_report(study, **options)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(report.html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide it from a web server
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report


def _summary_line(study: StudyData) -> str:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    metrics = ", ".join(metric_title(m) for m in study.metrics)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    front = f"; {len(study.pareto)} on the Pareto front" if len(study.metrics) > 1 else ""
    return f"{len(study.trials)} trials ({states or 'none'}){front}; metrics: {metrics}; {when}"


def _pareto_table_html(study: StudyData, max_rows: int) -> str:
    """The front (or, for one metric, the best trials) as an HTML table."""
    import numpy as np

    if not study.complete:
        return "<p>No completed trial yet.</p>"
    trials = study.pareto
    if len(study.metrics) == 1 or not trials:
        sign = 1.0 if study.directions[0] == "minimize" else -1.0
        order = np.argsort(sign * study.values[:, 0], kind="stable")[:10]
        trials = [study.complete[i] for i in order]
    else:
        sign = 1.0 if study.directions[0] == "minimize" else -1.0
        trials = sorted(trials, key=lambda t: sign * t.values[0])
    shown = trials[:max_rows]
    reeval = bool(study.reevaluations)
    labelled = any(study.label(t) for t in shown)
    head = ["trial", *(["label"] if labelled else []), *(metric_title(m) for m in study.metrics)]
    if reeval:
        head.append("re-evaluated (mean ± sd)")
    head.append("params")
    rows = []
    for t in shown:
        cells = [f'<td class="num">{t.number}</td>']
        if labelled:
            cells.append(f"<td>{html.escape(study.label(t) or '')}</td>")
        cells += [f'<td class="num">{format_value(v)}</td>' for v in t.values]
        if reeval:
            cells.append(f"<td>{html.escape(_reeval_cell(study, t.number))}</td>")
        params = ", ".join(f"{k}={format_value(v)}" for k, v in t.params.items())
        cells.append(f"<td>{html.escape(params)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if len(trials) > len(shown):
        more = f"<p class='meta'>{len(trials) - len(shown)} more not shown.</p>"
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _reeval_cell(study: StudyData, number: int) -> str:
    import statistics

    runs = study.reevaluations.get(number)
    if not runs:
        return ""
    parts = []
    for name in study.metric_names:
        vals = [float(m[name]) for m in runs.values() if name in m]
        if not vals:
            continue
        sd = f" ± {statistics.stdev(vals):.3g}" if len(vals) > 1 else ""
        parts.append(f"{name} {statistics.fmean(vals):.6g}{sd}")
    return f"{'; '.join(parts)} ({len(runs)} seeds)"
