"""Human-readable summaries of runs: the end-of-run table and the sweep report."""

from kdprune.reporting.inference import classify, paired_test
from kdprune.reporting.plots import plot_accuracy, plot_pareto
from kdprune.reporting.report import Report, write_report
from kdprune.reporting.runs import collect_runs, ledger_row
from kdprune.reporting.statistics import best_per_level, pareto_mask, summarise
from kdprune.reporting.study import StudyInfo, collect_study
from kdprune.reporting.table import comparison_table
from kdprune.reporting.verdicts import verdicts

__all__ = [
    "Report",
    "StudyInfo",
    "best_per_level",
    "collect_runs",
    "collect_study",
    "comparison_table",
    "ledger_row",
    "pareto_mask",
    "plot_accuracy",
    "plot_pareto",
    "paired_test",
    "summarise",
    "classify",
    "verdicts",
    "write_report",
]
