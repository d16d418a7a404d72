"""Human-readable summaries of runs: the end-of-run table and the sweep report."""

from kdprune.reporting.report import (
    Report,
    StudyInfo,
    best_per_order,
    collect_runs,
    collect_study,
    ledger_row,
    pareto_mask,
    plot_accuracy,
    plot_pareto,
    summarise,
    write_report,
)
from kdprune.reporting.table import comparison_table

__all__ = [
    "Report",
    "StudyInfo",
    "best_per_order",
    "collect_runs",
    "collect_study",
    "comparison_table",
    "ledger_row",
    "pareto_mask",
    "plot_accuracy",
    "plot_pareto",
    "summarise",
    "write_report",
]
