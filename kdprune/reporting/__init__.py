"""Human-readable summaries of runs."""

from kdprune.reporting.table import comparison_table

__all__ = ["comparison_table"]
