"""How people look at a study: figures, the HTML report, tables, progress, summaries, the
artifacts of its MLflow run, and the MLflow UI or optuna-dashboard on it (``paretune ui``).

Every function takes what it shows (a :class:`StudyData`, trials, metrics, re-evaluations,
URLs), never the store or the spec, so the CLI, a notebook and the HTML report share them::

    from paretune.dashboards import pareto_table

    print(pareto_table(store.pareto_trials(), metrics))

Figures come in families (:class:`FigureFamily`, one module each, :func:`register_figure`);
the report draws every registered family that applies to a study.
"""

from paretune.dashboards._artifacts import (
    log_spec,
    log_study_summary,
    log_study_tables,
    study_summary,
)
from paretune.dashboards._coord_check import coord_check_table, coord_check_verdict
from paretune.dashboards._dac import paired_summary
from paretune.dashboards._figures import (
    FigureFamily,
    figure_family,
    register_figure,
    registered_figures,
    unregister_figure,
)
from paretune.dashboards._pareto_table import pareto_table
from paretune.dashboards._progress import ProgressBar
from paretune.dashboards._reevaluation import (
    dominance_lines,
    reevaluation_line,
    reevaluation_table,
    write_reevaluation_csv,
)
from paretune.dashboards._report import Report, Section, build_report, write_report
from paretune.dashboards._study_data import StudyData
from paretune.dashboards._summary import pareto_section, run_summary, status_summary, where_lines
from paretune.dashboards._text import format_table
from paretune.dashboards._theme import COLORS, WIDTH_PALETTE, apply_theme, theme
from paretune.dashboards._transfer import (
    fitted_law_line,
    lr_transfer_figure,
    proxy_best_table,
    transfer_table,
    transfer_verdicts,
    write_transfer_csv,
)
from paretune.dashboards._ui import ServerCommand, UiServer, serve_study_ui

__all__ = [
    "COLORS",
    "WIDTH_PALETTE",
    "FigureFamily",
    "ProgressBar",
    "Report",
    "Section",
    "ServerCommand",
    "StudyData",
    "UiServer",
    "apply_theme",
    "build_report",
    "coord_check_table",
    "coord_check_verdict",
    "dominance_lines",
    "figure_family",
    "fitted_law_line",
    "format_table",
    "log_spec",
    "log_study_summary",
    "log_study_tables",
    "lr_transfer_figure",
    "paired_summary",
    "pareto_section",
    "pareto_table",
    "proxy_best_table",
    "reevaluation_line",
    "reevaluation_table",
    "register_figure",
    "registered_figures",
    "run_summary",
    "serve_study_ui",
    "status_summary",
    "study_summary",
    "theme",
    "transfer_table",
    "transfer_verdicts",
    "unregister_figure",
    "where_lines",
    "write_reevaluation_csv",
    "write_report",
    "write_transfer_csv",
]

# The built-in figure families register themselves (after the names above exist).
import paretune.dashboards.figures  # noqa: F401
