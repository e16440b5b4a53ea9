"""How people look at a study: tables, progress, summaries, and the artifacts of its MLflow run.

Every function takes what it shows (trials, metrics, re-evaluations, URLs), never the store or
the spec, so the CLI, a notebook and the HTML report share them::

    from paretune.dashboards import pareto_table

    print(pareto_table(store.pareto_trials(), metrics))
"""

from paretune.dashboards._artifacts import log_study_tables
from paretune.dashboards._coord_check import coord_check_table, coord_check_verdict
from paretune.dashboards._pareto_table import pareto_table
from paretune.dashboards._progress import ProgressBar
from paretune.dashboards._reevaluation import (
    dominance_lines,
    reevaluation_line,
    reevaluation_table,
    write_reevaluation_csv,
)
from paretune.dashboards._summary import pareto_section, run_summary, status_summary, where_lines
from paretune.dashboards._text import format_table
from paretune.dashboards._transfer import (
    fitted_law_line,
    lr_transfer_figure,
    proxy_best_table,
    transfer_table,
    transfer_verdicts,
    write_transfer_csv,
)

__all__ = [
    "ProgressBar",
    "coord_check_table",
    "coord_check_verdict",
    "dominance_lines",
    "fitted_law_line",
    "format_table",
    "log_study_tables",
    "lr_transfer_figure",
    "pareto_section",
    "pareto_table",
    "proxy_best_table",
    "reevaluation_line",
    "reevaluation_table",
    "run_summary",
    "status_summary",
    "transfer_table",
    "transfer_verdicts",
    "where_lines",
    "write_reevaluation_csv",
    "write_transfer_csv",
]
